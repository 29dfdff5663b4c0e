//! `GET /express/usage/events` (DESIGN §2c): the raw usage records, newest first, a page at a
//! time through signed `next`/`prev` cursors, or whole as a CSV or NDJSON export.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;

use super::cursor::{self, Binding, Token};
use super::export;
use super::hal::{exact_number, Link, HAL_JSON};

/// `exact_number` for the borrowed amounts of [`WireEvent`].
fn exact<S: serde::Serializer>(value: &&Amount, serializer: S) -> Result<S::Ok, S::Error> {
    exact_number(value, serializer)
}
use crate::app::AppState;
use crate::auth::{Principal, READ_SCOPE};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::usage::amount::Amount;
use crate::usage::model::{AccountId, UsageType, MAX_ID_CHARS};
use crate::usage::raw::{self, EventRecord, Position, Query, Seek};
use crate::usage::read::column::KeyValue;
use crate::usage::read::seek::Side;
use crate::usage::records::catalogue::{Catalogue, TOTAL_PRICE};

pub const PATH: &str = "/express/usage/events";

/// The parameters a link carries, in the order it writes them.
const NAMES: [&str; 10] = [
    "account_id",
    "category",
    "type",
    "start_date",
    "end_date",
    "include_voided",
    "per_page",
    "cursor",
    "format",
    "decimal_strings",
];

/// The query string, parsed and checked.
struct Params {
    /// The raw texts of the filters as sent (`NAMES` order, `per_page`, `cursor` and `format`
    /// left out): what links repeat and cursors are bound to.
    filters: Vec<(&'static str, String)>,
    query: Query,
    per_page: u32,
    cursor: Option<String>,
    format: Option<String>,
    /// `decimal_strings=true`: amounts also as strings.
    decimal_strings: bool,
}

/// `text` as a whole number in `min..=max`.
fn bounded(text: &str, min: u32, max: u32) -> Result<u32, String> {
    crate::usage::read::order::parse_bounded(text, min, max)
}

impl Params {
    /// Every known parameter is checked before an error is returned, so that one answer names
    /// them all: that is why it is long.
    fn parse(
        query_string: &str,
        organization: &crate::usage::model::OrganizationId,
        today: NaiveDate,
        catalogue: &Catalogue,
    ) -> ApiResult<Params> {
        let mut raw: [Option<String>; 10] = Default::default();
        let mut errors = Vec::new();
        for (name, value) in url::form_urlencoded::parse(query_string.as_bytes()) {
            if let Some(i) = NAMES.iter().position(|known| *known == name) {
                if raw[i].is_some() {
                    errors.push(FieldError::new(NAMES[i], "may be given only once"));
                }
                raw[i] = Some(value.into_owned());
            }
        }
        let mut query = Query {
            organization: organization.clone(),
            account: None,
            categories: None,
            usage_type: None,
            from: None,
            until: None,
            include_voided: false,
        };
        let mut fail = |name: &str, message: String| errors.push(FieldError::new(name, message));
        if let Some(id) = &raw[0] {
            if id.is_empty() || id.chars().count() > MAX_ID_CHARS {
                fail(
                    "account_id",
                    format!("must be 1 to {MAX_ID_CHARS} characters"),
                );
            } else if id.contains('\0') {
                // Postgres text cannot hold NUL: no account has one.
                fail("account_id", "contains a NUL character".to_owned());
            } else {
                query.account = Some(AccountId::new(id.clone()));
            }
        }
        if let Some(slug) = &raw[1] {
            if slug == TOTAL_PRICE {
                // The price of everything: every event.
            } else if catalogue.get(slug).is_some() {
                query.categories = Some(catalogue.descendants(slug).to_vec());
            } else {
                fail(
                    "category",
                    format!("'{slug}' is not a category of the catalogue"),
                );
            }
        }
        if let Some(text) = &raw[2] {
            match UsageType::parse(text) {
                Some(t) => query.usage_type = Some(t),
                None => fail(
                    "type",
                    format!("'{text}' is not one of {}", UsageType::expected()),
                ),
            }
        }
        let mut day = |i: usize| -> Option<NaiveDate> {
            let text = raw[i].as_ref()?;
            super::records::date(text, today)
                .map_err(|message| fail(NAMES[i], message))
                .ok()
        };
        let (start, end) = (day(3), day(4));
        if let (Some(start), Some(end)) = (start, end) {
            if start > end {
                fail("start_date", format!("{start} is after end_date {end}"));
            }
        }
        query.from = start.map(midnight);
        query.until = end.and_then(|end| end.succ_opt()).map(midnight);
        match raw[5].as_deref() {
            None | Some("false") => {}
            Some("true") => query.include_voided = true,
            Some(other) => fail("include_voided", format!("'{other}' is not true or false")),
        }
        let per_page = match &raw[6] {
            None => raw::DEFAULT_PER_PAGE,
            Some(text) => bounded(text, 1, raw::MAX_PER_PAGE).unwrap_or_else(|message| {
                fail("per_page", message);
                raw::DEFAULT_PER_PAGE
            }),
        };
        if let Some(Err(message)) = raw[7].as_deref().map(cursor::check_form) {
            fail("cursor", message);
        }
        if let Some(format) = &raw[8] {
            if !matches!(format.as_str(), "json" | "csv" | "ndjson") {
                fail(
                    "format",
                    format!("'{format}' is not one of json, csv, ndjson"),
                );
            }
        }
        let decimal_strings =
            super::monthly::decimal_strings(raw[9].as_deref()).unwrap_or_else(|message| {
                fail("decimal_strings", message);
                false
            });
        if !errors.is_empty() {
            return Err(ApiError::InvalidParameter(errors));
        }
        let filters = (0..6)
            .filter_map(|i| raw[i].clone().map(|value| (NAMES[i], value)))
            .collect();
        let [_, _, _, _, _, _, _, cursor, format, _] = raw;
        Ok(Params {
            filters,
            query,
            per_page,
            cursor,
            format,
            decimal_strings,
        })
    }

    /// What a cursor is valid only with: the organization, the page size and the filters.
    fn binding<'a>(&'a self, filters: &'a str) -> Binding<'a> {
        Binding {
            organization_id: self.query.organization.as_str(),
            per_page: self.per_page,
            filter: Some(filters),
            order_by: Some("usage events, newest first"),
        }
    }

    /// The filters as one canonical text (the cursor binding's).
    fn filter_text(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.filters.iter().map(|(n, v)| (*n, v.as_str())))
            .finish()
    }

    /// An absolute link to this list with the same filters and page size, at `cursor`.
    fn href(&self, base_url: &str, cursor: Option<&str>) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.extend_pairs(self.filters.iter().map(|(n, v)| (*n, v.as_str())));
        query.append_pair("per_page", &self.per_page.to_string());
        if self.decimal_strings {
            query.append_pair("decimal_strings", "true");
        }
        if let Some(cursor) = cursor {
            query.append_pair("cursor", cursor);
        }
        format!("{base_url}{PATH}?{}", query.finish())
    }
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// The position a `cursor` holds, checked against its binding.
fn seek_of(params: &Params, key: &[u8]) -> ApiResult<Seek> {
    let Some(text) = &params.cursor else {
        return Ok(Seek::First);
    };
    let filters = params.filter_text();
    let invalid =
        |message: &str| ApiError::InvalidParameter(vec![FieldError::new("cursor", message)]);
    let token = cursor::decode(key, &params.binding(&filters), text).map_err(invalid)?;
    let position = match token.position.as_slice() {
        [KeyValue::Text(at), KeyValue::Text(id)] => {
            DateTime::parse_from_rfc3339(at).ok().map(|at| Position {
                occurred_at: at.with_timezone(&Utc),
                event_id: id.clone(),
            })
        }
        _ => None,
    }
    .ok_or_else(|| invalid("is not a position in this list"))?;
    Ok(match token.side {
        Side::After => Seek::After(position),
        Side::Before => Seek::Before(position),
    })
}

/// A signed cursor for the page on `side` of `row`.
fn cursor_at(params: &Params, key: &[u8], side: Side, row: &EventRecord) -> Option<String> {
    let filters = params.filter_text();
    let position = vec![
        KeyValue::Text(row.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true)),
        KeyValue::Text(row.event_id.clone()),
    ];
    let token = Token::new((0, 0), 0, side, position);
    cursor::encode(key, &params.binding(&filters), &token)
}

/// One raw event on the wire (JSON page and NDJSON line), numbers exact.
#[derive(Serialize)]
struct WireEvent<'a> {
    event_id: &'a str,
    account_id: &'a str,
    category: &'a str,
    product_id: &'a str,
    aggr_product_id: &'a str,
    #[serde(rename = "type")]
    usage_type: &'a str,
    description: &'a str,
    direction: Option<&'a str>,
    resolution: Option<&'a str>,
    unit: &'a str,
    #[serde(serialize_with = "exact")]
    quantity: &'a Amount,
    #[serde(skip_serializing_if = "Option::is_none")]
    quantity_decimal: Option<&'a str>,
    #[serde(serialize_with = "exact")]
    unit_price: &'a Amount,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit_price_decimal: Option<&'a str>,
    #[serde(serialize_with = "exact")]
    amount: &'a Amount,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount_decimal: Option<&'a str>,
    currency: &'a str,
    wallet_name: &'a str,
    occurred_at: String,
    ingested_at: String,
    voided_by: Option<&'a str>,
}

fn timestamp(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl<'a> WireEvent<'a> {
    fn new(e: &'a EventRecord) -> Self {
        WireEvent {
            event_id: &e.event_id,
            account_id: &e.account_id,
            category: &e.category,
            product_id: &e.product_id,
            aggr_product_id: &e.aggr_product_id,
            usage_type: &e.usage_type,
            description: &e.description,
            direction: e.direction.as_deref(),
            resolution: e.resolution.as_deref(),
            unit: &e.unit,
            quantity: &e.quantity,
            quantity_decimal: None,
            unit_price: &e.unit_price,
            unit_price_decimal: None,
            amount: &e.amount,
            amount_decimal: None,
            currency: &e.currency,
            wallet_name: &e.wallet_name,
            occurred_at: timestamp(&e.occurred_at),
            ingested_at: timestamp(&e.ingested_at),
            voided_by: e.voided_by.as_deref(),
        }
    }

    /// With `quantity_decimal`, `unit_price_decimal` and `amount_decimal` beside the numbers,
    /// when `on`.
    fn with_decimal_strings(mut self, on: bool) -> Self {
        if on {
            self.quantity_decimal = Some(self.quantity.as_str());
            self.unit_price_decimal = Some(self.unit_price.as_str());
            self.amount_decimal = Some(self.amount.as_str());
        }
        self
    }
}

#[derive(Serialize)]
struct Embedded<'a> {
    events: Vec<WireEvent<'a>>,
}

#[derive(Serialize)]
struct Links {
    #[serde(rename = "self")]
    this: Link,
    first: Link,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev: Option<Link>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<Link>,
}

#[derive(Serialize)]
struct EventsPage<'a> {
    count: usize,
    per_page: u32,
    as_of: String,
    _embedded: Embedded<'a>,
    _links: Links,
}

pub async fn list(
    principal: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    principal.require(READ_SCOPE)?;
    let mut conn = state.replica().await?;
    let catalogue = state.catalogue(&mut conn).await?;
    let today = Utc::now().date_naive();
    let params = Params::parse(
        req.query_string(),
        &principal.organization_id,
        today,
        &catalogue,
    )?;
    let format = export::negotiate(params.format.as_deref(), &req)
        .map_err(|field| ApiError::InvalidParameter(vec![field]))?;
    if let Some(account) = &params.query.account {
        if !raw::owns(&mut conn, &params.query.organization, account).await? {
            return Err(ApiError::ForbiddenAccounts(vec![account.to_string()]));
        }
    }
    if let Some(format) = format {
        let source = Export(params.query.clone());
        return Ok(export::stream(&req, format, "usage-events", conn, source));
    }
    page(&mut conn, &params, &state).await
}

/// One page from the position the cursor holds (one row more is read on the side it is read
/// from, to know whether a page lies beyond), with its links.
async fn page(
    conn: &mut diesel_async::AsyncPgConnection,
    params: &Params,
    state: &AppState,
) -> ApiResult<HttpResponse> {
    let key = state.cursor_key(conn).await?.to_vec();
    let seek = seek_of(params, &key)?;
    // The organization's freshness instant, as on the monthly list: it moves when the
    // organization's data changes, so a reader walking the pages can tell that it did.
    let as_of = crate::usage::read::version(conn, &params.query.organization)
        .await?
        .as_of;
    // One more row than shown tells whether there is a page beyond, in the reading direction.
    let mut rows = raw::page(conn, &params.query, &seek, params.per_page + 1).await?;
    let shown = params.per_page as usize;
    let beyond = rows.len() > shown;
    if beyond {
        match seek {
            Seek::Before(_) => drop(rows.drain(..1)),
            _ => rows.truncate(shown),
        }
    }
    let (has_next, has_prev) = match seek {
        Seek::First => (beyond, false),
        Seek::After(_) => (beyond, true),
        Seek::Before(_) => (true, beyond),
    };
    let base_url = state.public_url.as_str();
    let link = |side: Side, row: Option<&EventRecord>| {
        row.map(|row| {
            Link::to(params.href(base_url, cursor_at(params, &key, side, row).as_deref()))
        })
    };
    let links = Links {
        this: Link::to(params.href(base_url, params.cursor.as_deref())),
        first: Link::to(params.href(base_url, None)),
        prev: has_prev.then(|| link(Side::Before, rows.first())).flatten(),
        next: has_next.then(|| link(Side::After, rows.last())).flatten(),
    };
    let body = EventsPage {
        count: rows.len(),
        per_page: params.per_page,
        as_of: as_of.to_rfc3339_opts(SecondsFormat::Micros, true),
        _embedded: Embedded {
            events: rows
                .iter()
                .map(|row| WireEvent::new(row).with_decimal_strings(params.decimal_strings))
                .collect(),
        },
        _links: links,
    };
    Ok(HttpResponse::Ok()
        .content_type(HAL_JSON)
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        .insert_header((header::VARY, "Authorization"))
        .json(body))
}

pub const CSV_HEADER: [&str; 18] = [
    "event_id",
    "account_id",
    "category",
    "product_id",
    "aggr_product_id",
    "type",
    "description",
    "direction",
    "resolution",
    "unit",
    "quantity",
    "unit_price",
    "amount",
    "currency",
    "wallet_name",
    "occurred_at",
    "ingested_at",
    "voided_by",
];

/// The export of one query's events.
struct Export(Query);

impl export::Source for Export {
    type Row = EventRecord;
    const CSV_HEADER: &'static [&'static str] = &CSV_HEADER;

    fn declare<'a>(&'a self, conn: &'a mut diesel_async::AsyncPgConnection) -> export::Opening<'a> {
        Box::pin(raw::declare(conn, &self.0))
    }

    fn csv_record(row: &EventRecord, out: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
        let (occurred, ingested) = (timestamp(&row.occurred_at), timestamp(&row.ingested_at));
        out.write_record([
            row.event_id.as_str(),
            &row.account_id,
            &row.category,
            &row.product_id,
            &row.aggr_product_id,
            &row.usage_type,
            &row.description,
            row.direction.as_deref().unwrap_or(""),
            row.resolution.as_deref().unwrap_or(""),
            &row.unit,
            row.quantity.as_str(),
            row.unit_price.as_str(),
            row.amount.as_str(),
            &row.currency,
            &row.wallet_name,
            &occurred,
            &ingested,
            row.voided_by.as_deref().unwrap_or(""),
        ])
    }

    fn json(row: &EventRecord) -> impl Serialize + '_ {
        WireEvent::new(row)
    }
}
