//! The route table. Unknown paths and wrong methods answer in the same JSON error body. Every
//! route of the API runs under the request deadline (`deadline`), inside each resource: a
//! middleware outside the router may not hold the request while it is routed.

use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse};

use super::{categories, deadline, events, health, metrics, monthly, raw, records, triggers};
use crate::error::ApiError;

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

async fn only_get() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed("GET"))
}

async fn get_or_post() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed("GET, POST"))
}

/// A trigger allows DELETE too; the collection does not.
async fn trigger_methods(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    let tail = req.match_info().get("triggers").unwrap_or("");
    Err(ApiError::MethodNotAllowed(triggers::allowed_methods(tail)))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/express/usage/month")
            .wrap(from_fn(deadline::deadline))
            .route(web::get().to(monthly::list))
            .default_service(web::to(only_get)),
    )
    .service(
        web::resource("/express/usage/month/{id}")
            .wrap(from_fn(deadline::deadline))
            .route(web::get().to(monthly::show))
            .default_service(web::to(only_get)),
    )
    .service(
        web::resource(raw::PATH)
            .wrap(from_fn(deadline::deadline))
            .route(web::post().to(events::ingest))
            .route(web::get().to(raw::list))
            .default_service(web::to(get_or_post)),
    )
    .service(
        web::resource(categories::CATEGORIES_PATH)
            .wrap(from_fn(deadline::deadline))
            .route(web::get().to(categories::list))
            .default_service(web::to(only_get)),
    )
    .service(
        web::resource(records::PATH)
            .wrap(from_fn(deadline::deadline))
            .wrap(from_fn(records::with_status))
            .route(web::get().to(records::list))
            .default_service(web::to(only_get)),
    )
    .service(
        web::resource(triggers::PATH)
            .wrap(from_fn(deadline::deadline))
            .wrap(from_fn(records::with_status))
            .route(web::get().to(triggers::handle))
            .route(web::post().to(triggers::handle))
            .route(web::delete().to(triggers::handle))
            .default_service(web::to(trigger_methods)),
    )
    .service(
        web::resource(triggers::DELIVERIES_PATH)
            .wrap(from_fn(deadline::deadline))
            .route(web::get().to(triggers::deliveries))
            .default_service(web::to(only_get)),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(metrics::render))
            .default_service(web::to(only_get)),
    )
    .service(web::resource("/health/live").route(web::get().to(health::live)))
    .service(web::resource("/health/ready").route(web::get().to(health::ready)))
    .default_service(web::to(not_found));
}
