//! `flowscope-collector`'s part: what a receiver accepts.

use std::sync::Arc;

use anyhow::bail;
use flowscope_auth::Access;
use flowscope_collector::CollectorConfig;
use flowscope_query::StoreConfig;

use super::{Note, Settings, size};

/// The receivers' config; the HTTP/2 keepalive is set with the connections' part.
pub(super) fn resolve(
    settings: &Settings,
    access: &Arc<Access>,
    store: &StoreConfig,
    memory_limit: usize,
    notes: &mut Vec<Note>,
) -> anyhow::Result<CollectorConfig> {
    let mut collector = CollectorConfig {
        max_request_bytes: size(
            "max-request-size",
            settings.max_request_size.clone(),
            64 << 20,
        )?,
        access: access.clone(),
        memory: store.memory.clone(),
        retention: Some(store.retention),
        ..CollectorConfig::default()
    };
    if collector.max_request_bytes < 1024 {
        bail!("--max-request-size must be at least 1KiB");
    }
    // A request holds a few times its size while it is read and decoded; one that can never
    // fit in the request budget must be refused for good (413), not answered "retry later"
    // forever.
    let fits = memory_limit / 8 / flowscope_collector::REQUEST_MEMORY_FACTOR;
    if collector.max_request_bytes > fits {
        notes.push(Note::RequestSizeLowered {
            asked: collector.max_request_bytes,
            lowered_to: fits,
        });
        collector.max_request_bytes = fits;
    }
    Ok(collector)
}
