//! Hand-built traces for end-to-end tests: spans collected by service with ids of their own,
//! calls as a CLIENT span and its SERVER span, sent as one OTLP request per service.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};

use super::otlp::request;
use super::topology::{CLIENT, SERVER};

/// Spans by service, each with an id of its own.
#[derive(Default)]
pub struct Spans {
    by_service: BTreeMap<&'static str, Vec<Span>>,
    /// The last id given out.
    pub next_id: u64,
}

impl Spans {
    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        service: &'static str,
        trace: &[u8],
        parent: Option<&[u8]>,
        kind: i32,
        start_ns: u64,
        duration_ms: u64,
        error: bool,
    ) -> Vec<u8> {
        let span_id = self.id().to_be_bytes().to_vec();
        self.by_service.entry(service).or_default().push(Span {
            trace_id: trace.to_vec(),
            span_id: span_id.clone(),
            parent_span_id: parent.map(<[u8]>::to_vec).unwrap_or_default(),
            name: format!("{service} call"),
            kind,
            start_time_unix_nano: start_ns,
            end_time_unix_nano: start_ns + duration_ms * 1_000_000,
            status: Some(Status {
                code: if error { 2 } else { 1 },
                message: String::new(),
            }),
            ..Span::default()
        });
        span_id
    }

    /// A call from `caller` (under its span `parent`) to `callee`: CLIENT then SERVER.
    #[allow(clippy::too_many_arguments)]
    pub fn call(
        &mut self,
        caller: &'static str,
        callee: &'static str,
        trace: &[u8],
        parent: &[u8],
        start_ns: u64,
        duration_ms: u64,
        error: bool,
    ) -> Vec<u8> {
        let client = self.add(
            caller,
            trace,
            Some(parent),
            CLIENT,
            start_ns,
            duration_ms,
            false,
        );
        self.add(
            callee,
            trace,
            Some(&client),
            SERVER,
            start_ns + 1_000_000,
            duration_ms - 2,
            error,
        )
    }

    pub fn requests(self) -> Vec<ExportTraceServiceRequest> {
        self.by_service
            .into_iter()
            .map(|(service, spans)| request(service, spans))
            .collect()
    }
}
