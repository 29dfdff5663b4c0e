//! `X-Request-Id` on every response (the caller's, when it is sane, else a new one), one
//! structured log line per request, and the request metrics: all in one middleware, the
//! outermost wrap of `http::app`.
//!
//! `request_id` decides the id and opens the request's span: `request_id`, `method`, `route`
//! (the matched pattern, e.g. `/express/usage/month/{id}`, or `unmatched`), and `organization`
//! and `subject`, empty until the `Principal` extractor records them into the current span once
//! the token is verified. `tracing-actix-web`'s `TracingLogger` carries that span over the
//! handler and over the streamed body (every line logged meanwhile names the request); then
//! `request_id` writes the request's line, inside the span, with `status` and `duration_ms` —
//! also for a request that ended in an error before any response existed — records the metrics
//! and echoes the id. Never logged: the raw path (it holds ids), the query string, any header
//! (`Authorization` least of all).
//!
//! Metrics: `usage_api_http_requests_total` and `usage_api_http_request_duration_seconds` by
//! `route`, `method` and `status`, and `usage_api_http_requests_in_flight`. No label ever names
//! an organization or an account.

use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::field::Empty;
use tracing::Span;
use tracing_actix_web::{RootSpanBuilder, TracingLogger};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The `route` of a request that no route matched (a 404 of an unknown path).
pub const UNMATCHED: &str = "unmatched";

/// The methods that are their own `method` label; any other is `OTHER` (a client may send any
/// token as a method: labels must stay few).
const METHODS: [(Method, &str); 7] = [
    (Method::GET, "GET"),
    (Method::POST, "POST"),
    (Method::PUT, "PUT"),
    (Method::PATCH, "PATCH"),
    (Method::DELETE, "DELETE"),
    (Method::HEAD, "HEAD"),
    (Method::OPTIONS, "OPTIONS"),
];

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

/// A new id: a UUID's 32 hex digits.
fn new_id() -> HeaderValue {
    HeaderValue::from_str(&uuid::Uuid::new_v4().simple().to_string())
        .unwrap_or(HeaderValue::from_static("unknown"))
}

/// What is known of a request when it arrives: enough to log and count it when it ends.
struct Arrival {
    id: HeaderValue,
    method: &'static str,
    route: String,
    span: Span,
}

impl Arrival {
    fn of(req: &ServiceRequest) -> Arrival {
        let id = incoming(req).unwrap_or_else(new_id);
        let method = METHODS
            .iter()
            .find(|(known, _)| known == req.method())
            .map_or("OTHER", |(_, label)| *label);
        // The pattern of the resource the path matches (routing has not run yet: the resource
        // map answers from the path alone), never the path itself.
        let route = req.match_pattern().unwrap_or_else(|| UNMATCHED.to_owned());
        let span = tracing::info_span!(
            "request",
            request_id = id.to_str().unwrap_or(""),
            method,
            route = route.as_str(),
            organization = Empty,
            subject = Empty,
        );
        Arrival {
            id,
            method,
            route,
            span,
        }
    }

    /// The request's line and metrics.
    fn end(&self, status: StatusCode, elapsed: Duration) {
        let labels = [
            ("route", self.route.clone()),
            ("method", self.method.to_owned()),
            ("status", status.as_u16().to_string()),
        ];
        metrics::counter!("usage_api_http_requests_total", &labels).increment(1);
        metrics::histogram!("usage_api_http_request_duration_seconds", &labels)
            .record(elapsed.as_secs_f64());
        let duration_ms = elapsed.as_micros() as f64 / 1000.0;
        self.span.in_scope(|| {
            tracing::info!(status = status.as_u16(), duration_ms, "request");
        });
    }
}

/// One request in flight, for `usage_api_http_requests_in_flight`, until it is answered or
/// dropped (a client that leaves).
struct InFlight;

impl InFlight {
    fn start() -> InFlight {
        metrics::gauge!("usage_api_http_requests_in_flight").increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("usage_api_http_requests_in_flight").decrement(1.0);
    }
}

/// The span `request_id` opened, handed to `TracingLogger` through the request's extensions.
#[derive(Clone)]
struct RequestSpan(Span);

/// `TracingLogger`'s root span is the one `request_id` opened; the request's end is written by
/// `request_id`, which sees every outcome (an error has no request left to read timings from).
pub struct RequestSpanBuilder;

impl RootSpanBuilder for RequestSpanBuilder {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let opened = request.extensions().get::<RequestSpan>().cloned();
        opened.map_or_else(|| Arrival::of(request).span, |opened| opened.0)
    }

    fn on_request_end<B: MessageBody>(_: Span, _: &Result<ServiceResponse<B>, Error>) {}
}

/// The middleware (`from_fn(request_id)`): see the module's documentation.
pub async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let _in_flight = InFlight::start();
    let arrival = Arrival::of(&req);
    req.extensions_mut()
        .insert(RequestSpan(arrival.span.clone()));
    // Building the logger around `next` costs a move: it holds nothing but the service.
    let logger = TracingLogger::<RequestSpanBuilder>::new()
        .new_transform(next)
        .await
        .map_err(|()| actix_web::error::ErrorInternalServerError("the request logger"))?;
    let outcome = logger.call(req).await;
    let status = match &outcome {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    arrival.end(status, started.elapsed());
    let mut response = outcome?;
    response.headers_mut().insert(X_REQUEST_ID, arrival.id);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use actix_web::middleware::from_fn;
    use actix_web::{test, web, App, HttpResponse};
    use serde_json::Value;

    use super::request_id;

    /// A log written to memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        /// The JSON lines whose message is `request`.
        fn requests(&self) -> Vec<Value> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|line| serde_json::from_str::<Value>(line).unwrap())
                .filter(|line| line["message"] == "request")
                .collect()
        }

        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// What the `Principal` extractor does once a token is verified.
    async fn authenticated() -> HttpResponse {
        tracing::Span::current()
            .record("organization", "org-1")
            .record("subject", Some("client-1"));
        HttpResponse::Ok().finish()
    }

    async fn refused(
        _: actix_web::dev::ServiceRequest,
        _: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
    ) -> Result<actix_web::dev::ServiceResponse, actix_web::Error> {
        Err(actix_web::error::ErrorTooManyRequests("slow down"))
    }

    #[actix_web::test]
    async fn one_line_per_request_with_its_route_pattern_status_and_principal() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(move || writer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let app = test::init_service(
            App::new()
                .route("/things/{id}", web::get().to(authenticated))
                .service(
                    web::resource("/refused")
                        .wrap(from_fn(refused))
                        .route(web::get().to(HttpResponse::Ok)),
                )
                .wrap(from_fn(request_id)),
        )
        .await;
        let get = |uri: &str, id: &str| {
            test::TestRequest::get()
                .uri(uri)
                .insert_header(("X-Request-Id", id))
                .insert_header(("Authorization", "Bearer s3cr3t-t0ken"))
                .to_request()
        };
        let thing = test::call_service(&app, get("/things/secret-42?token=q5x", "r-1")).await;
        assert_eq!(thing.status(), 200);
        assert_eq!(thing.headers().get("x-request-id").unwrap(), "r-1");
        assert!(test::try_call_service(&app, get("/refused", "r-2"))
            .await
            .is_err());
        let unknown = test::call_service(&app, get("/nowhere/secret-42", "r-3")).await;
        assert_eq!(unknown.status(), 404);

        let lines = captured.requests();
        assert_eq!(lines.len(), 3, "{lines:?}");
        let (thing, refused, unknown) = (&lines[0], &lines[1], &lines[2]);
        assert_eq!(thing["span"]["request_id"], "r-1", "{thing}");
        assert_eq!(thing["span"]["method"], "GET", "{thing}");
        assert_eq!(thing["span"]["route"], "/things/{id}", "{thing}");
        assert_eq!(thing["span"]["organization"], "org-1", "{thing}");
        assert_eq!(thing["span"]["subject"], "client-1", "{thing}");
        assert_eq!(thing["status"], 200, "{thing}");
        assert!(thing["duration_ms"].as_f64().is_some(), "{thing}");
        // An error that never became a response is still one line, with its status.
        assert_eq!(refused["span"]["route"], "/refused", "{refused}");
        assert_eq!(refused["status"], 429, "{refused}");
        assert_eq!(unknown["span"]["route"], "unmatched", "{unknown}");
        assert!(unknown["span"].get("organization").is_none(), "{unknown}");
        let text = captured.text();
        for secret in ["secret-42", "q5x", "s3cr3t-t0ken", "Authorization"] {
            assert!(!text.contains(secret), "{secret} is in the log: {text}");
        }
    }
}
