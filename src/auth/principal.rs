//! `Principal`: who a request speaks for, as an actix extractor. It reads exactly one
//! `Authorization: Bearer …` header (scheme name case-insensitive, oversized headers refused
//! before any parsing; a token in the query string is never looked at) and verifies it.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use super::admission::Admission;
use super::verifier::{Principal, Refusal, Verifier, MAX_TOKEN_BYTES};
use crate::error::ApiError;

/// Scope needed to read monthly usage.
pub const READ_SCOPE: &str = "express-accounts-usage:read";
/// Scope needed to send usage events.
pub const WRITE_SCOPE: &str = "express-accounts-usage:write";
/// Scope needed to manage usage triggers and read their deliveries.
pub const TRIGGERS_SCOPE: &str = "express-accounts-usage:triggers";

impl Principal {
    /// 403 `insufficient_scope` unless the token carries `scope`.
    pub fn require(&self, scope: &'static str) -> Result<(), ApiError> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(ApiError::InsufficientScope { scope })
        }
    }
}

fn unauthorized(token_sent: bool, reason: &str) -> ApiError {
    ApiError::Unauthorized {
        token_sent,
        reason: reason.to_owned(),
    }
}

/// The bearer token of the request, or why there is none.
fn bearer_token(req: &HttpRequest) -> Result<String, ApiError> {
    let mut headers = req.headers().get_all(AUTHORIZATION);
    let Some(value) = headers.next() else {
        return Err(unauthorized(false, "no Authorization header was sent"));
    };
    if headers.next().is_some() {
        return Err(unauthorized(
            true,
            "more than one Authorization header was sent",
        ));
    }
    if value.len() > MAX_TOKEN_BYTES + 16 {
        return Err(unauthorized(true, "the Authorization header is too large"));
    }
    let value = value
        .to_str()
        .map_err(|_| unauthorized(true, "the Authorization header is not readable"))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized(
            false,
            "the Bearer authentication scheme is required",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(unauthorized(false, "the bearer token is empty"));
    }
    let token68 = token.trim_end_matches('=');
    if !token68
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
    {
        return Err(unauthorized(true, "the token is malformed"));
    }
    Ok(token.to_owned())
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    /// Verifies the token, then admits the request under its organization's limits and waits
    /// for its turn to run: the ticket stays in the request's extensions until the answer is
    /// sent.
    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let token = bearer_token(req);
        let verifier = req.app_data::<web::Data<Verifier>>().cloned();
        let req = req.clone();
        Box::pin(async move {
            let token = token?;
            let verifier =
                verifier.ok_or_else(|| ApiError::internal(anyhow::anyhow!("no Verifier")))?;
            let principal = verifier
                .verify(&token)
                .await
                .map_err(|refusal| match refusal {
                    Refusal::Invalid(reason) => unauthorized(true, &reason),
                    Refusal::IssuerUnavailable => ApiError::IssuerUnavailable,
                })?;
            // The request's log line names who it spoke for (a refused one too).
            tracing::Span::current()
                .record("organization", principal.organization_id.as_str())
                .record("subject", principal.subject.as_deref());
            if let Some(admission) = req.app_data::<web::Data<Admission>>() {
                let ticket = admission
                    .clone()
                    .into_inner()
                    .admit(principal.organization_id.as_str())?;
                ticket.wait_turn().await?;
                req.extensions_mut().insert(std::rc::Rc::new(ticket));
            }
            Ok(principal)
        })
    }
}
