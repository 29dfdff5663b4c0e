//! The fuzz targets' bodies: each takes the fuzzer's bytes to one of usage-api's real parsers
//! and checks that it answers (a value or an error) without panicking, plus a few properties its
//! answer must have. `fuzz_targets/<name>.rs` calls `<name>` here; the main crate's
//! `tests/fuzz_corpus.rs` compiles this same file (`#[path]`) and replays every committed input
//! of `corpus/<name>/` through the same function, so `cargo test` needs no fuzzer.
//!
//! Only the crates both places have: `usage_api` and its own dependencies.

use std::sync::OnceLock;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;

use usage_api::db::schema::usage_monthly::dsl as um;
use usage_api::http::cursor::{self, Binding, Token, MAX_CURSOR_BYTES};
use usage_api::http::events::{parse_events, BodyFormat};
use usage_api::http::records::parse_request;
use usage_api::usage::read::column::SortField;
use usage_api::usage::read::filter;
use usage_api::usage::read::order::{self, Order, MAX_ORDER_BY_CHARS, MAX_PER_PAGE};
use usage_api::usage::read::{seek, Seek};
use usage_api::usage::records::catalogue::{Catalogue, CategoryInfo};
use usage_api::usage::records::query::periods;
use usage_api::usage::records::MAX_PERIODS;
use usage_api::usage::write::event::{split_reason, Entry, RawEvent, Window};
use usage_api::usage::write::records::{Format, Records};

/// A target's body: the fuzzer's bytes in, a panic for a bug.
pub type Target = fn(&[u8]);

/// The targets, by name: what `bench/fuzz.sh` runs and the replay test reads.
pub const TARGETS: [(&str, Target); 6] = [
    ("filter", filter),
    ("order_by", order_by),
    ("cursor", cursor),
    ("events_ndjson", events_ndjson),
    ("events_csv", events_csv),
    ("records_params", records_params),
];

/// The SQL of a query, without its bind values (`debug_query` appends them after ` -- binds:`).
fn sql_text(rendered: &str) -> &str {
    rendered.split(" -- binds:").next().unwrap_or(rendered)
}

/// `filter` of `GET /express/usage/month`: `usage::read::filter::parse`, then the compiled
/// predicate rendered as SQL, which must carry every literal as a bind parameter.
pub fn filter(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match filter::parse(text) {
        Ok(None) => assert!(text.trim().is_empty(), "{text:?} parsed as no filter"),
        Ok(Some(parsed)) => {
            let ids = parsed.account_ids();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
            match filter::parse(text) {
                Ok(Some(again)) => assert_eq!(again.meaning(), parsed.meaning()),
                other => panic!("{text:?} parsed once, then {other:?}"),
            }
            let query = um::usage_monthly.filter(parsed.to_sql()).select(um::id);
            let rendered = diesel::debug_query::<Pg, _>(&query).to_string();
            assert!(
                !sql_text(&rendered).contains('\''),
                "a literal spliced into SQL: {rendered}"
            );
        }
        Err(error) => {
            assert!(error.column <= text.chars().count() + 1, "{error:?}");
            assert!(!error.to_string().is_empty());
        }
    }
}

/// `order_by` (and `page`/`per_page`) of `GET /express/usage/month`: `Order::parse` and
/// `order::parse_bounded`. A parsed order always ends up with `id`, each field once, and reads
/// back the same from its own spelling.
pub fn order_by(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(n) = order::parse_bounded(text, 1, MAX_PER_PAGE) {
        assert!((1..=MAX_PER_PAGE).contains(&n));
    }
    let Ok(parsed) = Order::parse(text) else {
        return;
    };
    let keys = parsed.keys();
    assert!(keys.iter().any(|k| k.field == SortField::Id), "{text:?}");
    for (i, key) in keys.iter().enumerate() {
        assert!(keys[..i].iter().all(|k| k.field != key.field), "{text:?}");
    }
    let spelled: Vec<String> = keys
        .iter()
        .map(|k| {
            let direction = if k.descending { "desc" } else { "asc" };
            format!("{}:{direction}", k.field.name())
        })
        .collect();
    let spelled = spelled.join(",");
    if spelled.chars().count() <= MAX_ORDER_BY_CHARS {
        assert_eq!(Order::parse(&spelled).as_ref(), Ok(&parsed), "{text:?}");
    }
}

/// The key the cursor targets sign with (any 32 bytes: the server's comes from the database).
const CURSOR_KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn binding() -> Binding<'static> {
    Binding {
        organization_id: "org_fuzz",
        per_page: 50,
        filter: Some("month eq '2024-01'"),
        order_by: None,
    }
}

/// Orders a decoded position is tried against (each at most `MAX_ORDER_BY_CHARS` long).
const ORDERS: [&str; 6] = [
    "",
    "id",
    "month:desc,product_id",
    "direction,price:desc",
    "resolution:desc,total_amount",
    "number_of_units,currency:desc",
];

/// `cursor` of `GET /express/usage/month` and `GET /express/usage/events`: `http::cursor`'s
/// `check_form` and `decode`. Input starting with `{` is a token payload, signed here first
/// (`http::cursor::seal`) so that its JSON reaches the decoder; anything else is the parameter as sent.
/// A decoded token then goes where the server takes it: `Seek::new` and `seek::predicate`.
pub fn cursor(data: &[u8]) {
    let binding = binding();
    let decoded = if data.first() == Some(&b'{') {
        let Some(text) = cursor::seal(CURSOR_KEY, &binding, data) else {
            panic!("HMAC refused a 32-byte key");
        };
        let decoded = cursor::decode(CURSOR_KEY, &binding, &text);
        if text.len() > MAX_CURSOR_BYTES {
            assert!(decoded.is_err(), "a {} byte cursor was read", text.len());
        } else {
            assert!(cursor::check_form(&text).is_ok(), "{text}");
            let expected = serde_json::from_slice::<Token>(data)
                .ok()
                .filter(|t| t.format == 1);
            assert_eq!(decoded.as_ref().ok(), expected.as_ref());
        }
        decoded
    } else {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let form = cursor::check_form(text);
        let decoded = cursor::decode(CURSOR_KEY, &binding, text);
        if decoded.is_ok() {
            assert!(form.is_ok(), "{text:?} decoded but is not a cursor's form");
        }
        decoded
    };
    let Ok(token) = decoded else {
        return;
    };
    if let Some(text) = cursor::encode(CURSOR_KEY, &binding, &token) {
        assert_eq!(
            cursor::decode(CURSOR_KEY, &binding, &text).as_ref(),
            Ok(&token)
        );
    }
    for order_text in ORDERS {
        let Ok(order) = Order::parse(order_text) else {
            panic!("{order_text:?} is not an order");
        };
        let position = token.position.clone();
        let fits = Seek::new(
            (token.epoch, token.data_version),
            token.side,
            position,
            &order,
        );
        match seek::predicate(&order, token.side, &token.position) {
            Some(predicate) => {
                assert!(fits.is_some(), "{order_text:?}: {token:?}");
                let query = um::usage_monthly.filter(predicate).select(um::id);
                let rendered = diesel::debug_query::<Pg, _>(&query).to_string();
                assert!(!sql_text(&rendered).contains('\''), "{rendered}");
            }
            None => assert!(fits.is_none(), "{order_text:?}: {token:?}"),
        }
    }
}

/// The window events are judged by: fixed, so that a replay answers as the run did.
fn window() -> Window {
    let at = |secs| DateTime::<Utc>::from_timestamp(secs, 0).unwrap_or_default();
    Window {
        // 2016-01-01 to 2031-01-01.
        oldest: at(1_451_606_400),
        newest: at(1_924_992_000),
        max_age_days: 3650,
    }
}

/// `RawEvent::into_entry`, as every reader of events calls it after reading a record.
fn check(raw: Result<RawEvent, String>, window: &Window) {
    let Ok(raw) = raw else {
        return;
    };
    match raw.into_entry(window) {
        Ok(Entry::Event(event)) => {
            assert!(window.oldest <= event.occurred_at && event.occurred_at <= window.newest);
            assert!(event.quantity.is_zero() || event.quantity.is_sign_positive());
            assert!(event.unit_price.is_zero() || event.unit_price.is_sign_positive());
            assert!(!event.event_id.contains('\0') && !event.description.contains('\0'));
        }
        Ok(Entry::Void(void)) => assert_ne!(void.event_id, void.voids),
        Err(reason) => {
            let (code, _) = split_reason(&reason);
            assert!(!code.is_empty());
        }
    }
}

/// Every record of a file, read as `usage-api ingest` reads it (`usage::write::records`).
fn read_file(data: &[u8], format: Format, window: &Window) {
    let Ok(mut records) = Records::new(data, format) else {
        return;
    };
    let mut last = 0;
    loop {
        match records.next_record() {
            Ok(Some((line, raw))) => {
                if format == Format::Ndjson {
                    assert!(line > last, "line {line} after line {last}");
                }
                last = line;
                check(raw, window);
            }
            Ok(None) => break,
            Err(error) => panic!("reading bytes in memory failed: {error}"),
        }
    }
}

/// NDJSON events: a file as `usage-api ingest` reads it, and a body of
/// `POST /express/usage/events` read as NDJSON and as a JSON array (`http::events`).
pub fn events_ndjson(data: &[u8]) {
    let window = window();
    read_file(data, Format::Ndjson, &window);
    for format in [BodyFormat::Ndjson, BodyFormat::Array] {
        if let Ok(events) = parse_events(format, data) {
            for (_, raw) in events {
                check(raw, &window);
            }
        }
    }
}

/// CSV events: a file (a header, then rows) as `usage-api ingest` reads it.
pub fn events_csv(data: &[u8]) {
    read_file(data, Format::Csv, &window());
}

/// A catalogue like migration 5's, in part (a server reads the whole one from the database).
fn catalogue() -> &'static Catalogue {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        let category = |slug: &str, parent: Option<&str>| CategoryInfo {
            slug: slug.to_owned(),
            parent: parent.map(str::to_owned),
            description: format!("{slug} usage"),
            count_unit: "units".to_owned(),
        };
        let mut catalogue = Catalogue::default();
        catalogue.categories = vec![
            category("calls", None),
            category("calls-inbound", Some("calls")),
            category("sms", None),
            category("sms-outbound", Some("sms")),
            category("totalprice", None),
        ];
        catalogue
    })
}

/// Usage records (Twilio's format): `http::records::parse_request`, the path's tail and query
/// string checked as the handler checks them. Input: the tail (`Records/Daily.json`), a newline,
/// the query string, and optionally a newline and the day taken as today (`YYYY-MM-DD`, from
/// 1970 to 2199; otherwise 2026-03-01).
pub fn records_params(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let tail = lines.next().unwrap_or_default();
    let query = lines.next().unwrap_or_default();
    let today = lines
        .next()
        .and_then(|t| NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d").ok())
        .filter(|d| (1970..2200).contains(&d.year()))
        .or(NaiveDate::from_ymd_opt(2026, 3, 1))
        .unwrap_or_default();
    let catalogue = catalogue();
    let Some(Ok(request)) = parse_request("AC_fuzz", tail, query, today, catalogue) else {
        return;
    };
    if let Some(start) = request.start {
        assert!(start <= request.end, "{request:?}");
        assert!(periods(request.granularity, start, request.end).len() <= MAX_PERIODS);
    }
    if let Some(category) = &request.category {
        assert!(catalogue.get(category).is_some(), "{category}");
    }
}
