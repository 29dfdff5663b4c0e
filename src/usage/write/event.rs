//! A raw usage event (the README's event fields, openapi.yaml's `UsageEvent`): parsed from an NDJSON object or a CSV row into `NewEvent`,
//! every field checked, or refused with a reason a person can act on.
//!
//! Numbers are read from their text — a JSON number's own digits, never through `f64`.

use chrono::{DateTime, Timelike, Utc};
use diesel::prelude::*;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::db::schema::usage_events;
use crate::usage::model::{
    is_currency, AccountId, Category, Direction, Resolution, Unit, UsageType, MAX_ID_CHARS,
    MAX_TEXT_CHARS,
};

/// Default of `USAGE_API_MAX_EVENT_AGE_DAYS`: the oldest `occurred_at` accepted, in days.
pub const DEFAULT_MAX_AGE_DAYS: u32 = 3650;

/// The stable reason of an event refused because its account is not one of the organization's
/// (or does not exist: the two look the same).
pub const UNKNOWN_ACCOUNT: &str = "unknown_account";
/// The stable reason of an event dated outside the accepted window.
pub const OUT_OF_RANGE: &str = "out_of_range";

/// A refusal with a stable code reads `code: description`; `split_reason` takes it apart for
/// the HTTP report (the code alone is the `reason`), files print it whole.
pub fn coded(code: &str, description: impl std::fmt::Display) -> String {
    format!("{code}: {description}")
}

/// The stable code and the description of a reason, when it has a code.
pub fn split_reason(reason: &str) -> (&str, Option<&str>) {
    for code in [UNKNOWN_ACCOUNT, OUT_OF_RANGE] {
        if let Some(rest) = reason.strip_prefix(code).and_then(|r| r.strip_prefix(": ")) {
            return (code, Some(rest));
        }
    }
    (reason, None)
}

/// When an event may have happened: at most `max_age_days` before now and one day after it
/// (clock skew). Taken once per batch, so every event of it is judged by the same clock.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub oldest: DateTime<Utc>,
    pub newest: DateTime<Utc>,
    pub max_age_days: u32,
}

impl Window {
    pub fn now(max_age_days: u32) -> Self {
        let now = Utc::now();
        Window {
            oldest: now - chrono::Duration::days(i64::from(max_age_days)),
            newest: now + chrono::Duration::days(1),
            max_age_days,
        }
    }
}

impl Default for Window {
    fn default() -> Self {
        Window::now(DEFAULT_MAX_AGE_DAYS)
    }
}

/// Largest accepted quantity or unit price (exclusive).
const MAX_MAGNITUDE: i64 = 1_000_000_000_000_000;
/// Most decimal places of a quantity or unit price.
const MAX_SCALE: u32 = 12;

/// An event ready to insert.
#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = usage_events)]
pub struct NewEvent {
    pub event_id: String,
    pub account_id: AccountId,
    pub product_id: String,
    pub aggr_product_id: String,
    pub usage_type: UsageType,
    pub description: String,
    pub currency: String,
    pub direction: Option<Direction>,
    pub resolution: Option<Resolution>,
    pub unit: Unit,
    pub unit_price: Decimal,
    pub wallet_name: String,
    pub quantity: Decimal,
    pub occurred_at: DateTime<Utc>,
    /// The catalogue category the event names; `None`: its type's default (migration 5).
    pub category: Option<Category>,
}

/// The fields of an event as text, before any check. Empty text counts as absent.
#[derive(Debug, Default, Clone)]
pub struct RawEvent {
    pub event_id: Option<String>,
    pub account_id: Option<String>,
    pub product_id: Option<String>,
    pub aggr_product_id: Option<String>,
    pub usage_type: Option<String>,
    pub description: Option<String>,
    pub currency: Option<String>,
    pub direction: Option<String>,
    pub resolution: Option<String>,
    pub unit: Option<String>,
    pub unit_price: Option<String>,
    pub wallet_name: Option<String>,
    pub quantity: Option<String>,
    pub occurred_at: Option<String>,
    pub category: Option<String>,
    /// Set on a void: the id of the event it cancels.
    pub voids: Option<String>,
}

/// A void: cancels an earlier event, which the rollup then leaves out (corrections
/// are new events; quantities are never negative).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVoid {
    pub event_id: String,
    pub voids: String,
    /// The account of the voided event: required in files (it names the organization), optional
    /// over HTTP (the token names it).
    pub account_id: Option<AccountId>,
}

/// One line of input: an event, or a void of an earlier one.
// Nearly every entry is an event: boxing it would cost an allocation per event to save space
// on the rare void.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Event(NewEvent),
    Void(NewVoid),
}

/// An NDJSON line / JSON array element. Numbers stay raw so their digits are kept exactly.
#[derive(Deserialize)]
struct JsonEvent<'a> {
    event_id: Option<String>,
    account_id: Option<String>,
    product_id: Option<String>,
    aggr_product_id: Option<String>,
    #[serde(rename = "type")]
    usage_type: Option<String>,
    description: Option<String>,
    currency: Option<String>,
    direction: Option<String>,
    resolution: Option<String>,
    unit: Option<String>,
    #[serde(borrow)]
    unit_price: Option<&'a RawValue>,
    wallet_name: Option<String>,
    #[serde(borrow)]
    quantity: Option<&'a RawValue>,
    occurred_at: Option<String>,
    category: Option<String>,
    voids: Option<String>,
}

/// The text of a JSON number or string, as written.
fn raw_number(raw: Option<&RawValue>) -> Result<Option<String>, String> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get().trim();
    if text == "null" {
        Ok(None)
    } else if text.starts_with('"') {
        serde_json::from_str::<String>(text)
            .map(Some)
            .map_err(|e| e.to_string())
    } else {
        Ok(Some(text.to_owned()))
    }
}

impl RawEvent {
    /// Reads one JSON object (an NDJSON line).
    pub fn from_json(text: &str) -> Result<RawEvent, String> {
        let json: JsonEvent = serde_json::from_str(text).map_err(|err| {
            // Never name an internal type: serde says "expected struct JsonEvent".
            let message = err
                .to_string()
                .replace("struct JsonEvent", "an event object");
            // serde_json appends its own position; the caller reports the line.
            match message.rfind(" at line ") {
                Some(at) => format!("invalid JSON: {}", &message[..at]),
                None => format!("invalid JSON: {message}"),
            }
        })?;
        Ok(RawEvent {
            event_id: json.event_id,
            account_id: json.account_id,
            product_id: json.product_id,
            aggr_product_id: json.aggr_product_id,
            usage_type: json.usage_type,
            description: json.description,
            currency: json.currency,
            direction: json.direction,
            resolution: json.resolution,
            unit: json.unit,
            unit_price: raw_number(json.unit_price).map_err(|e| format!("unit_price: {e}"))?,
            wallet_name: json.wallet_name,
            quantity: raw_number(json.quantity).map_err(|e| format!("quantity: {e}"))?,
            occurred_at: json.occurred_at,
            category: json.category,
            voids: json.voids,
        })
    }

    /// Sets a field by its column name (CSV headers); unknown columns are ignored.
    pub fn set(&mut self, name: &str, value: &str) {
        let value = Some(value.to_owned());
        match name.trim() {
            "event_id" => self.event_id = value,
            "account_id" => self.account_id = value,
            "product_id" => self.product_id = value,
            "aggr_product_id" => self.aggr_product_id = value,
            "type" => self.usage_type = value,
            "description" => self.description = value,
            "currency" => self.currency = value,
            "direction" => self.direction = value,
            "resolution" => self.resolution = value,
            "unit" => self.unit = value,
            "unit_price" => self.unit_price = value,
            "wallet_name" => self.wallet_name = value,
            "quantity" => self.quantity = value,
            "occurred_at" => self.occurred_at = value,
            "category" => self.category = value,
            "voids" => self.voids = value,
            _ => {}
        }
    }

    /// A void when `voids` is set (it then needs only `event_id`, and `account_id` in files),
    /// else an event dated inside `window`.
    pub fn into_entry(self, window: &Window) -> Result<Entry, String> {
        match present(self.voids.clone()) {
            Some(voids) => {
                let event_id = identifier("event_id", self.event_id)?;
                let voids = identifier("voids", Some(voids))?;
                if voids == event_id {
                    return Err("an event cannot void itself".to_owned());
                }
                let account_id = match present(self.account_id) {
                    Some(account) => Some(AccountId::new(identifier("account_id", Some(account))?)),
                    None => None,
                };
                Ok(Entry::Void(NewVoid {
                    event_id,
                    voids,
                    account_id,
                }))
            }
            None => self.validate(window).map(Entry::Event),
        }
    }

    /// Checks every field; the first problem is the reason the event is refused.
    pub fn validate(self, window: &Window) -> Result<NewEvent, String> {
        let usage_type = required("type", self.usage_type)?;
        let unit = required("unit", self.unit)?;
        let quantity = decimal("quantity", required("quantity", self.quantity)?)?;
        let unit_price = decimal("unit_price", required("unit_price", self.unit_price)?)?;
        // rust_decimal rounds a product it cannot hold (its scale drops): refuse the event
        // rather than store an amount that differs from quantity × unit_price. A zero product
        // is exact whatever its scale.
        let exact = |amount: rust_decimal::Decimal| {
            amount.is_zero() || amount.scale() == quantity.scale() + unit_price.scale()
        };
        if !quantity.checked_mul(unit_price).is_some_and(exact) {
            return Err("quantity × unit_price exceeds the supported precision".to_owned());
        }
        let currency = required("currency", self.currency)?;
        if !is_currency(&currency) {
            return Err(format!("currency '{currency}' is not an ISO 4217 code"));
        }
        let occurred_at = required("occurred_at", self.occurred_at)?;
        let occurred_at = timestamp(&occurred_at, window)?;
        Ok(NewEvent {
            event_id: identifier("event_id", self.event_id)?,
            account_id: AccountId::new(identifier("account_id", self.account_id)?),
            product_id: identifier("product_id", self.product_id)?,
            aggr_product_id: identifier("aggr_product_id", self.aggr_product_id)?,
            usage_type: UsageType::parse(&usage_type)
                .ok_or_else(|| unknown("type", &usage_type, UsageType::expected()))?,
            description: text("description", self.description)?,
            currency,
            direction: optional_enum(
                "direction",
                self.direction,
                Direction::parse,
                Direction::expected,
            )?,
            resolution: optional_enum(
                "resolution",
                self.resolution,
                Resolution::parse,
                Resolution::expected,
            )?,
            unit: Unit::parse(&unit).ok_or_else(|| unknown("unit", &unit, Unit::expected()))?,
            unit_price,
            wallet_name: text("wallet_name", self.wallet_name)?,
            quantity,
            occurred_at,
            category: optional_enum(
                "category",
                self.category,
                Category::parse,
                Category::expected,
            )?,
        })
    }
}

fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn required(name: &str, value: Option<String>) -> Result<String, String> {
    present(value).ok_or_else(|| format!("{name} is missing"))
}

fn identifier(name: &str, value: Option<String>) -> Result<String, String> {
    let value = required(name, value)?;
    if value.chars().count() > MAX_ID_CHARS {
        return Err(format!("{name} is longer than {MAX_ID_CHARS} characters"));
    }
    storable(name, value)
}

fn text(name: &str, value: Option<String>) -> Result<String, String> {
    let value = value.unwrap_or_default();
    if value.chars().count() > MAX_TEXT_CHARS {
        return Err(format!("{name} is longer than {MAX_TEXT_CHARS} characters"));
    }
    storable(name, value)
}

/// Postgres text cannot hold NUL: refuse it here, as this line's fault, rather than let it fail
/// the whole batch's INSERT.
fn storable(name: &str, value: String) -> Result<String, String> {
    if value.contains('\0') {
        Err(format!("{name} contains a NUL character"))
    } else {
        Ok(value)
    }
}

/// An RFC 3339 instant inside the window billing data can come from (`out_of_range` outside
/// it: a year like 0000 or 10000 would not even print as `YYYY-MM`, and every month of a long
/// span would need a partition of its own).
fn timestamp(text: &str, window: &Window) -> Result<DateTime<Utc>, String> {
    let at = DateTime::parse_from_rfc3339(text)
        .map_err(|_| format!("occurred_at '{text}' is not an RFC 3339 timestamp"))?
        .with_timezone(&Utc);
    // A leap second (…:59:60) parses with 1e9+ nanoseconds: Rust would date it in this month
    // and Postgres in the next. Refuse it; and keep microseconds, the precision Postgres stores,
    // so that both sides always agree on the month.
    if at.timestamp_subsec_nanos() >= 1_000_000_000 {
        return Err(format!("occurred_at '{text}' is a leap second"));
    }
    let at = at
        .with_nanosecond(at.timestamp_subsec_micros() * 1_000)
        .unwrap_or(at);
    if at < window.oldest {
        let days = window.max_age_days;
        let why = format!("occurred_at '{text}' is more than {days} days in the past");
        return Err(coded(OUT_OF_RANGE, why));
    }
    if at > window.newest {
        let why = format!("occurred_at '{text}' is more than a day in the future");
        return Err(coded(OUT_OF_RANGE, why));
    }
    Ok(at)
}

fn unknown(name: &str, value: &str, expected: String) -> String {
    format!("{name} '{value}' is not one of {expected}")
}

fn optional_enum<T>(
    name: &str,
    value: Option<String>,
    parse: fn(&str) -> Option<T>,
    expected: fn() -> String,
) -> Result<Option<T>, String> {
    match present(value) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("null") => Ok(None),
        Some(v) => parse(&v)
            .map(Some)
            .ok_or_else(|| unknown(name, &v, expected())),
    }
}

/// An exact, non-negative decimal within the supported range.
fn decimal(name: &str, text: String) -> Result<Decimal, String> {
    let trimmed = text.trim();
    // rust_decimal also reads '_' separators; a billing input should not.
    let well_formed = !trimmed.is_empty()
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    let parsed = if !well_formed {
        None
    } else if trimmed.contains(['e', 'E']) {
        Decimal::from_scientific(trimmed).ok()
    } else {
        Decimal::from_str_exact(trimmed).ok()
    };
    let value = parsed
        .ok_or_else(|| format!("{name} '{trimmed}' is not a decimal number"))?
        .normalize();
    if value.is_sign_negative() && !value.is_zero() {
        return Err(format!("{name} must not be negative"));
    }
    if value >= Decimal::from(MAX_MAGNITUDE) {
        return Err(format!("{name} must be less than {MAX_MAGNITUDE}"));
    }
    if value.scale() > MAX_SCALE {
        return Err(format!("{name} has more than {MAX_SCALE} decimal places"));
    }
    Ok(value.abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> Result<NewEvent, String> {
        RawEvent::from_json(json)?.validate(&Window::default())
    }

    const GOOD: &str = r#"{"event_id":"e1","account_id":"a1","product_id":"p","aggr_product_id":"ap","type":"CALL","unit":"MINUTES","occurred_at":"2023-08-31T23:59:59.999999Z","quantity":0.000001,"unit_price":"0.0001","currency":"USD"}"#;

    #[test]
    fn numbers_keep_their_written_digits() {
        let e = event(GOOD).unwrap();
        assert_eq!(e.quantity.to_string(), "0.000001");
        assert_eq!(e.unit_price.to_string(), "0.0001");
        assert_eq!(e.direction, None);
        assert_eq!(e.description, "");
        let big = GOOD
            .replace("0.000001", "1000000")
            .replace("\"0.0001\"", "19.99");
        let e = event(&big).unwrap();
        assert_eq!((e.quantity * e.unit_price).to_string(), "19990000.00");
        let sci = GOOD.replace("0.000001", "1.5e2");
        assert_eq!(event(&sci).unwrap().quantity.to_string(), "150");
    }

    #[test]
    fn zero_quantities_and_prices_are_fine() {
        for (q, p) in [("0", "0.0085"), ("0.000", "2"), ("12.5", "0"), ("0", "0")] {
            let json = GOOD
                .replace("0.000001", &format!("\"{q}\""))
                .replace("\"0.0001\"", &format!("\"{p}\""));
            let e = event(&json).unwrap_or_else(|err| panic!("{q} × {p}: {err}"));
            assert!((e.quantity * e.unit_price).is_zero());
        }
    }

    #[test]
    fn bad_fields_have_reasons() {
        let cases = [
            (
                GOOD.replace("0.000001", "-1"),
                "quantity must not be negative",
            ),
            (
                GOOD.replace("\"USD\"", "\"XYZ\""),
                "currency 'XYZ' is not an ISO 4217 code",
            ),
            (
                GOOD.replace("\"CALL\"", "\"CALLS\""),
                "type 'CALLS' is not one of",
            ),
            (
                GOOD.replace("2023-08-31T23:59:59.999999Z", "yesterday"),
                "occurred_at 'yesterday' is not an RFC 3339 timestamp",
            ),
            (
                GOOD.replace("\"event_id\":\"e1\",", ""),
                "event_id is missing",
            ),
            (
                GOOD.replace("0.000001", "\"NaN\""),
                "quantity 'NaN' is not a decimal number",
            ),
            (
                GOOD.replace("0.000001", "0.0000000000001"),
                "quantity has more than 12 decimal places",
            ),
            (
                GOOD.replace("\"a1\"", "5"),
                "invalid JSON: invalid type: integer `5`, expected a string",
            ),
            ("{".to_owned(), "invalid JSON"),
            (
                GOOD.replace("2023-08-31T23:59:59.999999Z", "2023-08-31T23:59:60Z"),
                "occurred_at '2023-08-31T23:59:60Z' is a leap second",
            ),
            (
                GOOD.replace("\"p\"", "\"p\\u0000\""),
                "product_id contains a NUL character",
            ),
            (
                GOOD.replace("2023-08-31T23:59:59.999999Z", "0000-06-15T00:00:00Z"),
                "out_of_range: occurred_at '0000-06-15T00:00:00Z' is more than 3650 days in the past",
            ),
            (
                GOOD.replace("2023-08-31T23:59:59.999999Z", "9999-12-31T23:59:59-01:00"),
                "out_of_range: occurred_at '9999-12-31T23:59:59-01:00' is more than a day in the future",
            ),
        ];
        for (json, reason) in cases {
            let got = event(&json).unwrap_err();
            assert!(got.starts_with(reason), "{got} !~ {reason}");
        }
    }

    #[test]
    fn a_json_value_that_is_no_object_names_no_internal_type() {
        let reason = RawEvent::from_json("42").unwrap_err();
        assert_eq!(
            reason,
            "invalid JSON: invalid type: integer `42`, expected an event object"
        );
    }

    #[test]
    fn csv_fields_set_by_header() {
        let mut raw = RawEvent::default();
        for (k, v) in [
            ("event_id", "e"),
            ("account_id", "a"),
            ("product_id", "p"),
            ("aggr_product_id", "ap"),
            ("type", "NUMBER"),
            ("unit", "NUMBERS"),
            ("occurred_at", "2023-08-01T00:00:00Z"),
            ("quantity", "5"),
            ("unit_price", "1"),
            ("currency", "USD"),
            ("direction", ""),
            ("resolution", "ANSWERED"),
            ("ignored", "x"),
        ] {
            raw.set(k, v);
        }
        let e = raw.validate(&Window::default()).unwrap();
        assert_eq!(
            (e.direction, e.resolution.map(Resolution::as_str)),
            (None, Some("ANSWERED"))
        );
    }
}
