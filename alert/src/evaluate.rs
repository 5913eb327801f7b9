//! Alert evaluation as a plain function: the instances a rule had, the rows its SQL returned
//! now, and the time, give the instances it has next and the transitions to notify.
//!
//! A row's string (and boolean) columns are its labels and identify the instance; its
//! numeric columns are values. Other types (timestamps, lists, maps, binary) are skipped:
//! a timestamp in the labels would make a new instance at every evaluation. A boolean
//! column named `firing` is the row's condition instead of a label: a rule may return
//! its label sets whether or not they are wrong (`errors > 10 AS firing`), so that an
//! alert that resolves carries the values seen when it resolved.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::array_value_to_string;

/// The labels of an instance, sorted by name.
pub type Labels = BTreeMap<String, String>;
/// The numeric columns of an instance's row.
pub type Values = BTreeMap<String, f64>;

/// The column that, when boolean, says whether a row's condition holds.
pub const FIRING_COLUMN: &str = "firing";

/// Extra annotations of an alert (graph context), kept while it fires.
pub type Annotations = BTreeMap<String, String>;

/// One row of a rule's answer, split into labels and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub labels: Labels,
    pub values: Values,
    /// The `firing` column, true when the answer has none: a false row is only an
    /// observation of the label set's values.
    pub firing: bool,
}

/// Where an instance stands: returned but not yet for `for`, or firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Firing,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "firing" => Some(Self::Firing),
            _ => None,
        }
    }
}

/// A label set the rule's SQL currently returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub fingerprint: String,
    pub labels: Labels,
    pub values: Values,
    pub state: State,
    /// When the rule first returned this label set (unix ms).
    pub active_since: i64,
    /// When it became firing.
    pub fired_at: Option<i64>,
    /// The last evaluation whose condition held for it; a firing instance kept by
    /// `keep_firing_for` has an older one.
    pub last_seen: i64,
    /// Graph context added when it started firing.
    pub annotations: Annotations,
}

/// A change worth a notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The instance has now been returned for `for`.
    Firing(Instance),
    /// A firing instance is no longer returned; it ended at `ends_at`.
    Resolved { instance: Instance, ends_at: i64 },
}

impl Transition {
    pub fn instance(&self) -> &Instance {
        match self {
            Self::Firing(instance) | Self::Resolved { instance, .. } => instance,
        }
    }
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evaluation {
    /// Pending and firing instances after this evaluation, sorted by fingerprint.
    pub instances: Vec<Instance>,
    /// Firing and resolved changes, sorted by fingerprint.
    pub transitions: Vec<Transition>,
}

/// Steps a rule's instances forward to `now_ms` given the rows its SQL returned.
///
/// Rows are keyed by their labels plus `alertname` (the rule's name, which wins over a
/// column of that name); two rows with the same labels are one instance, the first row's
/// values kept. A new label set is pending, and firing at once when `for_ms` is 0; one
/// returned for `for_ms` becomes firing. One whose condition no longer holds (not
/// returned, or returned with `firing` false) is dropped silently when pending; when
/// firing it stays firing until its condition has not held for `keep_firing_for_ms`
/// (Prometheus's `keep_firing_for`), then resolves, carrying the values of the row that
/// returned it last (the observation at resolution when the rule returns one).
pub fn evaluate(
    rule_name: &str,
    previous: &[Instance],
    rows: &[Row],
    now_ms: i64,
    for_ms: i64,
    keep_firing_for_ms: i64,
) -> Evaluation {
    let before: HashMap<&str, &Instance> = previous
        .iter()
        .map(|instance| (instance.fingerprint.as_str(), instance))
        .collect();
    let mut current: BTreeMap<String, Instance> = BTreeMap::new();
    // Values of label sets returned with their condition false, by fingerprint.
    let mut observed: HashMap<String, Values> = HashMap::new();
    let mut transitions = Vec::new();
    for row in rows {
        let mut labels = row.labels.clone();
        labels.insert("alertname".into(), rule_name.into());
        let fingerprint = fingerprint(&labels);
        if current.contains_key(&fingerprint) || observed.contains_key(&fingerprint) {
            continue;
        }
        if !row.firing {
            observed.insert(fingerprint, row.values.clone());
            continue;
        }
        let old = before.get(fingerprint.as_str());
        let (active_since, was_firing, fired_at) = match old {
            Some(old) => (old.active_since, old.state == State::Firing, old.fired_at),
            None => (now_ms, false, None),
        };
        let fires = was_firing || now_ms.saturating_sub(active_since) >= for_ms;
        let instance = Instance {
            fingerprint: fingerprint.clone(),
            labels,
            values: row.values.clone(),
            state: if fires { State::Firing } else { State::Pending },
            active_since,
            fired_at: if was_firing {
                fired_at
            } else if fires {
                Some(now_ms)
            } else {
                None
            },
            last_seen: now_ms,
            annotations: old.map(|old| old.annotations.clone()).unwrap_or_default(),
        };
        if fires && !was_firing {
            transitions.push(Transition::Firing(instance.clone()));
        }
        current.insert(fingerprint, instance);
    }
    for old in previous {
        if old.state != State::Firing || current.contains_key(&old.fingerprint) {
            continue;
        }
        let mut instance = old.clone();
        if let Some(values) = observed.remove(&old.fingerprint) {
            instance.values = values;
        }
        if now_ms.saturating_sub(old.last_seen) < keep_firing_for_ms {
            current.insert(instance.fingerprint.clone(), instance);
        } else {
            transitions.push(Transition::Resolved {
                instance,
                ends_at: now_ms,
            });
        }
    }
    transitions.sort_by(|a, b| a.instance().fingerprint.cmp(&b.instance().fingerprint));
    Evaluation {
        instances: current.into_values().collect(),
        transitions,
    }
}

/// Prometheus's label-set fingerprint: FNV-1a 64 over the sorted names and values, each
/// followed by the byte 0xff, as 16 hex digits; the same labels give the same fingerprint
/// in flowscope, Prometheus and Alertmanager.
pub fn fingerprint(labels: &Labels) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    const SEPARATOR: u8 = 0xff;
    let mut hash = OFFSET;
    let mut add = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[SEPARATOR]);
        add(value.as_bytes());
        add(&[SEPARATOR]);
    }
    format!("{hash:016x}")
}

/// Splits a query's answer into rows: string and boolean columns become labels, numeric
/// columns values; nulls and other types are left out.
pub fn rows_of(batches: &[RecordBatch]) -> Vec<Row> {
    let mut rows = Vec::new();
    for batch in batches {
        let schema = batch.schema();
        let condition = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .find(|(field, _)| {
                field.name() == FIRING_COLUMN && field.data_type() == &DataType::Boolean
            })
            .and_then(|(_, array)| {
                array
                    .as_any()
                    .downcast_ref::<arrow::array::BooleanArray>()
                    .cloned()
            });
        let columns: Vec<(&str, Column)> = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .filter(|(field, _)| condition.is_none() || field.name() != FIRING_COLUMN)
            .filter_map(|(field, array)| Column::of(array).map(|c| (field.name().as_str(), c)))
            .collect();
        for index in 0..batch.num_rows() {
            let mut row = Row {
                labels: Labels::new(),
                values: Values::new(),
                // A null condition is not a true one.
                firing: condition
                    .as_ref()
                    .is_none_or(|c| c.is_valid(index) && c.value(index)),
            };
            for (name, column) in &columns {
                match column {
                    Column::Label(array) => {
                        if array.is_valid(index)
                            && let Ok(text) = array_value_to_string(array, index)
                        {
                            row.labels.insert((*name).to_string(), text);
                        }
                    }
                    Column::Value(array) => {
                        if let Some(value) = array
                            .as_any()
                            .downcast_ref::<arrow::array::Float64Array>()
                            .filter(|a| a.is_valid(index))
                            .map(|a| a.value(index))
                        {
                            row.values.insert((*name).to_string(), value);
                        }
                    }
                }
            }
            rows.push(row);
        }
    }
    rows
}

enum Column {
    Label(ArrayRef),
    /// Cast to Float64.
    Value(ArrayRef),
}

impl Column {
    fn of(array: &ArrayRef) -> Option<Self> {
        let data_type = array.data_type();
        let label = |t: &DataType| {
            matches!(
                t,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean
            )
        };
        match data_type {
            t if label(t) => Some(Self::Label(array.clone())),
            DataType::Dictionary(_, value) if label(value) => Some(Self::Label(array.clone())),
            t if t.is_numeric() => arrow::compute::cast(array, &DataType::Float64)
                .ok()
                .map(Self::Value),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, StringArray, TimestampNanosecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};

    use super::*;

    fn row(labels: &[(&str, &str)], values: &[(&str, f64)]) -> Row {
        Row {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            firing: true,
        }
    }

    /// Runs evaluations at the given times over the given rows and returns, after each,
    /// the states by service label and the transitions as `firing:<svc>`/`resolved:<svc>`.
    fn check(for_ms: i64, steps: &[(i64, &[&str])], expected: &[(&[&str], &[&str])]) {
        let mut instances = Vec::new();
        for ((now, services), (states, transitions)) in steps.iter().zip(expected) {
            let rows: Vec<Row> = services
                .iter()
                .map(|s| row(&[("service", s)], &[("errors", 1.0)]))
                .collect();
            let evaluation = evaluate("high errors", &instances, &rows, *now, for_ms, 0);
            let got_states: Vec<String> = evaluation
                .instances
                .iter()
                .map(|i| format!("{}={}", i.labels["service"], i.state.as_str()))
                .collect();
            let mut want_states: Vec<String> = states.iter().map(|s| s.to_string()).collect();
            let mut got_sorted = got_states.clone();
            got_sorted.sort();
            want_states.sort();
            assert_eq!(got_sorted, want_states, "states at {now}");
            let mut got_transitions: Vec<String> = evaluation
                .transitions
                .iter()
                .map(|t| match t {
                    Transition::Firing(i) => format!("firing:{}", i.labels["service"]),
                    Transition::Resolved { instance, .. } => {
                        format!("resolved:{}", instance.labels["service"])
                    }
                })
                .collect();
            got_transitions.sort();
            let mut want: Vec<String> = transitions.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(got_transitions, want, "transitions at {now}");
            instances = evaluation.instances;
        }
    }

    #[test]
    fn pending_becomes_firing_after_for_and_resolves_when_gone() {
        check(
            60_000,
            &[
                (0, &["a"]),
                (30_000, &["a"]),
                (60_000, &["a"]),
                (90_000, &[]),
            ],
            &[
                (&["a=pending"], &[]),
                (&["a=pending"], &[]),
                (&["a=firing"], &["firing:a"]),
                (&[], &["resolved:a"]),
            ],
        );
    }

    #[test]
    fn for_zero_fires_at_once_and_firing_does_not_repeat() {
        check(
            0,
            &[(0, &["a", "b"]), (1_000, &["a", "b"]), (2_000, &["b"])],
            &[
                (&["a=firing", "b=firing"], &["firing:a", "firing:b"]),
                (&["a=firing", "b=firing"], &[]),
                (&["b=firing"], &["resolved:a"]),
            ],
        );
    }

    #[test]
    fn vanishing_while_pending_is_dropped_silently_and_coming_back_starts_over() {
        check(
            10_000,
            &[
                (0, &["a"]),
                (5_000, &[]),
                (8_000, &["a"]),
                (15_000, &["a"]),
                (18_000, &["a"]),
            ],
            &[
                (&["a=pending"], &[]),
                (&[], &[]),
                (&["a=pending"], &[]),
                (&["a=pending"], &[]),
                (&["a=firing"], &["firing:a"]),
            ],
        );
    }

    #[test]
    fn keep_firing_for_rides_out_a_flapping_condition_then_resolves_once() {
        // Returned, gone, returned, gone for good: with keep_firing_for 3s one firing and
        // one resolved, 3s after the condition last held.
        let mut instances = Vec::new();
        let mut seen = Vec::new();
        for (now, returned) in [
            (0, true),
            (1_000, false),
            (2_000, true),
            (3_000, false),
            (4_000, false),
            (5_000, false),
        ] {
            let rows = if returned {
                vec![row(&[("service", "a")], &[("errors", 5.0)])]
            } else {
                vec![]
            };
            let evaluation = evaluate("flappy", &instances, &rows, now, 0, 3_000);
            for transition in &evaluation.transitions {
                seen.push(match transition {
                    Transition::Firing(_) => format!("firing@{now}"),
                    Transition::Resolved { ends_at, .. } => format!("resolved@{ends_at}"),
                });
            }
            instances = evaluation.instances;
        }
        assert_eq!(seen, ["firing@0", "resolved@5000"]);
        assert!(instances.is_empty());
    }

    #[test]
    fn a_resolved_alert_carries_the_values_observed_when_it_resolved() {
        let observation = |errors: f64| Row {
            firing: false,
            ..row(&[("service", "a")], &[("errors", errors)])
        };
        let fired = evaluate(
            "r",
            &[],
            &[row(&[("service", "a")], &[("errors", 12.0)])],
            0,
            0,
            0,
        );
        let resolved = evaluate("r", &fired.instances, &[observation(0.0)], 1_000, 0, 0);
        match resolved.transitions.as_slice() {
            [Transition::Resolved { instance, ends_at }] => {
                assert_eq!(instance.values["errors"], 0.0, "the value at resolution");
                assert_eq!(*ends_at, 1_000);
            }
            other => panic!("{other:?}"),
        }
        // An observation never starts an alert, and a row gone altogether resolves with
        // the last values seen.
        assert!(
            evaluate("r", &[], &[observation(1.0)], 0, 0, 0)
                .instances
                .is_empty()
        );
        let gone = evaluate("r", &fired.instances, &[], 1_000, 0, 0);
        assert_eq!(gone.transitions[0].instance().values["errors"], 12.0);
    }

    #[test]
    fn a_boolean_firing_column_is_the_condition_not_a_label() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("service", DataType::Utf8, false),
            Field::new("firing", DataType::Boolean, true),
            Field::new("errors", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
                Arc::new(arrow::array::BooleanArray::from(vec![
                    Some(true),
                    Some(false),
                    None,
                ])),
                Arc::new(Int64Array::from(vec![12, 0, 1])),
            ],
        )
        .unwrap();
        let rows = rows_of(&[batch]);
        let firing: Vec<bool> = rows.iter().map(|r| r.firing).collect();
        assert_eq!(firing, [true, false, false]);
        assert!(rows.iter().all(|r| !r.labels.contains_key("firing")));
    }

    #[test]
    fn rows_with_the_same_labels_are_one_instance_with_the_first_values() {
        let rows = [
            row(&[("service", "a")], &[("errors", 1.0)]),
            row(&[("service", "a")], &[("errors", 2.0)]),
            row(&[("service", "b")], &[]),
        ];
        let evaluation = evaluate("r", &[], &rows, 5, 0, 0);
        assert_eq!(evaluation.instances.len(), 2);
        let a = evaluation
            .instances
            .iter()
            .find(|i| i.labels["service"] == "a")
            .unwrap();
        assert_eq!(a.values["errors"], 1.0);
        assert_eq!(a.labels["alertname"], "r");
        assert_eq!(a.fired_at, Some(5));
        assert_eq!(evaluation.transitions.len(), 2);
    }

    #[test]
    fn the_rule_name_wins_over_an_alertname_column() {
        let evaluation = evaluate(
            "rule",
            &[],
            &[row(&[("alertname", "column")], &[])],
            0,
            0,
            0,
        );
        assert_eq!(evaluation.instances[0].labels["alertname"], "rule");
    }

    #[test]
    fn fingerprints_are_prometheus_compatible_and_order_free() {
        // Prometheus's model.LabelSet{}.Fingerprint() is the FNV-1a offset basis.
        assert_eq!(fingerprint(&Labels::new()), "cbf29ce484222325");
        let one: Labels = [("a", "1"), ("b", "2")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let two: Labels = [("b", "2"), ("a", "1")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(fingerprint(&one), fingerprint(&two));
        assert_eq!(fingerprint(&one).len(), 16);
        let other: Labels = [("a", "12"), ("b", "")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_ne!(fingerprint(&one), fingerprint(&other), "separators count");
    }

    #[test]
    fn strings_are_labels_numbers_values_and_timestamps_are_skipped() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("service", DataType::Utf8, true),
            Field::new("calls", DataType::Int64, false),
            Field::new("p99_ms", DataType::Float64, true),
            Field::new(
                "last",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("checkout"), None])),
                Arc::new(Int64Array::from(vec![12, 3])),
                Arc::new(Float64Array::from(vec![Some(250.5), None])),
                Arc::new(TimestampNanosecondArray::from(vec![1, 2]).with_timezone("UTC")),
            ],
        )
        .unwrap();
        let rows = rows_of(&[batch]);
        assert_eq!(
            rows,
            vec![
                row(
                    &[("service", "checkout")],
                    &[("calls", 12.0), ("p99_ms", 250.5)]
                ),
                row(&[], &[("calls", 3.0)]),
            ]
        );
    }
}
