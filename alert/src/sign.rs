//! Standard Webhooks signing: `whsec_` secrets and the `v1,<base64 HMAC-SHA256>` signature
//! of `msg_id.timestamp.body`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use rand::RngCore;

use crate::AlertError;

/// The prefix of a symmetric Standard Webhooks secret.
const SECRET_PREFIX: &str = "whsec_";
/// The specification asks for 24 to 64 random bytes.
const MIN_SECRET_BYTES: usize = 24;
const MAX_SECRET_BYTES: usize = 64;
/// What a generated secret holds: the specification's minimum plus room.
const GENERATED_SECRET_BYTES: usize = 32;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The key bytes of a `whsec_<base64>` secret, checked for length.
pub fn parse_secret(secret: &str) -> Result<Vec<u8>, AlertError> {
    let invalid = || {
        AlertError::BadInput(format!(
            "secret must be `{SECRET_PREFIX}` followed by the base64 of {MIN_SECRET_BYTES} to \
             {MAX_SECRET_BYTES} random bytes; omit it and one is generated"
        ))
    };
    let encoded = secret.strip_prefix(SECRET_PREFIX).ok_or_else(invalid)?;
    let key = STANDARD.decode(encoded).map_err(|_| invalid())?;
    if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
        return Err(invalid());
    }
    Ok(key)
}

/// A new random secret in `whsec_<base64>` form.
pub fn generate_secret() -> String {
    let mut key = [0u8; GENERATED_SECRET_BYTES];
    // ThreadRng is a CSPRNG seeded from the operating system.
    rand::rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The `webhook-signature` header value: `v1,` and the base64 HMAC-SHA256, keyed with the
/// secret's bytes, of `msg_id.timestamp.body`.
pub fn signature(key: &[u8], msg_id: &str, timestamp_s: i64, body: &[u8]) -> String {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_standard_webhooks_vector_signs_to_its_signature() {
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_change_of_id_time_or_body_changes_the_signature() {
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let base = signature(&key, "msg_a", 1, b"{}");
        assert_ne!(base, signature(&key, "msg_b", 1, b"{}"));
        assert_ne!(base, signature(&key, "msg_a", 2, b"{}"));
        assert_ne!(base, signature(&key, "msg_a", 1, b"{ }"));
    }

    #[test]
    fn secrets_need_the_prefix_base64_and_24_to_64_bytes() {
        let of = |n: usize| format!("whsec_{}", STANDARD.encode(vec![7u8; n]));
        assert!(parse_secret(&of(24)).is_ok());
        assert!(parse_secret(&of(64)).is_ok());
        assert!(parse_secret(&of(23)).is_err());
        assert!(parse_secret(&of(65)).is_err());
        assert!(parse_secret(&STANDARD.encode([7u8; 32])).is_err());
        assert!(parse_secret("whsec_not base64!").is_err());
        let generated = generate_secret();
        assert_eq!(parse_secret(&generated).unwrap().len(), 32);
        assert_ne!(generated, generate_secret());
    }
}
