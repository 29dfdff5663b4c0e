//! `POST /express/usage/events`: a producer sends a batch of raw events (a JSON array, or NDJSON)
//! and learns, per event, whether it was accepted, a duplicate, or rejected and why. Events may
//! only name accounts of the caller's organization. An `Idempotency-Key` replays the stored
//! answer of the first request that used it.

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::auth::{Principal, WRITE_SCOPE};
use crate::db::pool;
use crate::error::{ApiError, ApiResult};
use crate::usage::accounts;
use crate::usage::event::{Entry, RawEvent};
use crate::usage::ingest::{self, IdempotencyKey, Outcome, Submission};

/// Largest accepted body.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Most events in one request.
pub const MAX_EVENTS: usize = 10_000;
/// Longest accepted Idempotency-Key.
pub const MAX_KEY_CHARS: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFormat {
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
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

/// Reads the body, refusing it as soon as it is larger than the limit.
async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> ApiResult<Vec<u8>> {
    let too_large =
        || ApiError::PayloadTooLarge(format!("the body is larger than {MAX_BODY_BYTES} bytes"));
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::InvalidBody("the body could not be read".to_owned()))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The events of the body, each with its position (array index, or 0-based line), or the reason
/// it cannot be read.
fn parse_events(
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

#[derive(Serialize)]
struct EventResult {
    index: usize,
    event_id: Option<String>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
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
    let body = read_body(&req, payload).await?;
    let format = body_format(&req, &body)?;
    let parsed = parse_events(format, &body)?;
    let organization = principal.organization_id.as_str();

    // The ownership rule first: naming any account outside the organization refuses the batch.
    let mut named: Vec<String> = parsed
        .iter()
        .filter_map(|(_, raw)| raw.as_ref().ok()?.account_id.clone())
        .filter(|id| !id.trim().is_empty())
        .collect();
    named.sort_unstable();
    named.dedup();
    let mut conn = pool::connection(&state.pool).await?;
    let foreign = accounts::foreign_accounts(&mut conn, organization, &named).await?;
    if !foreign.is_empty() {
        return Err(ApiError::ForbiddenAccounts(foreign));
    }

    // Check every event; the valid ones are stored, in order.
    let mut results: Vec<EventResult> = Vec::with_capacity(parsed.len());
    let mut valid: Vec<Entry> = Vec::new();
    let mut slots: Vec<usize> = Vec::new();
    for (index, raw) in parsed {
        let event_id = raw.as_ref().ok().and_then(|r| r.event_id.clone());
        match raw.and_then(RawEvent::into_entry) {
            Ok(entry) => {
                slots.push(results.len());
                valid.push(entry);
                results.push(EventResult {
                    index,
                    event_id,
                    status: "accepted",
                    reason: None,
                });
            }
            Err(reason) => results.push(EventResult {
                index,
                event_id,
                status: "rejected",
                reason: Some(reason),
            }),
        }
    }
    let request_hash = {
        let mut digest = Sha256::new();
        digest.update([format as u8]);
        digest.update(&body);
        digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let key = key.as_deref().map(|key| IdempotencyKey {
        key,
        request_hash: &request_hash,
    });
    let submission = ingest::submit(
        &mut conn,
        organization,
        key,
        &valid,
        |outcomes: &[Outcome]| {
            for (slot, outcome) in slots.iter().zip(outcomes) {
                let result = &mut results[*slot];
                match outcome {
                    Outcome::Accepted => {}
                    Outcome::Duplicate => result.status = "duplicate",
                    Outcome::Rejected(reason) => {
                        result.status = "rejected";
                        result.reason = Some(reason.clone());
                    }
                }
            }
            let count = |status: &str| results.iter().filter(|r| r.status == status).count();
            let report = IngestReport {
                accepted: count("accepted"),
                duplicate: count("duplicate"),
                rejected: count("rejected"),
                results,
            };
            serde_json::to_string(&report).unwrap_or_default()
        },
    )
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
