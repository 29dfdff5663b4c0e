//! Cancelling the statement a pooled connection is running, with the protocol's own cancel
//! request (what `pg_cancel_backend` does, without taking a second connection from the pool).
//! A request past its deadline stops its database work at once, instead of holding the
//! connection, and a backend, until `statement_timeout`.
//!
//! The connections a request checks out are remembered in a task-local [`Checkouts`] that the
//! request's deadline (`http::deadline`) sets around its handler; [`Checkouts::cancel_all`]
//! sends a cancel for each while the handler still holds them.

use std::sync::{Arc, Mutex};

use diesel_async::AsyncPgConnection;
use tokio_postgres::CancelToken;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::connect::Target;

/// Sends cancel requests to one database, under the same TLS rules as its connections.
#[derive(Clone)]
pub struct Canceller {
    tls: MakeRustlsConnect,
}

impl Canceller {
    pub fn new(url: &str) -> anyhow::Result<Canceller> {
        Ok(Canceller {
            tls: Target::parse(url)?.tls()?,
        })
    }

    /// Asks the server to cancel what `token`'s connection is running (nothing when it is
    /// idle by then). The statement ends with SQLSTATE 57014, which the request that ran it
    /// no longer waits for.
    pub async fn cancel(&self, token: CancelToken) {
        match token.cancel_query(self.tls.clone()).await {
            Ok(()) => {
                metrics::counter!("usage_api_db_cancels_total", "outcome" => "sent").increment(1)
            }
            Err(error) => {
                metrics::counter!("usage_api_db_cancels_total", "outcome" => "error").increment(1);
                tracing::warn!(%error, "could not send a cancel request to the database");
            }
        }
    }
}

tokio::task_local! {
    /// The connections the current request checked out (set by `http::deadline`).
    pub static CHECKOUTS: Arc<Checkouts>;
}

/// The cancel tokens of the connections one request checked out.
#[derive(Default)]
pub struct Checkouts {
    tokens: Mutex<Vec<(CancelToken, Canceller)>>,
}

impl Checkouts {
    /// Cancels whatever the request's connections are running, and returns once every cancel
    /// request has been delivered: only then may those connections go back to the pool (a
    /// cancel that arrived later would stop another request's statement).
    pub async fn cancel_all(&self) {
        let tokens = std::mem::take(&mut *self.tokens.lock().unwrap_or_else(|p| p.into_inner()));
        let cancels = tokens
            .into_iter()
            .map(|(token, canceller)| async move { canceller.cancel(token).await });
        futures_util::future::join_all(cancels).await;
    }
}

/// Remembers `conn` as checked out by the current request (outside a request, or without a
/// canceller: nothing).
pub fn register(conn: &AsyncPgConnection, canceller: Option<&Canceller>) {
    let Some(canceller) = canceller else { return };
    let _ = CHECKOUTS.try_with(|checkouts| {
        let mut tokens = checkouts.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.push((conn.cancel_token(), canceller.clone()));
    });
}
