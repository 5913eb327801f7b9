//! Where a service runs and whose it is: the most frequent values of a few resource
//! attributes per service node (issue 25: nodes carry their namespace, environment and zone,
//! so a graph can be grouped by them and the dashboard needs no SQL query for its filters).
//!
//! Reading a span's resource attributes is a scan of its map, so the graph reads them once
//! per run of rows of one service in a batch (an exporter's batch is one resource, so
//! usually once per batch), not once per span. Each service keeps at most
//! [`VALUES_PER_KEY`] candidate values per key, counted with the Misra–Gries rule (a value
//! not among them takes one from each), so a service that moves to another namespace shows
//! the new one once the new one outnumbers the old among recent batches. A service not seen
//! for a horizon is forgotten.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{FastMap, FastSet};

/// The resource attributes a node carries (OpenTelemetry semantic conventions), in the
/// order the API lists them.
pub const NODE_ATTRIBUTE_KEYS: [&str; 8] = [
    "service.namespace",
    "k8s.namespace.name",
    "deployment.environment.name",
    "deployment.environment",
    "k8s.cluster.name",
    "cloud.region",
    "cloud.availability_zone",
    "host.name",
];

/// Candidate values kept per service and key.
const VALUES_PER_KEY: usize = 4;

/// A node's attributes: key → its most frequent value. Shared by every snapshot that shows
/// the node until the value changes.
pub type NodeAttributes = Arc<BTreeMap<String, String>>;

#[derive(Debug, Default)]
struct Counts {
    /// (key index, value, count).
    values: Vec<(u8, Arc<str>, u64)>,
    last_seen_ns: i64,
}

impl Counts {
    /// Counts `value` `weight` times (Misra–Gries: a new value among full candidates takes
    /// the same weight from each, and takes a place if any is left).
    fn add(&mut self, key: u8, value: &str, weight: u64) {
        if let Some(slot) = self
            .values
            .iter_mut()
            .find(|(k, v, _)| *k == key && &**v == value)
        {
            slot.2 += weight;
            return;
        }
        let held = self.values.iter().filter(|(k, _, _)| *k == key).count();
        if held < VALUES_PER_KEY {
            self.values.push((key, Arc::from(value), weight));
            return;
        }
        let smallest = self
            .values
            .iter()
            .filter(|(k, _, _)| *k == key)
            .map(|(_, _, count)| *count)
            .min()
            .unwrap_or(0);
        let taken = smallest.min(weight);
        for slot in self.values.iter_mut().filter(|(k, _, _)| *k == key) {
            slot.2 -= taken;
        }
        self.values.retain(|(_, _, count)| *count > 0);
        if weight > taken {
            self.values.push((key, Arc::from(value), weight - taken));
        }
    }

    fn top(&self) -> BTreeMap<String, String> {
        let mut best: BTreeMap<u8, (&str, u64)> = BTreeMap::new();
        for (key, value, count) in &self.values {
            let slot = best.entry(*key).or_insert((value, *count));
            if *count > slot.1 || (*count == slot.1 && &**value < slot.0) {
                *slot = (value, *count);
            }
        }
        best.into_iter()
            .filter_map(|(key, (value, _))| {
                let name = NODE_ATTRIBUTE_KEYS.get(usize::from(key))?;
                Some((name.to_string(), value.to_string()))
            })
            .collect()
    }
}

/// Every service's counts, and the most frequent values as snapshots hand them out.
#[derive(Debug, Default)]
pub(crate) struct AttributeTable {
    counts: FastMap<Arc<str>, Counts>,
    /// Services whose counts changed since `top` was brought up to date.
    changed: FastSet<Arc<str>>,
    top: Arc<FastMap<Arc<str>, NodeAttributes>>,
}

impl AttributeTable {
    /// Counts `values` (key index, value) seen on `spans` spans of `service` at `now_ns`.
    pub fn note(&mut self, service: &Arc<str>, values: &[(u8, &str)], spans: u64, now_ns: i64) {
        let counts = match self.counts.get_mut(service) {
            Some(counts) => counts,
            None => self.counts.entry(service.clone()).or_default(),
        };
        counts.last_seen_ns = now_ns;
        for (key, value) in values {
            counts.add(*key, value, spans);
        }
        if !values.is_empty() && !self.changed.contains(service) {
            self.changed.insert(service.clone());
        }
    }

    /// Forgets services not seen since `before_ns` (run now and then: it looks at every
    /// service).
    pub fn forget(&mut self, before_ns: i64) {
        let forgotten: Vec<Arc<str>> = self
            .counts
            .iter()
            .filter(|(_, counts)| counts.last_seen_ns < before_ns)
            .map(|(name, _)| name.clone())
            .collect();
        if forgotten.is_empty() {
            return;
        }
        let top = Arc::make_mut(&mut self.top);
        for name in &forgotten {
            self.counts.remove(name);
            self.changed.remove(name);
            top.remove(name);
        }
    }

    /// Brings the most frequent values of the services counted since the last call up to
    /// date (a copy of the map only when a window still holds it): run after each batch, so
    /// a node carries its attributes from its first span.
    pub fn refresh(&mut self) {
        if self.changed.is_empty() {
            return;
        }
        // Only values that differ replace the shared map's (a copy of it when a window
        // still holds it): in the steady state a batch changes counts, not the winners.
        let mut updates = Vec::new();
        for name in self.changed.drain() {
            let Some(counts) = self.counts.get(&name) else {
                continue;
            };
            let values = counts.top();
            if self.top.get(&name).is_none_or(|old| **old != values) {
                updates.push((name, values));
            }
        }
        if updates.is_empty() {
            return;
        }
        let top = Arc::make_mut(&mut self.top);
        for (name, values) in updates {
            top.insert(name, Arc::new(values));
        }
    }

    /// The most frequent values of every service, as of the last refresh.
    pub fn top(&self) -> Arc<FastMap<Arc<str>, NodeAttributes>> {
        self.top.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_frequent_value_wins_and_a_move_shows_once_the_new_value_outnumbers() {
        let mut table = AttributeTable::default();
        let a: Arc<str> = Arc::from("a");
        for _ in 0..5 {
            table.note(&a, &[(0, "shop"), (6, "zone-1")], 1, 1);
        }
        table.note(&a, &[(0, "billing")], 1, 1);
        table.refresh();
        let top = table.top();
        assert_eq!(top[&a].get("service.namespace").unwrap(), "shop");
        assert_eq!(top[&a].get("cloud.availability_zone").unwrap(), "zone-1");
        // Many other values: the candidates stay bounded and the old value fades.
        for i in 0..100 {
            table.note(&a, &[(0, &format!("n{i}"))], 1, 2);
            table.note(&a, &[(0, "payments")], 1, 2);
        }
        for _ in 0..10 {
            table.note(&a, &[(0, "payments")], 1, 2);
        }
        assert!(table.counts[&a].values.len() <= VALUES_PER_KEY + 1);
        table.refresh();
        assert_eq!(
            table.top()[&a].get("service.namespace").unwrap(),
            "payments"
        );
        // A window holding the old map keeps it.
        assert_eq!(top[&a].get("service.namespace").unwrap(), "shop");
        // Not seen since: forgotten.
        table.forget(3);
        assert!(table.top().is_empty());
    }
}
