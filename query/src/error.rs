//! Errors of the span store and the SQL engine, named by whose fault they are.

use std::time::Duration;

/// Why the store could not take or keep spans.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Too much is waiting to be written: the client should retry later.
    #[error("the span store is busy ({0}); retry later")]
    Overloaded(String, Duration),
    /// The store cannot write now (disk full, shutting down): retry later.
    #[error("the span store cannot write now: {0}")]
    Unavailable(String),
    /// Files in the data directory are not what the store wrote.
    #[error("{0}")]
    Corrupt(String),
    #[error("i/o error in the span store: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal error in the span store: {0}")]
    Internal(String),
}

impl From<arrow::error::ArrowError> for StoreError {
    fn from(error: arrow::error::ArrowError) -> Self {
        Self::Internal(error.to_string())
    }
}

impl From<parquet::errors::ParquetError> for StoreError {
    fn from(error: parquet::errors::ParquetError) -> Self {
        match error {
            parquet::errors::ParquetError::External(inner) => {
                match inner.downcast::<std::io::Error>() {
                    Ok(io) => Self::Io(*io),
                    Err(other) => Self::Internal(other.to_string()),
                }
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

/// Why a SQL query failed. Each variant maps to one HTTP status in `web`.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL does not parse or plan: the user's to fix.
    #[error("{0}")]
    Invalid(String),
    /// The SQL would write, change settings or read files: refused by the sandbox.
    #[error("{0}")]
    NotAllowed(String),
    /// The query needed more memory or time than it may use.
    #[error("{0}")]
    TooExpensive(String),
    /// Too many queries are running.
    #[error("{0}")]
    Busy(String),
    #[error("internal error while running the query: {0}")]
    Internal(String),
}
