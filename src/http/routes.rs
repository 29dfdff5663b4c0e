//! The route table. Unknown paths and wrong methods answer in the same JSON error body.

use actix_web::{web, HttpResponse};

use super::{health, monthly};
use crate::error::ApiError;

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/express/usage/month")
            .route(web::get().to(monthly::list))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/express/usage/month/{id}")
            .route(web::get().to(monthly::show))
            .default_service(web::to(method_not_allowed)),
    )
    .service(web::resource("/health/live").route(web::get().to(health::live)))
    .service(web::resource("/health/ready").route(web::get().to(health::ready)))
    .default_service(web::to(not_found));
}
