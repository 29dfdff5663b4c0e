//! `usage-api serve`: the HTTP server.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{web, HttpServer};
use anyhow::Context;
use clap::Args;

use crate::app::{app, AppState};
use crate::auth::Verifier;
use crate::config::{AuthArgs, DatabaseArgs, HttpArgs, RollupArgs};
use crate::db::{self, pool};
use crate::usage::rollup;

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
    /// Do not apply pending migrations at startup.
    #[arg(long)]
    pub no_migrate: bool,
}

/// Builds the shared state: pools, token verifier, public URL.
pub fn state(
    db: &DatabaseArgs,
    http: &HttpArgs,
    auth: &AuthArgs,
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
    Ok(web::Data::new(state))
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
    ));
}

/// Starts serving `state` on an already bound listener.
pub fn start(
    state: web::Data<AppState>,
    listener: TcpListener,
    workers: usize,
) -> anyhow::Result<Server> {
    Ok(HttpServer::new(move || app(state.clone()))
        .workers(workers)
        .shutdown_timeout(10)
        .listen(listener)?
        .run())
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if !args.no_migrate {
        db::migrate::ensure_database(&args.db.database_url).await?;
        db::migrate::run(&args.db.database_url).await?;
    }
    let state = state(&args.db, &args.http, &args.auth)?;
    let listener = TcpListener::bind(&args.http.bind)
        .with_context(|| format!("binding {}", args.http.bind))?;
    tracing::info!(bind = %args.http.bind, public_url = %state.public_url, "serving");
    start_rollup(&state, &args.rollup);
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    start(state, listener, workers)?.await?;
    Ok(())
}
