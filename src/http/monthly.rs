//! `GET /express/usage/month` and `GET /express/usage/month/{id}`: extract, authorize, call one
//! `usage::` function, shape the HAL answer.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

use super::cursor;
use super::export;
use super::hal::{Cursors, LinkParams, UsagePage, UsageRecord, HAL_JSON};
use crate::app::AppState;
use crate::auth::{Principal, READ_SCOPE};
use crate::db::cancel::Checkout;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::usage::digest;
use crate::usage::model::{Month, OrganizationId};
use crate::usage::read::bodies::{self, BodyCache};
use crate::usage::read::order::{self, Order, DEFAULT_PER_PAGE, MAX_PAGE, MAX_PER_PAGE};
use crate::usage::read::seek::{self, Side};
use crate::usage::read::{self, filter, MonthlyRow};

/// The list's query string, parsed and checked.
struct ListParams {
    query: read::ListRequest,
    filter_text: Option<String>,
    order_by_text: Option<String>,
    /// A position token from a `next` or `prev` link, checked once the key is at hand.
    cursor: Option<String>,
    /// `format=`: `json`, `csv` or `ndjson` (checked).
    format: Option<String>,
    /// `decimal_strings=true`: amounts also as strings.
    decimal_strings: bool,
}

/// `decimal_strings`: `true` or `false` (default), else the error's description.
pub(super) fn decimal_strings(text: Option<&str>) -> Result<bool, String> {
    match text {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(format!("'{other}' is not true or false")),
    }
}

impl ListParams {
    /// Parses the known parameters (unknown ones are ignored); every malformed one is named.
    /// Every parameter is checked before any error is returned, so that one answer names them
    /// all: that is why it is long.
    fn parse(query_string: &str) -> ApiResult<Self> {
        let mut raw: [(&str, Option<String>); 7] = [
            ("page", None),
            ("per_page", None),
            ("filter", None),
            ("order_by", None),
            ("cursor", None),
            ("format", None),
            ("decimal_strings", None),
        ];
        let mut errors = Vec::new();
        for (name, value) in url::form_urlencoded::parse(query_string.as_bytes()) {
            if let Some(slot) = raw.iter_mut().find(|(known, _)| *known == name) {
                if slot.1.is_some() {
                    errors.push(FieldError::new(slot.0, "may be given only once"));
                }
                slot.1 = Some(value.into_owned());
            }
        }
        let [(_, page), (_, per_page), (_, filter_text), (_, order_by_text), (_, cursor), (_, format), (_, strings)] =
            raw;
        let decimal_strings = decimal_strings(strings.as_deref()).unwrap_or_else(|message| {
            errors.push(FieldError::new("decimal_strings", message));
            false
        });
        if let Some(text) = format.as_deref() {
            if !matches!(text, "json" | "csv" | "ndjson") {
                errors.push(FieldError::new(
                    "format",
                    format!("'{text}' is not one of json, csv, ndjson"),
                ));
            }
        }
        if let Some(Err(message)) = cursor.as_deref().map(cursor::check_form) {
            errors.push(FieldError::new("cursor", message));
        }
        let mut number = |name: &str, text: Option<String>, max: u32, default: u32| match text {
            None => default,
            Some(text) => order::parse_bounded(&text, 1, max).unwrap_or_else(|message| {
                errors.push(FieldError::new(name, message));
                default
            }),
        };
        let page = number("page", page, MAX_PAGE, 1);
        let per_page = number("per_page", per_page, MAX_PER_PAGE, DEFAULT_PER_PAGE);
        let order =
            Order::parse(order_by_text.as_deref().unwrap_or("")).unwrap_or_else(|message| {
                errors.push(FieldError::new("order_by", message));
                Order::default()
            });
        let filter = filter::parse(filter_text.as_deref().unwrap_or(""))
            .map_err(|err| FieldError::new("filter", err.to_string()));
        let filter = match (filter, errors.is_empty()) {
            (Ok(filter), true) => filter,
            (Err(field), true) => return Err(ApiError::InvalidFilter(field)),
            (Err(field), false) => {
                errors.push(field);
                return Err(ApiError::InvalidParameter(errors));
            }
            (Ok(_), false) => return Err(ApiError::InvalidParameter(errors)),
        };
        Ok(ListParams {
            query: read::ListRequest {
                filter,
                order,
                page,
                per_page,
            },
            filter_text: filter_text.filter(|f| !f.trim().is_empty()),
            order_by_text: order_by_text.filter(|o| !o.trim().is_empty()),
            cursor,
            format,
            decimal_strings,
        })
    }
}

/// A 200 with a HAL body and its validators.
fn hal(body: &impl serde::Serialize, tag: &str) -> ApiResult<HttpResponse> {
    let json = serde_json::to_string(body).map_err(ApiError::internal)?;
    Ok(hal_bytes(json.into(), tag))
}

/// A 200 with an encoded HAL body and its validators.
fn hal_bytes(body: bytes::Bytes, tag: &str) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    validators(&mut response, tag);
    response.content_type(HAL_JSON).body(body)
}

/// A bodiless 304 with the validators it stands for.
fn not_modified(tag: &str) -> HttpResponse {
    let mut response = HttpResponse::NotModified();
    validators(&mut response, tag);
    response.finish()
}

impl ListParams {
    fn binding<'a>(&'a self, organization_id: &'a str) -> cursor::Binding<'a> {
        cursor::Binding {
            organization_id,
            per_page: self.query.per_page,
            filter: self.filter_text.as_deref(),
            order_by: self.order_by_text.as_deref(),
        }
    }

    /// The position the request's `cursor` names, when it has one.
    fn seek(&self, key: &[u8], organization_id: &str) -> ApiResult<Option<read::Seek>> {
        let Some(text) = &self.cursor else {
            return Ok(None);
        };
        let token = cursor::decode(key, &self.binding(organization_id), text)
            .map_err(|message| ApiError::invalid("cursor", message))?;
        if token.page != self.query.page {
            return Err(ApiError::invalid(
                "cursor",
                format!(
                    "leads to page {}, not page {}; drop it to read the page by its number",
                    token.page, self.query.page
                ),
            ));
        }
        let version = (token.epoch, token.data_version);
        read::Seek::new(version, token.side, token.position, &self.query.order)
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(
                    "cursor",
                    "is not a position this API issued for this query; \
                     drop it to read the page by its number",
                )
            })
    }

    /// What the list's entity tag is made of, owned (a conditional read carries it into the
    /// domain's task).
    fn tagger(&self, organization_id: &str, base_url: &str) -> ListTag {
        ListTag {
            organization_id: organization_id.to_owned(),
            page: self.query.page,
            per_page: self.query.per_page,
            filter: self.filter_text.clone(),
            order_by: self.order_by_text.clone(),
            base_url: base_url.to_owned(),
            decimal_strings: self.decimal_strings,
        }
    }
}

/// The parts of a list's strong validator besides the version.
struct ListTag {
    organization_id: String,
    page: u32,
    per_page: u32,
    filter: Option<String>,
    order_by: Option<String>,
    base_url: String,
    decimal_strings: bool,
}

impl ListTag {
    /// What the list's answers are remembered under (`BodyCache`): every part of the tag but
    /// the version.
    fn body_key(&self) -> [u8; 32] {
        let no_text: &[u8] = b"\xff";
        BodyCache::key(&[
            b"usage list v1",
            self.organization_id.as_bytes(),
            &self.page.to_le_bytes(),
            &self.per_page.to_le_bytes(),
            self.filter.as_deref().map_or(no_text, str::as_bytes),
            self.order_by.as_deref().map_or(no_text, str::as_bytes),
            self.base_url.as_bytes(),
            &[u8::from(self.decimal_strings)],
        ])
    }

    /// A strong validator of the whole body: it is determined by the organization, the data
    /// version and freshness it shows, the request's own parameters (as the links repeat them)
    /// and the public URL. The position token is not part of it: it changes how the page is
    /// read, never what it holds.
    fn tag(&self, version: &read::Version) -> String {
        strong_tag(&[
            &self.body_key(),
            &version.epoch.to_le_bytes(),
            &version.data_version.to_le_bytes(),
            &version.as_of.timestamp_micros().to_le_bytes(),
        ])
    }
}

/// The entity tags an `If-None-Match` header lists (`*` included), or `None` without one.
fn if_none_match(req: &HttpRequest) -> Option<Vec<String>> {
    let values = req.headers().get_all(header::IF_NONE_MATCH);
    let tags: Vec<String> = values
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|candidate| candidate.trim().trim_start_matches("W/").to_owned())
        .collect();
    req.headers()
        .contains_key(header::IF_NONE_MATCH)
        .then_some(tags)
}

/// Whether `tags` (an `If-None-Match` list) names `tag` (weak comparison, RFC 9110 §13.1.2)
/// or `*`.
fn lists(tags: &[String], tag: &str) -> bool {
    tags.iter()
        .any(|candidate| candidate == "*" || candidate == tag)
}

/// The headers every answer of the read API (200 or 304) carries: the body differs per caller
/// and may change with any rollup, so shared caches must not keep it and private ones must
/// revalidate it.
fn validators(response: &mut actix_web::HttpResponseBuilder, tag: &str) {
    response
        .insert_header((header::ETAG, tag.to_owned()))
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        .insert_header((header::VARY, "Authorization"));
}

pub async fn list(
    principal: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    principal.require(READ_SCOPE)?;
    let params = ListParams::parse(req.query_string())?;
    let organization = principal.organization_id.as_str();
    let mut conn = state.replica().await?;
    if let Some(format) = export::negotiate(params.format.as_deref(), &req)
        .map_err(|field| ApiError::InvalidParameter(vec![field]))?
    {
        return export_list(&req, format, &principal, params.query, conn, &state).await;
    }
    let key = state.cursor_key(&mut conn).await?.to_vec();
    let seek = params.seek(&key, organization)?;
    let tagger = params.tagger(organization, &state.public_url);
    let body_key = tagger.body_key();
    if let Some(answer) =
        remembered(&req, &mut conn, &principal, (&tagger, &body_key), &state).await?
    {
        return Ok(answer);
    }
    // A revalidation is answered by the domain from the version alone.
    let unchanged = if_none_match(&req).map(|tags| -> read::Unchanged {
        Box::new(move |version| lists(&tags, &tagger.tag(version)))
    });
    let listed = read::list_to_completion(
        conn,
        principal.organization_id.clone(),
        params.query.clone(),
        seek,
        state.read_cache.clone(),
        unchanged,
    )
    .await?;
    let tagger = params.tagger(organization, &state.public_url);
    match listed {
        read::Listed::Forbidden(foreign) => Err(ApiError::ForbiddenAccounts(
            foreign.iter().map(ToString::to_string).collect(),
        )),
        read::Listed::NotModified(version) => Ok(not_modified(&tagger.tag(&version))),
        read::Listed::Page(found, _) => {
            let (tag, body) = page(&params, &tagger, organization, &key, &found, &state)?;
            state.bodies.remember(body_key, tag.clone(), body.clone());
            Ok(hal_bytes(body, &tag))
        }
    }
}

/// The answer remembered for this very list at the organization's current version, if any:
/// a `304` when the caller holds it, else the body as it was served. One statement (the
/// version) instead of a page and its total.
async fn remembered(
    req: &HttpRequest,
    conn: &mut Checkout,
    principal: &Principal,
    (tagger, body_key): (&ListTag, &[u8; 32]),
    state: &AppState,
) -> ApiResult<Option<HttpResponse>> {
    let Some(answer) = state.bodies.get(body_key) else {
        bodies::counted("month", "miss");
        return Ok(None);
    };
    let version = read::version(conn, &principal.organization_id).await?;
    let tag = tagger.tag(&version);
    if answer.tag != tag {
        bodies::counted("month", "stale");
        return Ok(None);
    }
    bodies::counted("month", "hit");
    if if_none_match(req).is_some_and(|tags| lists(&tags, &tag)) {
        return Ok(Some(not_modified(&tag)));
    }
    Ok(Some(hal_bytes(answer.bytes.clone(), &tag)))
}

/// The whole list of `query` streamed in `format`, after the 403 rule.
async fn export_list(
    req: &HttpRequest,
    format: export::Format,
    principal: &Principal,
    query: read::ListRequest,
    mut conn: Checkout,
    state: &AppState,
) -> ApiResult<HttpResponse> {
    let organization = &principal.organization_id;
    let filter = query.filter.as_ref();
    let foreign = read::export_check(&mut conn, organization, filter, &state.read_cache).await?;
    if !foreign.is_empty() {
        return Err(ApiError::ForbiddenAccounts(
            foreign.iter().map(ToString::to_string).collect(),
        ));
    }
    let source = Export {
        organization: organization.clone(),
        query,
    };
    Ok(export::stream(req, format, "usage-month", conn, source))
}

/// The HAL page for `found`, with its links and position tokens, encoded, and its tag.
fn page(
    params: &ListParams,
    tagger: &ListTag,
    organization: &str,
    key: &[u8],
    found: &read::Page,
    state: &AppState,
) -> ApiResult<(String, bytes::Bytes)> {
    let base_url = state.public_url.as_str();
    let cursors = cursors(params, organization, key, found);
    let tag = tagger.tag(&found.version);
    let records = found
        .rows
        .iter()
        .map(|row| UsageRecord::new(row, base_url).with_decimal_strings(params.decimal_strings))
        .collect();
    let links = LinkParams {
        base_url,
        per_page: params.query.per_page,
        filter: params.filter_text.as_deref(),
        order_by: params.order_by_text.as_deref(),
        decimal_strings: params.decimal_strings,
    };
    let body = UsagePage::new(
        records,
        found.total,
        params.query.page,
        found.version.as_of,
        &links,
        cursors,
    );
    let json = serde_json::to_vec(&body).map_err(ApiError::internal)?;
    Ok((tag, json.into()))
}

/// Position tokens for the links out of this page: `next` starts after its last row, `prev`
/// ends before its first. None for a page past the end (its `prev` is the last page, read from
/// the end anyway).
fn cursors(params: &ListParams, organization: &str, key: &[u8], found: &read::Page) -> Cursors {
    let page = params.query.page;
    let total_pages = order::total_pages(found.total, params.query.per_page);
    let binding = params.binding(organization);
    let token = |row: Option<&read::MonthlyRow>, page: u32, side: Side| {
        let position = seek::position(row?, &params.query.order)?;
        let token = cursor::Token::new(found.version.key(), page, side, position);
        cursor::encode(key, &binding, &token)
    };
    Cursors {
        prev: (page > 1)
            .then(|| token(found.rows.first(), page - 1, Side::Before))
            .flatten(),
        next: (i64::from(page) < total_pages)
            .then(|| token(found.rows.last(), page + 1, Side::After))
            .flatten(),
    }
}

pub async fn show(
    principal: Principal,
    id: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    principal.require(READ_SCOPE)?;
    let id = id.into_inner();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::invalid(
            "id",
            "expected 32 hexadecimal characters",
        ));
    }
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::invalid("id", "not a valid id"))?;
    let strings = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(name, _)| name == "decimal_strings")
        .map(|(_, value)| value.into_owned());
    let strings = decimal_strings(strings.as_deref())
        .map_err(|message| ApiError::invalid("decimal_strings", message))?;
    let organization = principal.organization_id.as_str();
    let mut conn = state.replica().await?;
    let tag = |version: &read::Version| {
        strong_tag(&[
            b"usage record v1",
            organization.as_bytes(),
            &version.epoch.to_le_bytes(),
            &version.data_version.to_le_bytes(),
            id.as_bytes(),
            state.public_url.as_bytes(),
            &[u8::from(strings)],
        ])
    };
    // A record changes only with its organization's data version, so a tag can be checked
    // without reading the record; but `*` asks whether the record exists at all, which only
    // reading it can tell (a missing or foreign record is a 404 either way).
    let tags = if_none_match(&req).unwrap_or_default();
    if !tags.is_empty() && !tags.iter().any(|candidate| candidate == "*") {
        let tag = tag(&read::version(&mut conn, &principal.organization_id).await?);
        if lists(&tags, &tag) {
            return Ok(not_modified(&tag));
        }
    }
    let (version, row) = read::find_versioned(&mut conn, &principal.organization_id, id).await?;
    let row = row.ok_or(ApiError::NotFound)?;
    let tag = tag(&version);
    if lists(&tags, &tag) {
        return Ok(not_modified(&tag));
    }
    hal(
        &UsageRecord::new(&row, &state.public_url).with_decimal_strings(strings),
        &tag,
    )
}

/// A strong entity tag: the first 128 bits of SHA-256 over the framed `parts`, in hex.
fn strong_tag(parts: &[&[u8]]) -> String {
    format!("\"{}\"", digest::hex(&digest::sha256(parts)[..16]))
}

/// The export of one list request: every row, in its order.
struct Export {
    organization: OrganizationId,
    query: read::ListRequest,
}

pub const CSV_HEADER: [&str; 15] = [
    "id",
    "account_id",
    "product_id",
    "aggr_product_id",
    "month",
    "type",
    "description",
    "currency",
    "direction",
    "resolution",
    "unit",
    "price",
    "wallet_name",
    "number_of_units",
    "total_amount",
];

impl export::Source for Export {
    type Row = MonthlyRow;
    const CSV_HEADER: &'static [&'static str] = &CSV_HEADER;

    fn declare<'a>(&'a self, conn: &'a mut diesel_async::AsyncPgConnection) -> export::Opening<'a> {
        Box::pin(read::declare_export(conn, &self.organization, &self.query))
    }

    fn csv_record(row: &MonthlyRow, out: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
        let id = row.id.simple().to_string();
        let month = Month::from_date(row.month).to_string();
        out.write_record([
            id.as_str(),
            row.account_id.as_str(),
            &row.product_id,
            &row.aggr_product_id,
            &month,
            row.usage_type.as_str(),
            &row.description,
            &row.currency,
            row.direction.map_or("", |d| d.as_str()),
            row.resolution.map_or("", |r| r.as_str()),
            row.unit.as_str(),
            row.price.as_str(),
            &row.wallet_name,
            row.number_of_units.as_str(),
            row.total_amount.as_str(),
        ])
    }

    fn json(row: &MonthlyRow) -> impl serde::Serialize + '_ {
        UsageRecord::bare(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(err: ApiError) -> Vec<String> {
        match err {
            ApiError::InvalidParameter(fields) => fields.into_iter().map(|f| f.name).collect(),
            ApiError::InvalidFilter(field) => vec![format!("filter!{}", field.name)],
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let err = ListParams::parse("page=0&per_page=251&order_by=x&filter=(")
            .err()
            .unwrap();
        assert_eq!(fields(err), vec!["page", "per_page", "order_by", "filter"]);
        let err = ListParams::parse("filter=month%20eq%20'x'").err().unwrap();
        assert_eq!(fields(err), vec!["filter!filter"]);
        let err = ListParams::parse("page=1&page=2").err().unwrap();
        assert_eq!(fields(err), vec!["page"]);
    }

    #[test]
    fn defaults_and_unknown_parameters() {
        let params = ListParams::parse("access_token=abc&foo=bar").ok().unwrap();
        assert_eq!((params.query.page, params.query.per_page), (1, 50));
        assert!(params.query.filter.is_none() && params.filter_text.is_none());
    }
}
