//! Every error code, as a real answer of the real server: the whole body, snapshot. A change
//! of wording shows up in review; CI refuses a snapshot that was not committed.

use serde_json::json;

use crate::support::tokens::{token, writer};
use crate::support::{Options, Reply, TestApp};

const LIST: &str = "/express/usage/month";
const EVENTS: &str = "/express/usage/events";
const JSON: (&str, &str) = ("Content-Type", "application/json");

fn snapshot(name: &str, reply: &Reply) {
    insta::assert_json_snapshot!(name, json!({"status": reply.status, "body": reply.body}));
}

#[actix_web::test]
async fn every_error_code_has_a_documented_body() {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a"), ("b1", "org-b")]).await;
    let bearer = format!("Bearer {}", token("org-a"));
    let auth = ("Authorization", bearer.as_str());

    snapshot(
        "invalid_parameter",
        &app.get(&format!("{LIST}?page=0&per_page=251"), &token("org-a"))
            .await,
    );
    snapshot(
        "invalid_filter",
        &app.get(
            &format!("{LIST}?filter=month%20eq%20'2023-13'"),
            &token("org-a"),
        )
        .await,
    );
    snapshot("unauthorized", &app.get_with(LIST, &[]).await);
    snapshot(
        "invalid_token",
        &app.get_with(LIST, &[("Authorization", "Bearer not.a.token")])
            .await,
    );
    snapshot("insufficient_scope", &app.get(LIST, &writer("org-a")).await);
    snapshot(
        "forbidden_accounts",
        &app.get(
            &format!("{LIST}?filter=account_id%20in%20('a1','b1','zz')"),
            &token("org-a"),
        )
        .await,
    );
    snapshot("not_found", &app.get_with("/nowhere", &[auth]).await);
    snapshot(
        "not_found_record",
        &app.get_with(&format!("{LIST}/0123456789abcdef0123456789abcdef"), &[auth])
            .await,
    );
    let put = app
        .client
        .put(format!("{}{EVENTS}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 405);
    assert_eq!(put.headers()["allow"], "GET, POST");
    let body: serde_json::Value = put.json().await.unwrap();
    assert_eq!(
        body["description"],
        "Only GET and POST are allowed on this resource."
    );
    snapshot(
        "method_not_allowed",
        &app.post("/express/usage/month", &token("org-a"), &[], "")
            .await,
    );

    let w = writer("org-a");
    snapshot(
        "invalid_body",
        &app.post(EVENTS, &w, &[JSON], "{\"not\": \"an array\"}")
            .await,
    );
    let many: Vec<serde_json::Value> = (0..10_001)
        .map(|n| json!({"event_id": n.to_string()}))
        .collect();
    snapshot(
        "payload_too_large",
        &app.post(EVENTS, &w, &[JSON], json!(many).to_string()).await,
    );
    snapshot(
        "unsupported_media_type",
        &app.post(EVENTS, &w, &[("Content-Type", "text/csv")], "a,b")
            .await,
    );
    let key = ("Idempotency-Key", "k");
    app.post(EVENTS, &w, &[JSON, key], "[]").await;
    snapshot(
        "idempotency_key_reused",
        &app.post(EVENTS, &w, &[JSON, key], "[ ]").await,
    );

    let down = TestApp::spawn_with(Options {
        database_url: Some("postgres://root@127.0.0.1:9/usage_api".to_owned()),
        ..Options::default()
    })
    .await;
    snapshot(
        "service_unavailable",
        &down.get(LIST, &token("org-a")).await,
    );
}

#[actix_web::test]
async fn the_ingest_report_has_a_documented_shape() {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a"), ("b1", "org-b")]).await;
    let event = |id: &str, account: &str, occurred_at: &str, quantity: &str| {
        json!({"event_id": id, "account_id": account, "product_id": "P", "aggr_product_id": "AP",
               "type": "CALL", "unit": "MINUTES", "occurred_at": occurred_at,
               "quantity": quantity, "unit_price": "0.5", "currency": "USD"})
    };
    let batch = json!([
        event("e1", "a1", "2023-08-01T00:00:00Z", "1"),
        event("e1", "a1", "2023-08-01T00:00:00Z", "1"),
        event("e2", "b1", "2023-08-01T00:00:00Z", "1"),
        event("e3", "a1", "1970-01-01T00:00:00Z", "1"),
        event("e4", "a1", "2023-08-01T00:00:00Z", "-1"),
        {"event_id": "v1", "voids": "e1"},
        {"event_id": "v2", "voids": "nope"},
        "not an event"
    ]);
    let reply = app
        .post(EVENTS, &writer("org-a"), &[JSON], batch.to_string())
        .await;
    insta::assert_json_snapshot!(reply.body);
}
