//! The HTTP surface: routes, handlers, HAL shapes, and the middleware every response passes.

pub mod categories;
pub mod cursor;
pub mod deadline;
pub mod events;
pub mod export;
pub mod hal;
pub mod health;
pub mod metrics;
pub mod monthly;
pub mod peer;
pub mod raw;
pub mod records;
pub mod request_id;
pub mod routes;
pub mod triggers;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{web, App};

use crate::app::AppState;
use crate::error::{ApiError, FieldError};

/// The application: routes, the JSON error bodies for actix's own extractor errors, request
/// ids. Shared by `serve` and the tests.
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
    let verifier = web::Data::from(state.verifier.clone());
    let admission = web::Data::from(state.admission.clone());
    App::new()
        .app_data(state)
        .app_data(verifier)
        .app_data(admission)
        .app_data(web::PathConfig::default().error_handler(|err, _| {
            ApiError::InvalidParameter(vec![FieldError::new("path", err.to_string())]).into()
        }))
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            ApiError::InvalidParameter(vec![FieldError::new("query", err.to_string())]).into()
        }))
        .configure(routes::configure)
        .wrap(from_fn(request_id::request_id))
}
