//! The one wall clock: what every edge that needs "now" reads, so that the pure code below
//! it can take time as an argument.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch: 0 for a clock set before 1970, `i64::MAX` past 2262.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::now_ns;

    #[test]
    fn now_is_after_2020_and_does_not_go_back() {
        let first = now_ns();
        assert!(first > 1_577_836_800_000_000_000, "{first}");
        assert!(now_ns() >= first);
    }
}
