//! Exact money: totals are Σ quantity × unit_price to the last digit, written as JSON numbers
//! with their own digits; months are taken in UTC at their exact edges; ids are stable and the
//! rollup is idempotent.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::Value;

use crate::support::data::{at, dec, event};
use crate::support::encode;
use crate::support::tokens::token;
use crate::support::TestApp;

/// The records of org-a keyed by (account, product, month), with their raw JSON text.
async fn records(app: &TestApp) -> (Vec<Value>, String) {
    let reply = app
        .get(
            "/express/usage/month?per_page=250&order_by=product_id",
            &token("org-a"),
        )
        .await;
    assert_eq!(reply.status, 200);
    (
        reply.body["_embedded"]["usage"].as_array().unwrap().clone(),
        reply.text,
    )
}

#[actix_web::test]
async fn totals_are_exact_to_the_last_digit() {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a")]).await;
    let mut tiny = event("tiny", "a1");
    tiny.product_id = "P-TINY".into();
    tiny.quantity = dec("0.000001");
    tiny.unit_price = dec("0.0001");
    let mut big = event("big", "a1");
    big.product_id = "P-BIG".into();
    big.quantity = dec("1000000");
    big.unit_price = dec("19.99");
    let mut thirds = Vec::new();
    for n in 0..3 {
        let mut e = event(&format!("tenth-{n}"), "a1");
        e.product_id = "P-TENTHS".into();
        e.quantity = dec("0.1");
        e.unit_price = dec("0.2");
        thirds.push(e);
    }
    app.insert(&[vec![tiny, big], thirds].concat()).await;
    app.rollup().await;
    let (rows, text) = records(&app).await;
    assert_eq!(rows.len(), 3);
    // Checked on the text: a parsed f64 would hide exactly the errors this test is about.
    assert!(text.contains(r#""price":19.99,"wallet_name":"contact center","number_of_units":1000000,"total_amount":19990000,"#), "{text}");
    assert!(text.contains(r#""price":0.2,"wallet_name":"contact center","number_of_units":0.3,"total_amount":0.06,"#), "{text}");
    assert!(text.contains(r#""price":0.0001,"wallet_name":"contact center","number_of_units":0.000001,"total_amount":0.0000000001,"#), "{text}");
}

#[actix_web::test]
async fn totals_match_an_oracle_over_many_events() {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a"), ("a2", "org-a")]).await;
    let mut events = Vec::new();
    let mut expected: BTreeMap<(String, String, String), (Decimal, Decimal)> = BTreeMap::new();
    for n in 0..400u32 {
        let mut e = event(&format!("e-{n}"), if n % 2 == 0 { "a1" } else { "a2" });
        e.product_id = format!("P-{}", n % 7);
        e.occurred_at = at(&format!(
            "2023-{:02}-{:02}T10:00:00Z",
            1 + n % 12,
            1 + n % 28
        ));
        e.quantity = Decimal::new(i64::from(n * 7919 % 100_003), n % 7);
        e.unit_price = dec(["0.0085", "1.5", "1.50", "0.000001"][(n % 4) as usize]);
        // 1.5 and 1.50 are one price, so one aggregate.
        let price = e.unit_price.normalize().to_string();
        let key = (
            e.account_id.to_string(),
            e.product_id.clone(),
            format!("{}|{}", e.occurred_at.format("%Y-%m"), price),
        );
        let slot = expected.entry(key).or_default();
        slot.0 += e.quantity;
        slot.1 += e.quantity * e.unit_price;
        events.push(e);
    }
    app.insert(&events).await;
    app.rollup().await;
    let mut got = BTreeMap::new();
    let mut page = 1;
    loop {
        let reply = app
            .get(
                &format!("/express/usage/month?per_page=250&page={page}"),
                &token("org-a"),
            )
            .await;
        // Read the decimals from the raw text so nothing passes through f64.
        let raw: Value = serde_json::from_str(&reply.text).unwrap();
        for (record, text) in raw["_embedded"]["usage"]
            .as_array()
            .unwrap()
            .iter()
            .zip(exact_numbers(&reply.text))
        {
            let key = (
                record["account_id"].as_str().unwrap().to_owned(),
                record["product_id"].as_str().unwrap().to_owned(),
                format!("{}|{}", record["month"].as_str().unwrap(), text.0),
            );
            got.insert(key, (text.1, text.2));
        }
        if reply.body["_links"].get("next").is_none() {
            break;
        }
        page += 1;
    }
    let expected: BTreeMap<_, _> = expected
        .into_iter()
        .map(|(k, (u, t))| (k, (u.normalize(), t.normalize())))
        .collect();
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);
}

/// (price, number_of_units, total_amount) of each record, parsed exactly from the JSON text.
fn exact_numbers(text: &str) -> Vec<(String, Decimal, Decimal)> {
    let number_after = |from: &str, key: &str| -> (String, usize) {
        let start = from.find(key).unwrap() + key.len();
        let end = start + from[start..].find([',', '}']).unwrap();
        (from[start..end].to_owned(), end)
    };
    let mut out = Vec::new();
    let mut rest = text;
    while rest.contains("\"price\":") {
        let (price, _) = number_after(rest, "\"price\":");
        let (units, _) = number_after(rest, "\"number_of_units\":");
        let (total, end) = number_after(rest, "\"total_amount\":");
        out.push((price, units.parse().unwrap(), total.parse().unwrap()));
        rest = &rest[end..];
    }
    out
}

#[actix_web::test]
async fn months_are_cut_in_utc_at_their_exact_edges() {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a")]).await;
    let cases = [
        ("last-microsecond", "2023-08-31T23:59:59.999999Z", "2023-08"),
        ("first-instant", "2023-09-01T00:00:00Z", "2023-09"),
        (
            "local-after-midnight",
            "2023-09-01T01:30:00+02:00",
            "2023-08",
        ),
        (
            "local-before-midnight",
            "2023-08-31T20:00:00-05:00",
            "2023-09",
        ),
        ("leap-day", "2024-02-29T23:59:59.999999Z", "2024-02"),
    ];
    let events: Vec<_> = cases
        .iter()
        .map(|(id, when, _)| {
            let mut e = event(id, "a1");
            e.product_id = (*id).to_owned();
            e.occurred_at = at(when);
            e
        })
        .collect();
    app.insert(&events).await;
    app.rollup().await;
    for (id, _, month) in cases {
        let filter = encode(&format!("product_id eq '{id}'"));
        let reply = app
            .get(
                &format!("/express/usage/month?filter={filter}"),
                &token("org-a"),
            )
            .await;
        assert_eq!(reply.body["_embedded"]["usage"][0]["month"], month, "{id}");
        let filter = encode(&format!("product_id eq '{id}' and month eq '{month}'"));
        let reply = app
            .get(
                &format!("/express/usage/month?filter={filter}"),
                &token("org-a"),
            )
            .await;
        assert_eq!(reply.body["total"], 1, "{id} by month filter");
    }
}

#[actix_web::test]
async fn ids_are_stable_and_the_rollup_is_idempotent() {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a")]).await;
    app.insert(&[event("e1", "a1"), event("e2", "a1")]).await;
    let first = app.rollup().await;
    assert_eq!((first.groups, first.changed, first.removed), (1, 1, 0));
    let (before, _) = records(&app).await;
    assert_eq!(before[0]["number_of_units"], 2);

    let again = app.rollup().await;
    assert_eq!(
        (again.groups, again.changed, again.removed),
        (0, 0, 0),
        "no dirty group: nothing to do"
    );
    let full = app.rollup_full().await;
    assert_eq!(
        (full.groups, full.changed, full.removed),
        (1, 0, 0),
        "nothing to do twice"
    );
    assert_eq!(records(&app).await.0, before);

    // A late event for the same aggregate changes its totals, not its id.
    let mut late = event("e3", "a1");
    late.quantity = dec("2.5");
    app.insert(&[late]).await;
    app.rollup().await;
    let (after, _) = records(&app).await;
    assert_eq!(after[0]["id"], before[0]["id"]);
    assert_eq!(after[0]["number_of_units"], 4.5);

    // A repeated event id is a duplicate, never counted twice.
    let outcomes = app.insert(&[event("e1", "a1")]).await;
    assert_eq!(
        outcomes,
        vec![usage_api::usage::write::store::Outcome::Duplicate]
    );
    app.rollup().await;
    assert_eq!(records(&app).await.0, after);
}

#[actix_web::test]
async fn totals_beyond_28_significant_digits_stay_exact() {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a")]).await;
    let events: Vec<_> = (0..9)
        .map(|n| {
            let mut e = event(&format!("e-{n}"), "a1");
            e.quantity = dec("9999.123456789012");
            e.unit_price = dec("1.000000000001");
            e
        })
        .collect();
    app.insert(&events).await;
    app.rollup().await;
    let (_, text) = records(&app).await;
    assert!(
        text.contains(r#""price":1.000000000001,"wallet_name":"contact center","number_of_units":89992.111111101108,"total_amount":89992.111111191100111111101108,"#),
        "{text}"
    );
}

#[actix_web::test]
async fn amounts_decode_exactly_as_postgres_prints_them() {
    use diesel::sql_types::{Numeric, Text};
    use diesel_async::RunQueryDsl;
    use usage_api::usage::amount::Amount;

    let app = TestApp::spawn().await;
    let mut conn = app.conn().await;
    for literal in [
        "0",
        "0.00",
        "1",
        "10000",
        "19990000.00",
        "0.0000000001",
        "0.1",
        "12.5000",
        "-3.25",
        "123456789012345678901234567890.123456789012345678901234567890",
        "9999.9999",
        "0.00010000",
        "100000000",
        "1e-20",
        "31415926535897932384626433832795028841971",
    ] {
        let (amount, text): (Amount, String) = diesel::select((
            diesel::dsl::sql::<Numeric>("CAST(")
                .bind::<Text, _>(literal)
                .sql(" AS numeric)"),
            diesel::dsl::sql::<Text>("CAST(trim_scale(CAST(")
                .bind::<Text, _>(literal)
                .sql(" AS numeric)) AS text)"),
        ))
        .get_result(&mut conn)
        .await
        .unwrap();
        assert_eq!(amount.as_str(), text, "{literal}");
    }
}
