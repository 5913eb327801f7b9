//! The figures a run prints: a table for people and one JSON line for scripts, both on stdout.

use std::time::Duration;

use serde_json::{Map, Value};

/// Named figures in the order they were measured.
#[derive(Debug)]
pub struct Report {
    rows: Vec<(String, String, Value)>,
}

impl Report {
    pub fn new(bench: &'static str) -> Self {
        Self {
            rows: vec![("bench".into(), "benchmark".into(), Value::from(bench))],
        }
    }

    /// Adds a figure; `key` names it in the JSON, `label` (with its unit) in the table.
    pub fn add(
        &mut self,
        key: impl Into<String>,
        label: impl Into<String>,
        value: impl Into<Value>,
    ) {
        self.rows.push((key.into(), label.into(), value.into()));
    }

    /// Adds a float rounded to `decimals` places, so the JSON does not carry noise digits.
    pub fn add_float(
        &mut self,
        key: impl Into<String>,
        label: impl Into<String>,
        value: f64,
        decimals: i32,
    ) {
        if decimals <= 0 && value.is_finite() && value >= 0.0 {
            // Whole figures print as integers, with thousands separators in the table.
            self.add(key, label, value.round() as u64);
            return;
        }
        let scale = 10f64.powi(decimals);
        self.add(key, label, (value * scale).round() / scale);
    }

    pub fn print(&self) {
        let width = self
            .rows
            .iter()
            .map(|(_, label, _)| label.chars().count())
            .max()
            .unwrap_or(0);
        println!();
        for (_, label, value) in &self.rows {
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Number(number) => match number.as_u64() {
                    Some(whole) => thousands(whole),
                    None => number.to_string(),
                },
                other => other.to_string(),
            };
            println!("  {label:<width$}  {text}");
        }
        let json: Map<String, Value> = self
            .rows
            .iter()
            .map(|(key, _, value)| (key.clone(), value.clone()))
            .collect();
        println!();
        println!("{}", Value::Object(json));
    }
}

/// The nearest-rank percentile `p` (0 to 100) of `sorted`, which must be in ascending order.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// `1234567` as `1,234,567`.
pub fn thousands(number: u64) -> String {
    let digits = number.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let check = |values: &[u64], p: f64, expected: Option<u64>| {
            assert_eq!(
                percentile(&ms(values), p),
                expected.map(Duration::from_millis),
                "p{p} of {values:?}"
            );
        };
        check(&[], 50.0, None);
        check(&[7], 0.0, Some(7));
        check(&[7], 99.0, Some(7));
        check(&[1, 2, 3, 4, 5], 50.0, Some(3));
        check(&[1, 2, 3, 4], 50.0, Some(2));
        check(&[1, 2, 3, 4], 100.0, Some(4));
        check(&[1, 2, 3, 4], 0.0, Some(1));
        let hundred: Vec<u64> = (1..=100).collect();
        check(&hundred, 99.0, Some(99));
        check(&hundred, 99.5, Some(100));
        check(&hundred, 50.0, Some(50));
    }

    #[test]
    fn thousands_are_separated_by_commas() {
        let check = |n, expected: &str| assert_eq!(thousands(n), expected);
        check(0, "0");
        check(999, "999");
        check(1_000, "1,000");
        check(2_000_000, "2,000,000");
        check(12_345_678, "12,345,678");
    }
}
