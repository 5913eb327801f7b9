//! `/api/webhooks`: create, list, change and delete webhooks, send a test notification, and
//! read the delivery history. Secrets go in, and come out only once, when generated.
//! Every route needs an admin token: a webhook's URL is often a credential itself (a chat
//! service's incoming-webhook address), so read-only tokens do not see them.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use flowscope_alert::now_ms;
use flowscope_alert::webhooks::{self, Delivery, Webhook, WebhookInput};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::ApiState;
use crate::auth::Manager;
use crate::error::ApiError;

const DEFAULT_DELIVERIES: u32 = 50;
const MAX_DELIVERIES: u32 = 500;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/webhooks", get(list).post(create))
        .route(
            "/api/webhooks/{id}",
            get(get_one).put(update).delete(delete),
        )
        .route("/api/webhooks/{id}/test", post(send_test))
        .route("/api/webhooks/{id}/deliveries", get(deliveries))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    name: String,
    url: String,
    #[serde(default)]
    secret: Option<String>,
}

impl From<Body> for WebhookInput {
    fn from(body: Body) -> Self {
        Self {
            name: body.name,
            url: body.url,
            secret: body.secret,
        }
    }
}

#[derive(Debug, Deserialize)]
struct DeliveriesQuery {
    limit: Option<u32>,
}

/// The JSON body, or a 400 that says what is wrong with it.
fn body(
    payload: Result<Json<Body>, axum::extract::rejection::JsonRejection>,
) -> Result<WebhookInput, ApiError> {
    payload.map(|Json(body)| body.into()).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected a JSON body {{\"name\", \"url\", \"secret\"?}}: {}",
            e.body_text()
        ))
    })
}

fn webhook_json(hook: &Webhook) -> Value {
    json!({
        "id": hook.id,
        "name": hook.name,
        "url": hook.url,
        "has_secret": hook.has_secret,
        "created_at": hook.created_at,
        "updated_at": hook.updated_at,
    })
}

fn delivery_json(delivery: &Delivery) -> Value {
    json!({
        "id": delivery.id,
        "msg_id": delivery.msg_id,
        "kind": delivery.kind,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "created_at": delivery.created_at,
        "next_attempt_at": delivery.next_attempt_at,
        "finished_at": delivery.finished_at,
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "attempt_list": delivery.attempt_list.iter().map(|a| json!({
            "at": a.at,
            "status": a.status,
            "error": a.error,
            "duration_ms": a.duration_ms,
        })).collect::<Vec<_>>(),
    })
}

async fn create(
    State(state): State<ApiState>,
    Manager(caller): Manager,
    payload: Result<Json<Body>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input = body(payload)?;
    let created = webhooks::create(
        state.metadata.pool(),
        caller.tenant(),
        input,
        state.config.allow_private_webhooks,
        now_ms(),
    )
    .await?;
    let mut answer = json!({ "id": created.id });
    if let Some(secret) = created.generated_secret {
        // Shown once: the receiver needs it to verify signatures, and no GET returns it.
        answer["secret"] = Value::String(secret);
    }
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn list(
    State(state): State<ApiState>,
    Manager(caller): Manager,
) -> Result<Json<Value>, ApiError> {
    let all = webhooks::list(state.metadata.pool(), caller.tenant()).await?;
    Ok(Json(json!({
        "webhooks": all.iter().map(webhook_json).collect::<Vec<_>>()
    })))
}

async fn get_one(
    State(state): State<ApiState>,
    Manager(caller): Manager,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let hook = webhooks::get(state.metadata.pool(), caller.tenant(), id).await?;
    Ok(Json(webhook_json(&hook)))
}

async fn update(
    State(state): State<ApiState>,
    Manager(caller): Manager,
    Path(id): Path<i64>,
    payload: Result<Json<Body>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let input = body(payload)?;
    let hook = webhooks::update(
        state.metadata.pool(),
        caller.tenant(),
        id,
        input,
        state.config.allow_private_webhooks,
        now_ms(),
    )
    .await?;
    Ok(Json(webhook_json(&hook)))
}

async fn delete(
    State(state): State<ApiState>,
    Manager(caller): Manager,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    webhooks::delete(state.metadata.pool(), caller.tenant(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn send_test(
    State(state): State<ApiState>,
    Manager(caller): Manager,
    Path(id): Path<i64>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let external_url = state.info.external_url.clone().unwrap_or_default();
    let msg_id = webhooks::enqueue_test(
        state.metadata.pool(),
        caller.tenant(),
        id,
        &external_url,
        now_ms(),
    )
    .await?;
    state.metadata.delivery_waker().wake();
    Ok((StatusCode::ACCEPTED, Json(json!({ "msg_id": msg_id }))))
}

async fn deliveries(
    State(state): State<ApiState>,
    Manager(caller): Manager,
    Path(id): Path<i64>,
    Query(query): Query<DeliveriesQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query
        .limit
        .unwrap_or(DEFAULT_DELIVERIES)
        .clamp(1, MAX_DELIVERIES);
    let list = webhooks::deliveries(state.metadata.pool(), caller.tenant(), id, limit).await?;
    Ok(Json(json!({
        "deliveries": list.iter().map(delivery_json).collect::<Vec<_>>()
    })))
}
