//! `GET /api/traces/search`: traces by time, service, operation, attributes, status and
//! duration, listed as Jaeger lists them, through the caller's sandboxed SQL engine.
//!
//! ```text
//!  query string ──validate──> Search ──Search::sql()──> SqlEngine::query (limits, timeout)
//!                                                      └──> {"sql", "traces": [...]}
//! ```
//!
//! The SQL that ran is in the answer, so the page can hand it to the console as it is.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use axum::Json;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use flowscope_base::clock::now_ns;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Reader;
use crate::error::ApiError;
use crate::graph::{nanos_json, parse_time};
use crate::search_sql::{Order, Search, Status, parse_conditions, parse_duration_ns};

/// Traces listed when the search names no limit (Jaeger's default).
const DEFAULT_LIMIT: usize = 20;
/// The most traces one search lists.
pub const MAX_LIMIT: usize = 1000;
/// How far back a search looks when it names no `from`.
const DEFAULT_LOOKBACK_NS: i64 = 3600 * 1_000_000_000;
/// Longest service or operation name accepted.
const MAX_NAME: usize = 1024;

/// The query string, as typed; [`validate`] turns it into a [`Search`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub service: Option<String>,
    pub operation: Option<String>,
    pub attributes: Option<String>,
    pub min_duration: Option<String>,
    pub max_duration: Option<String>,
    pub status: Option<String>,
    pub order: Option<String>,
    pub limit: Option<String>,
}

/// An empty parameter is the same as an absent one: the page's form sends every field.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn name(value: &Option<String>, what: &str) -> Result<Option<String>, ApiError> {
    match given(value) {
        Some(text) if text.len() > MAX_NAME => Err(ApiError::BadRequest(format!(
            "`{what}` is longer than {MAX_NAME} bytes; no {what} has such a name"
        ))),
        other => Ok(other.map(str::to_string)),
    }
}

/// Checks every parameter; the first problem is the answer's message.
pub fn validate(params: &SearchParams, now: i64) -> Result<Search, ApiError> {
    let bad = ApiError::BadRequest;
    let from_ns = match given(&params.from) {
        Some(text) => parse_time(text, now).map_err(|e| bad(format!("`from`: {e}")))?,
        None => now - DEFAULT_LOOKBACK_NS,
    };
    let to_ns = match given(&params.to) {
        Some(text) => parse_time(text, now).map_err(|e| bad(format!("`to`: {e}")))?,
        None => now + 1,
    };
    if to_ns <= from_ns {
        return Err(bad(
            "the time range is empty: `to` must be later than `from`".into(),
        ));
    }
    let duration = |value: &Option<String>, what: &str| {
        given(value)
            .map(|text| parse_duration_ns(text).map_err(|e| bad(format!("`{what}`: {e}"))))
            .transpose()
    };
    let min_duration_ns = duration(&params.min_duration, "min_duration")?;
    let max_duration_ns = duration(&params.max_duration, "max_duration")?;
    if let (Some(min), Some(max)) = (min_duration_ns, max_duration_ns)
        && min > max
    {
        return Err(bad(
            "`min_duration` is longer than `max_duration`; no trace can match both".into(),
        ));
    }
    let limit = match given(&params.limit) {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(bad(format!(
                    "`limit` must be a whole number from 1 to {MAX_LIMIT}"
                )));
            }
        },
    };
    Ok(Search {
        from_ns,
        to_ns,
        service: name(&params.service, "service")?,
        operation: name(&params.operation, "operation")?,
        conditions: parse_conditions(params.attributes.as_deref().unwrap_or("")).map_err(bad)?,
        status: given(&params.status)
            .map(Status::parse)
            .transpose()
            .map_err(bad)?,
        min_duration_ns,
        max_duration_ns,
        order: given(&params.order)
            .map(Order::parse)
            .transpose()
            .map_err(bad)?
            .unwrap_or(Order::Recent),
        limit,
    })
}

pub async fn search_traces(
    Reader(caller): Reader,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "{}; the parameters are from, to, service, operation, attributes, min_duration, max_duration, status, order and limit",
            rejection.body_text()
        ))
    })?;
    let search = validate(&params, now_ns())?;
    let sql = search.sql();
    let output = caller.view.engine.query(&sql, search.limit).await?;
    let mut traces = Vec::new();
    for batch in &output.batches {
        rows_json(batch, &mut traces)?;
    }
    Ok(Json(json!({
        "from": nanos_json(search.from_ns),
        "to": nanos_json(search.to_ns),
        "limit": search.limit,
        // As many as the limit: there may be more; raise it or narrow the search.
        "limited": traces.len() >= search.limit,
        "sql": sql,
        "traces": traces,
    })))
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("cannot read the search's result: {error}"))
}

/// A column of the search's result, cast to the type read here (a cast is free when the
/// engine already made that type, and keeps a change of the engine's types from panicking).
fn column(
    batch: &RecordBatch,
    name: &str,
    to: &DataType,
) -> Result<arrow::array::ArrayRef, ApiError> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| internal(format!("no column {name}")))?;
    arrow::compute::cast(column, to).map_err(internal)
}

/// One JSON object per row: the trace's id, root, start, duration, spans, errors, services.
fn rows_json(batch: &RecordBatch, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let text = DataType::Utf8;
    let int = DataType::Int64;
    let ids = column(batch, "trace_id", &text)?;
    let services_root = column(batch, "root_service", &text)?;
    let operations = column(batch, "root_operation", &text)?;
    let starts = column(
        batch,
        "start_time",
        &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
    )?;
    let durations = column(batch, "duration_ns", &int)?;
    let spans = column(batch, "spans", &int)?;
    let errors = column(batch, "errors", &int)?;
    let services = column(
        batch,
        "services",
        &DataType::List(std::sync::Arc::new(arrow::datatypes::Field::new(
            "item",
            DataType::Utf8,
            true,
        ))),
    )?;
    let (ids, services_root, operations) = (
        ids.as_string::<i32>(),
        services_root.as_string::<i32>(),
        operations.as_string::<i32>(),
    );
    let starts = starts.as_primitive::<TimestampNanosecondType>();
    let (durations, spans, errors) = (
        durations.as_primitive::<Int64Type>(),
        spans.as_primitive::<Int64Type>(),
        errors.as_primitive::<Int64Type>(),
    );
    let services = services.as_list::<i32>();
    for row in 0..batch.num_rows() {
        let text_at = |array: &arrow::array::StringArray| {
            if array.is_null(row) {
                Value::Null
            } else {
                json!(array.value(row))
            }
        };
        let mut names: Vec<String> = if services.is_null(row) {
            Vec::new()
        } else {
            let list = services.value(row);
            let list = list.as_string::<i32>();
            list.iter().flatten().map(str::to_string).collect()
        };
        names.sort();
        let start_ns = starts.value(row);
        out.push(json!({
            "trace_id": text_at(ids),
            "root_service": text_at(services_root),
            "root_operation": text_at(operations),
            "start_time": nanos_json(start_ns),
            "start_ms": start_ns as f64 / 1e6,
            "duration_ms": durations.value(row) as f64 / 1e6,
            "spans": spans.value(row),
            "errors": errors.value(row),
            "services": names,
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use flowscope_query::{SpanStore, SqlConfig, SqlEngine, StoreConfig, WalSync};
    use rand::{Rng as _, SeedableRng as _};

    const NOW: i64 = 1_764_396_000_000_000_000;

    fn params(pairs: &[(&str, &str)]) -> SearchParams {
        let query: String = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let uri: axum::http::Uri = format!("/?{query}").parse().unwrap();
        Query::<SearchParams>::try_from_uri(&uri).unwrap().0
    }

    fn urlencode(text: &str) -> String {
        text.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    fn refused(pairs: &[(&str, &str)], says: &str) {
        match validate(&params(pairs), NOW) {
            Ok(search) => panic!("{pairs:?} was accepted: {search:?}"),
            Err(error) => {
                assert_eq!(error.status(), axum::http::StatusCode::BAD_REQUEST);
                assert!(error.to_string().contains(says), "{pairs:?}: {error}");
            }
        }
    }

    #[test]
    fn defaults_and_every_parameter() {
        let search = validate(&params(&[]), NOW).unwrap();
        assert_eq!(search.from_ns, NOW - DEFAULT_LOOKBACK_NS);
        assert_eq!(search.limit, DEFAULT_LIMIT);
        assert_eq!(search.order, Order::Recent);
        let search = validate(
            &params(&[
                ("from", "30m"),
                ("to", "now"),
                ("service", "checkout"),
                ("operation", ""),
                ("attributes", "a=1 b>2"),
                ("min_duration", "100ms"),
                ("max_duration", "2s"),
                ("status", "error"),
                ("order", "longest"),
                ("limit", "5"),
            ]),
            NOW,
        )
        .unwrap();
        assert_eq!(search.from_ns, NOW - 1_800_000_000_000);
        assert_eq!(search.to_ns, NOW);
        assert_eq!(search.service.as_deref(), Some("checkout"));
        assert_eq!(search.operation, None);
        assert_eq!(search.conditions.len(), 2);
        assert_eq!(search.min_duration_ns, Some(100_000_000));
        assert_eq!(search.max_duration_ns, Some(2_000_000_000));
        assert_eq!(search.status, Some(Status::Error));
        assert_eq!(search.limit, 5);
    }

    #[test]
    fn bad_parameters_say_what_to_do() {
        refused(&[("status", "failed")], "ok, error or unset");
        refused(&[("attributes", "a~(")], "invalid regular expression");
        refused(&[("min_duration", "100")], "needs a unit");
        refused(
            &[("min_duration", "2s"), ("max_duration", "1s")],
            "longer than",
        );
        refused(&[("limit", "0")], "from 1 to 1000");
        refused(&[("limit", "1001")], "from 1 to 1000");
        refused(&[("limit", "many")], "from 1 to 1000");
        refused(&[("from", "yesterday")], "`from`");
        refused(&[("from", "now"), ("to", "1h")], "empty");
        refused(&[("order", "random")], "recent, longest");
        refused(&[("service", &"s".repeat(MAX_NAME + 1))], "longer than");
    }

    fn engine(dir: &std::path::Path) -> Arc<SqlEngine> {
        let mut config = StoreConfig::new(dir);
        config.wal_sync = WalSync::Never;
        let store = SpanStore::open(config).unwrap();
        Arc::new(SqlEngine::new(store, SqlConfig::default()).unwrap())
    }

    /// Tricky strings, random and hand-picked, go through the real engine as literals and
    /// come back unchanged: the escaping holds for DataFusion's parser, not just in theory.
    #[tokio::test]
    async fn literals_survive_the_real_parser() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let alphabet: Vec<char> = "'\"\\;-/*$ \n\r\t\u{0}\u{2028}éx1=~<>()[]{}%_`E"
            .chars()
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let mut samples: Vec<String> = vec![
            "x' OR '1'='1".into(),
            "'; DROP TABLE spans; --".into(),
            "\\'; SELECT 1 --".into(),
            "E'\\x27'".into(),
            "$$'$$".into(),
        ];
        for _ in 0..200 {
            let len = rng.random_range(0..24);
            samples.push(
                (0..len)
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect(),
            );
        }
        // One query for all of them, so the test stays quick.
        let select = samples
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{} AS c{i}", crate::search_sql::sql_string(s)))
            .collect::<Vec<_>>()
            .join(", ");
        let output = engine.query(&format!("SELECT {select}"), 1).await.unwrap();
        let batch = &output.batches[0];
        for (i, sample) in samples.iter().enumerate() {
            let column = arrow::compute::cast(batch.column(i), &DataType::Utf8).unwrap();
            assert_eq!(column.as_string::<i32>().value(0), sample, "sample {i}");
        }
    }

    /// The SQL of any valid search plans and runs in the engine, with hostile text in every
    /// field (and finds nothing in an empty store).
    #[tokio::test]
    async fn every_search_runs_in_the_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let hostile = "x' OR '1'='1'; DROP TABLE spans; --";
        for pairs in [
            vec![],
            vec![("service", hostile), ("operation", hostile)],
            vec![(
                "attributes",
                r#""k' OR 1=1 --"="v' OR 1=1 --" n>=5 r~"^a'b$" m!~x e!=y p"#,
            )],
            vec![
                ("status", "ok"),
                ("min_duration", "1ms"),
                ("max_duration", "1h"),
            ],
            vec![("order", "most_spans"), ("limit", "1000")],
        ] {
            let search = validate(&params(&pairs), NOW).unwrap();
            let output = engine
                .query(&search.sql(), search.limit)
                .await
                .unwrap_or_else(|e| panic!("{pairs:?}: {e}\n{}", search.sql()));
            assert_eq!(output.num_rows(), 0);
            let mut traces = Vec::new();
            for batch in &output.batches {
                rows_json(batch, &mut traces).unwrap();
            }
        }
    }
}
