//! The async connection pool (diesel-async + deadpool). Every new connection gets a statement
//! timeout so a runaway query cannot hold a connection forever, a cap on the parallel workers
//! one of its queries may start, and learns the database epoch.

use std::time::Duration;

use diesel::ConnectionError;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

pub type DbPool = Pool<AsyncPgConnection>;
pub type DbConn = Object<AsyncPgConnection>;

#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_size: usize,
    /// How long a request waits for a free connection before answering 503.
    pub wait_timeout: Duration,
    pub statement_timeout: Duration,
    /// `max_parallel_workers_per_gather` of every connection. The server uses 0: one request's
    /// query is one backend on one core, so an organization whose queries are heavy gets at most
    /// its concurrency limit's worth of cores, never every core (bench/load.sh measures it).
    pub parallel_workers: u16,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 16,
            wait_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(10),
            parallel_workers: 0,
        }
    }
}

pub fn build(url: &str, options: &PoolOptions) -> anyhow::Result<DbPool> {
    // Both are numbers of ours, never a request's text.
    let settings = format!(
        "SELECT set_config('statement_timeout', '{}', false), \
                set_config('max_parallel_workers_per_gather', '{}', false)",
        options.statement_timeout.as_millis(),
        options.parallel_workers
    );
    let mut config = ManagerConfig::default();
    // No `SELECT 1` before every checkout (a round trip per request): a connection that died
    // fails its next statement, which is a 503 the client retries, and the pool drops it.
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        let settings = settings.clone();
        Box::pin(async move {
            let mut conn = super::connect::establish(&url).await?;
            diesel::sql_query(settings)
                .execute(&mut conn)
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            // Which database this connection reached (migration 4): read cheaply by every
            // version query from then on, and anew by every new connection, so a failover or a
            // restore shows up as soon as the pool reconnects.
            if let Err(err) =
                diesel::sql_query("SELECT set_config('usage_api.epoch', usage_api_epoch(), false)")
                    .execute(&mut conn)
                    .await
            {
                tracing::warn!(error = %err, "the database epoch is unknown (not migrated?)");
            }
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
    let pool = Pool::builder(manager)
        .max_size(options.max_size)
        .wait_timeout(Some(options.wait_timeout))
        .create_timeout(Some(options.wait_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()?;
    Ok(pool)
}

/// Sets the pool's gauges from its current status (`pool` names it: `primary` or `read`):
/// `usage_api_db_pool_connections{state="idle|in_use"}`, `usage_api_db_pool_max` and
/// `usage_api_db_pool_waiting` (requests waiting for a connection). Sampled when the metrics are
/// rendered, so they are as fresh as the scrape.
pub fn record_status(pool: &DbPool, name: &'static str) {
    let status = pool.status();
    let in_use = status.size.saturating_sub(status.available);
    let connections = |state: &'static str| {
        metrics::gauge!(
            "usage_api_db_pool_connections",
            "pool" => name,
            "state" => state
        )
    };
    connections("idle").set(status.available as f64);
    connections("in_use").set(in_use as f64);
    metrics::gauge!("usage_api_db_pool_max", "pool" => name).set(status.max_size as f64);
    metrics::gauge!("usage_api_db_pool_waiting", "pool" => name).set(status.waiting as f64);
}
