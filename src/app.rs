//! `AppState` and the application (routes + middleware), shared by `serve` and the tests.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{web, App};

use crate::auth::Verifier;
use crate::db::DbPool;
use crate::error::{ApiError, FieldError};
use crate::http::{request_id::request_id, routes};

/// Built once, shared by every worker.
pub struct AppState {
    pub pool: DbPool,
    pub verifier: Verifier,
    /// Base of every HAL link, without a trailing slash.
    pub public_url: String,
    /// Wakes the rollup worker when new events have committed.
    pub rollup_wake: std::sync::Arc<tokio::sync::Notify>,
}

/// The application: routes, the JSON error bodies for actix's own extractor errors, request ids.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .app_data(web::PathConfig::default().error_handler(|err, _| {
            ApiError::InvalidParameter(vec![FieldError::new("path", err.to_string())]).into()
        }))
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            ApiError::InvalidParameter(vec![FieldError::new("query", err.to_string())]).into()
        }))
        .configure(routes::configure)
        .wrap(from_fn(request_id))
}
