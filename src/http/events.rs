//! `POST /express/usage/events`: a producer sends a batch of raw events (a JSON array, or NDJSON)
//! and learns, per event, whether it was accepted, a duplicate, or rejected and why. An event
//! naming an account that is not the caller's organization's is rejected `unknown_account`
//! (whether the account exists elsewhere or nowhere), the others are kept. An `Idempotency-Key`
//! replays the stored answer of the first request that used it, for a day by default.

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::app::AppState;
use crate::auth::{Principal, WRITE_SCOPE};
use crate::error::{ApiError, ApiResult};
use crate::usage::digest;
use crate::usage::write::event::{split_reason, Entry, RawEvent, Window};
use crate::usage::write::idempotency::{IdempotencyKey, Submission};
use crate::usage::write::store::{self, Outcome};

/// Largest accepted body.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Most events in one request.
pub const MAX_EVENTS: usize = 10_000;
/// Longest accepted Idempotency-Key.
pub const MAX_KEY_CHARS: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Array,
    Ndjson,
}

fn body_format(req: &HttpRequest, body: &[u8]) -> ApiResult<BodyFormat> {
    let Some(value) = req.headers().get(CONTENT_TYPE) else {
        // No media type: tell by the first character.
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        return Ok(if first == Some(&b'[') {
            BodyFormat::Array
        } else {
            BodyFormat::Ndjson
        });
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyFormat::Array),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines" => Ok(BodyFormat::Ndjson),
        _ => Err(ApiError::UnsupportedMediaType(
            "Send application/json (an array of events) or application/x-ndjson (one event per \
             line).",
        )),
    }
}

/// Reads the body, refusing it (`413`, the JSON error body) as soon as it is larger than `limit`.
pub(super) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> ApiResult<Vec<u8>> {
    let too_large = || ApiError::PayloadTooLarge(format!("the body is larger than {limit} bytes"));
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::InvalidBody("the body could not be read".to_owned()))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The events of the body, each with its position (array index, or 0-based line), or the reason
/// it cannot be read. Public for the fuzz targets (fuzz/src/lib.rs).
pub fn parse_events(
    format: BodyFormat,
    body: &[u8],
) -> ApiResult<Vec<(usize, Result<RawEvent, String>)>> {
    let too_many =
        || ApiError::PayloadTooLarge(format!("a request carries at most {MAX_EVENTS} events"));
    match format {
        BodyFormat::Array => {
            let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(|err| {
                ApiError::InvalidBody(format!("the body is not a JSON array of events: {err}"))
            })?;
            if items.len() > MAX_EVENTS {
                return Err(too_many());
            }
            Ok(items
                .into_iter()
                .enumerate()
                .map(|(index, item)| (index, RawEvent::from_json(item.get())))
                .collect())
        }
        BodyFormat::Ndjson => {
            let lines: Vec<(usize, &[u8])> = body
                .split(|b| *b == b'\n')
                .enumerate()
                .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
                .collect();
            if lines.len() > MAX_EVENTS {
                return Err(too_many());
            }
            Ok(lines
                .into_iter()
                .map(|(index, line)| {
                    let parsed = std::str::from_utf8(line)
                        .map_err(|_| "line is not valid UTF-8".to_owned())
                        .and_then(|text| RawEvent::from_json(text.trim()));
                    (index, parsed)
                })
                .collect())
        }
    }
}

fn idempotency_key(req: &HttpRequest) -> ApiResult<Option<String>> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or("");
    if key.is_empty() || key.len() > MAX_KEY_CHARS || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            format!("must be 1 to {MAX_KEY_CHARS} visible ASCII characters"),
        ));
    }
    Ok(Some(key.to_owned()))
}

/// What became of one event, as the report spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Accepted,
    Duplicate,
    Rejected,
}

#[derive(Clone, Serialize)]
struct EventResult {
    index: usize,
    event_id: Option<String>,
    status: Status,
    /// A stable code (`unknown_account`, `out_of_range`) or, for a malformed event, what is
    /// wrong with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// What a coded reason means for this event.
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
}

impl EventResult {
    fn reject(&mut self, reason: &str) {
        let (code, description) = split_reason(reason);
        self.status = Status::Rejected;
        self.reason = Some(code.to_owned());
        self.description = description.map(str::to_owned);
    }
}

#[derive(Serialize)]
struct IngestReport {
    accepted: usize,
    duplicate: usize,
    rejected: usize,
    results: Vec<EventResult>,
}

pub async fn ingest(
    principal: Principal,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    principal.require(WRITE_SCOPE)?;
    let key = idempotency_key(&req)?;
    let body = read_body(&req, payload, MAX_BODY_BYTES).await?;
    let format = body_format(&req, &body)?;
    let parsed = parse_events(format, &body)?;
    let (results, valid, slots) = check_events(parsed, &Window::now(state.max_event_age_days));
    let request_hash = request_hash(format, &body);
    let key = key.as_deref().map(|key| IdempotencyKey {
        key,
        request_hash: &request_hash,
        expired_before: chrono::Utc::now() - state.idempotency_ttl,
    });
    let mut conn = state.primary().await?;
    let organization = &principal.organization_id;
    let submission = store::submit(&mut conn, organization, key, &valid, |outcomes| {
        report(results.clone(), &slots, outcomes)
    })
    .await?;
    drop(conn);
    let (body, replayed) = match submission {
        Submission::Stored(body) => {
            state.rollup_wake.notify_one();
            (body, false)
        }
        Submission::Replayed(body) => (body, true),
        Submission::KeyReused => return Err(ApiError::IdempotencyKeyReused),
    };
    let mut response = HttpResponse::Ok();
    response.content_type("application/json");
    if replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(response.body(body))
}

/// Checks every event: a result per event (rejected ones final), the valid entries in order,
/// and the result slot of each valid entry.
fn check_events(
    parsed: Vec<(usize, Result<RawEvent, String>)>,
    window: &Window,
) -> (Vec<EventResult>, Vec<Entry>, Vec<usize>) {
    let mut results: Vec<EventResult> = Vec::with_capacity(parsed.len());
    let mut valid: Vec<Entry> = Vec::new();
    let mut slots: Vec<usize> = Vec::new();
    for (index, raw) in parsed {
        let event_id = raw.as_ref().ok().and_then(|r| r.event_id.clone());
        let mut result = EventResult {
            index,
            event_id,
            status: Status::Accepted,
            reason: None,
            description: None,
        };
        match raw.and_then(|raw| raw.into_entry(window)) {
            Ok(entry) => {
                slots.push(results.len());
                valid.push(entry);
            }
            Err(reason) => result.reject(&reason),
        }
        results.push(result);
    }
    (results, valid, slots)
}

/// The digest an `Idempotency-Key` is bound to: the body as sent, and how it was read.
fn request_hash(format: BodyFormat, body: &[u8]) -> String {
    digest::hex(&digest::sha256(&[&[format as u8], body]))
}

/// The answer: every event's result, with the store's outcome in the slots of valid ones.
fn report(mut results: Vec<EventResult>, slots: &[usize], outcomes: &[Outcome]) -> String {
    for (slot, outcome) in slots.iter().zip(outcomes) {
        let result = &mut results[*slot];
        match outcome {
            Outcome::Accepted => {}
            Outcome::Duplicate => result.status = Status::Duplicate,
            Outcome::Rejected(reason) => result.reject(reason),
        }
    }
    let count = |status: Status| results.iter().filter(|r| r.status == status).count();
    let report = IngestReport {
        accepted: count(Status::Accepted),
        duplicate: count(Status::Duplicate),
        rejected: count(Status::Rejected),
        results,
    };
    serde_json::to_string(&report).unwrap_or_default()
}
