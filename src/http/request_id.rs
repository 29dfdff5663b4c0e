//! `X-Request-Id` on every response (the caller's, when it is sane, else a new one), and one
//! structured log line per request. Tokens and query strings are never logged.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::Error;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The caller's id when it is exactly one value of the documented pattern
/// (`^[A-Za-z0-9._:-]{1,128}$`); anything else is replaced.
fn incoming(req: &ServiceRequest) -> Option<HeaderValue> {
    let mut values = req.headers().get_all(&X_REQUEST_ID);
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let ok = (1..=128).contains(&value.len())
        && value
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b));
    ok.then(|| value.clone())
}

pub async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = incoming(&req).unwrap_or_else(|| {
        HeaderValue::from_str(&uuid::Uuid::new_v4().simple().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"))
    });
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let mut response = next.call(req).await?;
    response.headers_mut().insert(X_REQUEST_ID, id.clone());
    tracing::info!(
        request_id = id.to_str().unwrap_or(""),
        %method,
        path,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    Ok(response)
}
