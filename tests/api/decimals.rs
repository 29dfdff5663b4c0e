//! `decimal_strings=true` (issue: exact decimals for generated clients): every amount also as a
//! string sibling with exactly the number's digits, on the monthly list, one record and the raw
//! events; links keep the parameter; the default body is unchanged.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::support::data::{dec, event};
use crate::support::tokens::token;
use crate::support::TestApp;

#[derive(Deserialize)]
struct Record<'a> {
    id: String,
    #[serde(borrow)]
    price: &'a RawValue,
    price_decimal: String,
    #[serde(borrow)]
    number_of_units: &'a RawValue,
    number_of_units_decimal: String,
    #[serde(borrow)]
    total_amount: &'a RawValue,
    total_amount_decimal: String,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    quantity: &'a RawValue,
    quantity_decimal: String,
    #[serde(borrow)]
    unit_price: &'a RawValue,
    unit_price_decimal: String,
    #[serde(borrow)]
    amount: &'a RawValue,
    amount_decimal: String,
}

async fn setup() -> TestApp {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a")]).await;
    let events: Vec<_> = [
        ("0.1", "0.2"),
        ("0.2", "0.1"),
        ("123456789012.000000000001", "7"),
    ]
    .iter()
    .enumerate()
    .map(|(n, (quantity, price))| {
        let mut e = event(&format!("e{n}"), "a1");
        e.product_id = format!("P{n}");
        e.quantity = dec(quantity);
        e.unit_price = dec(price);
        e
    })
    .collect();
    app.insert(&events).await;
    app.rollup().await;
    app
}

#[actix_web::test]
async fn every_amount_has_a_string_sibling_with_the_same_digits() {
    let app = setup().await;
    let org = token("org-a");
    let list = app
        .get("/express/usage/month?decimal_strings=true&per_page=2", &org)
        .await;
    assert_eq!(list.status, 200, "{}", list.text);
    #[derive(Deserialize)]
    struct Page<'a> {
        #[serde(borrow)]
        _embedded: Embedded<'a>,
    }
    #[derive(Deserialize)]
    struct Embedded<'a> {
        #[serde(borrow)]
        usage: Vec<Record<'a>>,
    }
    let page: Page = serde_json::from_str(&list.text).unwrap();
    assert_eq!(page._embedded.usage.len(), 2);
    for r in &page._embedded.usage {
        assert_eq!(r.price.get(), r.price_decimal);
        assert_eq!(r.number_of_units.get(), r.number_of_units_decimal);
        assert_eq!(r.total_amount.get(), r.total_amount_decimal);
    }
    let mut all: Vec<(String, String, String)> = Vec::new();
    let mut keep = |r: &Record| {
        all.push((
            r.id.clone(),
            r.number_of_units_decimal.clone(),
            r.total_amount_decimal.clone(),
        ))
    };
    page._embedded.usage.iter().for_each(&mut keep);
    // Links keep the parameter; the next page has the same shape.
    let next = list.body["_links"]["next"]["href"].as_str().unwrap();
    assert!(next.contains("decimal_strings=true"), "{next}");
    let second = app.follow(next, &org).await;
    let page: Page = serde_json::from_str(&second.text).unwrap();
    for r in &page._embedded.usage {
        assert_eq!(r.total_amount.get(), r.total_amount_decimal);
        keep(r);
    }
    let totals: Vec<&str> = all.iter().map(|(_, _, t)| t.as_str()).collect();
    assert!(totals.contains(&"0.02"), "{totals:?}");
    let big = all
        .iter()
        .find(|(_, units, _)| units == "123456789012.000000000001")
        .unwrap_or_else(|| panic!("{all:?}"));
    assert_eq!(big.2, "864197523084.000000000007");
    // One record, the same.
    let one = app
        .get(
            &format!("/express/usage/month/{}?decimal_strings=true", big.0),
            &org,
        )
        .await;
    assert_eq!(one.status, 200);
    let record: Record = serde_json::from_str(&one.text).unwrap();
    assert_eq!(record.total_amount_decimal, "864197523084.000000000007");

    // The raw events.
    let events = app
        .get("/express/usage/events?decimal_strings=true", &org)
        .await;
    assert_eq!(events.status, 200, "{}", events.text);
    #[derive(Deserialize)]
    struct EventsPage<'a> {
        #[serde(borrow)]
        _embedded: EventsEmbedded<'a>,
    }
    #[derive(Deserialize)]
    struct EventsEmbedded<'a> {
        #[serde(borrow)]
        events: Vec<Event<'a>>,
    }
    let page: EventsPage = serde_json::from_str(&events.text).unwrap();
    assert_eq!(page._embedded.events.len(), 3);
    for e in &page._embedded.events {
        assert_eq!(e.quantity.get(), e.quantity_decimal);
        assert_eq!(e.unit_price.get(), e.unit_price_decimal);
        assert_eq!(e.amount.get(), e.amount_decimal);
    }
}

#[actix_web::test]
async fn the_default_body_stays_the_seeds_and_a_wrong_value_is_named() {
    let app = setup().await;
    let org = token("org-a");
    let plain = app.get("/express/usage/month", &org).await;
    assert!(!plain.text.contains("_decimal"), "{}", plain.text);
    let plain_events = app.get("/express/usage/events", &org).await;
    assert!(!plain_events.text.contains("_decimal"));
    let strings = app
        .get("/express/usage/month?decimal_strings=true", &org)
        .await;
    assert_ne!(
        plain.header("etag"),
        strings.header("etag"),
        "the two bodies have different validators"
    );
    for path in [
        "/express/usage/month?decimal_strings=yes",
        "/express/usage/events?decimal_strings=1",
    ] {
        let bad = app.get(path, &org).await;
        assert_eq!(bad.status, 400, "{path}");
        assert_eq!(bad.field_names(), ["decimal_strings"], "{path}");
    }
}
