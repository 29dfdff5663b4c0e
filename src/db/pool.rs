//! The async connection pool (diesel-async + deadpool). Every new connection gets a statement
//! timeout so a runaway query cannot hold a connection forever, and learns the database epoch.

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
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 16,
            wait_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(10),
        }
    }
}

pub fn build(url: &str, options: &PoolOptions) -> anyhow::Result<DbPool> {
    let statement_timeout_ms = options.statement_timeout.as_millis();
    let mut config = ManagerConfig::default();
    // No `SELECT 1` before every checkout (a round trip per request): a connection that died
    // fails its next statement, which is a 503 the client retries, and the pool drops it.
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        Box::pin(async move {
            let mut conn = super::connect::establish(&url).await?;
            diesel::sql_query(format!("SET statement_timeout = {statement_timeout_ms}"))
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
