//! Cancelling the statement a pooled connection is running, with the protocol's own cancel
//! request (what `pg_cancel_backend` does, without taking a second connection from the pool).
//! A request past its deadline stops its database work at once, instead of holding the
//! connection, and a backend, until `statement_timeout`.
//!
//! The connections a request checks out are remembered in a task-local [`Checkouts`] that the
//! request's deadline (`http::deadline`) sets around its handler, each for as long as the
//! request holds it (a [`Checkout`]); [`Checkouts::cancel_all`] sends a cancel for each while
//! the handler still holds them. A connection the request has given back is forgotten at once:
//! it may be running another request's statement by then, which a cancel must never reach.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use diesel_async::AsyncPgConnection;
use tokio_postgres::CancelToken;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::connect::Target;
use super::pool::DbConn;

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

/// The cancel tokens of the connections one request holds, by checkout number.
#[derive(Default)]
pub struct Checkouts {
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    next: u64,
    tokens: Vec<(u64, CancelToken, Canceller)>,
}

impl Checkouts {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cancels whatever the request's connections are running, and returns once every cancel
    /// request has been delivered: only then may those connections go back to the pool (a
    /// cancel that arrived later would stop another request's statement).
    pub async fn cancel_all(&self) {
        let tokens = std::mem::take(&mut self.held().tokens);
        let cancels = tokens
            .into_iter()
            .map(|(_, token, canceller)| async move { canceller.cancel(token).await });
        futures_util::future::join_all(cancels).await;
    }

    /// Connections the request holds now.
    pub fn len(&self) -> usize {
        self.held().tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A pooled connection checked out by the current request: the request's deadline may cancel
/// its statement until it goes back to the pool (dropped, or handed on by
/// [`Checkout::into_inner`]). Derefs to the connection.
pub struct Checkout {
    // Dropped before `conn`: forgotten by the request before the pool can hand it to another.
    registration: Registration,
    conn: DbConn,
}

/// A checkout's entry in its request's [`Checkouts`], removed when dropped.
struct Registration(Option<(Arc<Checkouts>, u64)>);

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some((checkouts, id)) = self.0.take() {
            checkouts.held().tokens.retain(|(held, _, _)| *held != id);
        }
    }
}

impl Checkout {
    /// Remembers `conn` as checked out by the current request (outside a request, or without a
    /// canceller: nothing to remember) until it is dropped.
    pub fn register(conn: DbConn, canceller: Option<&Canceller>) -> Checkout {
        let registration = canceller.and_then(|canceller| {
            CHECKOUTS
                .try_with(|checkouts| {
                    let mut held = checkouts.held();
                    let id = held.next;
                    held.next += 1;
                    held.tokens
                        .push((id, conn.cancel_token(), canceller.clone()));
                    (checkouts.clone(), id)
                })
                .ok()
        });
        Checkout {
            registration: Registration(registration),
            conn,
        }
    }

    /// The connection, no longer the request's to cancel: for work that outlives the handler
    /// (a streaming export, bounded by its own progress rather than the deadline).
    pub fn into_inner(self) -> DbConn {
        let Checkout { registration, conn } = self;
        drop(registration);
        conn
    }
}

impl Deref for Checkout {
    type Target = AsyncPgConnection;

    fn deref(&self) -> &AsyncPgConnection {
        &self.conn
    }
}

impl DerefMut for Checkout {
    fn deref_mut(&mut self) -> &mut AsyncPgConnection {
        &mut self.conn
    }
}
