//! The arguments of the anomaly functions: durations (`'1m'` or `INTERVAL '1 minute'`),
//! timestamps (anything that folds to a constant timestamp), plain numbers. Each error says
//! what to write instead.

use std::time::Duration;

use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use flowscope_base::clock::now_ns;
use flowscope_base::duration::parse_duration;

use crate::graph::tables::timestamp_argument;

/// How long after a bucket ends its spans are taken to have arrived (SDKs batch their
/// exports for up to about 5 s): default windows end this long before now, so the newest
/// bucket is not a half-filled one that looks like a drop in traffic.
pub(crate) const SETTLE: Duration = Duration::from_secs(15);

/// A series may have at most this many buckets: each is a graph window of its own.
pub(crate) const MAX_BUCKETS: i64 = 2_000;

pub(crate) fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

/// The current time less [`SETTLE`]: where default windows end.
pub(crate) fn settled_now_ns() -> i64 {
    now_ns() - nanos(SETTLE)
}

fn constant(expr: &Expr, name: &str, example: &str) -> Result<ScalarValue> {
    let simplifier = ExprSimplifier::new(SimplifyContext::builder().with_current_time().build());
    match simplifier.simplify(expr.clone())? {
        Expr::Literal(value, _) => Ok(value),
        other => plan_err!("{name} must be a constant such as {example}, not {other}"),
    }
}

/// A positive duration in nanoseconds: `'1m'`, `'90s'`, `'1h'` or an interval.
pub(crate) fn duration(expr: &Expr, name: &str) -> Result<i64> {
    let example = "'1m' or INTERVAL '1 minute'";
    let ns = match constant(expr, name, example)? {
        ScalarValue::Utf8(Some(text))
        | ScalarValue::Utf8View(Some(text))
        | ScalarValue::LargeUtf8(Some(text)) => match parse_duration(&text) {
            Ok(d) => nanos(d),
            Err(message) => return plan_err!("{name}: {message}"),
        },
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            i64::from(i.days) * 86_400_000_000_000 + i.nanoseconds
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            i64::from(i.days) * 86_400_000_000_000 + i64::from(i.milliseconds) * 1_000_000
        }
        other => {
            return plan_err!(
                "{name} must be a duration such as {example} (months vary in length), not {other}"
            );
        }
    };
    if ns <= 0 {
        return plan_err!("{name} must be longer than zero, e.g. {example}");
    }
    Ok(ns)
}

pub(crate) fn timestamp(expr: &Expr, name: &str) -> Result<i64> {
    timestamp_argument(expr, name)
}

/// A finite number above zero, such as the `k` of the limits.
pub(crate) fn positive_number(expr: &Expr, name: &str, example: &str) -> Result<f64> {
    let value = constant(expr, name, example)?;
    let number = match value.cast_to(&arrow::datatypes::DataType::Float64) {
        Ok(ScalarValue::Float64(Some(v))) => v,
        _ => return plan_err!("{name} must be a number such as {example}, not {value}"),
    };
    if !number.is_finite() || number <= 0.0 {
        return plan_err!("{name} must be a number above zero such as {example}, not {number}");
    }
    Ok(number)
}

/// A series bucket: a whole number of the graph's buckets, so each is a union of them.
pub(crate) fn series_bucket(expr: &Expr, graph_bucket: Duration) -> Result<i64> {
    let width = duration(expr, "bucket")?;
    let unit = nanos(graph_bucket).max(1);
    if width % unit != 0 {
        let unit = flowscope_base::duration::format_duration(graph_bucket);
        return plan_err!(
            "bucket must be a whole multiple of the graph's {unit} buckets (--graph-bucket), e.g. '{unit}' or '1m'"
        );
    }
    Ok(width)
}

/// A window must end after it starts.
pub(crate) fn check_window(from_ns: i64, to_ns: i64) -> Result<()> {
    if to_ns <= from_ns {
        return plan_err!("the window is empty: `to` must be later than `from`");
    }
    Ok(())
}

/// The starts of the whole buckets of `width` in `[from, to)`, aligned to multiples of
/// `width` since the Unix epoch (a bucket belongs to a window when it starts in it, the graph's
/// rule; one that would end after `to` is left out: it is not over yet).
pub(crate) fn bucket_starts(from_ns: i64, to_ns: i64, width: i64) -> Result<Vec<i64>> {
    let (first, count) = whole_buckets(from_ns, to_ns, width);
    if count > MAX_BUCKETS {
        return plan_err!(
            "this asks for {count} buckets, more than the {MAX_BUCKETS} a series may have; widen the bucket or narrow the window"
        );
    }
    Ok((0..count).map(|i| first + i * width).collect())
}

/// The first start and the number of the whole buckets of `width` (above zero) in
/// `[from_ns, to_ns)`, aligned to multiples of `width` since the Unix epoch: the steps of
/// every series, in SQL and in the API.
pub fn whole_buckets(from_ns: i64, to_ns: i64, width: i64) -> (i64, i64) {
    let width = width.max(1);
    let first = from_ns.div_euclid(width) * width;
    let first = if first < from_ns {
        first.saturating_add(width)
    } else {
        first
    };
    let last_start = to_ns.saturating_sub(width);
    let count = if last_start < first {
        0
    } else {
        (last_start - first) / width + 1
    };
    (first, count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::lit;

    const MINUTE: i64 = 60_000_000_000;

    #[test]
    fn buckets_are_whole_and_aligned() {
        // [00:00:30, 00:04:10): whole minutes starting at 1, 2, 3 (the 4th ends at 5 > 4:10).
        let starts = bucket_starts(MINUTE / 2, 4 * MINUTE + MINUTE / 6, MINUTE).unwrap();
        assert_eq!(starts, [MINUTE, 2 * MINUTE, 3 * MINUTE]);
        assert_eq!(bucket_starts(0, 2 * MINUTE, MINUTE).unwrap(), [0, MINUTE]);
        assert!(bucket_starts(0, MINUTE / 2, MINUTE).unwrap().is_empty());
        let too_many = bucket_starts(0, 10_000 * MINUTE, MINUTE).unwrap_err();
        assert!(
            too_many.to_string().contains("widen the bucket"),
            "{too_many}"
        );
    }

    #[test]
    fn durations_as_text_or_intervals() {
        assert_eq!(duration(&lit("90s"), "bucket").unwrap(), 90_000_000_000);
        let refused = duration(&lit("ten"), "bucket").unwrap_err().to_string();
        assert!(refused.contains("bucket"), "{refused}");
        let zero = duration(&lit("0s"), "bucket").unwrap_err().to_string();
        assert!(zero.contains("longer than zero"), "{zero}");
        let odd = series_bucket(&lit("15s"), Duration::from_secs(10))
            .unwrap_err()
            .to_string();
        assert!(odd.contains("multiple of the graph's 10s"), "{odd}");
        assert_eq!(
            series_bucket(&lit("1m"), Duration::from_secs(10)).unwrap(),
            MINUTE
        );
    }

    #[test]
    fn numbers_must_be_positive() {
        assert_eq!(positive_number(&lit(2.5), "k", "3").unwrap(), 2.5);
        assert_eq!(positive_number(&lit(4_i64), "k", "3").unwrap(), 4.0);
        assert!(positive_number(&lit(0.0), "k", "3").is_err());
        assert!(positive_number(&lit("x"), "k", "3").is_err());
    }
}
