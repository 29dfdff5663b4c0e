//! Database access: the connection pool, the embedded migrations, and the schema diesel generates.

pub mod migrate;
pub mod pool;
pub mod schema;

pub use pool::{DbPool, PoolOptions};

use crate::error::ApiError;
use diesel::result::{DatabaseErrorKind, Error};

/// Sorts a diesel error into "the database is unreachable" (503, retry) and everything else (500).
pub fn classify_error(err: Error) -> ApiError {
    match &err {
        Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
            ApiError::Unavailable(err.into())
        }
        Error::DatabaseError(_, info) if is_transient(info.message()) => {
            ApiError::Unavailable(err.into())
        }
        _ => ApiError::internal(err),
    }
}

/// Statement timeouts and server shutdowns: the same request may succeed shortly.
fn is_transient(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "statement timeout",
        "terminating connection",
        "connection",
        "the database system is",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}
