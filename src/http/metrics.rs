//! `GET /metrics`: the process's metrics in Prometheus's text format (no tenant data: no
//! organization or account is ever a label). The recorder is installed once per process, before
//! the server starts, so the background workers' first counts are kept.

use std::sync::OnceLock;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::app::AppState;
use crate::db::pool;
use crate::usage::rollup::dirty;

/// Bucket bounds of every histogram, in seconds: from a fast callback to a slow retry.
const BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How often the histograms' recorded samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's recorder, installed on first use. When another recorder was installed first
/// (an embedding program's), this one is kept detached and renders only its own, empty, view.
///
/// A histogram keeps each sample until an upkeep folds it into the buckets; a scrape does one,
/// but a server nobody scrapes grew by about 18 bytes a request (53 MB after a million). A
/// thread of its own runs the upkeep every 5 s for the life of the process.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = || {
            PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new())
        };
        let handle = builder()
            .install_recorder()
            .unwrap_or_else(|_| builder().build_recorder().handle());
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("usage-api-metrics".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            });
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "no metrics upkeep thread: histograms grow until scraped");
        }
        handle
    })
}

/// How long a scrape waits for the rollup's lag before answering without a fresh one.
const LAG_TIMEOUT: Duration = Duration::from_secs(1);

/// The metrics, with the gauges that are read rather than counted sampled now: each pool's
/// connections, and the rollup's lag.
pub async fn render(state: web::Data<AppState>) -> HttpResponse {
    // The pools first, so that the lag's own connection is not counted in use.
    pool::record_status(&state.pool, "primary");
    if let Some(read) = &state.read_pool {
        pool::record_status(read, "read");
    }
    record_rollup_lag(&state).await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .body(handle().render())
}

/// `usage_api_rollup_lag_seconds`: the age of the oldest dirty mark, read from the database at
/// each scrape rather than reported by the rollup worker, so that a worker that is stuck, dead,
/// or off on this replica (`USAGE_API_ROLLUP_INTERVAL_MS=0`) shows as a growing lag instead of
/// its last good value; every replica reads the same number (aggregate with `max`). When the
/// database does not answer within `LAG_TIMEOUT` the gauge keeps its last value and the scrape
/// goes on (the pool's and the requests' metrics tell that story).
async fn record_rollup_lag(state: &AppState) {
    let read = async {
        let mut conn = state.pool.get().await.map_err(|err| err.to_string())?;
        dirty::oldest_age(&mut conn)
            .await
            .map_err(|err| err.to_string())
    };
    match tokio::time::timeout(LAG_TIMEOUT, read).await {
        Ok(Ok(seconds)) => metrics::gauge!("usage_api_rollup_lag_seconds").set(seconds),
        Ok(Err(err)) => tracing::debug!(error = %err, "the rollup's lag is unknown"),
        Err(_) => tracing::debug!("the rollup's lag is unknown: the database is slow"),
    }
}
