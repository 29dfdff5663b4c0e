//! `GET /express/usage/categories`: the category catalogue of usage records (DESIGN §2b), in
//! its documented order.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::hal::{Link, HAL_JSON};
use crate::app::AppState;
use crate::auth::{Principal, READ_SCOPE};
use crate::error::ApiResult;
use crate::usage::records::catalogue::CategoryInfo;

pub const CATEGORIES_PATH: &str = "/express/usage/categories";

#[derive(Serialize)]
struct Embedded<'a> {
    categories: &'a [CategoryInfo],
}

#[derive(Serialize)]
struct Links {
    #[serde(rename = "self")]
    own: Link,
}

#[derive(Serialize)]
struct CategoriesPage<'a> {
    count: usize,
    #[serde(rename = "_embedded")]
    embedded: Embedded<'a>,
    #[serde(rename = "_links")]
    links: Links,
}

pub async fn list(principal: Principal, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    principal.require(READ_SCOPE)?;
    let mut conn = state.replica().await?;
    let catalogue = state.catalogue(&mut conn).await?;
    let body = CategoriesPage {
        count: catalogue.categories.len(),
        embedded: Embedded {
            categories: &catalogue.categories,
        },
        links: Links {
            own: Link::to(format!("{}{CATEGORIES_PATH}", state.public_url)),
        },
    };
    Ok(HttpResponse::Ok()
        .content_type(HAL_JSON)
        // The same for every caller, and changed only by a release.
        .insert_header((header::CACHE_CONTROL, "private, max-age=300"))
        .json(body))
}
