//! `GET /express/usage/month` and `GET /express/usage/month/{id}`: extract, authorize, call one
//! `usage::` function, shape the HAL answer.

use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

use super::hal::{LinkParams, UsagePage, UsageRecord, HAL_JSON};
use crate::app::AppState;
use crate::auth::{Principal, READ_SCOPE};
use crate::db::pool;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::usage::page::{self, Order, DEFAULT_PER_PAGE, MAX_PAGE, MAX_PER_PAGE};
use crate::usage::{accounts, filter, monthly};

/// The list's query string, parsed and checked.
struct ListParams {
    query: monthly::ListQuery,
    filter_text: Option<String>,
    order_by_text: Option<String>,
}

impl ListParams {
    /// Parses the known parameters (unknown ones are ignored); every malformed one is named.
    fn parse(query_string: &str) -> ApiResult<Self> {
        let mut raw: [(&str, Option<String>); 4] = [
            ("page", None),
            ("per_page", None),
            ("filter", None),
            ("order_by", None),
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
        let [(_, page), (_, per_page), (_, filter_text), (_, order_by_text)] = raw;
        let mut number = |name: &str, text: Option<String>, max: u32, default: u32| match text {
            None => default,
            Some(text) => page::parse_bounded(&text, 1, max).unwrap_or_else(|message| {
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
            query: monthly::ListQuery {
                filter,
                order,
                page,
                per_page,
            },
            filter_text: filter_text.filter(|f| !f.trim().is_empty()),
            order_by_text: order_by_text.filter(|o| !o.trim().is_empty()),
        })
    }
}

fn hal(body: &impl serde::Serialize) -> ApiResult<HttpResponse> {
    let json = serde_json::to_string(body).map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().content_type(HAL_JSON).body(json))
}

pub async fn list(
    principal: Principal,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    principal.require(READ_SCOPE)?;
    let params = ListParams::parse(req.query_string())?;
    let organization = principal.organization_id.as_str();
    let mut conn = pool::connection(&state.pool).await?;
    if let Some(filter) = &params.query.filter {
        let foreign =
            accounts::foreign_accounts(&mut conn, organization, &filter.account_ids()).await?;
        if !foreign.is_empty() {
            return Err(ApiError::ForbiddenAccounts(foreign));
        }
    }
    let found = monthly::list(&mut conn, organization, &params.query).await?;
    drop(conn);
    let base_url = state.public_url.as_str();
    let records = found
        .rows
        .into_iter()
        .map(|row| UsageRecord::new(row, base_url))
        .collect();
    let links = LinkParams {
        base_url,
        per_page: params.query.per_page,
        filter: params.filter_text.as_deref(),
        order_by: params.order_by_text.as_deref(),
    };
    hal(&UsagePage::new(
        records,
        found.total,
        params.query.page,
        found.as_of,
        &links,
    ))
}

pub async fn show(
    principal: Principal,
    id: web::Path<String>,
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
    let mut conn = pool::connection(&state.pool).await?;
    let row = monthly::find(&mut conn, &principal.organization_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    hal(&UsageRecord::new(row, &state.public_url))
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
