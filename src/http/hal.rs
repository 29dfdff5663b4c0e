//! The HAL+JSON shapes: a usage record, the paged envelope, and its links — absolute, built from
//! the configured public URL, every one keeping `per_page`, `filter` and `order_by`.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use crate::usage::amount::Amount;
use crate::usage::model::Month;
use crate::usage::read::MonthlyRow;

pub const HAL_JSON: &str = "application/hal+json";
pub const LIST_PATH: &str = "/express/usage/month";

/// Everything but RFC 3986's unreserved characters is percent-encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Writes an amount as a JSON number with its own digits (never through `f64`).
pub fn exact_number<S: Serializer>(value: &Amount, serializer: S) -> Result<S::Ok, S::Error> {
    let raw = RawValue::from_string(value.to_string()).map_err(serde::ser::Error::custom)?;
    raw.serialize(serializer)
}

#[derive(Debug, Serialize)]
pub struct Link {
    pub href: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub templated: bool,
}

impl Link {
    pub fn to(href: String) -> Self {
        Link {
            href,
            templated: false,
        }
    }
}

/// One monthly usage aggregate, as the API shows it: written as JSON straight from the row (no
/// intermediate strings; the id, month and amounts are formatted on the stack or as the row
/// already holds them).
#[derive(Debug)]
pub struct UsageRecord<'a> {
    row: &'a MonthlyRow,
    /// `None`: no `_links` (an export's line).
    base_url: Option<&'a str>,
    /// `decimal_strings=true`: each amount also as a string sibling (`price_decimal`, …).
    decimal_strings: bool,
}

impl<'a> UsageRecord<'a> {
    pub fn new(row: &'a MonthlyRow, base_url: &'a str) -> Self {
        UsageRecord {
            row,
            base_url: Some(base_url),
            decimal_strings: false,
        }
    }

    /// With `price_decimal`, `number_of_units_decimal` and `total_amount_decimal` beside the
    /// numbers (for clients whose JSON numbers are floats), when `on`.
    pub fn with_decimal_strings(mut self, on: bool) -> Self {
        self.decimal_strings = on;
        self
    }

    /// The record's fields without `_links`, as an export writes it.
    pub fn bare(row: &'a MonthlyRow) -> Self {
        UsageRecord {
            row,
            base_url: None,
            decimal_strings: false,
        }
    }
}

/// `{"self": {"href": "<base>/express/usage/month/<id>"}}`
struct SelfHref<'a>(&'a str, &'a str);

impl Serialize for SelfHref<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Href<'a>(&'a str, &'a str);
        impl Serialize for Href<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_struct("Link", 1)?;
                map.serialize_field("href", &format_args!("{}{LIST_PATH}/{}", self.0, self.1))?;
                map.end()
            }
        }
        let mut map = serializer.serialize_struct("SelfLink", 1)?;
        map.serialize_field("self", &Href(self.0, self.1))?;
        map.end()
    }
}

/// An amount as a JSON number with its own digits.
struct Number<'a>(&'a Amount);

impl Serialize for Number<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        exact_number(self.0, serializer)
    }
}

impl Serialize for UsageRecord<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let row = self.row;
        let mut id = [0u8; 32];
        let id = &*row.id.simple().encode_lower(&mut id);
        let month = Month::from_date(row.month);
        let fields =
            15 + usize::from(self.base_url.is_some()) + 3 * usize::from(self.decimal_strings);
        let mut map = serializer.serialize_struct("UsageRecord", fields)?;
        map.serialize_field("id", id)?;
        map.serialize_field("account_id", &row.account_id)?;
        map.serialize_field("product_id", &row.product_id)?;
        map.serialize_field("aggr_product_id", &row.aggr_product_id)?;
        map.serialize_field("month", &format_args!("{month}"))?;
        map.serialize_field("type", &row.usage_type)?;
        map.serialize_field("description", &row.description)?;
        map.serialize_field("currency", &row.currency)?;
        map.serialize_field("direction", &row.direction)?;
        map.serialize_field("resolution", &row.resolution)?;
        map.serialize_field("unit", &row.unit)?;
        map.serialize_field("price", &Number(&row.price))?;
        if self.decimal_strings {
            map.serialize_field("price_decimal", row.price.as_str())?;
        }
        map.serialize_field("wallet_name", &row.wallet_name)?;
        map.serialize_field("number_of_units", &Number(&row.number_of_units))?;
        if self.decimal_strings {
            map.serialize_field("number_of_units_decimal", row.number_of_units.as_str())?;
        }
        map.serialize_field("total_amount", &Number(&row.total_amount))?;
        if self.decimal_strings {
            map.serialize_field("total_amount_decimal", row.total_amount.as_str())?;
        }
        if let Some(base_url) = self.base_url {
            map.serialize_field("_links", &SelfHref(base_url, id))?;
        }
        map.end()
    }
}

#[derive(Debug, Serialize)]
pub struct Embedded<'a> {
    pub usage: Vec<UsageRecord<'a>>,
}

#[derive(Debug, Serialize)]
pub struct PageLinks {
    #[serde(rename = "self")]
    pub self_: Link,
    pub first: Link,
    pub last: Link,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev: Option<Link>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<Link>,
    pub show: Link,
}

/// The paged envelope.
#[derive(Debug, Serialize)]
pub struct UsagePage<'a> {
    pub count: usize,
    pub total: i64,
    pub page: u32,
    pub per_page: u32,
    pub total_pages: i64,
    /// Every event ingested before this instant (RFC 3339, UTC) is included.
    pub as_of: String,
    pub _embedded: Embedded<'a>,
    pub _links: PageLinks,
}

/// The parameters every link of a list carries.
#[derive(Debug, Clone)]
pub struct LinkParams<'a> {
    pub base_url: &'a str,
    pub per_page: u32,
    pub filter: Option<&'a str>,
    pub order_by: Option<&'a str>,
    /// Links keep `decimal_strings=true`, so that every page has the same shape.
    pub decimal_strings: bool,
}

/// The position tokens of the `prev` and `next` links, when the page has them.
#[derive(Debug, Clone, Default)]
pub struct Cursors {
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl LinkParams<'_> {
    fn page_href(&self, page: i64) -> String {
        let mut href = format!(
            "{}{LIST_PATH}?page={page}&per_page={}",
            self.base_url, self.per_page
        );
        for (name, value) in [("filter", self.filter), ("order_by", self.order_by)] {
            if let Some(value) = value {
                href.push('&');
                href.push_str(name);
                href.push('=');
                href.extend(utf8_percent_encode(value, QUERY_VALUE));
            }
        }
        if self.decimal_strings {
            href.push_str("&decimal_strings=true");
        }
        href
    }

    /// A page link that also carries a position token (last, so that the link otherwise reads
    /// exactly like a plain page link).
    fn seek_href(&self, page: i64, cursor: Option<&str>) -> String {
        let mut href = self.page_href(page);
        if let Some(cursor) = cursor {
            href.push_str("&cursor=");
            href.extend(utf8_percent_encode(cursor, QUERY_VALUE));
        }
        href
    }
}

impl<'a> UsagePage<'a> {
    /// Builds the envelope for `page` of a list of `total` rows. An empty list still has a first
    /// and last page (page 1); a page past the end links `prev` to the last page, so that a
    /// client walking back lands on data at once rather than on more empty pages.
    pub fn new(
        records: Vec<UsageRecord<'a>>,
        total: i64,
        page: u32,
        as_of: chrono::DateTime<chrono::Utc>,
        links: &LinkParams,
        cursors: Cursors,
    ) -> Self {
        let total_pages = crate::usage::read::order::total_pages(total, links.per_page);
        let last = total_pages.max(1);
        let current = i64::from(page);
        UsagePage {
            count: records.len(),
            total,
            page,
            per_page: links.per_page,
            total_pages,
            as_of: as_of.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            _embedded: Embedded { usage: records },
            _links: PageLinks {
                self_: Link::to(links.page_href(current)),
                first: Link::to(links.page_href(1)),
                last: Link::to(links.page_href(last)),
                // Past the end, prev is the last page, which is read backwards from the end.
                prev: (current > 1).then(|| {
                    let page = (current - 1).min(last);
                    let cursor = cursors.prev.as_deref().filter(|_| page == current - 1);
                    Link::to(links.seek_href(page, cursor))
                }),
                next: (current < total_pages)
                    .then(|| Link::to(links.seek_href(current + 1, cursors.next.as_deref()))),
                show: Link {
                    href: format!("{}{LIST_PATH}/{{id}}", links.base_url),
                    templated: true,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_percent_encode_and_keep_every_parameter() {
        let params = LinkParams {
            base_url: "https://usage.example",
            per_page: 2,
            filter: Some("month eq '2023-08' and wallet_name eq 'a&b'"),
            order_by: Some("month:desc"),
            decimal_strings: false,
        };
        let page = UsagePage::new(
            Vec::new(),
            5,
            2,
            chrono::Utc::now(),
            &params,
            Cursors::default(),
        );
        assert_eq!(page.total_pages, 3);
        let next = page._links.next.unwrap().href;
        assert_eq!(
            next,
            "https://usage.example/express/usage/month?page=3&per_page=2\
             &filter=month%20eq%20%272023-08%27%20and%20wallet_name%20eq%20%27a%26b%27\
             &order_by=month%3Adesc"
        );
        assert_eq!(
            page._links.prev.unwrap().href.split('&').next().unwrap(),
            "https://usage.example/express/usage/month?page=1"
        );
    }
}
