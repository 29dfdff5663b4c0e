//! Cancelling the statement a pooled connection is running, with the protocol's own cancel
//! request (what `pg_cancel_backend` does, without taking a second connection from the pool).
//! A request past its deadline stops its database work at once, instead of holding the
//! connection, and a backend, until `statement_timeout`.
//!
//! The connections a request checks out are remembered in a task-local [`Checkouts`] that the
//! request's deadline (`http::deadline`) sets around its handler, each for as long as the
//! request holds it (a [`Checkout`]); [`Checkouts::cancel_all`] sends a cancel for each while
//! the handler still holds them. A connection the request has given back is forgotten at once:
//! it may be running another request's statement by then, which a cancel must never reach. And
//! a connection that was sent a cancel is closed when given back, not pooled: Postgres may act
//! on the cancel after the statement it was meant for (stopping the next one), and what it
//! interrupted may have left a transaction open.

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

/// The cancel tokens of the connections one request holds, by checkout number, and which of
/// them were sent a cancel.
#[derive(Default)]
pub struct Checkouts {
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    next: u64,
    tokens: Vec<(u64, CancelToken, Canceller)>,
    cancelled: Vec<u64>,
}

impl Checkouts {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cancels whatever the request's connections are running, and returns once every cancel
    /// request has been delivered. Those connections are closed when the request gives them
    /// back, never reused: Postgres acts on a cancel request when the backend gets to it, which
    /// may be after the statement it was meant for has ended (then it would stop the next one,
    /// another request's), and a transaction it interrupted may be left open.
    pub async fn cancel_all(&self) {
        let tokens = {
            let mut held = self.held();
            let tokens = std::mem::take(&mut held.tokens);
            held.cancelled.extend(tokens.iter().map(|(id, _, _)| *id));
            tokens
        };
        let cancels = tokens
            .into_iter()
            .map(|(_, token, canceller)| async move { canceller.cancel(token).await });
        futures_util::future::join_all(cancels).await;
    }

    /// Connections the request holds now, not cancelled.
    pub fn len(&self) -> usize {
        self.held().tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets checkout `id`; whether it was sent a cancel.
    fn forget(&self, id: u64) -> bool {
        let mut held = self.held();
        held.tokens.retain(|(held, _, _)| *held != id);
        let cancelled = held.cancelled.contains(&id);
        held.cancelled.retain(|held| *held != id);
        cancelled
    }
}

/// A pooled connection checked out by the current request: the request's deadline may cancel
/// its statement while it holds it. Given back (dropped), it leaves the request's
/// [`Checkouts`] first, so that no later cancel can reach it in another request's hands; and if
/// it was sent a cancel, it is closed instead of going back to the pool. Derefs to the
/// connection.
pub struct Checkout {
    registration: Option<(Arc<Checkouts>, u64)>,
    /// `Some` until dropped.
    conn: Option<DbConn>,
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
            registration,
            conn: Some(conn),
        }
    }

    fn conn(&self) -> &DbConn {
        match &self.conn {
            Some(conn) => conn,
            None => unreachable!("a checkout holds its connection until it is dropped"),
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let Some((checkouts, id)) = self.registration.take() else {
            return;
        };
        if checkouts.forget(id) {
            if let Some(conn) = self.conn.take() {
                metrics::counter!("usage_api_db_connections_discarded_total").increment(1);
                drop(deadpool::managed::Object::take(conn));
            }
        }
    }
}

impl Deref for Checkout {
    type Target = AsyncPgConnection;

    fn deref(&self) -> &AsyncPgConnection {
        self.conn()
    }
}

impl DerefMut for Checkout {
    fn deref_mut(&mut self) -> &mut AsyncPgConnection {
        match &mut self.conn {
            Some(conn) => conn,
            None => unreachable!("a checkout holds its connection until it is dropped"),
        }
    }
}
