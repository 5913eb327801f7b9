//! The scheduler: one task that runs each rule every `interval`, never two runs of a rule at
//! once, and reads the rules again every tick so created, updated and deleted rules take
//! effect without a restart. Between evaluations it sends the notifications of a rule's
//! groups when their `group_wait` or `group_interval` ends (`state::flush`), in the same
//! one-task-per-rule way, so a rule's groups are never flushed twice at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowscope_base::liveness::{Liveness, Stage};
use flowscope_base::telemetry::Telemetry;
use flowscope_query::SqlEngine;
use tokio::task::JoinSet;

use crate::evaluate::{Transition, evaluate, rows_of};
use crate::rules::{self, Rule};
use crate::state::{self, Committed, Extra};
use crate::{AlertError, Metadata};
use crate::{context, now_ms};

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Where users reach this flowscope (`--external-url`), for links in notifications.
    pub external_url: String,
    /// How often the rules are read again and due ones started; the finest interval.
    pub tick: Duration,
    /// Rows a rule may return; more is an error, since the missing rows would resolve.
    pub max_rows: usize,
    /// Where the scheduler registers and counts the errors it survives (reading the rules,
    /// an evaluation that panicked, recording a failure).
    pub liveness: Arc<Liveness>,
    /// Where evaluations are counted by tenant and outcome, with their duration (`/metrics`).
    pub telemetry: Arc<Telemetry>,
    /// This process's name in rule leases (`rules::take_lease`): unique per process.
    pub owner: String,
}

/// A name for this process in leases: the host, the process id and the start time.
pub fn process_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_default();
    format!(
        "{host}:{}:{}",
        std::process::id(),
        flowscope_base::clock::now_ns()
    )
}

impl SchedulerConfig {
    pub fn new(external_url: impl Into<String>) -> Self {
        Self {
            external_url: external_url.into(),
            tick: Duration::from_secs(1),
            max_rows: 10_000,
            liveness: Liveness::new(),
            telemetry: Arc::default(),
            owner: process_owner(),
        }
    }
}

/// Evaluates one rule at `now_ms`: runs its SQL within its interval (and the engine's
/// timeout), steps its instances, adds graph context to what starts firing, and commits.
pub async fn evaluate_rule(
    metadata: &Metadata,
    engine: &SqlEngine,
    config: &SchedulerConfig,
    tenant: &str,
    rule: &Rule,
    now_ms: i64,
) -> Result<Committed, AlertError> {
    let output = engine
        .query_within(&rule.spec.sql, config.max_rows, rule.spec.interval)
        .await
        .map_err(|e| AlertError::BadInput(format!("the rule's SQL failed: {e}")))?;
    if output.truncated {
        return Err(AlertError::BadInput(format!(
            "the rule's SQL returned more than {} rows; aggregate so that each row is one thing that is wrong",
            config.max_rows
        )));
    }
    let rows = rows_of(&output.batches);
    let previous = state::instances(metadata.pool(), rule.id).await?;
    let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let evaluation = evaluate(
        &rule.spec.name,
        &previous,
        &rows,
        now_ms,
        millis(rule.spec.for_),
        millis(rule.spec.keep_firing_for),
    );
    let mut extra = Extra::new();
    let firing = evaluation.transitions.iter().filter_map(|t| match t {
        Transition::Firing(instance) => Some(instance),
        Transition::Resolved { .. } => None,
    });
    for instance in firing.take(context::MAX_ALERTS_WITH_CONTEXT) {
        let annotations = context::annotations(engine, &instance.labels).await;
        if !annotations.is_empty() {
            extra.insert(instance.fingerprint.clone(), annotations);
        }
    }
    state::commit(
        metadata.pool(),
        tenant,
        rule,
        &evaluation,
        &extra,
        &config.external_url,
        now_ms,
    )
    .await
}

/// When a rule runs next, and the version of it that was scheduled.
struct Slot {
    updated_at: i64,
    next: Instant,
}

/// Each tenant's SQL engine, by tenant name: a rule only ever runs in its own tenant's.
pub type Engines = Arc<BTreeMap<String, Arc<SqlEngine>>>;

/// Runs the rules until `stop` completes, then waits for the evaluations in flight.
pub async fn run(
    metadata: Metadata,
    engines: Engines,
    config: SchedulerConfig,
    stop: impl Future<Output = ()>,
) {
    // Marks the scheduler stopped if this task ends (or panics) before shutdown.
    let _alive = config.liveness.start(Stage::AlertScheduler);
    let config = Arc::new(config);
    let mut slots: HashMap<i64, Slot> = HashMap::new();
    let mut running: HashMap<tokio::task::Id, i64> = HashMap::new();
    // Rules whose tenant has no engine (no token any more), reported once each.
    let mut orphans: HashSet<i64> = HashSet::new();
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut tick = tokio::time::interval(config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(done) = tasks.join_next_with_id() => {
                let id = match &done {
                    Ok((id, ())) => *id,
                    Err(error) => error.id(),
                };
                if let Err(error) = done {
                    config.liveness.error(Stage::AlertScheduler);
                    tracing::error!(%error, "an alert rule evaluation panicked");
                }
                running.remove(&id);
            }
            _ = tick.tick() => {
                let rules = match rules::list_all(metadata.pool()).await {
                    Ok(rules) => rules,
                    Err(error) => {
                        config.liveness.error(Stage::AlertScheduler);
                        tracing::warn!(%error, "cannot read the alert rules; trying again next tick");
                        continue;
                    }
                };
                let now = Instant::now();
                let now_wall = now_ms();
                // A failure here only delays notifications to the next tick.
                let flushes = match state::next_flushes(metadata.pool()).await {
                    Ok(flushes) => flushes,
                    Err(error) => {
                        config.liveness.error(Stage::AlertScheduler);
                        tracing::warn!(%error, "cannot read the alert groups; trying again next tick");
                        BTreeMap::new()
                    }
                };
                let busy: Vec<i64> = running.values().copied().collect();
                slots.retain(|id, _| rules.iter().any(|(_, rule)| rule.id == *id));
                for (tenant, rule) in rules {
                    let slot = slots.entry(rule.id).or_insert(Slot { updated_at: rule.updated_at, next: now });
                    if slot.updated_at != rule.updated_at {
                        // An edited rule runs at once with its new SQL and interval.
                        *slot = Slot { updated_at: rule.updated_at, next: now };
                    }
                    if busy.contains(&rule.id) {
                        continue;
                    }
                    if slot.next > now {
                        // Not evaluated now; its groups may still be due.
                        if flushes.get(&rule.id).is_some_and(|due| *due <= now_wall) {
                            let (metadata, config) = (metadata.clone(), config.clone());
                            let rule_id = rule.id;
                            let handle = tasks.spawn(async move {
                                flush_one(&metadata, &config, &tenant, &rule).await;
                            });
                            running.insert(handle.id(), rule_id);
                        }
                        continue;
                    }
                    slot.next = now + rule.spec.interval;
                    let Some(engine) = engines.get(&tenant).cloned() else {
                        // Its tenant has no token any more: kept, but not run.
                        if orphans.insert(rule.id) {
                            tracing::warn!(rule = %rule.spec.name, %tenant, "alert rule not run: no token belongs to its tenant");
                        }
                        continue;
                    };
                    let (metadata, config) = (metadata.clone(), config.clone());
                    let rule_id = rule.id;
                    let handle = tasks.spawn(async move {
                        run_one(&metadata, &engine, &config, &tenant, &rule).await;
                    });
                    running.insert(handle.id(), rule_id);
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Takes the rule's lease for one interval and two ticks (so the holder renews it before it
/// ends); `false` when another process holds it, or the database cannot say.
async fn leased(metadata: &Metadata, config: &SchedulerConfig, rule: &Rule) -> bool {
    let now = now_ms();
    let hold = rule.spec.interval + config.tick * 2;
    let until = now.saturating_add(i64::try_from(hold.as_millis()).unwrap_or(i64::MAX));
    match rules::take_lease(metadata.pool(), rule.id, &config.owner, now, until).await {
        Ok(taken) => taken,
        Err(error) => {
            config.liveness.error(Stage::AlertScheduler);
            tracing::warn!(rule = %rule.spec.name, %error, "cannot take the alert rule's lease; trying again next tick");
            false
        }
    }
}

async fn flush_one(metadata: &Metadata, config: &SchedulerConfig, tenant: &str, rule: &Rule) {
    if !leased(metadata, config, rule).await {
        return;
    }
    match state::flush(
        metadata.pool(),
        tenant,
        rule,
        &config.external_url,
        now_ms(),
    )
    .await
    {
        Ok(committed) if !committed.messages.is_empty() => {
            metadata.delivery_waker().wake();
            tracing::info!(
                rule = %rule.spec.name,
                notifications = committed.messages.len(),
                "alert group notified"
            );
        }
        Ok(_) => {}
        Err(error) => {
            config.liveness.error(Stage::AlertScheduler);
            tracing::warn!(rule = %rule.spec.name, %error, "cannot send the alert group's notifications; trying again next tick");
        }
    }
}

async fn run_one(
    metadata: &Metadata,
    engine: &SqlEngine,
    config: &SchedulerConfig,
    tenant: &str,
    rule: &Rule,
) {
    if !leased(metadata, config, rule).await {
        return;
    }
    let now = now_ms();
    let started = Instant::now();
    let evaluated = evaluate_rule(metadata, engine, config, tenant, rule, now).await;
    let outcome = if evaluated.is_ok() { "ok" } else { "failed" };
    config
        .telemetry
        .alert_evaluations
        .add((tenant.to_string(), outcome), 1);
    config
        .telemetry
        .alert_duration
        .observe(tenant.to_string(), started.elapsed());
    match evaluated {
        Ok(committed) if committed.transitions > 0 || !committed.messages.is_empty() => {
            if !committed.messages.is_empty() {
                metadata.delivery_waker().wake();
            }
            tracing::info!(
                rule = %rule.spec.name,
                transitions = committed.transitions,
                notifications = committed.messages.len(),
                "alert state changed"
            );
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(rule = %rule.spec.name, %error, "alert rule evaluation failed");
            if let Err(error) =
                rules::record_failure(metadata.pool(), rule.id, now, &error.to_string()).await
            {
                config.liveness.error(Stage::AlertScheduler);
                tracing::warn!(rule = %rule.spec.name, %error, "cannot record the failure");
            }
        }
    }
}
