//! The filter language end to end: every operator, and/or/not/parentheses/in, null, quote
//! escaping — each result compared with an oracle evaluated here, in Rust, over the
//! organization's unfiltered rows.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::data::{dec, event};
use crate::support::tokens::token;
use crate::support::{encode, TestApp};

/// 72 events over three accounts of org-a (and one of org-b), four months, three types, every
/// direction and resolution including null, and wallet names with quotes.
async fn app_with_varied_rows() -> TestApp {
    let app = TestApp::spawn().await;
    app.accounts(&[
        ("a1", "org-a"),
        ("a2", "org-a"),
        ("a3", "org-a"),
        ("b1", "org-b"),
    ])
    .await;
    let mut events = Vec::new();
    for i in 0..72usize {
        let account = if i >= 66 {
            "b1"
        } else {
            ["a1", "a2", "a3"][i % 3]
        };
        let mut e = event(&format!("e-{i}"), account);
        e.occurred_at =
            crate::support::data::at(&format!("2023-{:02}-10T08:00:00Z", 1 + (i / 3) % 4));
        let (usage_type, unit) = [
            ("CALL", "MINUTES"),
            ("MESSAGE", "SEGMENTS"),
            ("NUMBER", "NUMBERS"),
        ][(i / 2) % 3];
        e.usage_type = usage_api::usage::model::UsageType::parse(usage_type).unwrap();
        e.unit = usage_api::usage::model::Unit::parse(unit).unwrap();
        e.direction =
            crate::support::data::direction([Some("INBOUND"), Some("OUTBOUND"), None][(i / 5) % 3]);
        e.resolution =
            crate::support::data::resolution([Some("ANSWERED"), None, Some("MISSED")][(i / 7) % 3]);
        e.wallet_name = ["main", "it's", "o'brien's wallet"][(i / 11) % 3].to_owned();
        e.currency = ["USD", "EUR"][(i / 13) % 2].to_owned();
        e.product_id = format!("P-{}", i % 2 + 1);
        e.aggr_product_id = format!("AP-{}", (i / 4) % 2 + 1);
        e.quantity = dec(&format!("{}.5", i));
        events.push(e);
    }
    app.insert(&events).await;
    app.rollup().await;
    app
}

fn s<'a>(record: &'a Value, field: &str) -> Option<&'a str> {
    record[field].as_str()
}

type Oracle = Box<dyn Fn(&Value) -> bool>;

#[actix_web::test]
async fn every_operator_and_combinator_matches_the_oracle() {
    let app = app_with_varied_rows().await;
    let token = token("org-a");
    let universe = app.get("/express/usage/month?per_page=250", &token).await;
    let rows: Vec<Value> = universe.body["_embedded"]["usage"]
        .as_array()
        .unwrap()
        .clone();
    assert!(rows.len() > 30, "a varied universe: {}", rows.len());
    assert!(rows.iter().all(|r| s(r, "account_id") != Some("b1")));
    let some_id = s(&rows[7], "id").unwrap().to_owned();
    let id_filter = format!("id eq '{some_id}'");

    let month = |r: &Value| s(r, "month").unwrap().to_owned();
    let cases: Vec<(&str, Oracle)> = vec![
        (
            "month eq '2023-02'",
            Box::new(move |r| month(r) == "2023-02"),
        ),
        (
            "month ne '2023-02'",
            Box::new(|r| s(r, "month") != Some("2023-02")),
        ),
        (
            "month gt '2023-02'",
            Box::new(|r| s(r, "month").unwrap() > "2023-02"),
        ),
        (
            "month ge '2023-02'",
            Box::new(|r| s(r, "month").unwrap() >= "2023-02"),
        ),
        (
            "month lt '2023-02'",
            Box::new(|r| s(r, "month").unwrap() < "2023-02"),
        ),
        (
            "month le '2023-02'",
            Box::new(|r| s(r, "month").unwrap() <= "2023-02"),
        ),
        (
            "type eq 'CALL' and direction eq 'INBOUND'",
            Box::new(|r| s(r, "type") == Some("CALL") && s(r, "direction") == Some("INBOUND")),
        ),
        (
            "type eq 'CALL' or type eq 'NUMBER'",
            Box::new(|r| matches!(s(r, "type"), Some("CALL" | "NUMBER"))),
        ),
        (
            "not type eq 'CALL'",
            Box::new(|r| s(r, "type") != Some("CALL")),
        ),
        (
            "type eq 'NUMBER' or type eq 'CALL' and currency eq 'EUR'",
            Box::new(|r| {
                s(r, "type") == Some("NUMBER")
                    || (s(r, "type") == Some("CALL") && s(r, "currency") == Some("EUR"))
            }),
        ),
        (
            "(type eq 'NUMBER' or type eq 'CALL') and currency eq 'EUR'",
            Box::new(|r| {
                matches!(s(r, "type"), Some("NUMBER" | "CALL")) && s(r, "currency") == Some("EUR")
            }),
        ),
        (
            "not (type eq 'CALL' or month le '2023-02') and currency eq 'EUR'",
            Box::new(|r| {
                !(s(r, "type") == Some("CALL") || s(r, "month").unwrap() <= "2023-02")
                    && s(r, "currency") == Some("EUR")
            }),
        ),
        (
            "type in ('CALL', 'MESSAGE')",
            Box::new(|r| matches!(s(r, "type"), Some("CALL" | "MESSAGE"))),
        ),
        ("direction eq null", Box::new(|r| r["direction"].is_null())),
        ("direction ne null", Box::new(|r| !r["direction"].is_null())),
        (
            "direction ne 'INBOUND'",
            Box::new(|r| s(r, "direction") != Some("INBOUND")),
        ),
        (
            "direction gt 'INBOUND'",
            Box::new(|r| s(r, "direction").is_some_and(|d| d > "INBOUND")),
        ),
        (
            "not direction gt 'INBOUND'",
            Box::new(|r| s(r, "direction").is_none_or(|d| d <= "INBOUND")),
        ),
        (
            "resolution in ('MISSED', null)",
            Box::new(|r| r["resolution"].is_null() || s(r, "resolution") == Some("MISSED")),
        ),
        (
            "wallet_name eq 'it''s'",
            Box::new(|r| s(r, "wallet_name") == Some("it's")),
        ),
        (
            "wallet_name eq 'o''brien''s wallet'",
            Box::new(|r| s(r, "wallet_name") == Some("o'brien's wallet")),
        ),
        (
            "wallet_name in ('main', 'it''s')",
            Box::new(|r| matches!(s(r, "wallet_name"), Some("main" | "it's"))),
        ),
        (
            "account_id eq 'a2' and month ge '2023-03'",
            Box::new(|r| s(r, "account_id") == Some("a2") && s(r, "month").unwrap() >= "2023-03"),
        ),
        (
            "account_id in ('a1', 'a3') and not direction eq null",
            Box::new(|r| {
                matches!(s(r, "account_id"), Some("a1" | "a3")) && !r["direction"].is_null()
            }),
        ),
        (
            "product_id eq 'P-1' and aggr_product_id ne 'AP-1'",
            Box::new(|r| {
                s(r, "product_id") == Some("P-1") && s(r, "aggr_product_id") != Some("AP-1")
            }),
        ),
        (
            "unit eq 'SEGMENTS'",
            Box::new(|r| s(r, "unit") == Some("SEGMENTS")),
        ),
        (
            "currency eq 'EUR'",
            Box::new(|r| s(r, "currency") == Some("EUR")),
        ),
        (
            "MONTH EQ '2023-01' OR Month Eq '2023-04'",
            Box::new(|r| matches!(s(r, "month"), Some("2023-01" | "2023-04"))),
        ),
        (
            "((((month eq '2023-03'))))",
            Box::new(|r| s(r, "month") == Some("2023-03")),
        ),
        (
            "not not month eq '2023-03'",
            Box::new(|r| s(r, "month") == Some("2023-03")),
        ),
        (
            id_filter.as_str(),
            Box::new(move |r| s(r, "id") == Some(some_id.as_str())),
        ),
    ];
    for (filter, oracle) in cases {
        let expected: BTreeSet<String> = rows
            .iter()
            .filter(|r| oracle(r))
            .map(|r| s(r, "id").unwrap().to_owned())
            .collect();
        assert!(
            !expected.is_empty(),
            "{filter}: the data should have a match"
        );
        let reply = app
            .get(
                &format!(
                    "/express/usage/month?per_page=250&filter={}",
                    encode(filter)
                ),
                &token,
            )
            .await;
        assert_eq!(reply.status, 200, "{filter}: {}", reply.body);
        let got: BTreeSet<String> = reply.ids().into_iter().collect();
        assert_eq!(got, expected, "{filter}");
        assert_eq!(reply.body["total"], expected.len(), "{filter}");
    }
}

#[actix_web::test]
async fn a_filter_that_matches_nothing_is_an_empty_page() {
    let app = app_with_varied_rows().await;
    let reply = app
        .get(
            &format!(
                "/express/usage/month?filter={}",
                encode("month eq '1999-01'")
            ),
            &token("org-a"),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["total"], 0);
}

#[actix_web::test]
async fn literals_are_parameters_not_sql() {
    let app = app_with_varied_rows().await;
    for hostile in [
        "wallet_name eq 'x'' or 1=1 --'",
        "product_id eq '''; DROP TABLE usage_monthly; --'",
        "wallet_name eq '%'",
    ] {
        let reply = app
            .get(
                &format!("/express/usage/month?filter={}", encode(hostile)),
                &token("org-a"),
            )
            .await;
        assert_eq!(reply.status, 200, "{hostile}: {}", reply.body);
        assert_eq!(reply.body["total"], 0, "{hostile}");
    }
    let still_there = app.get("/express/usage/month", &token("org-a")).await;
    assert!(still_there.body["total"].as_i64().unwrap() > 30);
}
