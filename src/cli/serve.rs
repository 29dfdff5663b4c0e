//! `usage-api serve`: the HTTP server.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{web, HttpServer};
use anyhow::Context;
use clap::Args;

use crate::app::AppState;
use crate::auth::admission::{Admission, Limits};
use crate::auth::Verifier;
use crate::config::{
    AuthArgs, DatabaseArgs, EventArgs, HttpArgs, IdempotencyArgs, RollupArgs, WebhookArgs,
};
use crate::db::cancel::Canceller;
use crate::db::{self, pool};
use crate::http::app;
use crate::usage::rollup;
use crate::usage::triggers::callback::CallbackPolicy;
use crate::usage::triggers::deliver;
use crate::usage::write::idempotency;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub rollup: RollupArgs,
    #[command(flatten)]
    pub events: EventArgs,
    #[command(flatten)]
    pub idempotency: IdempotencyArgs,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
    /// Do not apply pending migrations at startup.
    #[arg(long)]
    pub no_migrate: bool,
}

/// Builds the shared state: pools, token verifier, public URL, ingest limits.
pub fn state(
    db: &DatabaseArgs,
    http: &HttpArgs,
    auth: &AuthArgs,
    events: &EventArgs,
    idempotency: &IdempotencyArgs,
    webhooks: &WebhookArgs,
) -> anyhow::Result<web::Data<AppState>> {
    let mut state = AppState::new(
        pool::build(&db.database_url, &db.pool_options())?,
        Verifier::new(auth.config()?)?,
        http.public_url()?,
    );
    state.read_pool = db
        .database_read_url
        .as_deref()
        .map(|url| pool::build(url, &db.pool_options()))
        .transpose()?;
    state.max_event_age_days = events.max_event_age_days;
    state.idempotency_ttl = chrono::Duration::hours(i64::from(idempotency.idempotency_ttl_hours));
    state.callbacks = std::sync::Arc::new(CallbackPolicy::new(&webhooks.webhook_allow_hosts));
    state.deliveries = Some(webhooks.settings());
    limit(&mut state, db, http)?;
    Ok(web::Data::new(state))
}

/// The per-organization limits, the request deadline, and how to cancel a late request's
/// statements on each pool.
fn limit(state: &mut AppState, db: &DatabaseArgs, http: &HttpArgs) -> anyhow::Result<()> {
    let positive = |n: u32| std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN);
    state.admission = Admission::new(Limits {
        rate: positive(http.org_rate),
        burst: positive(http.org_burst),
        concurrency: http.org_concurrency,
        executing: positive(http.org_executing),
        turn_wait: std::time::Duration::from_millis(http.request_timeout_ms / 2),
    });
    state.request_timeout = std::time::Duration::from_millis(http.request_timeout_ms);
    state.cancel_primary = Some(Canceller::new(&db.database_url)?);
    state.cancel_read = db
        .database_read_url
        .as_deref()
        .map(Canceller::new)
        .transpose()?;
    Ok(())
}

/// Starts the background rollup worker unless disabled (interval 0).
pub fn start_rollup(state: &web::Data<AppState>, args: &RollupArgs) {
    if args.rollup_interval_ms == 0 {
        return;
    }
    let interval = std::time::Duration::from_millis(args.rollup_interval_ms);
    actix_web::rt::spawn(rollup::run_forever(
        state.pool.clone(),
        interval,
        state.rollup_wake.clone(),
        state.fired.clone(),
    ));
}

/// How often expired `Idempotency-Key` answers are deleted.
const KEY_CLEANING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// Starts serving `state` on an already bound listener, with the workers every replica runs
/// beside its requests: the issuer's keys kept loaded (fetched at once), expired
/// `Idempotency-Key` answers deleted, and webhook deliveries (when `state.deliveries` is set).
pub fn start(
    state: web::Data<AppState>,
    listener: TcpListener,
    workers: usize,
) -> anyhow::Result<Server> {
    crate::http::metrics::handle();
    let keys = state.clone();
    actix_web::rt::spawn(async move { keys.verifier.refresh_keys_forever().await });
    let cleaner = state.clone();
    actix_web::rt::spawn(async move { clean_idempotency_keys(cleaner).await });
    if let Some(settings) = state.deliveries.clone().filter(|s| s.concurrency > 0) {
        actix_web::rt::spawn(deliver::run_forever(
            state.pool.clone(),
            state.callbacks.clone(),
            settings,
            state.fired.clone(),
        ));
    }
    Ok(HttpServer::new(move || app(state.clone()))
        .on_connect(crate::http::peer::on_connect)
        .workers(workers)
        .shutdown_timeout(10)
        .listen(listener)?
        .run())
}

/// Deletes expired `Idempotency-Key` answers now and every `KEY_CLEANING_INTERVAL`, forever.
/// Replicas may all do it: the deletes are idempotent. A failure waits for the next round.
async fn clean_idempotency_keys(state: web::Data<AppState>) {
    loop {
        let expired_before = chrono::Utc::now() - state.idempotency_ttl;
        match state.pool.get().await {
            Ok(mut conn) => match idempotency::delete_expired_keys(&mut conn, expired_before).await
            {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "expired idempotency keys deleted"),
                Err(err) => tracing::warn!(error = %err, "deleting expired idempotency keys"),
            },
            Err(err) => tracing::warn!(error = %err, "deleting expired idempotency keys"),
        }
        tokio::time::sleep(KEY_CLEANING_INTERVAL).await;
    }
}

/// How long `serve` waits between two attempts at its migrations while the database is away.
const MIGRATION_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Applies the migrations (creating the database when the role may), trying again until the
/// database answers; then opens the API (`state.schema_ready`). Until then `serve` is up but
/// not ready: readiness and every API route answer 503.
async fn migrate_when_reachable(state: web::Data<AppState>, url: String) {
    let mut attempts = 0u32;
    loop {
        let migrated = async {
            db::migrate::ensure_database(&url).await?;
            db::migrate::run(&url).await
        };
        match migrated.await {
            Ok(applied) => {
                tracing::info!(applied, "migrations applied: ready");
                state.open();
                return;
            }
            Err(error) => {
                attempts += 1;
                if attempts == 1 || attempts % 30 == 0 {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        attempts,
                        "migrations wait for the database"
                    );
                }
            }
        }
        tokio::time::sleep(MIGRATION_RETRY).await;
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Refuse a configuration that does not fail closed before touching anything.
    args.auth.config()?.check()?;
    let state = state(
        &args.db,
        &args.http,
        &args.auth,
        &args.events,
        &args.idempotency,
        &args.webhooks,
    )?;
    let listener = TcpListener::bind(&args.http.bind)
        .with_context(|| format!("binding {}", args.http.bind))?;
    tracing::info!(bind = %args.http.bind, public_url = %state.public_url, "serving");
    if !args.no_migrate {
        state.close();
        actix_web::rt::spawn(migrate_when_reachable(
            state.clone(),
            args.db.database_url.clone(),
        ));
    }
    start_rollup(&state, &args.rollup);
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    start(state, listener, workers)?.await?;
    Ok(())
}
