//! The figures a run prints: a table for people and one JSON line for scripts, both on stdout.

use std::time::Duration;

pub use flowscope_demo::send::thousands;
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

    /// The requests a load run had refused (then retried) and lost.
    pub fn add_refusals(&mut self, totals: &flowscope_demo::send::Totals) {
        self.add(
            "requests_refused",
            "requests refused, then retried",
            totals.requests_refused,
        );
        self.add("requests_failed", "requests failed", totals.requests_failed);
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

pub use flowscope_demo::send::percentile;

pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

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
