//! The route table. Unknown paths and wrong methods answer in the same JSON error body.

use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse};

use super::{categories, events, health, monthly, records};
use crate::error::ApiError;

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

async fn only_get() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed("GET"))
}

async fn only_post() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed("POST"))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/express/usage/month")
            .route(web::get().to(monthly::list))
            .default_service(web::to(only_get)),
    )
    .service(
        web::resource("/express/usage/month/{id}")
            .route(web::get().to(monthly::show))
            .default_service(web::to(only_get)),
    )
    .service(
        web::resource("/express/usage/events")
            .route(web::post().to(events::ingest))
            .default_service(web::to(only_post)),
    )
    .service(
        web::resource(categories::CATEGORIES_PATH)
            .route(web::get().to(categories::list))
            .default_service(web::to(only_get)),
    )
    .service(
        web::resource(records::PATH)
            .wrap(from_fn(records::with_status))
            .route(web::get().to(records::list))
            .default_service(web::to(only_get)),
    )
    .service(web::resource("/health/live").route(web::get().to(health::live)))
    .service(web::resource("/health/ready").route(web::get().to(health::ready)))
    .default_service(web::to(not_found));
}
