//! `/api/alert-rules` (create, list, read, replace, delete), `GET /api/alerts` (current
//! instances, the silences that mute them, and recent transitions) and `/api/silences`
//! (list, create, read, expire), as JSON.

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use flowscope_alert::evaluate::Instance;
use flowscope_alert::now_ms;
use flowscope_alert::payload::rfc3339;
use flowscope_alert::rules::{self, Rule, RuleInput, RuleSpec};
use flowscope_alert::silences::{self, Matcher, Silence, SilenceInput};
use flowscope_alert::state;
use flowscope_base::format_duration;
use flowscope_query::QueryError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::ApiState;
use crate::auth::{Caller, Manager, Reader};
use crate::error::ApiError;

/// History entries `GET /api/alerts` returns unless `limit` says otherwise, and at most.
const DEFAULT_HISTORY: u32 = 100;
const MAX_HISTORY: u32 = 1_000;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/alert-rules", get(list_rules).post(create_rule))
        .route(
            "/api/alert-rules/{id}",
            get(get_rule).put(replace_rule).delete(delete_rule),
        )
        .route("/api/alerts", get(get_alerts))
        .route("/api/silences", get(list_silences).post(create_silence))
        .route(
            "/api/silences/{id}",
            get(get_silence).delete(expire_silence),
        )
}

/// The body of POST and PUT.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    name: String,
    sql: String,
    #[serde(default = "default_interval")]
    interval: String,
    #[serde(rename = "for", default = "default_for")]
    for_: String,
    #[serde(default)]
    webhooks: Vec<i64>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    group_by: Vec<String>,
    group_wait: Option<String>,
    group_interval: Option<String>,
    repeat_interval: Option<String>,
    keep_firing_for: Option<String>,
}

fn default_interval() -> String {
    "1m".into()
}

fn default_for() -> String {
    "0s".into()
}

const EXAMPLE: &str = r#"{"name": "checkout errors", "sql": "SELECT service_name, count(*) AS errors FROM spans WHERE status_code = 'ERROR' AND start_time > now() - INTERVAL '5 minutes' GROUP BY service_name HAVING count(*) > 10", "interval": "30s", "for": "2m", "webhooks": [1], "annotations": {"summary": "errors in checkout"}}"#;

/// Parses and validates a body, including a plan of its SQL.
async fn spec_of(
    caller: &Caller,
    body: Result<Json<RuleBody>, JsonRejection>,
) -> Result<RuleSpec, ApiError> {
    let Json(body) = body.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "the body must be JSON like {EXAMPLE} with Content-Type: application/json ({})",
            rejection.body_text()
        ))
    })?;
    let spec = RuleSpec::parse(RuleInput {
        name: body.name,
        sql: body.sql,
        interval: body.interval,
        for_: body.for_,
        webhooks: body.webhooks,
        annotations: body.annotations,
        group_by: body.group_by,
        group_wait: body.group_wait,
        group_interval: body.group_interval,
        repeat_interval: body.repeat_interval,
        keep_firing_for: body.keep_firing_for,
    })?;
    match caller.view.engine.check(&spec.sql).await {
        Ok(()) => Ok(spec),
        Err(QueryError::Invalid(message) | QueryError::NotAllowed(message)) => Err(
            ApiError::BadRequest(format!("the rule's SQL does not plan: {message}")),
        ),
        Err(other) => Err(other.into()),
    }
}

/// The rule id of the path, or a JSON 400 that says what an id looks like.
fn rule_id(path: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    path.map(|Path(id)| id).map_err(|rejection| {
        ApiError::BadRequest(format!(
            "{}; a rule id is the whole number POST /api/alert-rules answered, e.g. /api/alert-rules/1",
            rejection.body_text()
        ))
    })
}

fn rule_json(rule: &Rule) -> Value {
    json!({
        "id": rule.id,
        "name": rule.spec.name,
        "sql": rule.spec.sql,
        "interval": format_duration(rule.spec.interval),
        "for": format_duration(rule.spec.for_),
        "webhooks": rule.spec.webhooks,
        "annotations": rule.spec.annotations,
        "group_by": rule.spec.group_by,
        "group_wait": format_duration(rule.spec.group_wait),
        "group_interval": format_duration(rule.spec.group_interval),
        "repeat_interval": format_duration(rule.spec.repeat_interval),
        "keep_firing_for": format_duration(rule.spec.keep_firing_for),
        "created_at": rfc3339(rule.created_at),
        "updated_at": rfc3339(rule.updated_at),
        "last_evaluation": rule.last_evaluation.map(rfc3339),
        "last_error": rule.last_error,
    })
}

async fn create_rule(
    State(state): State<ApiState>,
    Manager(caller): Manager,
    body: Result<Json<RuleBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec = spec_of(&caller, body).await?;
    let id = rules::create(state.metadata.pool(), caller.tenant(), &spec, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

async fn list_rules(
    State(state): State<ApiState>,
    Reader(caller): Reader,
) -> Result<Json<Value>, ApiError> {
    let rules = rules::list(state.metadata.pool(), caller.tenant()).await?;
    Ok(Json(
        json!({ "rules": rules.iter().map(rule_json).collect::<Vec<_>>() }),
    ))
}

async fn get_rule(
    State(state): State<ApiState>,
    Reader(caller): Reader,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = rule_id(id)?;
    let rule = rules::get(state.metadata.pool(), caller.tenant(), id).await?;
    Ok(Json(rule_json(&rule)))
}

async fn replace_rule(
    State(state): State<ApiState>,
    Manager(caller): Manager,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<RuleBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = rule_id(id)?;
    let spec = spec_of(&caller, body).await?;
    let pool = state.metadata.pool();
    rules::update(pool, caller.tenant(), id, &spec, now_ms()).await?;
    let rule = rules::get(pool, caller.tenant(), id).await?;
    Ok(Json(rule_json(&rule)))
}

async fn delete_rule(
    State(state): State<ApiState>,
    Manager(caller): Manager,
    id: Result<Path<i64>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = rule_id(id)?;
    let external_url = state.info.external_url.clone().unwrap_or_default();
    let deleted = state::delete_rule(
        state.metadata.pool(),
        caller.tenant(),
        id,
        &external_url,
        now_ms(),
    )
    .await?;
    if !deleted.messages.is_empty() {
        state.metadata.delivery_waker().wake();
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    limit: Option<u32>,
}

fn instance_json(
    rule_id: i64,
    rule_name: &str,
    instance: &Instance,
    silenced_by: Vec<i64>,
) -> Value {
    json!({
        "rule_id": rule_id,
        "rule": rule_name,
        "fingerprint": instance.fingerprint,
        "labels": instance.labels,
        "values": instance.values,
        "state": instance.state.as_str(),
        "activeSince": rfc3339(instance.active_since),
        "firedAt": instance.fired_at.map(rfc3339),
        "lastSeen": rfc3339(instance.last_seen),
        "silenced_by": silenced_by,
    })
}

async fn get_alerts(
    State(state): State<ApiState>,
    Reader(caller): Reader,
    query: Result<Query<AlertsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "{}; the only parameter is limit, a whole number of history entries, e.g. /api/alerts?limit=50",
            rejection.body_text()
        ))
    })?;
    let limit = query.limit.unwrap_or(DEFAULT_HISTORY).min(MAX_HISTORY);
    let pool = state.metadata.pool();
    let current = state::current(pool, caller.tenant()).await?;
    let history = state::history(pool, caller.tenant(), limit).await?;
    let silences = silences::active_now(pool, caller.tenant(), now_ms()).await?;
    Ok(Json(json!({
        "alerts": current
            .iter()
            .map(|c| {
                let silenced_by = silences.silenced_by(&c.instance.labels);
                instance_json(c.rule_id, &c.rule_name, &c.instance, silenced_by)
            })
            .collect::<Vec<_>>(),
        "history": history
            .iter()
            .map(|h| json!({
                "rule_id": h.rule_id,
                "rule": h.rule_name,
                "fingerprint": h.fingerprint,
                "labels": h.labels,
                "values": h.values,
                "status": h.status,
                "startsAt": rfc3339(h.starts_at),
                "endsAt": h.ends_at.map(rfc3339),
                "at": rfc3339(h.at),
            }))
            .collect::<Vec<_>>(),
    })))
}

/// The body of `POST /api/silences`, in Alertmanager's API shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SilenceBody {
    matchers: Vec<Matcher>,
    starts_at: Option<String>,
    ends_at: String,
    created_by: String,
    comment: String,
}

const SILENCE_EXAMPLE: &str = r#"{"matchers": [{"name": "service", "value": "checkout", "isRegex": false, "isEqual": true}], "endsAt": "2030-01-01T12:00:00Z", "createdBy": "ana", "comment": "deploying checkout"}"#;

/// An RFC 3339 time as unix ms, or a 400 naming the field.
fn time_of(field: &str, text: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            ApiError::BadRequest(format!(
                "`{field}` `{text}` is not an RFC 3339 time ({e}); write e.g. \"2030-01-01T12:00:00Z\""
            ))
        })
}

fn silence_json(silence: &Silence, now: i64) -> Value {
    json!({
        "id": silence.id,
        "matchers": silence.matchers.iter().map(|m| json!({
            "name": m.name,
            "value": m.value,
            "isRegex": m.is_regex,
            "isEqual": m.is_equal,
        })).collect::<Vec<_>>(),
        "startsAt": rfc3339(silence.starts_at),
        "endsAt": rfc3339(silence.ends_at),
        "createdBy": silence.created_by,
        "comment": silence.comment,
        "status": {"state": silence.state(now).as_str()},
        "updatedAt": rfc3339(silence.updated_at),
    })
}

/// The silence id of the path, or a JSON 400 that says what an id looks like.
fn silence_id(path: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    path.map(|Path(id)| id).map_err(|rejection| {
        ApiError::BadRequest(format!(
            "{}; a silence id is the whole number POST /api/silences answered, e.g. /api/silences/1",
            rejection.body_text()
        ))
    })
}

async fn create_silence(
    State(state): State<ApiState>,
    Manager(caller): Manager,
    body: Result<Json<SilenceBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "the body must be JSON like {SILENCE_EXAMPLE} with Content-Type: application/json ({})",
            rejection.body_text()
        ))
    })?;
    let input = SilenceInput {
        matchers: body.matchers,
        starts_at: body
            .starts_at
            .as_deref()
            .map(|t| time_of("startsAt", t))
            .transpose()?,
        ends_at: time_of("endsAt", &body.ends_at)?,
        created_by: body.created_by,
        comment: body.comment,
    };
    let id = silences::create(state.metadata.pool(), caller.tenant(), &input, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

async fn list_silences(
    State(state): State<ApiState>,
    Reader(caller): Reader,
) -> Result<Json<Value>, ApiError> {
    let now = now_ms();
    let all = silences::list(state.metadata.pool(), caller.tenant()).await?;
    Ok(Json(json!({
        "silences": all.iter().map(|s| silence_json(s, now)).collect::<Vec<_>>()
    })))
}

async fn get_silence(
    State(state): State<ApiState>,
    Reader(caller): Reader,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = silence_id(id)?;
    let silence = silences::get(state.metadata.pool(), caller.tenant(), id).await?;
    Ok(Json(silence_json(&silence, now_ms())))
}

/// Expires the silence (Alertmanager's DELETE): it ends now and stays listed.
async fn expire_silence(
    State(state): State<ApiState>,
    Manager(caller): Manager,
    id: Result<Path<i64>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = silence_id(id)?;
    silences::expire(state.metadata.pool(), caller.tenant(), id, now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, header};
    use flowscope_graph::{GraphConfig, LiveGraph};
    use flowscope_query::graph::GraphView;
    use flowscope_query::{SpanStore, SqlConfig, SqlEngine, StoreConfig, WalSync};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use flowscope_auth::DEFAULT_TENANT;

    async fn state(dir: &std::path::Path) -> ApiState {
        let mut config = StoreConfig::new(dir);
        config.wal_sync = WalSync::Never;
        let store = SpanStore::open(config).unwrap();
        let engine = Arc::new(SqlEngine::new(store.clone(), SqlConfig::default()).unwrap());
        let live = Arc::new(RwLock::new(LiveGraph::new(GraphConfig::default())));
        let graph = GraphView::with_history(live, store, None, 0, Duration::from_secs(5));
        flowscope_query::graph::register(&engine, &graph).unwrap();
        let metadata = flowscope_alert::Metadata::open_in_memory().await.unwrap();
        sqlx::query("INSERT INTO webhooks (id, name, url, created_at, updated_at) VALUES (1, 'ops', 'https://example.com/', 0, 0)")
            .execute(metadata.pool())
            .await
            .unwrap();
        let view = crate::TenantView { engine, graph };
        ApiState {
            tenants: Arc::new([(flowscope_auth::TenantId::default_tenant(), view)].into()),
            access: Arc::new(flowscope_auth::Access::open(Default::default())),
            sessions: Default::default(),
            config: crate::ApiConfig::default(),
            ready: Arc::default(),
            info: crate::ServerInfo::default(),
            metadata,
            memory: Arc::new(flowscope_base::memory::MemoryBudget::unlimited()),
            connections: Default::default(),
            liveness: flowscope_base::liveness::Liveness::new(),
            logins: Arc::default(),
            telemetry: Default::default(),
        }
    }

    async fn call(
        state: &ApiState,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        let request = match body {
            Some(body) => request.body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = crate::router(state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, value)
    }

    fn rule(name: &str) -> Value {
        json!({
            "name": name,
            "sql": "SELECT service_name AS service, count(*) AS errors FROM spans WHERE status_code = 'ERROR' GROUP BY service_name",
            "interval": "30s",
            "for": "2m",
            "webhooks": [1],
            "annotations": {"summary": "errors", "runbook": "https://runbooks.example.com/errors"},
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rules_are_created_read_replaced_and_deleted_with_every_field_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let (status, created) =
            call(&state, "POST", "/api/alert-rules", Some(rule("errors"))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["id"].as_i64().unwrap();

        let (status, got) = call(&state, "GET", &format!("/api/alert-rules/{id}"), None).await;
        assert_eq!(status, StatusCode::OK);
        for field in ["name", "sql", "interval", "for", "webhooks", "annotations"] {
            assert_eq!(got[field], rule("errors")[field], "{field}");
        }
        assert_eq!(got["last_evaluation"], Value::Null);
        assert_eq!(got["last_error"], Value::Null);

        let (status, listed) = call(&state, "GET", "/api/alert-rules", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(listed["rules"].as_array().unwrap().len(), 1);

        let (status, _) = call(&state, "POST", "/api/alert-rules", Some(rule("errors"))).await;
        assert_eq!(status, StatusCode::CONFLICT);

        let mut changed = rule("renamed");
        changed["for"] = json!("0s");
        changed["webhooks"] = json!([]);
        let (status, replaced) = call(
            &state,
            "PUT",
            &format!("/api/alert-rules/{id}"),
            Some(changed),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{replaced}");
        assert_eq!(replaced["name"], "renamed");
        assert_eq!(replaced["for"], "0s");
        assert_eq!(replaced["webhooks"], json!([]));
        assert_eq!(
            replaced["annotations"]["runbook"],
            "https://runbooks.example.com/errors"
        );

        let (status, _) = call(&state, "DELETE", &format!("/api/alert-rules/{id}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        for method in ["GET", "DELETE"] {
            let (status, body) =
                call(&state, method, &format!("/api/alert-rules/{id}"), None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
            assert!(body["error"].as_str().unwrap().contains(&id.to_string()));
        }
        let (status, _) = call(
            &state,
            "PUT",
            &format!("/api/alert-rules/{id}"),
            Some(rule("x")),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_rules_are_refused_with_what_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let check = |change: Value, says: &'static str| {
            let state = state.clone();
            async move {
                let mut body = rule("bad");
                for (key, value) in change.as_object().unwrap() {
                    body[key] = value.clone();
                }
                let (status, answer) = call(&state, "POST", "/api/alert-rules", Some(body)).await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
                let message = answer["error"].as_str().unwrap();
                assert!(message.contains(says), "{message} lacks {says}");
            }
        };
        // The planner's own message, naming the column it does not know.
        check(
            json!({"sql": "SELECT nonexistent_column FROM spans"}),
            "nonexistent_column",
        )
        .await;
        check(json!({"sql": "DROP TABLE spans"}), "does not plan").await;
        check(json!({"webhooks": [1, 42]}), "42").await;
        check(json!({"interval": "100ms"}), "at least 1s").await;
        check(json!({"for": "soon"}), "e.g. \"30s\"").await;
        check(json!({"severity": "page"}), "severity").await;
        let (status, listed) = call(&state, "GET", "/api/alert-rules", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(listed["rules"], json!([]), "nothing refused was stored");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn alerts_list_current_instances_and_history_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let mut body = rule("constant");
        body["sql"] = json!("SELECT 'checkout' AS service, 3 AS errors UNION ALL SELECT 'cart', 1");
        body["for"] = json!("0s");
        // Notified at once: with Alertmanager's default group_wait the first notification waits 30 s.
        body["group_wait"] = json!("0s");
        let (_, created) = call(&state, "POST", "/api/alert-rules", Some(body)).await;
        let id = created["id"].as_i64().unwrap();
        let rule = rules::get(state.metadata.pool(), DEFAULT_TENANT, id)
            .await
            .unwrap();
        let config = flowscope_alert::scheduler::SchedulerConfig::new("http://127.0.0.1:8080");
        let committed = flowscope_alert::scheduler::evaluate_rule(
            &state.metadata,
            &state.tenants[&flowscope_auth::TenantId::default_tenant()].engine,
            &config,
            DEFAULT_TENANT,
            &rule,
            1_000,
        )
        .await
        .unwrap();
        assert_eq!(committed.transitions, 2);
        assert_eq!(committed.messages.len(), 1);

        let (status, alerts) = call(&state, "GET", "/api/alerts?limit=1", None).await;
        assert_eq!(status, StatusCode::OK, "{alerts}");
        let current = alerts["alerts"].as_array().unwrap();
        assert_eq!(current.len(), 2);
        let checkout = current
            .iter()
            .find(|a| a["labels"]["service"] == "checkout")
            .unwrap();
        assert_eq!(checkout["state"], "firing");
        assert_eq!(checkout["rule"], "constant");
        assert_eq!(checkout["values"]["errors"], 3.0);
        assert_eq!(checkout["labels"]["alertname"], "constant");
        assert_eq!(checkout["activeSince"], "1970-01-01T00:00:01.000Z");
        assert_eq!(checkout["firedAt"], "1970-01-01T00:00:01.000Z");
        assert_eq!(alerts["history"].as_array().unwrap().len(), 1, "limit");

        let (status, got) = call(&state, "GET", &format!("/api/alert-rules/{id}"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got["last_evaluation"], "1970-01-01T00:00:01.000Z");

        let (status, _) = call(&state, "GET", "/api/alerts?limit=many", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
