//! Errors of the alert engine, named by whose fault they are.

/// Why an alert or webhook operation failed. Each variant maps to one HTTP status in `web`.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The request is wrong (a bad URL, a rule whose SQL does not plan): the user's to fix.
    #[error("{0}")]
    BadInput(String),
    /// No such webhook, rule or delivery.
    #[error("{0}")]
    NotFound(String),
    /// A webhook target on a loopback, private or reserved address while
    /// `--allow-private-webhooks` is off.
    #[error("{0}")]
    Forbidden(String),
    /// A name already in use.
    #[error("{0}")]
    Conflict(String),
    /// The webhook HTTP client could not be built (TLS set-up): the machine's to fix.
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
    #[error("metadata database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot migrate the metadata database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}
