//! `POST /api/sql`: runs a query and answers JSON, CSV or an Arrow IPC stream.

use std::sync::Arc;

use arrow::datatypes::FieldRef;
use arrow::json::writer::{EncoderOptions, make_encoder};
use arrow::record_batch::RecordBatch;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use flowscope_query::QueryOutput;
use serde::Deserialize;

use crate::ApiState;
use crate::auth::Reader;
use crate::error::ApiError;

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
const TRUNCATED_HEADER: &str = "x-flowscope-truncated";

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
    let output = caller.view.engine.query(&request.sql, max_rows).await?;
    let mut response = match format {
        Format::Json => json_response(&output)?,
        Format::Csv => bytes_response(csv_bytes(&output)?, "text/csv; charset=utf-8"),
        Format::Arrow => bytes_response(arrow_bytes(&output)?, ARROW_STREAM),
    };
    if output.truncated {
        response
            .headers_mut()
            .insert(TRUNCATED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn bytes_response(body: Vec<u8>, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("cannot encode the result: {error}"))
}

/// `{"columns": [{"name","type"}], "rows": [[...]], "truncated": bool}`, written directly
/// as bytes: rows are arrays in column order, values encoded by Arrow's JSON encoders
/// (ids and other binary as hex, timestamps as RFC 3339 text, maps as objects).
fn json_response(output: &QueryOutput) -> Result<Response, ApiError> {
    let columns: Vec<serde_json::Value> = output
        .schema
        .fields()
        .iter()
        .map(|f| serde_json::json!({ "name": f.name(), "type": f.data_type().to_string() }))
        .collect();
    let mut body = Vec::with_capacity(256 + output.num_rows() * 64);
    body.extend_from_slice(b"{\"columns\":");
    serde_json::to_writer(&mut body, &columns).map_err(internal)?;
    body.extend_from_slice(b",\"rows\":[");
    let mut first_row = true;
    for batch in &output.batches {
        write_rows(batch, &mut body, &mut first_row)?;
    }
    body.extend_from_slice(b"],\"truncated\":");
    body.extend_from_slice(if output.truncated { b"true" } else { b"false" });
    body.push(b'}');
    Ok(bytes_response(body, "application/json"))
}

fn write_rows(
    batch: &RecordBatch,
    out: &mut Vec<u8>,
    first_row: &mut bool,
) -> Result<(), ApiError> {
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
        if !std::mem::take(first_row) {
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

fn csv_bytes(output: &QueryOutput) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    {
        let mut writer = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut body);
        if output.batches.is_empty() {
            // A header line even for an empty answer, so the columns are known.
            writer
                .write(&RecordBatch::new_empty(output.schema.clone()))
                .map_err(internal)?;
        }
        for batch in &output.batches {
            writer.write(batch).map_err(|e| {
                ApiError::BadRequest(format!("this result cannot be written as CSV ({e}); select scalar columns or ask for JSON"))
            })?;
        }
    }
    Ok(body)
}

fn arrow_bytes(output: &QueryOutput) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    let schema: Arc<arrow::datatypes::Schema> = output.schema.clone();
    let mut writer =
        arrow::ipc::writer::StreamWriter::try_new(&mut body, &schema).map_err(internal)?;
    for batch in &output.batches {
        writer.write(batch).map_err(internal)?;
    }
    writer.finish().map_err(internal)?;
    drop(writer);
    Ok(body)
}
