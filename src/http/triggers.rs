//! Usage triggers in Twilio's wire format (DESIGN §2d), so the official SDK manages them
//! unchanged, under both version prefixes:
//! `/{version}/Accounts/{AccountSid}/Usage/Triggers[.json]` (list, create) and
//! `…/Triggers/{Sid}[.json]` (fetch, update, delete); and, ours, every delivery attempt of a
//! trigger at `GET /express/usage/triggers/{Sid}/deliveries` (HAL). Scope
//! `express-accounts-usage:triggers`; another organization's trigger is a `404`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use super::hal::Link;
use super::records::{encode, uri, VERSIONS};
use crate::app::AppState;
use crate::auth::{Principal, TRIGGERS_SCOPE};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::usage::read::order::parse_bounded;
use crate::usage::records::catalogue::Catalogue;
use crate::usage::triggers::outbox::{self, AttemptRow};
use crate::usage::triggers::{
    self, Changes, ListFilter, Method, NewTrigger, Recurring, Refused, Threshold, Trigger,
    TriggerBy, MAX_PER_ORGANIZATION,
};

/// The route: the version, the sid and everything from `Triggers` on are checked by the handler.
pub const PATH: &str = "/{version}/Accounts/{sid}/Usage/{triggers:Triggers.*}";
/// Every attempt to deliver a trigger's firings.
pub const DELIVERIES_PATH: &str = "/express/usage/triggers/{sid}/deliveries";

const MAX_PAGE_SIZE: u32 = 1000;
const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE: u32 = 1_000_000;
/// Longest form or query value accepted (but `CallbackUrl`'s and `PageToken`'s), in characters.
const MAX_VALUE_CHARS: usize = 64;
/// Largest create or update body, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Deliveries per page, at most and by default.
const MAX_PER_PAGE: u32 = 250;
const DEFAULT_PER_PAGE: u32 = 50;

/// `Triggers[.json]` or `Triggers/{Sid}[.json]`: the sid (if any) and the extension as sent.
fn parse_tail(tail: &str) -> Option<(Option<&str>, &str)> {
    let rest = tail.strip_prefix("Triggers")?;
    let (rest, extension) = match rest.strip_suffix(".json") {
        Some(r) => (r, ".json"),
        None => (rest, ""),
    };
    match rest {
        "" => Some((None, extension)),
        _ => {
            let sid = rest.strip_prefix('/')?;
            Some((Some(sid), extension))
        }
    }
}

/// Whether `sid` has a trigger sid's form (anything else cannot exist: a `404` without a query).
fn is_trigger_sid(sid: &str) -> bool {
    sid.len() == 34
        && sid.starts_with("UT")
        && sid[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where a request is: the version used and the `AccountSid` as sent.
struct Target {
    version: &'static str,
    sid: String,
    extension: &'static str,
}

impl Target {
    fn collection(&self) -> String {
        format!(
            "/{}/Accounts/{}/Usage/Triggers{}",
            self.version,
            encode(&self.sid),
            self.extension
        )
    }
}

fn target(version: &str, sid: String, extension: &str) -> ApiResult<Target> {
    let version = VERSIONS
        .into_iter()
        .find(|v| *v == version)
        .ok_or(ApiError::NotFound)?;
    Ok(Target {
        version,
        sid,
        extension: if extension.is_empty() { "" } else { ".json" },
    })
}

/// RFC 2822, as Twilio writes its dates.
fn rfc2822(at: &DateTime<Utc>) -> String {
    at.to_rfc2822()
}

#[derive(Serialize)]
struct WireTrigger {
    account_sid: String,
    api_version: String,
    callback_method: String,
    callback_url: String,
    current_value: String,
    date_created: String,
    date_fired: Option<String>,
    date_updated: String,
    friendly_name: Option<String>,
    price_unit: String,
    recurring: Option<String>,
    sid: String,
    trigger_by: String,
    trigger_value: String,
    uri: String,
    usage_category: String,
    usage_record_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_secret: Option<String>,
}

/// The usage records a trigger watches (its period's subresource, its category).
fn usage_record_uri(t: &Trigger) -> String {
    let sub = match t.recurring.as_deref().and_then(Recurring::parse) {
        Some(Recurring::Daily) => "Today",
        Some(Recurring::Monthly) => "ThisMonth",
        Some(Recurring::Yearly) => "Yearly",
        Some(Recurring::AllTime) | None => "AllTime",
    };
    uri(
        &format!(
            "/{}/Accounts/{}/Usage/Records/{sub}.json",
            t.api_version,
            encode(&t.account_sid)
        ),
        &[("Category", &t.usage_category)],
    )
}

fn wire(t: Trigger, webhook_secret: Option<String>) -> WireTrigger {
    WireTrigger {
        uri: format!(
            "/{}/Accounts/{}/Usage/Triggers/{}.json",
            t.api_version,
            encode(&t.account_sid),
            t.sid
        ),
        usage_record_uri: usage_record_uri(&t),
        account_sid: t.account_sid,
        api_version: t.api_version,
        callback_method: t.callback_method,
        callback_url: t.callback_url,
        current_value: t.current_value.to_string(),
        date_created: rfc2822(&t.date_created),
        date_fired: t.date_fired.as_ref().map(rfc2822),
        date_updated: rfc2822(&t.date_updated),
        friendly_name: t.friendly_name,
        price_unit: t.price_unit,
        recurring: t.recurring,
        sid: t.sid,
        trigger_by: t.trigger_by,
        trigger_value: t.trigger_value.to_string(),
        usage_category: t.usage_category,
        webhook_secret,
    }
}

/// A non-negative decimal as written (digits, one optional point, at most 28 digits).
fn decimal(text: &str) -> Result<Decimal, String> {
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    let well_formed = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && text.bytes().filter(|b| *b == b'.').count() <= 1
        && digits > 0
        && digits <= 28;
    well_formed
        .then(|| text.parse::<Decimal>().ok())
        .flatten()
        .ok_or_else(|| format!("'{text}' is not a non-negative decimal (at most 28 digits) or +N"))
}

fn threshold(text: &str) -> Result<Threshold, String> {
    match text.strip_prefix('+') {
        Some(rest) => decimal(rest).map(Threshold::Offset),
        None => decimal(text).map(Threshold::Value),
    }
}

fn method(text: &str) -> Result<Method, String> {
    Method::parse(&text.to_ascii_uppercase()).ok_or_else(|| format!("'{text}' is not GET or POST"))
}

/// Every form field of create and update.
const FORM_FIELDS: [&str; 8] = [
    "CallbackUrl",
    "TriggerValue",
    "UsageCategory",
    "CallbackMethod",
    "FriendlyName",
    "Recurring",
    "TriggerBy",
    "PriceUnit",
];

/// The methods of the collection or of one trigger, as `Allow` lists them.
pub fn allowed_methods(tail: &str) -> &'static str {
    match parse_tail(tail) {
        Some((Some(_), _)) => "GET, POST, DELETE",
        _ => "GET, POST",
    }
}

/// The form fields of a body, after its media type is checked.
fn form_fields(req: &HttpRequest, body: &[u8]) -> ApiResult<Vec<(String, String)>> {
    let media = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match media.as_deref() {
        Some("application/x-www-form-urlencoded") => {}
        None if body.is_empty() => {}
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "Send the parameters as application/x-www-form-urlencoded.",
            ))
        }
    }
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    // A known parameter given twice is ambiguous (and each CallbackUrl would cost a DNS lookup);
    // unknown ones are ignored, as Twilio does, however often they come. A NUL cannot be stored
    // in a text column, so it is refused where it would otherwise fail the INSERT.
    let mut seen = std::collections::BTreeSet::new();
    let faults: Vec<FieldError> = fields
        .iter()
        .filter(|(name, _)| FORM_FIELDS.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            if !seen.insert(name.as_str()) {
                Some(FieldError::new(name, "given more than once"))
            } else if value.contains('\0') {
                Some(FieldError::new(name, "contains a NUL character"))
            } else {
                None
            }
        })
        .collect();
    if faults.is_empty() {
        Ok(fields)
    } else {
        Err(ApiError::InvalidParameter(faults))
    }
}

/// Checks a callback URL against the operator's rule, now and on its resolved addresses.
async fn callback_url(state: &AppState, text: &str) -> Result<String, String> {
    let url = state.callbacks.check(text)?;
    state.callbacks.check_resolved(&url).await?;
    Ok(url.to_string())
}

/// A create's optional field applied to `new`, or why it is refused; unknown names are ignored.
fn optional_field(new: &mut NewTrigger, name: &str, value: String) -> Result<(), String> {
    match name {
        "CallbackMethod" => method(&value).map(|m| new.callback_method = m),
        "FriendlyName" => {
            new.friendly_name = Some(value);
            Ok(())
        }
        "Recurring" if value.is_empty() => Ok(()),
        "Recurring" => Recurring::parse(&value)
            .map(|r| new.recurring = Some(r))
            .ok_or_else(|| format!("expected one of {}", Recurring::expected())),
        "TriggerBy" => TriggerBy::parse(&value)
            .map(|t| new.trigger_by = t)
            .ok_or_else(|| format!("expected one of {}", TriggerBy::expected())),
        "PriceUnit" if value.len() == 3 && value.bytes().all(|b| b.is_ascii_alphabetic()) => {
            new.price_unit = value.to_ascii_lowercase();
            Ok(())
        }
        "PriceUnit" => Err(format!("'{value}' is not an ISO 4217 currency code")),
        _ => Ok(()),
    }
}

/// A trigger of `target` with every optional field at its default.
fn defaults(target: &Target) -> NewTrigger {
    NewTrigger {
        account_sid: target.sid.clone(),
        api_version: target.version,
        callback_url: String::new(),
        callback_method: Method::Post,
        friendly_name: None,
        recurring: None,
        trigger_by: TriggerBy::Usage,
        price_unit: "usd".to_owned(),
        usage_category: String::new(),
        threshold: Threshold::Value(Decimal::ZERO),
    }
}

/// The create form, checked whole: one `400` names every field at fault.
async fn new_trigger(
    state: &AppState,
    fields: Vec<(String, String)>,
    target: &Target,
    catalogue: &Catalogue,
) -> ApiResult<NewTrigger> {
    let mut errors = Vec::new();
    let (mut url, mut value, mut category) = (None, None, None);
    let mut new = defaults(target);
    for (name, value_text) in fields {
        if name != "CallbackUrl" && value_text.chars().count() > MAX_VALUE_CHARS {
            errors.push(FieldError::new(
                &name,
                format!("longer than {MAX_VALUE_CHARS} characters"),
            ));
            continue;
        }
        let checked: Result<(), String> = match name.as_str() {
            "CallbackUrl" => callback_url(state, &value_text)
                .await
                .map(|u| url = Some(u)),
            "TriggerValue" => threshold(&value_text).map(|t| value = Some(t)),
            "UsageCategory" if catalogue.get(&value_text).is_some() => {
                category = Some(value_text);
                Ok(())
            }
            "UsageCategory" => Err(format!(
                "unknown category '{value_text}'; GET /express/usage/categories lists them"
            )),
            other => optional_field(&mut new, other, value_text),
        };
        if let Err(message) = checked {
            errors.push(FieldError::new(&name, message));
        }
    }
    for (name, missing) in [
        ("CallbackUrl", url.is_none()),
        ("TriggerValue", value.is_none()),
        ("UsageCategory", category.is_none()),
    ] {
        if missing && !errors.iter().any(|e| e.name == name) {
            errors.push(FieldError::new(name, "is required"));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::InvalidParameter(errors));
    }
    new.callback_url = url.unwrap_or_default();
    new.threshold = value.unwrap_or(Threshold::Value(Decimal::ZERO));
    new.usage_category = category.unwrap_or_default();
    Ok(new)
}

/// The update form: `CallbackUrl`, `CallbackMethod`, `FriendlyName` (others are ignored, as
/// unknown parameters are).
async fn changes(state: &AppState, fields: Vec<(String, String)>) -> ApiResult<Changes> {
    let mut errors = Vec::new();
    let mut changes = Changes::default();
    for (name, value) in fields {
        let checked = match name.as_str() {
            "CallbackUrl" => callback_url(state, &value)
                .await
                .map(|u| changes.callback_url = Some(u)),
            "CallbackMethod" => method(&value).map(|m| changes.callback_method = Some(m)),
            "FriendlyName" if value.chars().count() > MAX_VALUE_CHARS => {
                Err(format!("longer than {MAX_VALUE_CHARS} characters"))
            }
            "FriendlyName" => {
                changes.friendly_name = Some(value);
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(message) = checked {
            errors.push(FieldError::new(&name, message));
        }
    }
    if errors.is_empty() {
        Ok(changes)
    } else {
        Err(ApiError::InvalidParameter(errors))
    }
}

/// The list's query: filters and Twilio's paging.
struct ListParams {
    filter: ListFilter,
    page: u32,
    page_size: u32,
}

fn list_params(query: &str, catalogue: &Catalogue) -> ApiResult<ListParams> {
    let mut params = ListParams {
        filter: ListFilter::default(),
        page: 0,
        page_size: DEFAULT_PAGE_SIZE,
    };
    let mut errors = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let checked = match name.as_ref() {
            "Recurring" => Recurring::parse(&value)
                .map(|r| params.filter.recurring = Some(r))
                .ok_or_else(|| format!("expected one of {}", Recurring::expected())),
            "TriggerBy" => TriggerBy::parse(&value)
                .map(|t| params.filter.trigger_by = Some(t))
                .ok_or_else(|| format!("expected one of {}", TriggerBy::expected())),
            "UsageCategory" if catalogue.get(&value).is_some() => {
                params.filter.usage_category = Some(value.clone().into_owned());
                Ok(())
            }
            "UsageCategory" => Err(format!(
                "unknown category '{}'",
                value.chars().take(64).collect::<String>()
            )),
            "Page" => parse_bounded(&value, 0, MAX_PAGE).map(|n| params.page = n),
            "PageSize" => parse_bounded(&value, 1, MAX_PAGE_SIZE).map(|n| params.page_size = n),
            _ => Ok(()),
        };
        if let Err(message) = checked {
            errors.push(FieldError::new(name.as_ref(), message));
        }
    }
    if errors.is_empty() {
        Ok(params)
    } else {
        Err(ApiError::InvalidParameter(errors))
    }
}

#[derive(Serialize)]
struct WirePage {
    usage_triggers: Vec<WireTrigger>,
    first_page_uri: String,
    next_page_uri: Option<String>,
    previous_page_uri: Option<String>,
    page: u32,
    page_size: u32,
    start: u64,
    end: u64,
    uri: String,
}

fn page_uri(target: &Target, params: &ListParams, page: u32) -> String {
    let filter = &params.filter;
    let mut pairs: Vec<(&str, String)> = Vec::new();
    if let Some(r) = filter.recurring {
        pairs.push(("Recurring", r.as_str().to_owned()));
    }
    if let Some(t) = filter.trigger_by {
        pairs.push(("TriggerBy", t.as_str().to_owned()));
    }
    if let Some(c) = &filter.usage_category {
        pairs.push(("UsageCategory", c.clone()));
    }
    pairs.push(("PageSize", params.page_size.to_string()));
    pairs.push(("Page", page.to_string()));
    let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
    uri(&target.collection(), &borrowed)
}

/// `403 forbidden_accounts` unless `sid` is the organization or one of its accounts.
async fn owned_scope(
    conn: &mut diesel_async::AsyncPgConnection,
    principal: &Principal,
    sid: &str,
) -> ApiResult<()> {
    match triggers::scope_of(conn, &principal.organization_id, sid).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::ForbiddenAccounts(vec![sid.to_owned()])),
    }
}

/// `GET …/Triggers.json`.
async fn list(
    principal: &Principal,
    req: &HttpRequest,
    state: &AppState,
    target: Target,
) -> ApiResult<HttpResponse> {
    let mut conn = state.primary().await?;
    let catalogue = state.catalogue(&mut conn).await?;
    let params = list_params(req.query_string(), &catalogue)?;
    owned_scope(&mut conn, principal, &target.sid).await?;
    let offset = i64::from(params.page) * i64::from(params.page_size);
    let (found, more) = triggers::list(
        &mut conn,
        &principal.organization_id,
        &target.sid,
        &params.filter,
        offset,
        i64::from(params.page_size),
    )
    .await?;
    let first = offset as u64;
    let shown = found.len() as u64;
    let page = WirePage {
        first_page_uri: page_uri(&target, &params, 0),
        next_page_uri: more.then(|| page_uri(&target, &params, params.page + 1)),
        previous_page_uri: (params.page > 0).then(|| page_uri(&target, &params, params.page - 1)),
        page: params.page,
        page_size: params.page_size,
        start: first,
        end: first + shown.max(1) - 1,
        uri: page_uri(&target, &params, params.page),
        usage_triggers: found.into_iter().map(|t| wire(t, None)).collect(),
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(page))
}

/// `POST …/Triggers.json`.
async fn create(
    principal: &Principal,
    req: &HttpRequest,
    state: &AppState,
    target: Target,
    body: &[u8],
) -> ApiResult<HttpResponse> {
    let fields = form_fields(req, body)?;
    let catalogue = state.catalogue(&mut *state.primary().await?).await?;
    // The form is checked (a callback's name resolved) holding no database connection.
    let new = new_trigger(state, fields, &target, &catalogue).await?;
    let mut conn = state.primary().await?;
    match triggers::create(&mut conn, &principal.organization_id, &new).await? {
        Ok((trigger, secret)) => {
            if trigger.date_fired.is_some() {
                state.fired.notify_one();
            }
            let location = format!("{}{}", state.public_url, wire_uri(&trigger));
            Ok(HttpResponse::Created()
                .insert_header((header::LOCATION, location))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(wire(trigger, Some(secret))))
        }
        Err(Refused::Forbidden) => Err(ApiError::ForbiddenAccounts(vec![target.sid])),
        Err(Refused::LimitReached) => Err(ApiError::LimitReached(format!(
            "An organization keeps at most {MAX_PER_ORGANIZATION} usage triggers; delete one first."
        ))),
    }
}

fn wire_uri(t: &Trigger) -> String {
    format!(
        "/{}/Accounts/{}/Usage/Triggers/{}.json",
        t.api_version,
        encode(&t.account_sid),
        t.sid
    )
}

/// Every method of `/{version}/Accounts/{AccountSid}/Usage/Triggers…`: the one place that maps
/// the five operations (list, create, fetch, update, delete) onto the path and method.
pub async fn handle(
    principal: Principal,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let (version, sid, tail) = path.into_inner();
    let (trigger_sid, extension) = parse_tail(&tail).ok_or(ApiError::NotFound)?;
    let target = target(&version, sid, extension)?;
    let method = req.method().clone();
    if !(method == actix_web::http::Method::GET
        || method == actix_web::http::Method::POST
        || (method == actix_web::http::Method::DELETE && trigger_sid.is_some()))
    {
        return Err(ApiError::MethodNotAllowed(allowed_methods(&tail)));
    }
    principal.require(TRIGGERS_SCOPE)?;
    // Read here with its limit, so that a body too large is the API's 413, not actix's.
    let body = super::events::read_body(&req, payload, MAX_BODY_BYTES).await?;
    let Some(trigger_sid) = trigger_sid else {
        return if method == actix_web::http::Method::GET {
            list(&principal, &req, &state, target).await
        } else {
            create(&principal, &req, &state, target, &body).await
        };
    };
    // The form is checked (a callback's name resolved) holding no database connection.
    let changes = if method == actix_web::http::Method::POST {
        Some(changes(&state, form_fields(&req, &body)?).await?)
    } else {
        None
    };
    let mut conn = state.primary().await?;
    owned_scope(&mut conn, &principal, &target.sid).await?;
    if !is_trigger_sid(trigger_sid) {
        return Err(ApiError::NotFound);
    }
    let org = &principal.organization_id;
    if method == actix_web::http::Method::DELETE {
        return if triggers::delete(&mut conn, org, &target.sid, trigger_sid).await? {
            Ok(HttpResponse::NoContent().finish())
        } else {
            Err(ApiError::NotFound)
        };
    }
    let found = match changes {
        Some(changes) => {
            triggers::update(&mut conn, org, &target.sid, trigger_sid, &changes).await?
        }
        None => triggers::fetch(&mut conn, org, &target.sid, trigger_sid).await?,
    };
    let trigger = found.ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(wire(trigger, None)))
}

#[derive(Serialize)]
struct WireAttempt {
    webhook_id: String,
    period_start: String,
    attempt: i32,
    attempted_at: String,
    duration_ms: i32,
    outcome: String,
    response_status: Option<i32>,
    delivery_state: String,
    fired_at: String,
    next_attempt_at: Option<String>,
}

fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl WireAttempt {
    fn new(row: AttemptRow, sid: &str) -> Self {
        WireAttempt {
            webhook_id: format!(
                "{}-FIRES-{sid}-{}",
                row.account_sid,
                triggers::day(row.period_start)
            ),
            period_start: triggers::day(row.period_start),
            attempt: row.attempt,
            attempted_at: rfc3339(&row.started_at),
            duration_ms: row.duration_ms,
            outcome: row.outcome,
            response_status: row.response_status,
            delivery_state: row.state,
            fired_at: rfc3339(&row.fired_at),
            next_attempt_at: row.next_attempt_at.as_ref().map(rfc3339),
        }
    }
}

#[derive(Serialize)]
struct DeliveryLinks {
    #[serde(rename = "self")]
    this: Link,
    first: Link,
    last: Link,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev: Option<Link>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<Link>,
}

#[derive(Serialize)]
struct DeliveriesEmbedded {
    deliveries: Vec<WireAttempt>,
}

#[derive(Serialize)]
struct DeliveriesPage {
    count: usize,
    total: i64,
    page: u32,
    per_page: u32,
    total_pages: i64,
    _embedded: DeliveriesEmbedded,
    _links: DeliveryLinks,
}

/// `page` (from 1) and `per_page` of the deliveries route.
fn page_params(query: &str) -> ApiResult<(u32, u32)> {
    let (mut page, mut per_page) = (1, DEFAULT_PER_PAGE);
    let mut errors = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let checked = match name.as_ref() {
            "page" => parse_bounded(&value, 1, MAX_PAGE).map(|n| page = n),
            "per_page" => parse_bounded(&value, 1, MAX_PER_PAGE).map(|n| per_page = n),
            _ => Ok(()),
        };
        if let Err(message) = checked {
            errors.push(FieldError::new(name.as_ref(), message));
        }
    }
    if errors.is_empty() {
        Ok((page, per_page))
    } else {
        Err(ApiError::InvalidParameter(errors))
    }
}

/// `GET /express/usage/triggers/{Sid}/deliveries`: every attempt, newest first.
pub async fn deliveries(
    principal: Principal,
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    principal.require(TRIGGERS_SCOPE)?;
    let sid = path.into_inner();
    let (page, per_page) = page_params(req.query_string())?;
    if !is_trigger_sid(&sid) {
        return Err(ApiError::NotFound);
    }
    let mut conn = state.primary().await?;
    let org = &principal.organization_id;
    if !triggers::exists(&mut conn, org, &sid).await? {
        return Err(ApiError::NotFound);
    }
    let offset = i64::from(page - 1) * i64::from(per_page);
    let (rows, total) = outbox::attempts(&mut conn, org, &sid, offset, i64::from(per_page)).await?;
    let total_pages = ((total + i64::from(per_page) - 1) / i64::from(per_page)).max(1);
    let href = |n: i64| {
        Link::to(format!(
            "{}/express/usage/triggers/{sid}/deliveries?page={n}&per_page={per_page}",
            state.public_url
        ))
    };
    let links = DeliveryLinks {
        this: href(i64::from(page)),
        first: href(1),
        last: href(total_pages),
        prev: (page > 1).then(|| href(i64::from(page) - 1)),
        next: (i64::from(page) < total_pages).then(|| href(i64::from(page) + 1)),
    };
    let deliveries: Vec<WireAttempt> = rows
        .into_iter()
        .map(|r| WireAttempt::new(r, &sid))
        .collect();
    Ok(HttpResponse::Ok()
        .content_type(super::hal::HAL_JSON)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(DeliveriesPage {
            count: deliveries.len(),
            total,
            page,
            per_page,
            total_pages,
            _embedded: DeliveriesEmbedded { deliveries },
            _links: links,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_name_the_collection_or_one_trigger() {
        assert_eq!(parse_tail("Triggers.json"), Some((None, ".json")));
        assert_eq!(parse_tail("Triggers"), Some((None, "")));
        assert_eq!(
            parse_tail("Triggers/UT0123.json"),
            Some((Some("UT0123"), ".json"))
        );
        assert_eq!(parse_tail("TriggersX"), None);
        assert!(is_trigger_sid("UT0123456789abcdef0123456789abcdef"));
        assert!(!is_trigger_sid("UT0123456789ABCDEF0123456789abcdef"));
        assert!(!is_trigger_sid("UT0123"));
    }

    #[test]
    fn thresholds_are_decimals_or_offsets() {
        assert_eq!(
            threshold("10.50"),
            Ok(Threshold::Value("10.50".parse().unwrap()))
        );
        assert_eq!(threshold("+5"), Ok(Threshold::Offset(Decimal::from(5))));
        for bad in ["", "-1", "1e3", "+", "++1", "1.2.3", " 1", "0x10", "NaN"] {
            assert!(threshold(bad).is_err(), "{bad}");
        }
        assert!(threshold(&"9".repeat(29)).is_err());
    }
}
