//! Liveness and readiness probes (unauthenticated, no data).

use actix_web::{web, HttpResponse};
use diesel_async::RunQueryDsl;

use crate::app::AppState;
use crate::error::ApiResult;

/// The process is up.
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// The process can serve: the database answers and the issuer's keys are loaded.
pub async fn ready(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let mut conn = state.pool.get().await?;
    diesel::sql_query("SELECT 1").execute(&mut conn).await?;
    let keys = state.verifier.ready();
    let body = serde_json::json!({
        "status": if keys { "ready" } else { "not_ready" },
        "database": "ok",
        "keys": if keys { "loaded" } else { "not_loaded" },
    });
    Ok(if keys {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .insert_header(("Cache-Control", "no-store"))
            .json(body)
    })
}
