//! `flowscope-graph`'s part and health's: the live graph's buckets, horizon and pairing, and
//! the operator's objectives.

use std::time::Duration;

use anyhow::bail;
use flowscope_graph::GraphConfig;
use flowscope_query::graph::health::Objective;

use super::{ObjectiveFile, PENDING_SPAN_BYTES, Settings, duration};

/// The live graph's config; its pairing store's share of memory is split among `tenants`.
pub(super) fn resolve(
    settings: &Settings,
    memory_limit: usize,
    tenants: usize,
) -> anyhow::Result<GraphConfig> {
    let mut graph = GraphConfig::default();
    graph.pairing_ttl = duration(
        "graph-pairing-ttl",
        settings.graph_pairing_ttl.clone(),
        graph.pairing_ttl,
    )?;
    graph.bucket = duration("graph-bucket", settings.graph_bucket.clone(), graph.bucket)?;
    graph.horizon = duration(
        "graph-horizon",
        settings.graph_horizon.clone(),
        graph.horizon,
    )?;
    if graph.bucket < Duration::from_secs(1)
        || graph.horizon < graph.bucket
        || graph.pairing_ttl.is_zero()
    {
        bail!(
            "--graph-bucket must be at least 1s, --graph-horizon at least one bucket, --graph-pairing-ttl above zero"
        );
    }
    // The pairing store holds about PENDING_SPAN_BYTES per span waiting for its other half;
    // all tenants' graphs together get an eighth of the memory ceiling.
    graph.max_pending_spans = graph
        .max_pending_spans
        .min(memory_limit / 8 / PENDING_SPAN_BYTES / tenants.max(1))
        .max(1000);
    Ok(graph)
}

/// The objectives of the config file, checked.
pub(super) fn objectives(given: Vec<ObjectiveFile>) -> anyhow::Result<Vec<Objective>> {
    given
        .into_iter()
        .map(|o| {
            let what = match &o.target {
                Some(target) => format!("objective for {} -> {target}", o.service),
                None => format!("objective for {}", o.service),
            };
            if o.service.is_empty() || o.target.as_deref() == Some("") {
                bail!("an objective's `service` and `target` must not be empty");
            }
            if o.p95_ms.is_none() && o.p99_ms.is_none() && o.error_rate.is_none() {
                bail!("{what} sets nothing: give p95_ms, p99_ms or error_rate");
            }
            for (name, value) in [("p95_ms", o.p95_ms), ("p99_ms", o.p99_ms)] {
                if let Some(value) = value
                    && !(value > 0.0 && value.is_finite())
                {
                    bail!("{what}: {name} must be a number of milliseconds above 0");
                }
            }
            if let Some(rate) = o.error_rate
                && !(0.0..1.0).contains(&rate)
            {
                bail!("{what}: error_rate is a fraction from 0 up to 1, e.g. 0.01 for 1%");
            }
            Ok(Objective {
                service: o.service,
                target: o.target,
                p95_ms: o.p95_ms,
                p99_ms: o.p99_ms,
                error_rate: o.error_rate,
            })
        })
        .collect()
}
