//! Embedded migrations, and creating the database itself when it is missing.
//!
//! Migrations run on a thread of their own through diesel-async's `AsyncConnectionWrapper` (the
//! async harness needs a multi-threaded runtime, which tests and actix do not always have), under
//! a Postgres advisory lock so that replicas starting together do not race.

use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Arbitrary, fixed key of the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x7573_6167_655f_6170; // "usage_ap"

/// Applies every pending migration; returns how many ran.
pub async fn run(database_url: &str) -> anyhow::Result<usize> {
    let url = database_url.to_owned();
    let (done, result) = tokio::sync::oneshot::channel();
    // A plain thread: the wrapper then drives its own runtime, whatever runtime called us.
    std::thread::spawn(move || {
        let _ = done.send(migrate_blocking(&url));
    });
    result.await.context("migration thread")?
}

fn migrate_blocking(url: &str) -> anyhow::Result<usize> {
    // The wrapper blocks on this runtime, which also drives the connection (over TLS when the
    // URL asks: see db::connect).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("a runtime for the migrations")?;
    let conn = runtime
        .block_on(super::connect::establish(url))
        .context("connecting to the database to migrate")?;
    let _context = runtime.enter();
    let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
    conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.len())
        .map_err(|err| anyhow::anyhow!("running migrations: {err}"));
    conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))?;
    applied
}

/// Creates the database named in `database_url` when it does not exist and the role may create
/// it. Returns whether it was created. Errors are told apart by SQLSTATE (tokio-postgres keeps
/// it on connection errors too).
pub async fn ensure_database(database_url: &str) -> anyhow::Result<bool> {
    use tokio_postgres::error::SqlState;
    let sqlstate = |err: &anyhow::Error| {
        err.downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::code)
            .cloned()
    };
    match super::connect::client(database_url).await {
        Ok(_) => return Ok(false),
        Err(err) if sqlstate(&err) == Some(SqlState::INVALID_CATALOG_NAME) => {}
        Err(err) => return Err(err).context("connecting to the database"),
    }
    let mut url = url::Url::parse(database_url).context("DATABASE_URL is not a URL")?;
    let name = url.path().trim_start_matches('/').to_owned();
    let name = percent_encoding::percent_decode_str(&name)
        .decode_utf8()
        .context("database name")?
        .into_owned();
    anyhow::ensure!(!name.is_empty(), "DATABASE_URL names no database");
    url.set_path("/postgres");
    let admin = super::connect::client(url.as_str())
        .await
        .context("connecting to the 'postgres' database to create the database")?;
    // An identifier, quoted: it comes from the configuration, and cannot be a bind parameter.
    let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match admin.batch_execute(&statement).await {
        Ok(()) => Ok(true),
        // Another process created it between our two steps.
        Err(err) if err.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(false),
        Err(err) => Err(err).context("creating the database"),
    }
}
