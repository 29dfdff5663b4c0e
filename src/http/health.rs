//! Liveness and readiness probes (unauthenticated, no data).

use actix_web::{web, HttpResponse};
use diesel_async::RunQueryDsl;

use crate::app::AppState;

/// The process is up.
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// The process can serve: the database answers and the issuer's keys are loaded. Always a
/// `Health` document, 200 when ready and 503 (with `Retry-After`) naming what is missing, so a
/// probe and a person read the same answer; the database's error goes to the log only.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let database = match database_answers(&state).await {
        Ok(()) if !state.is_open() => "unavailable",
        Ok(()) => "ok",
        Err(error) => {
            tracing::warn!(error = %error, "readiness: the database does not answer");
            "unavailable"
        }
    };
    let keys = state.verifier.ready();
    let ready = keys && database == "ok";
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "database": database,
        "keys": if keys { "loaded" } else { "not_loaded" },
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .insert_header(("Cache-Control", "no-store"))
            .json(body)
    }
}

async fn database_answers(state: &AppState) -> anyhow::Result<()> {
    let mut conn = state.pool.get().await?;
    diesel::sql_query("SELECT 1").execute(&mut conn).await?;
    Ok(())
}
