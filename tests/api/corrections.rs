//! Corrections: quantities are never negative; an event is taken back by a void naming it,
//! after which every aggregate leaves it out. Voids are idempotent, checked, and org-scoped.

use serde_json::{json, Value};

use crate::support::tokens::token;
use crate::support::TestApp;

fn call(event_id: &str, account: &str, quantity: &str, product: &str) -> serde_json::Value {
    json!({
        "event_id": event_id, "account_id": account, "product_id": product, "aggr_product_id": "AP",
        "type": "CALL", "unit": "MINUTES", "occurred_at": "2023-08-10T10:00:00Z",
        "quantity": quantity, "unit_price": "2", "currency": "USD"
    })
}

fn void(event_id: &str, voids: &str) -> serde_json::Value {
    json!({"event_id": event_id, "voids": voids})
}

async fn send(app: &TestApp, org: &str, batch: Value) -> Vec<(String, Option<String>)> {
    app.send_events(org, batch).await
}

#[actix_web::test]
async fn a_void_takes_an_event_out_of_its_aggregate_once() {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a"), ("b1", "org-b")]).await;
    send(
        &app,
        "org-a",
        json!([call("e1", "a1", "10", "P"), call("e2", "a1", "5", "P")]),
    )
    .await;
    send(&app, "org-b", json!([call("x1", "b1", "1", "P")])).await;
    app.rollup().await;
    let page = app.get("/express/usage/month", &token("org-a")).await;
    page.assert_text_contains(r#""number_of_units":15,"total_amount":30,"#);

    let results = send(
        &app,
        "org-a",
        json!([
            void("v1", "e1"),
            void("v1", "e1"),
            void("v2", "e1"),
            void("v3", "nope"),
            void("v4", "x1"),
            void("v5", "v1"),
            void("v6", "v6"),
        ]),
    )
    .await;
    assert_eq!(results[0], ("accepted".into(), None));
    assert_eq!(results[1], ("duplicate".into(), None));
    assert_eq!(
        results[2],
        (
            "rejected".into(),
            Some("event 'e1' is already voided".into())
        )
    );
    assert_eq!(
        results[3],
        ("rejected".into(), Some("unknown event 'nope'".into()))
    );
    assert_eq!(
        results[4],
        ("rejected".into(), Some("unknown event 'x1'".into())),
        "another organization's event looks unknown"
    );
    assert_eq!(
        results[5],
        (
            "rejected".into(),
            Some("'v1' is a void; it cannot be voided".into())
        )
    );
    assert_eq!(
        results[6],
        (
            "rejected".into(),
            Some("an event cannot void itself".into())
        )
    );

    let stats = app.rollup().await;
    assert_eq!(stats.changed, 1);
    let page = app.get("/express/usage/month", &token("org-a")).await;
    page.assert_text_contains(r#""number_of_units":5,"total_amount":10,"#);
    let before_full = page.body["_embedded"].clone();
    app.rollup_full().await;
    let after_full = app.get("/express/usage/month", &token("org-a")).await;
    assert_eq!(
        after_full.body["_embedded"], before_full,
        "a rebuild agrees"
    );
    // The voided event stays a known id: sending it again is a duplicate, not a new event.
    assert_eq!(
        send(&app, "org-a", json!([call("e1", "a1", "10", "P")])).await[0].0,
        "duplicate"
    );
}

#[actix_web::test]
async fn voiding_the_only_event_of_an_aggregate_removes_it() {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a")]).await;
    send(
        &app,
        "org-a",
        json!([
            call("e1", "a1", "10", "P-ONLY"),
            call("e2", "a1", "1", "P-OTHER")
        ]),
    )
    .await;
    app.rollup().await;
    let page = app
        .get("/express/usage/month?order_by=product_id", &token("org-a"))
        .await;
    let id = page.body["_embedded"]["usage"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(page.body["_embedded"]["usage"][0]["product_id"], "P-ONLY");

    // Event and void in one batch work too: events are stored first.
    send(&app, "org-a", json!([void("v1", "e1")])).await;
    let stats = app.rollup().await;
    assert_eq!(stats.removed, 1);
    let page = app.get("/express/usage/month", &token("org-a")).await;
    assert_eq!(page.body["total"], 1);
    assert_eq!(
        app.get(&format!("/express/usage/month/{id}"), &token("org-a"))
            .await
            .status,
        404
    );

    let results = send(
        &app,
        "org-a",
        json!([call("e3", "a1", "4", "P-NEW"), void("v2", "e3")]),
    )
    .await;
    assert_eq!(
        results,
        vec![("accepted".into(), None), ("accepted".into(), None)]
    );
    app.rollup().await;
    assert_eq!(
        app.get("/express/usage/month", &token("org-a")).await.body["total"],
        1
    );
}
