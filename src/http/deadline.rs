//! The request deadline (`USAGE_API_REQUEST_TIMEOUT_MS`): a request not answered in time gets
//! `503 service_unavailable` with a jittered `Retry-After`, and the statements its connections
//! are running are cancelled with the protocol's cancel request (`db::cancel`), so neither a
//! backend nor a pooled connection stays busy for an answer nobody will read.
//!
//! A read (GET) whose client goes away is stopped the same way (`http::peer`), and logged 499.
//!
//! Until `serve` has applied its migrations (it waits for the database to answer), every API
//! route answers `503` here.
//!
//! The deadline covers the handler, up to the first byte of the answer: a streaming export has
//! its headers out as soon as its cursor is open and is then bounded by its own progress (a
//! stalled reader stops it), not by the deadline.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpResponse, ResponseError};

use crate::app::{AppState, DEFAULT_REQUEST_TIMEOUT};
use crate::db::cancel::{Checkouts, CHECKOUTS};
use crate::error::ApiError;

use super::peer::Peer;

/// How long a handler whose statements were cancelled has to finish (and give its connections
/// back to the pool cleanly) before its answer is given up.
const GRACE: Duration = Duration::from_secs(2);

pub async fn deadline(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let state = req.app_data::<web::Data<AppState>>();
    let limit = state.map_or(DEFAULT_REQUEST_TIMEOUT, |state| state.request_timeout);
    let request = req.request().clone();
    if state.is_some_and(|state| !state.is_open()) {
        let error = ApiError::Unavailable(anyhow::anyhow!("the migrations are not applied yet"));
        return Ok(ServiceResponse::new(request, error.error_response()).map_into_right_body());
    }
    let checkouts = Arc::new(Checkouts::default());
    // A read whose client goes away stops as one past its deadline does (`peer`).
    let peer = (req.method() == Method::GET)
        .then(|| req.conn_data::<Peer>().cloned())
        .flatten();
    let handled = CHECKOUTS.scope(checkouts.clone(), next.call(req));
    tokio::pin!(handled);
    let abandoned = tokio::select! {
        answer = &mut handled => return answer.map(ServiceResponse::map_into_left_body),
        () = tokio::time::sleep(limit) => false,
        () = client_gone(peer) => true,
    };
    // The handler still holds its connections: cancel their statements first, then let it see
    // them fail and hand the connections back, so that no cancel can reach another request.
    checkouts.cancel_all().await;
    let _ = tokio::time::timeout(GRACE, &mut handled).await;
    if abandoned {
        metrics::counter!("usage_api_requests_abandoned_total").increment(1);
        tracing::info!("the client went away: its statements were cancelled");
        // Nobody reads it; the log line and the metrics say 499, as nginx does.
        let response =
            HttpResponse::new(StatusCode::from_u16(499).unwrap_or(StatusCode::SERVICE_UNAVAILABLE));
        return Ok(ServiceResponse::new(request, response).map_into_right_body());
    }
    metrics::counter!("usage_api_request_deadlines_total").increment(1);
    // Inside the request's span, which names its route and id (never its path: ids).
    tracing::warn!(
        limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        "no answer within the request deadline: its statements were cancelled"
    );
    let response = ApiError::Deadline(limit).error_response();
    Ok(ServiceResponse::new(request, response).map_into_right_body())
}

/// Resolves when the request's client has gone (never, when it is not watched).
async fn client_gone(peer: Option<Peer>) {
    match peer {
        Some(peer) => peer.gone().await,
        None => std::future::pending().await,
    }
}
