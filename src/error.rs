//! The one error type of the HTTP surface, `ApiError`, and its JSON body.
//!
//! Every non-2xx answer is `{"code", "message", "description"?, "fields": [{"name", "description"}]}`.
//! A 5xx is logged once with its source chain and answered with a generic message: no SQL, stack
//! or internal name ever reaches a body.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

pub type ApiResult<T> = Result<T, ApiError>;

/// The realm named in every `WWW-Authenticate` challenge.
pub const REALM: &str = "usage-api";

/// One parameter at fault, as listed in the error body's `fields`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub name: String,
    pub description: String,
}

impl FieldError {
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query or path parameter is malformed.
    #[error("invalid parameter")]
    InvalidParameter(Vec<FieldError>),
    /// The `filter` expression does not parse or names a wrong literal.
    #[error("invalid filter")]
    InvalidFilter(FieldError),
    /// No bearer token was sent (`token_sent == false`) or it was not acceptable.
    #[error("unauthorized: {reason}")]
    Unauthorized { token_sent: bool, reason: String },
    /// The token is valid but lacks the scope this operation needs.
    #[error("insufficient scope")]
    InsufficientScope { scope: &'static str },
    /// The filter names accounts outside the caller's organization (or that do not exist).
    #[error("forbidden accounts")]
    ForbiddenAccounts(Vec<String>),
    /// The request body is not what the operation reads (malformed JSON, …).
    #[error("invalid body")]
    InvalidBody(String),
    /// The body is larger (in bytes or events) than the operation accepts.
    #[error("payload too large")]
    PayloadTooLarge(String),
    /// With what the operation reads, in a sentence ("Send …").
    #[error("unsupported media type")]
    UnsupportedMediaType(&'static str),
    /// The organization keeps as many of these resources as it may.
    #[error("limit reached")]
    LimitReached(String),
    /// The Idempotency-Key was used before with a different request.
    #[error("idempotency key reused")]
    IdempotencyKeyReused,
    #[error("not found")]
    NotFound,
    /// With the methods the resource does allow.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// The request lost a race with another one on the same data, every time it was tried.
    #[error("conflict")]
    Conflict(#[source] anyhow::Error),
    /// The database cannot be reached right now; the client should retry.
    #[error("service unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// The caller's organization sent more requests, or more at once, than it may.
    #[error("rate limited")]
    RateLimited(Refusal),
    /// No answer within the request deadline; the request's database work was cancelled.
    #[error("request deadline")]
    Deadline(std::time::Duration),
    /// The token's issuer cannot be reached for its keys right now: the token may be fine.
    #[error("issuer unavailable")]
    IssuerUnavailable,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    description: &'a str,
    fields: &'a [FieldError],
}

impl ApiError {
    /// Every `code` an error body can carry (openapi.yaml lists exactly these; a test checks).
    pub const CODES: &'static [&'static str] = &[
        "invalid_parameter",
        "invalid_filter",
        "unauthorized",
        "invalid_token",
        "insufficient_scope",
        "forbidden_accounts",
        "invalid_body",
        "payload_too_large",
        "unsupported_media_type",
        "limit_reached",
        "idempotency_key_reused",
        "not_found",
        "method_not_allowed",
        "conflict",
        "rate_limited",
        "service_unavailable",
        "internal_error",
    ];

    /// The stable, documented `code` of this error (listed in openapi.yaml).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidParameter(_) => "invalid_parameter",
            Self::InvalidFilter(_) => "invalid_filter",
            Self::Unauthorized {
                token_sent: false, ..
            } => "unauthorized",
            Self::Unauthorized {
                token_sent: true, ..
            } => "invalid_token",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::ForbiddenAccounts(_) => "forbidden_accounts",
            Self::InvalidBody(_) => "invalid_body",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::LimitReached(_) => "limit_reached",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::RateLimited(_) => "rate_limited",
            Self::Unavailable(_) | Self::Deadline(_) | Self::IssuerUnavailable => {
                "service_unavailable"
            }
            Self::Internal(_) => "internal_error",
        }
    }

    fn message(&self) -> &'static str {
        match self {
            Self::InvalidParameter(_) => "A request parameter is invalid.",
            Self::InvalidFilter(_) => "The filter expression is invalid.",
            Self::Unauthorized {
                token_sent: false, ..
            } => "A bearer access token is required.",
            Self::Unauthorized {
                token_sent: true, ..
            } => "The access token is not valid.",
            Self::InsufficientScope { .. } => "The access token lacks the required scope.",
            Self::ForbiddenAccounts(_) => {
                "This caller is not authorized to query the given accounts."
            }
            Self::InvalidBody(_) => "The request body is invalid.",
            Self::PayloadTooLarge(_) => "The request body is too large.",
            Self::UnsupportedMediaType(_) => "The request body's media type is not supported.",
            Self::LimitReached(_) => "The organization has reached a limit.",
            Self::IdempotencyKeyReused => {
                "This Idempotency-Key was already used for a different request."
            }
            Self::NotFound => "The resource does not exist.",
            Self::MethodNotAllowed(_) => "The method is not allowed on this resource.",
            Self::Conflict(_) => "The request conflicted with a concurrent one; retry it.",
            Self::RateLimited(_) => "Too many requests for this organization; retry later.",
            Self::Unavailable(_) | Self::Deadline(_) | Self::IssuerUnavailable => {
                "The service is temporarily unavailable; retry shortly."
            }
            Self::Internal(_) => "An internal error occurred.",
        }
    }

    /// Always present: what went wrong for this request, in a sentence.
    fn description(&self) -> String {
        let join = |fields: &[FieldError]| {
            let parts: Vec<String> = fields
                .iter()
                .map(|f| format!("{}: {}", f.name, f.description))
                .collect();
            parts.join("; ")
        };
        match self {
            Self::InvalidParameter(fields) => join(fields),
            Self::InvalidFilter(field) => field.description.clone(),
            Self::Unauthorized { reason, .. } => reason.clone(),
            Self::InsufficientScope { scope } => format!("The scope '{scope}' is required."),
            Self::ForbiddenAccounts(_) => "The accounts specified are not under the organization \
                                           owning the current authentication token."
                .to_owned(),
            Self::InvalidBody(reason) | Self::PayloadTooLarge(reason) => reason.clone(),
            Self::UnsupportedMediaType(what) => (*what).to_owned(),
            Self::LimitReached(reason) => reason.clone(),
            Self::IdempotencyKeyReused => "Use a new key for a new request; a repeated request \
                                           must be byte-for-byte the same to be replayed."
                .to_owned(),
            Self::NotFound => {
                "Nothing exists at this path for the calling organization.".to_owned()
            }
            Self::MethodNotAllowed(allowed) => match allowed.rsplit_once(", ") {
                None => format!("Only {allowed} is allowed on this resource."),
                Some((some, last)) => {
                    format!("Only {some} and {last} are allowed on this resource.")
                }
            },
            Self::Conflict(_) => "Another request changed the same data at the same time, on \
                                  every attempt; nothing of this one was stored. Send it again."
                .to_owned(),
            Self::RateLimited(refusal) => refusal.description(),
            Self::Unavailable(_) => {
                "The service cannot reach its database; retry after the Retry-After delay."
                    .to_owned()
            }
            Self::Deadline(limit) => format!(
                "The request was not answered within its deadline ({} ms) and was stopped; \
                 retry after the Retry-After delay.",
                limit.as_millis()
            ),
            Self::IssuerUnavailable => "The token issuer's signing keys cannot be fetched right \
                                        now; retry after the Retry-After delay."
                .to_owned(),
            Self::Internal(_) => {
                "The error was logged with this response's X-Request-Id.".to_owned()
            }
        }
    }

    fn fields(&self) -> Vec<FieldError> {
        match self {
            Self::InvalidParameter(fields) => fields.clone(),
            Self::InvalidFilter(field) => vec![field.clone()],
            Self::InvalidBody(reason) | Self::PayloadTooLarge(reason) => {
                vec![FieldError::new("body", reason.clone())]
            }
            Self::IdempotencyKeyReused => vec![FieldError::new(
                "Idempotency-Key",
                "already used with a different request body",
            )],
            Self::ForbiddenAccounts(ids) => ids
                .iter()
                .map(|id| FieldError::new("account_id", id.clone()))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn invalid(name: &str, description: impl Into<String>) -> Self {
        Self::InvalidParameter(vec![FieldError::new(name, description)])
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3) for auth failures.
    fn challenge(&self) -> Option<String> {
        match self {
            Self::Unauthorized {
                token_sent: false, ..
            } => Some(format!("Bearer realm=\"{REALM}\"")),
            Self::Unauthorized {
                token_sent: true,
                reason,
            } => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
                reason.replace(['"', '\\'], "'")
            )),
            Self::InsufficientScope { scope } => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{scope}\""
            )),
            _ => None,
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    /// By the error's kind, which the driver derives from its SQLSTATE: the database out of
    /// reach (a lost connection, a standby refusing writes, SQLSTATE class 08, 53, 57, 58) is a
    /// 503; a race that outlived its retries (23505 unique violation, 40001 serialization
    /// failure, 40P01 deadlock) a 409; anything else a 500.
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as Kind, Error};
        match &err {
            Error::DatabaseError(
                Kind::ClosedConnection | Kind::UnableToSendCommand | Kind::ReadOnlyTransaction,
                _,
            ) => ApiError::Unavailable(err.into()),
            _ if is_race(&err) => ApiError::Conflict(err.into()),
            _ => ApiError::internal(err),
        }
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for ApiError {
    /// No connection to be had: the database is unreachable, or every connection is busy for
    /// longer than the pool's wait (503, retry); anything else is a 500.
    fn from(err: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        use diesel_async::pooled_connection::deadpool::PoolError;
        match err {
            PoolError::Backend(_) | PoolError::Timeout(_) | PoolError::Closed => {
                ApiError::Unavailable(anyhow::anyhow!("database pool: {err}"))
            }
            other => ApiError::internal(anyhow::anyhow!("database pool: {other}")),
        }
    }
}

/// Whether `err` is a lost race that running the whole transaction again may win: a unique
/// violation (23505: another transaction committed the same key first) or a serialization
/// failure (40001).
pub fn is_race(err: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind as Kind, Error};
    matches!(
        err,
        Error::DatabaseError(Kind::UniqueViolation | Kind::SerializationFailure, _)
    )
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidParameter(_) | Self::InvalidFilter(_) | Self::InvalidBody(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::LimitReached(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope { .. } | Self::ForbiddenAccounts(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::Deadline(_) | Self::IssuerUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Internal(source) => tracing::error!(error = ?source, "internal error"),
            Self::Unavailable(source) => tracing::warn!(error = ?source, "database unavailable"),
            Self::Conflict(source) => tracing::warn!(error = ?source, "conflict after retries"),
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, "application/json"));
        if let Some(challenge) = self.challenge() {
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response.insert_header((header::WWW_AUTHENTICATE, value));
            }
        }
        if matches!(
            self,
            Self::Unavailable(_) | Self::Deadline(_) | Self::IssuerUnavailable
        ) {
            // Jittered, so that clients turned away together do not come back together.
            let seconds = rand::random_range(1..=3u8);
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if let Self::RateLimited(refusal) = self {
            // Whole seconds, rounded up: coming back earlier would be refused again.
            let wait = refusal.retry_after.as_millis().div_ceil(1000).max(1);
            response.insert_header((header::RETRY_AFTER, wait.to_string()));
            response.insert_header(("RateLimit-Limit", refusal.limit.to_string()));
            response.insert_header(("RateLimit-Remaining", "0"));
            response.insert_header(("RateLimit-Reset", wait.to_string()));
        }
        // An error is about this request only: never stored, never sniffed into another type.
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        response.insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
        if let Self::MethodNotAllowed(allowed) = self {
            response.insert_header((header::ALLOW, *allowed));
        }
        response.body(self.body())
    }
}

impl ApiError {
    /// The JSON body of the answer.
    pub fn body(&self) -> String {
        let description = self.description();
        let fields = self.fields();
        let body = ErrorBody {
            code: self.code(),
            message: self.message(),
            description: &description,
            fields: &fields,
        };
        serde_json::to_string(&body).unwrap_or_default()
    }
}

/// Why a request was turned away by its organization's limits (`auth::admission`), and when
/// to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RefusalReason,
    /// `RateLimit-Limit`: the burst (requests in a full bucket), or the concurrency limit.
    pub limit: u32,
    /// How long until a request would be admitted (`Retry-After`, `RateLimit-Reset`).
    pub retry_after: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    Rate,
    Concurrency,
    /// It waited too long for one of its organization's turns to run.
    Turn,
}

impl Refusal {
    fn description(&self) -> String {
        match self.reason {
            RefusalReason::Rate => format!(
                "The organization's requests exceed its rate (a burst of {}); retry after the \
                 Retry-After delay.",
                self.limit
            ),
            RefusalReason::Concurrency => format!(
                "The organization already has {} requests in flight; retry after one of them \
                 has been answered.",
                self.limit
            ),
            RefusalReason::Turn => format!(
                "The organization's requests run {} at a time and this one waited too long for \
                 its turn; retry after the Retry-After delay.",
                self.limit
            ),
        }
    }
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Rate => "rate",
            RefusalReason::Concurrency => "concurrency",
            RefusalReason::Turn => "turn",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_a_listed_code_and_a_description() {
        let all = [
            ApiError::invalid("page", "x"),
            ApiError::InvalidFilter(FieldError::new("filter", "x")),
            ApiError::Unauthorized {
                token_sent: false,
                reason: "x".into(),
            },
            ApiError::Unauthorized {
                token_sent: true,
                reason: "x".into(),
            },
            ApiError::InsufficientScope { scope: "s" },
            ApiError::ForbiddenAccounts(vec!["a".into()]),
            ApiError::InvalidBody("x".into()),
            ApiError::PayloadTooLarge("x".into()),
            ApiError::UnsupportedMediaType("x"),
            ApiError::LimitReached("x".into()),
            ApiError::IdempotencyKeyReused,
            ApiError::NotFound,
            ApiError::MethodNotAllowed("GET"),
            ApiError::Conflict(anyhow::anyhow!("x")),
            ApiError::RateLimited(Refusal {
                reason: RefusalReason::Rate,
                limit: 1,
                retry_after: std::time::Duration::from_millis(1),
            }),
            ApiError::Unavailable(anyhow::anyhow!("x")),
            ApiError::Deadline(std::time::Duration::from_secs(1)),
            ApiError::IssuerUnavailable,
            ApiError::internal(anyhow::anyhow!("x")),
        ];
        let mut codes: Vec<&str> = all.iter().map(ApiError::code).collect();
        codes.sort_unstable();
        codes.dedup();
        let mut listed = ApiError::CODES.to_vec();
        listed.sort_unstable();
        assert_eq!(codes, listed);
        assert!(all.iter().all(|e| !e.description().is_empty()));
    }

    /// The bodies no test request can provoke on purpose; the others are snapshot as real
    /// answers (tests/api/error_bodies.rs).
    #[test]
    fn bodies_of_races_and_internal_errors() {
        for (name, error) in [
            (
                "conflict",
                ApiError::Conflict(anyhow::anyhow!("duplicate key value")),
            ),
            (
                "internal_error",
                ApiError::internal(anyhow::anyhow!("SELECT secret")),
            ),
            ("issuer_unavailable", ApiError::IssuerUnavailable),
        ] {
            let body: serde_json::Value = serde_json::from_str(&error.body()).unwrap();
            insta::assert_json_snapshot!(name, body);
            assert!(!error.body().contains("secret") && !error.body().contains("duplicate"));
        }
    }
}
