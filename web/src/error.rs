//! API errors and the one place that maps them to HTTP statuses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flowscope_alert::AlertError;
use flowscope_query::QueryError;

/// An error answered as `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// What the request names does not exist (a node not in the window's graph).
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Alert(#[from] AlertError),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Query(QueryError::Invalid(_)) => StatusCode::BAD_REQUEST,
            Self::Query(QueryError::NotAllowed(_)) => StatusCode::FORBIDDEN,
            Self::Query(QueryError::TooExpensive(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Query(QueryError::Busy(_)) => StatusCode::SERVICE_UNAVAILABLE,
            // A forbidden target is a bad request the user fixes with another URL or the flag.
            Self::Alert(AlertError::BadInput(_) | AlertError::Forbidden(_)) => {
                StatusCode::BAD_REQUEST
            }
            Self::Alert(AlertError::NotFound(_)) => StatusCode::NOT_FOUND,
            Self::Alert(AlertError::Conflict(_)) => StatusCode::CONFLICT,
            Self::Alert(
                AlertError::Database(_) | AlertError::Migrate(_) | AlertError::Client(_),
            ) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Query(QueryError::Internal(_)) | Self::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "api request failed");
        }
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}
