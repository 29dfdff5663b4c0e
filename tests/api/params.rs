//! Every malformed parameter is a 400 with a stable code and `fields` naming it; unknown paths
//! and methods answer in the same JSON error body.

use crate::support::encode;
use crate::support::tokens::token;
use crate::support::{Options, TestApp};

#[actix_web::test]
async fn malformed_parameters_are_named() {
    let app = TestApp::spawn().await;
    let token = token("org-a");
    let deep = format!("{}month eq '2023-01'{}", "(".repeat(33), ")".repeat(33));
    let long = format!("product_id eq '{}'", "x".repeat(1590));
    let many = format!("product_id in ({})", vec!["'p'"; 201].join(","));
    let cases: Vec<(String, &str, Vec<&str>, &str)> = vec![
        (
            "page=0".into(),
            "invalid_parameter",
            vec!["page"],
            "between 1 and",
        ),
        (
            "page=-1".into(),
            "invalid_parameter",
            vec!["page"],
            "not a whole number",
        ),
        (
            "page=abc".into(),
            "invalid_parameter",
            vec!["page"],
            "not a whole number",
        ),
        (
            "page=1.5".into(),
            "invalid_parameter",
            vec!["page"],
            "not a whole number",
        ),
        (
            "page=99999999999".into(),
            "invalid_parameter",
            vec!["page"],
            "between 1 and",
        ),
        (
            "page=".into(),
            "invalid_parameter",
            vec!["page"],
            "not a whole number",
        ),
        (
            "per_page=0".into(),
            "invalid_parameter",
            vec!["per_page"],
            "between 1 and 250",
        ),
        (
            "per_page=251".into(),
            "invalid_parameter",
            vec!["per_page"],
            "between 1 and 250",
        ),
        (
            "per_page=ten".into(),
            "invalid_parameter",
            vec!["per_page"],
            "not a whole number",
        ),
        (
            "page=1&page=2".into(),
            "invalid_parameter",
            vec!["page"],
            "only once",
        ),
        (
            "order_by=colour:asc".into(),
            "invalid_parameter",
            vec!["order_by"],
            "unknown field 'colour'",
        ),
        (
            "order_by=month:sideways".into(),
            "invalid_parameter",
            vec!["order_by"],
            "unknown direction",
        ),
        (
            format!("order_by={}", "month:desc,".repeat(4) + "id"),
            "invalid_parameter",
            vec!["order_by"],
            "limit is 40",
        ),
        (
            format!("filter={}", encode("month eq")),
            "invalid_filter",
            vec!["filter"],
            "expected a quoted value or null, found end of filter at column 9",
        ),
        (
            format!("filter={}", encode("month eq '2023-01' and")),
            "invalid_filter",
            vec!["filter"],
            "expected a field name, found end of filter at column 23",
        ),
        (
            format!("filter={}", encode("month eq '2023-01' '2023-02'")),
            "invalid_filter",
            vec!["filter"],
            "unexpected string '2023-02' at column 20",
        ),
        (
            format!("filter={}", encode(&long)),
            "invalid_filter",
            vec!["filter"],
            "limit is 1600",
        ),
        (
            format!("filter={}", encode(&deep)),
            "invalid_filter",
            vec!["filter"],
            "deeper than 32",
        ),
        (
            format!("filter={}", encode(&many)),
            "invalid_filter",
            vec!["filter"],
            "more than 200",
        ),
        (
            format!("filter={}", encode("month eq '2023-13'")),
            "invalid_filter",
            vec!["filter"],
            "invalid month '2023-13'",
        ),
        (
            format!("filter={}", encode("month eq 'August'")),
            "invalid_filter",
            vec!["filter"],
            "expected YYYY-MM",
        ),
        (
            format!("filter={}", encode("type eq 'PHONE'")),
            "invalid_filter",
            vec!["filter"],
            "unknown type 'PHONE'",
        ),
        (
            format!("filter={}", encode("unit in ('MINUTES', 'HOURS')")),
            "invalid_filter",
            vec!["filter"],
            "unknown unit 'HOURS'",
        ),
        (
            format!("filter={}", encode("colour eq 'red'")),
            "invalid_filter",
            vec!["filter"],
            "unknown field 'colour'",
        ),
        (
            format!("filter={}", encode("id eq 'xyz'")),
            "invalid_filter",
            vec!["filter"],
            "32 hexadecimal",
        ),
        (
            format!("filter={}", encode("currency eq 'usd'")),
            "invalid_filter",
            vec!["filter"],
            "ISO 4217",
        ),
        (
            format!("filter={}", encode("product_id eq null")),
            "invalid_filter",
            vec!["filter"],
            "never null",
        ),
        (
            format!("filter={}", encode("wallet_name eq 'a\0b'")),
            "invalid_filter",
            vec!["filter"],
            "NUL character",
        ),
        (
            format!("filter={}", encode("account_id eq '\0'")),
            "invalid_filter",
            vec!["filter"],
            "NUL character",
        ),
        (
            "page=0&per_page=900&order_by=x&filter=(".into(),
            "invalid_parameter",
            vec!["page", "per_page", "order_by", "filter"],
            "",
        ),
    ];
    for (query, code, fields, needle) in cases {
        let reply = app
            .get(&format!("/express/usage/month?{query}"), &token)
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, code),
            "{query}: {}",
            reply.body
        );
        assert_eq!(reply.field_names(), fields, "{query}");
        let description = reply.body["fields"][0]["description"].as_str().unwrap();
        assert!(description.contains(needle), "{query}: {description}");
    }
}

#[actix_web::test]
async fn limits_themselves_are_accepted() {
    let app = TestApp::spawn().await;
    let token = token("org-a");
    let exactly_long = format!("product_id eq '{}'", "x".repeat(128));
    let padded = format!("{exactly_long}{}", " ".repeat(1600 - exactly_long.len()));
    let depth = format!("{}month eq '2023-01'{}", "(".repeat(32), ")".repeat(32));
    for query in [
        "per_page=250".to_owned(),
        "per_page=1&page=2147483647".to_owned(),
        format!("filter={}", encode(&padded)),
        format!("filter={}", encode(&depth)),
        format!(
            "filter={}",
            encode(&format!("product_id in ({})", vec!["'p'"; 200].join(",")))
        ),
        format!("order_by={}", "month:desc,total_amount:asc,product_id"),
    ] {
        let reply = app
            .get(&format!("/express/usage/month?{query}"), &token)
            .await;
        assert_eq!(reply.status, 200, "{query}: {}", reply.body);
    }
}

#[actix_web::test]
async fn authentication_comes_before_parameter_checks() {
    let app = TestApp::spawn().await;
    let reply = app.get_with("/express/usage/month?page=0", &[]).await;
    assert_eq!(reply.status, 401);
}

#[actix_web::test]
async fn unknown_paths_and_methods_answer_in_json() {
    let app = TestApp::spawn().await;
    let reply = app.get("/express/usage/year", &token("org-a")).await;
    assert_eq!((reply.status, reply.code()), (404, "not_found"));
    let response = app
        .client
        .delete(format!("{}/express/usage/month", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "GET");
    assert!(response.headers().contains_key("x-request-id"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
}

#[actix_web::test]
async fn request_ids_are_echoed_when_sane_and_made_up_otherwise() {
    let app = TestApp::spawn().await;
    let reply = app
        .get_with("/health/live", &[("X-Request-Id", "trace-abc.123")])
        .await;
    assert_eq!(reply.header("x-request-id"), Some("trace-abc.123"));
    let reply = app
        .get_with("/health/live", &[("X-Request-Id", "bad id with spaces")])
        .await;
    let id = reply.header("x-request-id").unwrap();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let ready = app.get_with("/health/ready", &[]).await;
    assert_eq!(
        (ready.status, ready.body["status"].as_str()),
        (200, Some("ready"))
    );
}

#[actix_web::test]
async fn an_unreachable_database_is_a_503_with_retry_after_and_no_details() {
    // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    let app = TestApp::spawn_with(Options {
        database_url: Some("postgres://root@127.0.0.1:9/usage_api".to_owned()),
        ..Options::default()
    })
    .await;
    let reply = app.get("/express/usage/month", &token("org-a")).await;
    assert_eq!(
        (reply.status, reply.code()),
        (503, "service_unavailable"),
        "{}",
        reply.body
    );
    // Jittered, so that turned-away clients do not all come back at once.
    let retry: u8 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry), "{retry}");
    assert!(
        !reply.text.contains("127.0.0.1") && !reply.text.to_lowercase().contains("connect"),
        "{}",
        reply.text
    );
    // The probe answers its own document, naming what is missing, never an error body.
    let ready = app.get_with("/health/ready", &[]).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.header("retry-after"), Some("1"));
    assert_eq!(
        ready.body,
        serde_json::json!({"status": "not_ready", "database": "unavailable", "keys": "loaded"})
    );
}
