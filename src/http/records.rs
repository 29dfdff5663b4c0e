//! `GET /{2010-04-01|2012-04-24}/Accounts/{AccountSid}/Usage/Records[/{Subresource}][.json|.csv]`:
//! usage records by category and period in Twilio's wire format (DESIGN §2b), so the official
//! SDK and Restcomm-style clients read them unchanged. Extract, authorize, call
//! `usage::records::read`, shape the page (or the whole range as CSV).

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{Datelike, NaiveDate, Utc};
use serde::Serialize;

use crate::app::AppState;
use crate::auth::{Principal, READ_SCOPE};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::usage::model::OrganizationId;
use crate::usage::read::bodies::{self, BodyCache};
use crate::usage::records::catalogue::Catalogue;
use crate::usage::records::query::Granularity;
use crate::usage::records::{self, Outcome, Record, RecordsRequest, MAX_PERIODS};

/// The version strings the resource answers under (`api_version` echoes the one used).
pub const VERSIONS: [&str; 2] = ["2010-04-01", "2012-04-24"];
/// The route: the version, the sid and everything from `Records` on are checked by the handler.
pub const PATH: &str = "/{version}/Accounts/{sid}/Usage/{records:Records.*}";

const MAX_PAGE_SIZE: u32 = 1000;
const DEFAULT_PAGE_SIZE: u32 = 50;
/// Highest page number accepted.
const MAX_PAGE: u32 = 1_000_000;
/// Longest accepted `Category` or date parameter, in characters.
const MAX_PARAM_CHARS: usize = 64;

/// A subresource: its path segment, its key in `subresource_uris`, and how it cuts the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subresource {
    Root,
    AllTime,
    Today,
    Yesterday,
    ThisMonth,
    LastMonth,
    Daily,
    Monthly,
    Yearly,
}

impl Subresource {
    const LINKED: [Subresource; 8] = [
        Subresource::AllTime,
        Subresource::Today,
        Subresource::Yesterday,
        Subresource::ThisMonth,
        Subresource::LastMonth,
        Subresource::Daily,
        Subresource::Monthly,
        Subresource::Yearly,
    ];

    fn segment(self) -> &'static str {
        match self {
            Subresource::Root => "",
            Subresource::AllTime => "AllTime",
            Subresource::Today => "Today",
            Subresource::Yesterday => "Yesterday",
            Subresource::ThisMonth => "ThisMonth",
            Subresource::LastMonth => "LastMonth",
            Subresource::Daily => "Daily",
            Subresource::Monthly => "Monthly",
            Subresource::Yearly => "Yearly",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Subresource::Root => "",
            Subresource::AllTime => "all_time",
            Subresource::Today => "today",
            Subresource::Yesterday => "yesterday",
            Subresource::ThisMonth => "this_month",
            Subresource::LastMonth => "last_month",
            Subresource::Daily => "daily",
            Subresource::Monthly => "monthly",
            Subresource::Yearly => "yearly",
        }
    }

    fn granularity(self) -> Granularity {
        match self {
            Subresource::Daily => Granularity::Daily,
            Subresource::Monthly => Granularity::Monthly,
            Subresource::Yearly => Granularity::Yearly,
            _ => Granularity::Whole,
        }
    }

    /// The fixed range of `Today`, `Yesterday`, `ThisMonth` and `LastMonth` (UTC).
    fn fixed_range(self, today: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
        let month = today.with_day(1).unwrap_or(today);
        match self {
            Subresource::Today => Some((today, today)),
            Subresource::Yesterday => today.pred_opt().map(|d| (d, d)),
            Subresource::ThisMonth => Some((month, today)),
            Subresource::LastMonth => {
                let last = month.pred_opt()?;
                Some((last.with_day(1).unwrap_or(last), last))
            }
            _ => None,
        }
    }
}

/// `Records`, `Records.json`, `Records/Daily.csv`…: the subresource and the extension as sent.
fn parse_tail(tail: &str) -> Option<(Subresource, &str)> {
    let rest = tail.strip_prefix("Records")?;
    let (segment, extension) = match rest.rfind('.') {
        Some(dot) => (&rest[..dot], &rest[dot..]),
        None => (rest, ""),
    };
    if !matches!(extension, "" | ".json" | ".csv") {
        return None;
    }
    let sub = match segment {
        "" => Subresource::Root,
        _ => *Subresource::LINKED
            .iter()
            .find(|s| segment.strip_prefix('/') == Some(s.segment()))?,
    };
    Some((sub, extension))
}

/// The query parameters the resource knows, checked; unknown ones are ignored.
#[derive(Debug, Default)]
struct Params {
    category: Option<String>,
    start_date: Option<(String, NaiveDate)>,
    end_date: Option<(String, NaiveDate)>,
    page: u32,
    page_size: u32,
}

/// `YYYY-MM-DD`, or an offset in days from `today` (`-30days`, `+0days`).
pub(super) fn date(text: &str, today: NaiveDate) -> Result<NaiveDate, String> {
    if let Some(days) = text.strip_suffix("days") {
        let sign_ok = days.starts_with(['-', '+']) && days.len() > 1 && days.len() <= 6;
        let n: i64 = days
            .parse()
            .ok()
            .filter(|_| sign_ok && days[1..].bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("'{text}' is not an offset like -30days or +0days"))?;
        return today
            .checked_add_signed(chrono::Duration::days(n))
            .ok_or_else(|| format!("'{text}' leaves the calendar"));
    }
    let well_formed = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    well_formed
        .then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        .flatten()
        .filter(|d| d.year() >= 1970)
        .ok_or_else(|| {
            format!("'{text}' is not a date (YYYY-MM-DD, from 1970) or an offset like -30days")
        })
}

fn number(text: &str, min: u32, max: u32) -> Result<u32, String> {
    crate::usage::read::order::parse_bounded(text, min, max)
}

impl Params {
    /// Checks every known parameter before answering, so that one 400 names them all.
    fn parse(query: &str, today: NaiveDate, catalogue: &Catalogue) -> ApiResult<Params> {
        let mut params = Params {
            page_size: DEFAULT_PAGE_SIZE,
            ..Params::default()
        };
        let mut errors = Vec::new();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let value = value.into_owned();
            if value.chars().count() > MAX_PARAM_CHARS && name != "PageToken" {
                errors.push(FieldError::new(
                    name.as_ref(),
                    format!("longer than {MAX_PARAM_CHARS} characters"),
                ));
                continue;
            }
            let checked = match name.as_ref() {
                "Category" if catalogue.get(&value).is_some() => {
                    params.category = Some(value);
                    Ok(())
                }
                "Category" => Err(format!(
                    "unknown category '{value}'; GET /express/usage/categories lists them"
                )),
                "StartDate" => date(&value, today).map(|d| params.start_date = Some((value, d))),
                "EndDate" => date(&value, today).map(|d| params.end_date = Some((value, d))),
                "Page" => number(&value, 0, MAX_PAGE).map(|n| params.page = n),
                "PageSize" => number(&value, 1, MAX_PAGE_SIZE).map(|n| params.page_size = n),
                "IncludeSubaccounts" => match value.to_ascii_lowercase().as_str() {
                    "true" | "false" => Ok(()),
                    _ => Err("expected true or false".to_owned()),
                },
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
}

/// Where the request is: the version, the sid as sent, the subresource and the extension.
struct Target {
    version: &'static str,
    sid: String,
    sub: Subresource,
    extension: String,
}

impl Target {
    /// The resource a path names (API version, `AccountSid`, `Records…` tail), if any.
    fn of((version, sid, tail): (String, String, String)) -> Option<Target> {
        let version = VERSIONS.into_iter().find(|v| *v == version)?;
        let (sub, extension) = parse_tail(&tail)?;
        Some(Target {
            version,
            sid,
            sub,
            extension: extension.to_owned(),
        })
    }

    fn path(&self, sub: Subresource) -> String {
        let segment = match sub {
            Subresource::Root => String::new(),
            other => format!("/{}", other.segment()),
        };
        format!(
            "/{}/Accounts/{}/Usage/Records{segment}{}",
            self.version,
            encode(&self.sid),
            self.extension
        )
    }
}

pub(super) fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `path?name=value&…`, each value percent-encoded.
pub(super) fn uri(path: &str, pairs: &[(&str, &str)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .map(|(name, value)| format!("{name}={}", encode(value)))
        .collect();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

#[derive(Serialize)]
struct WireRecord {
    account_sid: String,
    api_version: &'static str,
    as_of: String,
    category: String,
    description: String,
    count: String,
    count_unit: String,
    usage: String,
    usage_unit: String,
    price: String,
    price_unit: String,
    start_date: String,
    end_date: String,
    uri: String,
    subresource_uris: std::collections::BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct WirePage {
    usage_records: Vec<WireRecord>,
    first_page_uri: String,
    next_page_uri: Option<String>,
    previous_page_uri: Option<String>,
    page: u32,
    page_size: u32,
    start: u64,
    end: u64,
    uri: String,
}

/// A record in Twilio's shape: amounts as exact decimal strings, units in lower case.
fn wire(record: &Record, target: &Target, as_of: &str, catalogue: &Catalogue) -> WireRecord {
    let info = catalogue.get(&record.category);
    let total = records::is_total_price(&record.category);
    let price_unit = record.currency.to_ascii_lowercase();
    let usage_unit = if total {
        price_unit.clone()
    } else {
        record.unit.as_deref().unwrap_or("").to_ascii_lowercase()
    };
    let (start, end) = (record.start.to_string(), record.end.to_string());
    let own = uri(
        &target.path(target.sub),
        &[
            ("Category", &record.category),
            ("StartDate", &start),
            ("EndDate", &end),
        ],
    );
    let subresource_uris = Subresource::LINKED
        .iter()
        .map(|sub| {
            (
                sub.key(),
                uri(&target.path(*sub), &[("Category", &record.category)]),
            )
        })
        .collect();
    WireRecord {
        account_sid: target.sid.clone(),
        api_version: target.version,
        as_of: as_of.to_owned(),
        category: record.category.clone(),
        description: info.map_or_else(String::new, |c| c.description.clone()),
        count: if total {
            String::new()
        } else {
            record.count.to_string()
        },
        count_unit: info.map_or_else(String::new, |c| c.count_unit.clone()),
        usage: if total {
            record.price.to_string()
        } else {
            record.usage.to_string()
        },
        usage_unit,
        price: record.price.to_string(),
        price_unit,
        start_date: start,
        end_date: end,
        uri: own,
        subresource_uris,
    }
}

/// The page's URIs: relative, with the extension and every filter as sent, and the page.
fn page_uri(target: &Target, params: &Params, page: u32) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    if let Some(category) = &params.category {
        pairs.push(("Category", category.clone()));
    }
    if let Some((text, _)) = &params.start_date {
        pairs.push(("StartDate", text.clone()));
    }
    if let Some((text, _)) = &params.end_date {
        pairs.push(("EndDate", text.clone()));
    }
    pairs.push(("PageSize", params.page_size.to_string()));
    pairs.push(("Page", page.to_string()));
    let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
    uri(&target.path(target.sub), &borrowed)
}

fn json_page(
    records: &[Record],
    target: &Target,
    params: &Params,
    as_of: &str,
    catalogue: &Catalogue,
) -> WirePage {
    let size = params.page_size as usize;
    let first = (params.page as usize).saturating_mul(size);
    let shown: Vec<WireRecord> = records
        .iter()
        .skip(first)
        .take(size)
        .map(|r| wire(r, target, as_of, catalogue))
        .collect();
    let more = first.saturating_add(size) < records.len();
    WirePage {
        first_page_uri: page_uri(target, params, 0),
        next_page_uri: more.then(|| page_uri(target, params, params.page + 1)),
        previous_page_uri: (params.page > 0).then(|| page_uri(target, params, params.page - 1)),
        page: params.page,
        page_size: params.page_size,
        start: first as u64,
        end: (first + shown.len().max(1) - 1) as u64,
        uri: page_uri(target, params, params.page),
        usage_records: shown,
    }
}

/// Records per chunk of a CSV body.
const CSV_CHUNK: usize = 500;

const CSV_HEADER: [&str; 12] = [
    "category",
    "description",
    "account_sid",
    "start_date",
    "end_date",
    "count",
    "count_unit",
    "usage",
    "usage_unit",
    "price",
    "price_unit",
    "as_of",
];

/// Every record of the range as CSV (RFC 4180, a header row), decimals exact, streamed a chunk
/// of records at a time: each chunk is written only when the client has taken the previous one.
/// A chunk that cannot be written ends the body with an error (the client sees a broken
/// transfer, never a silently shorter file).
fn csv_body(
    records: Arc<Vec<Record>>,
    target: Target,
    as_of: String,
    catalogue: Arc<Catalogue>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    let chunk = move |records: &[Record], at: &mut usize, first: bool| {
        let mut rows = records[(*at).min(records.len())..].iter();
        let mut out = csv::Writer::from_writer(Vec::new());
        if first {
            out.write_record(CSV_HEADER)?;
        }
        let mut written = first;
        for record in rows.by_ref().take(CSV_CHUNK) {
            *at += 1;
            let w = wire(record, &target, &as_of, &catalogue);
            out.write_record([
                &w.category,
                &w.description,
                &w.account_sid,
                &w.start_date,
                &w.end_date,
                &w.count,
                &w.count_unit,
                &w.usage,
                &w.usage_unit,
                &w.price,
                &w.price_unit,
                &w.as_of,
            ])?;
            written = true;
        }
        let bytes = out.into_inner().map_err(|err| err.into_error())?;
        Ok::<_, std::io::Error>(written.then(|| bytes::Bytes::from(bytes)))
    };
    futures_util::stream::unfold(Some((0, true)), move |state| {
        let next = state.and_then(|(mut at, first)| match chunk(&records, &mut at, first) {
            Ok(Some(bytes)) => Some((Ok(bytes), Some((at, false)))),
            Ok(None) => None,
            Err(err) => Some((Err(err), None)),
        });
        std::future::ready(next)
    })
}

/// The range and how to cut it: a fixed subresource's own, else the parameters' (the end
/// defaults to today, the start to the scope's first day with usage).
fn request_of(target: &Target, params: &Params, today: NaiveDate) -> ApiResult<RecordsRequest> {
    let (start, end) = match target.sub.fixed_range(today) {
        Some((start, end)) => (Some(start), end),
        None => (
            params.start_date.as_ref().map(|(_, d)| *d),
            params.end_date.as_ref().map_or(today, |(_, d)| *d),
        ),
    };
    if let Some(start) = start {
        if start > end {
            return Err(ApiError::invalid(
                "StartDate",
                format!("{start} is after EndDate {end}"),
            ));
        }
        let count = records::query::periods(target.sub.granularity(), start, end).len();
        if count > MAX_PERIODS {
            return Err(ApiError::invalid(
                "StartDate",
                format!("the range holds {count} periods; the limit is {MAX_PERIODS}"),
            ));
        }
    }
    Ok(RecordsRequest {
        sid: target.sid.clone(),
        granularity: target.sub.granularity(),
        start,
        end,
        category: params.category.clone(),
    })
}

/// The request a path tail (`Records/Daily.csv`) and a query string ask for, checked as `list`
/// checks them before it reads anything (`None` for a tail that is no resource): the entry
/// point of the fuzz targets (fuzz/src/lib.rs).
pub fn parse_request(
    sid: &str,
    tail: &str,
    query: &str,
    today: NaiveDate,
    catalogue: &Catalogue,
) -> Option<ApiResult<RecordsRequest>> {
    let (sub, extension) = parse_tail(tail)?;
    let target = Target {
        version: VERSIONS[0],
        sid: sid.to_owned(),
        sub,
        extension: extension.to_owned(),
    };
    Some(
        Params::parse(query, today, catalogue)
            .and_then(|params| request_of(&target, &params, today)),
    )
}

pub async fn list(
    principal: Principal,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let target = Target::of(path.into_inner()).ok_or(ApiError::NotFound)?;
    principal.require(READ_SCOPE)?;
    let today = Utc::now().date_naive();
    let mut conn = state.replica().await?;
    let catalogue = state.catalogue(&mut conn).await?;
    let params = Params::parse(req.query_string(), today, &catalogue)?;
    let request = request_of(&target, &params, today)?;
    let organization = &principal.organization_id;
    // A JSON page is remembered whole (a CSV streams the range).
    let page_key =
        (target.extension != ".csv").then(|| page_key(organization, &target, &params, &request));
    if let Some(answer) = remembered(&mut conn, organization, page_key.as_ref(), &state).await? {
        return Ok(answer);
    }
    let (version, found) = match records::read_remembered(
        &mut conn,
        &principal.organization_id,
        &request,
        &catalogue,
        &state.records_cache,
    )
    .await?
    {
        Outcome::Forbidden => return Err(ApiError::ForbiddenAccounts(vec![target.sid])),
        Outcome::Records(version, found) => (version, found),
    };
    let as_of = version
        .as_of
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut response = records_response();
    let Some(key) = page_key else {
        return Ok(response
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"usage-records.csv\"",
            ))
            .streaming(csv_body(found, target, as_of, catalogue)));
    };
    let page = json_page(&found, &target, &params, &as_of, &catalogue);
    let bytes = bytes::Bytes::from(serde_json::to_vec(&page).map_err(ApiError::internal)?);
    state
        .bodies
        .remember(key, page_tag(&key, &version), bytes.clone());
    Ok(response.content_type("application/json").body(bytes))
}

/// The JSON page remembered under `key`, when the organization's data is still the version it
/// showed: one statement (the version) instead of the range.
async fn remembered(
    conn: &mut crate::db::cancel::Checkout,
    organization: &OrganizationId,
    key: Option<&[u8; 32]>,
    state: &AppState,
) -> ApiResult<Option<HttpResponse>> {
    let Some((key, answer)) = key.and_then(|key| Some((key, state.bodies.get(key)?))) else {
        return Ok(None);
    };
    let version = crate::usage::read::version(conn, organization).await?;
    if answer.tag != page_tag(key, &version) {
        return Ok(None);
    }
    bodies::counted("records", "hit");
    let response = records_response()
        .content_type("application/json")
        .body(answer.bytes.clone());
    Ok(Some(response))
}

/// A 200 of this resource, before its body: private to the caller, revalidated before reuse.
fn records_response() -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        .insert_header((header::VARY, "Authorization"));
    response
}

/// What a JSON page is remembered under (`BodyCache`): the organization and everything of the
/// request its body shows (the URIs repeat the parameters as sent), the dates resolved.
fn page_key(
    organization: &OrganizationId,
    target: &Target,
    params: &Params,
    request: &RecordsRequest,
) -> [u8; 32] {
    let text = |t: Option<&str>| t.map_or(b"\xff".to_vec(), |t| t.as_bytes().to_vec());
    let day = |d: Option<NaiveDate>| d.map_or(i32::MIN, |d| d.num_days_from_ce()).to_le_bytes();
    BodyCache::key(&[
        b"usage records page v1",
        organization.as_str().as_bytes(),
        target.version.as_bytes(),
        target.sid.as_bytes(),
        target.sub.segment().as_bytes(),
        target.extension.as_bytes(),
        &text(params.category.as_deref()),
        &text(params.start_date.as_ref().map(|(sent, _)| sent.as_str())),
        &text(params.end_date.as_ref().map(|(sent, _)| sent.as_str())),
        &params.page.to_le_bytes(),
        &params.page_size.to_le_bytes(),
        &day(request.start),
        &day(Some(request.end)),
    ])
}

/// The page's validator: its key and the data version and freshness it shows.
fn page_tag(key: &[u8; 32], version: &crate::usage::read::Version) -> String {
    crate::usage::digest::hex(&crate::usage::digest::sha256(&[
        key,
        &version.epoch.to_le_bytes(),
        &version.data_version.to_le_bytes(),
        &version.as_of.timestamp_micros().to_le_bytes(),
    ]))
}

/// Errors of this resource carry their HTTP status in the body too (`"status": 404`), as
/// Twilio's do; the body is otherwise the API's one error body.
pub async fn with_status(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<BoxBody>>, actix_web::Error> {
    let res = next.call(req).await?;
    let status = res.status();
    if !status.is_client_error() && !status.is_server_error() {
        return Ok(res.map_into_boxed_body().map_into_left_body());
    }
    let (req, res) = res.into_parts();
    let (head, body) = res.into_parts();
    let bytes = actix_web::body::to_bytes(body).await.unwrap_or_default();
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut fields)) => {
            fields.insert("status".to_owned(), status.as_u16().into());
            serde_json::to_vec(&fields).unwrap_or_else(|_| bytes.to_vec())
        }
        _ => bytes.to_vec(),
    };
    let res = head.set_body(BoxBody::new(body));
    Ok(ServiceResponse::new(req, res).map_into_right_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_name_a_subresource_and_an_extension() {
        assert_eq!(parse_tail("Records"), Some((Subresource::Root, "")));
        assert_eq!(
            parse_tail("Records.json"),
            Some((Subresource::Root, ".json"))
        );
        assert_eq!(
            parse_tail("Records/Daily.csv"),
            Some((Subresource::Daily, ".csv"))
        );
        assert_eq!(
            parse_tail("Records/AllTime"),
            Some((Subresource::AllTime, ""))
        );
        for bad in [
            "Records/daily",
            "Records.xml",
            "Records/Daily/x",
            "RecordsDaily",
            "Records/",
        ] {
            assert_eq!(parse_tail(bad), None, "{bad}");
        }
    }

    #[test]
    fn dates_are_days_or_offsets_from_today() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        assert_eq!(date("-1days", today).unwrap().to_string(), "2026-02-28");
        assert_eq!(date("+0days", today).unwrap(), today);
        assert_eq!(date("2024-02-29", today).unwrap().to_string(), "2024-02-29");
        for bad in [
            "2023-02-29",
            "30days",
            "-days",
            "-1day",
            "2024-2-01",
            "1969-12-31",
            "-1000000days",
            "x",
        ] {
            assert!(date(bad, today).is_err(), "{bad}");
        }
    }
}
