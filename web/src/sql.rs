//! `POST /api/sql`: runs a query and answers JSON, CSV or an Arrow IPC stream.
//!
//! The answer is encoded batch by batch as the query makes them. The first part (up to
//! [`FIRST_PART`]) is kept before the headers are sent, so a small answer, or a query that
//! fails early, still gets its exact status and `x-flowscope-truncated` header; past it the
//! body is streamed. No answer is longer than `--sql-max-response`: JSON then ends with
//! `"truncated":true`, CSV at a whole row and Arrow at a whole batch. An error after the
//! headers were sent aborts the body, so the client sees an incomplete transfer rather than
//! an answer that looks complete.

use arrow::datatypes::{FieldRef, SchemaRef};
use arrow::ipc::writer::StreamWriter;
use arrow::json::writer::{EncoderOptions, make_encoder};
use arrow::record_batch::RecordBatch;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use flowscope_query::{QueryError, QueryStream, SqlEngine};
use serde::Deserialize;

use crate::ApiState;
use crate::auth::Reader;
use crate::error::ApiError;

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
const TRUNCATED_HEADER: &str = "x-flowscope-truncated";

/// Bytes of an answer kept before its headers are sent: an answer that ends (or fails)
/// within them gets its exact status and truncation header.
pub const FIRST_PART: usize = 256 << 10;

/// Bytes handed to the connection at a time once the answer streams.
const CHUNK: usize = 64 << 10;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    pub sql: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Json,
    Csv,
    Arrow,
}

fn requested_format(headers: &HeaderMap) -> Format {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains(ARROW_STREAM) {
        Format::Arrow
    } else if accept.contains("text/csv") {
        Format::Csv
    } else {
        Format::Json
    }
}

pub async fn run_sql(
    State(state): State<ApiState>,
    Reader(caller): Reader,
    headers: HeaderMap,
    body: Result<Json<SqlRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let tenant = caller.principal.tenant.as_str().to_string();
    let telemetry = state.telemetry.clone();
    let answered = answer_sql(state, caller, headers, body).await;
    telemetry
        .sql_queries
        .add((tenant.clone(), query_outcome(&answered)), 1);
    telemetry.sql_duration.observe(tenant, started.elapsed());
    answered
}

/// The `outcome` label of a query in `/metrics`: `ok`, or what refused it.
fn query_outcome(answered: &Result<Response, ApiError>) -> &'static str {
    match answered {
        Ok(_) => "ok",
        Err(ApiError::BadRequest(_) | ApiError::Query(QueryError::Invalid(_))) => "invalid",
        Err(ApiError::Query(QueryError::NotAllowed(_))) => "not_allowed",
        Err(ApiError::Query(QueryError::TooExpensive(_))) => "too_expensive",
        Err(ApiError::Query(QueryError::Busy(_))) => "busy",
        Err(_) => "failed",
    }
}

async fn answer_sql(
    state: ApiState,
    caller: crate::auth::Caller,
    headers: HeaderMap,
    body: Result<Json<SqlRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "the body must be JSON like {{\"sql\": \"SELECT count(*) FROM spans\"}} with Content-Type: application/json ({})",
            rejection.body_text()
        ))
    })?;
    if request.sql.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "`sql` is empty; send a query such as SELECT count(*) FROM spans".into(),
        ));
    }
    let format = requested_format(&headers);
    let max_rows = match format {
        Format::Json => state.config.max_json_rows,
        Format::Csv | Format::Arrow => state.config.max_export_rows,
    };
    let mut stream = caller
        .view
        .engine
        .query_stream(&request.sql, max_rows)
        .await?;
    let engine = caller.view.engine.clone();
    let mut answer = Answer::start(format, stream.schema(), state.config.max_response_bytes)?;
    while answer.pending() < FIRST_PART {
        match stream.next().await {
            Some(batch) => {
                answer = answer.write_beside_queries(&engine, batch?).await?;
                if answer.capped {
                    answer.finish(true)?;
                    return Ok(answer.whole(true));
                }
            }
            None => {
                let truncated = stream.truncated();
                answer.finish(truncated)?;
                return Ok(answer.whole(truncated));
            }
        }
    }
    let content_type = answer.content_type();
    let body = futures::stream::unfold(Some((stream, answer, engine)), next_chunk);
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(body),
    )
        .into_response())
}

/// The next part of a streamed answer; an error aborts the body.
async fn next_chunk(
    state: Option<(QueryStream, Answer, Arc<SqlEngine>)>,
) -> Option<(
    Result<Bytes, std::io::Error>,
    Option<(QueryStream, Answer, Arc<SqlEngine>)>,
)> {
    let (mut stream, mut answer, engine) = state?;
    let abort = |error: ApiError| {
        tracing::warn!(%error, "a streamed SQL answer was cut off");
        Some((Err(std::io::Error::other(error.to_string())), None))
    };
    while answer.pending() < CHUNK {
        let ended = match stream.next().await {
            Some(Ok(batch)) => match answer.write_beside_queries(&engine, batch).await {
                Ok(written) => {
                    answer = written;
                    answer.capped
                }
                Err(error) => return abort(error),
            },
            Some(Err(error)) => return abort(error.into()),
            None => true,
        };
        if ended {
            let truncated = answer.capped || stream.truncated();
            if let Err(error) = answer.finish(truncated) {
                return abort(error);
            }
            return Some((Ok(answer.take()), None));
        }
    }
    Some((Ok(answer.take()), Some((stream, answer, engine))))
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("cannot encode the result: {error}"))
}

fn not_csv(error: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!(
        "this result cannot be written as CSV ({error}); select scalar columns or ask for JSON"
    ))
}

/// How each format writes its parts.
enum Encoder {
    /// `{"columns": [{"name","type"}], "rows": [[...]], "truncated": bool}`: rows are
    /// arrays in column order, values encoded by Arrow's JSON encoders (ids and other binary
    /// as hex, timestamps as RFC 3339 text, maps as objects).
    Json,
    Csv,
    /// The IPC stream writer, over the bytes not yet handed over.
    Arrow(Box<StreamWriter<Vec<u8>>>),
}

/// An answer being encoded: what was handed over, what waits, and the byte cap.
struct Answer {
    format: Format,
    encoder: Encoder,
    /// JSON and CSV bytes not yet handed over (Arrow's are in its writer).
    out: Vec<u8>,
    /// Bytes handed over so far.
    sent: usize,
    rows: usize,
    /// `--sql-max-response`.
    limit: usize,
    /// The byte cap cut the answer short.
    capped: bool,
}

/// Room kept under the cap for the end of the answer: JSON's `],"truncated":true}`, Arrow's
/// end-of-stream marker.
const ENDING: usize = 32;

impl Answer {
    fn start(format: Format, schema: SchemaRef, limit: usize) -> Result<Self, ApiError> {
        let mut out = Vec::new();
        let encoder = match format {
            Format::Json => {
                let columns: Vec<serde_json::Value> = schema
                    .fields()
                    .iter()
                    .map(|f| serde_json::json!({ "name": f.name(), "type": f.data_type().to_string() }))
                    .collect();
                out.extend_from_slice(b"{\"columns\":");
                serde_json::to_writer(&mut out, &columns).map_err(internal)?;
                out.extend_from_slice(b",\"rows\":[");
                Encoder::Json
            }
            Format::Csv => {
                // A header line even for an empty answer, so the columns are known.
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                writer
                    .write(&RecordBatch::new_empty(schema.clone()))
                    .map_err(not_csv)?;
                Encoder::Csv
            }
            Format::Arrow => Encoder::Arrow(Box::new(
                StreamWriter::try_new(Vec::new(), &schema).map_err(internal)?,
            )),
        };
        Ok(Self {
            format,
            encoder,
            out,
            sent: 0,
            rows: 0,
            limit: limit.max(FIRST_PART),
            capped: false,
        })
    }

    fn content_type(&self) -> &'static str {
        match self.format {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => ARROW_STREAM,
        }
    }

    fn buffer(&mut self) -> &mut Vec<u8> {
        match &mut self.encoder {
            Encoder::Arrow(writer) => writer.get_mut(),
            Encoder::Json | Encoder::Csv => &mut self.out,
        }
    }

    /// Bytes encoded and not yet handed over.
    fn pending(&self) -> usize {
        match &self.encoder {
            Encoder::Arrow(writer) => writer.get_ref().len(),
            Encoder::Json | Encoder::Csv => self.out.len(),
        }
    }

    fn fits(&self) -> bool {
        self.sent + self.pending() + ENDING <= self.limit
    }

    /// [`Answer::write`] on the SQL runtime's lower-priority threads, so that encoding a large
    /// answer never competes with ingest for the server's own runtime.
    async fn write_beside_queries(
        mut self,
        engine: &SqlEngine,
        batch: RecordBatch,
    ) -> Result<Self, ApiError> {
        let (answer, written) = engine
            .run_beside_queries(move || {
                let written = self.write(&batch);
                (self, written)
            })
            .await?;
        written.map(|()| answer)
    }

    /// Encodes `batch` whole, or as many of its first rows as fit under the cap (then
    /// `capped` is set).
    fn write(&mut self, batch: &RecordBatch) -> Result<(), ApiError> {
        if batch.num_rows() == 0 || self.capped {
            return Ok(());
        }
        let mark = self.pending();
        self.encode(batch)?;
        if self.fits() {
            self.rows += batch.num_rows();
            return Ok(());
        }
        self.buffer().truncate(mark);
        self.capped = true;
        // The most rows that fit, by halving: this happens once per answer.
        let (mut fit, mut over) = (0, batch.num_rows());
        while over - fit > 1 {
            let middle = fit + (over - fit) / 2;
            self.encode(&batch.slice(0, middle))?;
            if self.fits() {
                fit = middle;
            } else {
                over = middle;
            }
            self.buffer().truncate(mark);
        }
        if fit > 0 {
            self.encode(&batch.slice(0, fit))?;
            self.rows += fit;
        }
        Ok(())
    }

    fn encode(&mut self, batch: &RecordBatch) -> Result<(), ApiError> {
        let first_row = self.rows == 0;
        match &mut self.encoder {
            Encoder::Json => write_rows(batch, &mut self.out, first_row),
            Encoder::Csv => {
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .build(&mut self.out);
                writer.write(batch).map_err(not_csv)
            }
            Encoder::Arrow(writer) => writer.write(batch).map_err(internal),
        }
    }

    /// Ends the answer: JSON's `truncated` field, Arrow's end-of-stream marker.
    fn finish(&mut self, truncated: bool) -> Result<(), ApiError> {
        match &mut self.encoder {
            Encoder::Json => {
                self.out.extend_from_slice(b"],\"truncated\":");
                self.out
                    .extend_from_slice(if truncated { b"true" } else { b"false" });
                self.out.push(b'}');
            }
            Encoder::Csv => {}
            Encoder::Arrow(writer) => writer.finish().map_err(internal)?,
        }
        Ok(())
    }

    /// Hands over the bytes encoded so far.
    fn take(&mut self) -> Bytes {
        let bytes = std::mem::take(self.buffer());
        self.sent += bytes.len();
        Bytes::from(bytes)
    }

    /// The whole answer in one response, with the truncation header when rows are missing.
    fn whole(mut self, truncated: bool) -> Response {
        let content_type = self.content_type();
        let mut response = ([(header::CONTENT_TYPE, content_type)], self.take()).into_response();
        if truncated {
            response
                .headers_mut()
                .insert(TRUNCATED_HEADER, HeaderValue::from_static("true"));
        }
        response
    }
}

fn write_rows(batch: &RecordBatch, out: &mut Vec<u8>, first_row: bool) -> Result<(), ApiError> {
    let options = EncoderOptions::default().with_explicit_nulls(true);
    let schema = batch.schema();
    let fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
    let mut encoders = fields
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| make_encoder(field, column.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()
        .map_err(internal)?;
    for row in 0..batch.num_rows() {
        if row > 0 || !first_row {
            out.push(b',');
        }
        out.push(b'[');
        for (index, encoder) in encoders.iter_mut().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            if encoder.is_null(row) {
                out.extend_from_slice(b"null");
            } else {
                encoder.encode(row, out);
            }
        }
        out.push(b']');
    }
    Ok(())
}
