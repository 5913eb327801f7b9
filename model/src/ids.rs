//! Trace and span ids: validity per the OTLP specification and lowercase hex text.

/// Length in bytes of a valid trace id.
pub const TRACE_ID_LEN: usize = 16;
/// Length in bytes of a valid span id.
pub const SPAN_ID_LEN: usize = 8;

/// A trace id is valid when it has 16 bytes that are not all zero (OTLP `trace.proto`).
pub fn is_valid_trace_id(id: &[u8]) -> bool {
    id.len() == TRACE_ID_LEN && id.iter().any(|b| *b != 0)
}

/// A span id is valid when it has 8 bytes that are not all zero.
pub fn is_valid_span_id(id: &[u8]) -> bool {
    id.len() == SPAN_ID_LEN && id.iter().any(|b| *b != 0)
}

/// Lowercase hex, the form ids take in SQL, JSON and logs.
pub fn to_hex(id: &[u8]) -> String {
    hex::encode(id)
}

/// Parses hex of either case; `None` when the text is not hex of an even length.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_follows_the_otlp_rules() {
        assert!(is_valid_trace_id(&[1; 16]));
        assert!(!is_valid_trace_id(&[0; 16]));
        assert!(!is_valid_trace_id(&[1; 15]));
        assert!(!is_valid_trace_id(&[]));
        assert!(is_valid_span_id(&[0, 0, 0, 0, 0, 0, 0, 1]));
        assert!(!is_valid_span_id(&[0; 8]));
        assert!(!is_valid_span_id(&[1; 16]));
    }

    #[test]
    fn hex_round_trips_and_accepts_upper_case() {
        assert_eq!(to_hex(&[0x5b, 0x8e]), "5b8e");
        assert_eq!(from_hex("5B8E"), Some(vec![0x5b, 0x8e]));
        assert_eq!(from_hex("5b8"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
