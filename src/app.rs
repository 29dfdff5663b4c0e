//! `AppState`: what every request handler and background worker of a `serve` process shares,
//! built once (by `cli::serve` and the tests) before the HTTP server starts.

use std::sync::Arc;
use std::time::Duration;

use diesel::QueryResult;
use diesel_async::AsyncPgConnection;

use crate::auth::admission::{Admission, Limits};
use crate::auth::Verifier;
use crate::db::cancel::{Canceller, Checkout};
use crate::db::DbPool;
use crate::error::ApiError;
use crate::usage::read::bodies::BodyCache;
use crate::usage::read::cache::ReadCache;
use crate::usage::records::catalogue::Catalogue;
use crate::usage::records::RecordsCache;
use crate::usage::triggers::callback::CallbackPolicy;
use crate::usage::triggers::deliver::Settings;

/// `USAGE_API_REQUEST_TIMEOUT_MS`'s default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Built once, shared by every worker. Everything in it is either configuration or a cache
/// keyed by data version, so replicas stay interchangeable.
pub struct AppState {
    /// The primary: ingestion, the rollup, and reads when no read pool is configured.
    pub pool: DbPool,
    /// `DATABASE_READ_URL`'s pool (a replica), used by the read API when set.
    pub read_pool: Option<DbPool>,
    /// Also registered as its own app data, for the `Principal` extractor.
    pub verifier: Arc<Verifier>,
    /// Base of every HAL link, without a trailing slash.
    pub public_url: String,
    /// Wakes the rollup worker when new events have committed.
    pub rollup_wake: std::sync::Arc<tokio::sync::Notify>,
    /// Totals and account sets per data version.
    pub read_cache: Arc<ReadCache>,
    /// Encoded answers per request, each valid for one data version.
    pub bodies: Arc<BodyCache>,
    /// Usage records per request, each valid for one data version.
    pub records_cache: Arc<RecordsCache>,
    /// The key that signs position tokens, read from the database on first use.
    pub cursor_key: tokio::sync::OnceCell<Vec<u8>>,
    /// The category catalogue (data of the migrations), read on first use.
    pub catalogue: tokio::sync::OnceCell<Arc<Catalogue>>,
    /// `USAGE_API_MAX_EVENT_AGE_DAYS`.
    pub max_event_age_days: u32,
    /// `USAGE_API_IDEMPOTENCY_TTL_HOURS`.
    pub idempotency_ttl: chrono::Duration,
    /// Where trigger callbacks may point (`USAGE_API_WEBHOOK_ALLOW_HOSTS`).
    pub callbacks: Arc<CallbackPolicy>,
    /// How this replica delivers webhooks; `None`: it does not.
    pub deliveries: Option<Settings>,
    /// Wakes the delivery worker when a rollup fired triggers.
    pub fired: Arc<tokio::sync::Notify>,
    /// Per-organization rate and concurrency limits (also registered as its own app data, for
    /// the `Principal` extractor).
    pub admission: Arc<Admission>,
    /// `USAGE_API_REQUEST_TIMEOUT_MS`: a request's deadline.
    pub request_timeout: Duration,
    /// Cancels statements on the primary's and on the read pool's connections (a request past
    /// its deadline); `None`: they run until `statement_timeout`.
    pub cancel_primary: Option<Canceller>,
    pub cancel_read: Option<Canceller>,
    /// Whether the database's schema is known to be current: false while `serve` still waits
    /// to apply its migrations (readiness and the API then answer 503).
    pub schema_ready: std::sync::atomic::AtomicBool,
}

impl AppState {
    pub fn new(pool: DbPool, verifier: Verifier, public_url: String) -> Self {
        AppState {
            pool,
            read_pool: None,
            verifier: Arc::new(verifier),
            public_url,
            rollup_wake: Default::default(),
            read_cache: Arc::default(),
            bodies: Arc::default(),
            records_cache: Arc::default(),
            cursor_key: Default::default(),
            catalogue: Default::default(),
            max_event_age_days: crate::usage::write::event::DEFAULT_MAX_AGE_DAYS,
            idempotency_ttl: chrono::Duration::hours(24),
            callbacks: Arc::default(),
            deliveries: None,
            fired: Arc::default(),
            admission: Admission::new(Limits::default()),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            cancel_primary: None,
            cancel_read: None,
            schema_ready: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Whether the API may be served: the schema is current.
    pub fn is_open(&self) -> bool {
        self.schema_ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Until [`AppState::open`]: the API answers 503.
    pub fn close(&self) {
        self.schema_ready
            .store(false, std::sync::atomic::Ordering::Release);
    }

    pub fn open(&self) {
        self.schema_ready
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// The pool the read API uses.
    pub fn reads(&self) -> &DbPool {
        self.read_pool.as_ref().unwrap_or(&self.pool)
    }

    /// A connection of the primary for this request: its statements are cancelled if the
    /// request outlives its deadline.
    pub async fn primary(&self) -> Result<Checkout, ApiError> {
        let conn = self.pool.get().await?;
        Ok(Checkout::register(conn, self.cancel_primary.as_ref()))
    }

    /// A connection of the read API's pool for this request, as [`AppState::primary`].
    pub async fn replica(&self) -> Result<Checkout, ApiError> {
        let conn = self.reads().get().await?;
        let cancel = match self.read_pool {
            Some(_) => self.cancel_read.as_ref(),
            None => self.cancel_primary.as_ref(),
        };
        Ok(Checkout::register(conn, cancel))
    }

    /// The key for position tokens (shared by every replica through the database), read on
    /// first use.
    pub async fn cursor_key(&self, conn: &mut AsyncPgConnection) -> QueryResult<&[u8]> {
        self.cursor_key
            .get_or_try_init(|| crate::usage::read::cursor_key(conn))
            .await
            .map(Vec::as_slice)
    }

    /// The category catalogue, read on first use.
    pub async fn catalogue(&self, conn: &mut AsyncPgConnection) -> QueryResult<Arc<Catalogue>> {
        self.catalogue
            .get_or_try_init(async || Catalogue::load(conn).await.map(Arc::new))
            .await
            .cloned()
    }
}
