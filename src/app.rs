//! `AppState` and the application (routes + middleware), shared by `serve` and the tests.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{web, App};

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::auth::Verifier;
use crate::db::schema::signing_keys;
use crate::db::DbPool;
use crate::error::{ApiError, FieldError};
use crate::http::{request_id::request_id, routes};
use crate::usage::read::cache::ReadCache;

/// Built once, shared by every worker. Everything in it is either configuration or a cache
/// keyed by data version, so replicas stay interchangeable.
pub struct AppState {
    /// The primary: ingestion, the rollup, and reads when no read pool is configured.
    pub pool: DbPool,
    /// `DATABASE_READ_URL`'s pool (a replica), used by the read API when set.
    pub read_pool: Option<DbPool>,
    pub verifier: Verifier,
    /// Base of every HAL link, without a trailing slash.
    pub public_url: String,
    /// Wakes the rollup worker when new events have committed.
    pub rollup_wake: std::sync::Arc<tokio::sync::Notify>,
    /// Totals and account sets per data version.
    pub read_cache: ReadCache,
    /// The key that signs position tokens, read from the database on first use.
    pub cursor_key: tokio::sync::OnceCell<Vec<u8>>,
    /// `USAGE_API_MAX_EVENT_AGE_DAYS`.
    pub max_event_age_days: u32,
    /// `USAGE_API_IDEMPOTENCY_TTL_HOURS`.
    pub idempotency_ttl: chrono::Duration,
}

impl AppState {
    pub fn new(pool: DbPool, verifier: Verifier, public_url: String) -> Self {
        AppState {
            pool,
            read_pool: None,
            verifier,
            public_url,
            rollup_wake: Default::default(),
            read_cache: ReadCache::default(),
            cursor_key: Default::default(),
            max_event_age_days: crate::usage::write::event::DEFAULT_MAX_AGE_DAYS,
            idempotency_ttl: chrono::Duration::hours(24),
        }
    }

    /// The pool the read API uses.
    pub fn reads(&self) -> &DbPool {
        self.read_pool.as_ref().unwrap_or(&self.pool)
    }

    /// The key for position tokens (shared by every replica through the database).
    pub async fn cursor_key(&self, conn: &mut AsyncPgConnection) -> QueryResult<&[u8]> {
        self.cursor_key
            .get_or_try_init(|| async {
                signing_keys::table
                    .filter(signing_keys::name.eq("page-cursor"))
                    .select(signing_keys::secret)
                    .first::<Vec<u8>>(conn)
                    .await
            })
            .await
            .map(Vec::as_slice)
    }
}

/// The application: routes, the JSON error bodies for actix's own extractor errors, request ids.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .app_data(web::PathConfig::default().error_handler(|err, _| {
            ApiError::InvalidParameter(vec![FieldError::new("path", err.to_string())]).into()
        }))
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            ApiError::InvalidParameter(vec![FieldError::new("query", err.to_string())]).into()
        }))
        .configure(routes::configure)
        .wrap(from_fn(request_id))
}
