//! `POST /express/usage/events`: per-event outcomes, the ownership rule, limits, media types,
//! and Idempotency-Key replays — against the real server and database.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::tokens::{token, writer};
use crate::support::{Options, TestApp};

const EVENTS: &str = "/express/usage/events";
const JSON: (&str, &str) = ("Content-Type", "application/json");
const NDJSON: (&str, &str) = ("Content-Type", "application/x-ndjson");

fn good(event_id: &str, account: &str, quantity: &str) -> Value {
    json!({
        "event_id": event_id, "account_id": account, "product_id": "P-1", "aggr_product_id": "AP-1",
        "type": "CALL", "unit": "MINUTES", "direction": "OUTBOUND", "resolution": "ANSWERED",
        "description": "Outbound call", "wallet_name": "main",
        "occurred_at": "2023-08-01T10:00:00Z", "quantity": quantity, "unit_price": "0.014", "currency": "USD"
    })
}

async fn app_with_accounts() -> TestApp {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a"), ("a2", "org-a"), ("b1", "org-b")])
        .await;
    app
}

fn statuses(reply: &crate::support::Reply) -> Vec<(u64, String, Option<String>)> {
    reply.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["status"].as_str().unwrap().to_owned(),
                r["reason"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[actix_web::test]
async fn a_batch_keeps_its_good_events_and_answers_for_each() {
    let app = app_with_accounts().await;
    let mut negative = good("e3", "a1", "1");
    negative["quantity"] = json!("-1");
    let batch = json!([
        good("e1", "a1", "60"),
        good("e2", "a2", "0.5"),
        negative,
        good("e1", "a1", "60"),
        42
    ]);
    let reply = app
        .post(EVENTS, &writer("org-a"), &[JSON], batch.to_string())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        (
            reply.body["accepted"].as_u64(),
            reply.body["duplicate"].as_u64(),
            reply.body["rejected"].as_u64()
        ),
        (Some(2), Some(1), Some(2))
    );
    let got = statuses(&reply);
    assert_eq!(got[0], (0, "accepted".into(), None));
    assert_eq!(got[1], (1, "accepted".into(), None));
    assert_eq!(
        got[2],
        (
            2,
            "rejected".into(),
            Some("quantity must not be negative".into())
        )
    );
    assert_eq!(got[3], (3, "duplicate".into(), None));
    assert_eq!(got[4].1, "rejected");
    assert!(
        got[4].2.as_deref().unwrap().starts_with("invalid JSON"),
        "{:?}",
        got[4]
    );
    assert_eq!(reply.body["results"][0]["event_id"], "e1");

    // Sent again: every good event is now a duplicate.
    let again = app
        .post(EVENTS, &writer("org-a"), &[JSON], batch.to_string())
        .await;
    assert_eq!(
        (
            again.body["accepted"].as_u64(),
            again.body["duplicate"].as_u64()
        ),
        (Some(0), Some(3))
    );

    app.rollup().await;
    let page = app
        .get("/express/usage/month?order_by=account_id", &token("org-a"))
        .await;
    assert_eq!(page.body["total"], 2);
    page.assert_text_contains(r#""number_of_units":60,"total_amount":0.84,"#);
    page.assert_text_contains(r#""number_of_units":0.5,"total_amount":0.007,"#);
}

#[actix_web::test]
async fn ndjson_bodies_report_by_line() {
    let app = app_with_accounts().await;
    let body = format!(
        "{}\n\n{{broken\n{}\n",
        good("n1", "a1", "1"),
        good("n2", "a1", "2")
    );
    let reply = app.post(EVENTS, &writer("org-a"), &[NDJSON], body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let got = statuses(&reply);
    assert_eq!(
        got.iter().map(|g| (g.0, g.1.as_str())).collect::<Vec<_>>(),
        vec![(0, "accepted"), (2, "rejected"), (3, "accepted")]
    );
}

#[actix_web::test]
async fn an_event_for_an_account_outside_the_organization_is_rejected_alone() {
    let app = app_with_accounts().await;
    let batch = json!([
        good("e1", "a1", "1"),
        good("e2", "b1", "1"),
        good("e3", "nobody", "1"),
        good("e4", "a2", "2")
    ]);
    let reply = app
        .post(EVENTS, &writer("org-a"), &[JSON], batch.to_string())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let got = statuses(&reply);
    assert_eq!(got[0], (0, "accepted".into(), None));
    // Another organization's account and one that exists nowhere look exactly the same.
    assert_eq!(
        got[1],
        (1, "rejected".into(), Some("unknown_account".into()))
    );
    assert_eq!(
        got[2],
        (2, "rejected".into(), Some("unknown_account".into()))
    );
    assert_eq!(got[3], (3, "accepted".into(), None));
    let results = &reply.body["results"];
    assert_eq!(
        results[1]["description"],
        "'b1' is not an account of this organization"
    );
    assert_eq!(
        results[2]["description"],
        "'nobody' is not an account of this organization"
    );
    assert_eq!(
        (
            reply.body["accepted"].as_u64(),
            reply.body["rejected"].as_u64()
        ),
        (Some(2), Some(2))
    );
    // The good ones were kept: sent again, they are duplicates.
    let again = app
        .post(EVENTS, &writer("org-a"), &[JSON], batch.to_string())
        .await;
    assert_eq!(again.body["duplicate"], 2);
    // And nothing reached org-b.
    app.rollup().await;
    let b = app.get("/express/usage/month", &token("org-b")).await;
    assert_eq!(b.body["total"], 0);
}

#[actix_web::test]
async fn events_dated_outside_the_window_are_out_of_range() {
    let app = app_with_accounts().await;
    let mut old = good("old", "a1", "1");
    old["occurred_at"] = json!("1970-01-01T00:00:00Z");
    let mut ahead = good("ahead", "a1", "1");
    ahead["occurred_at"] = json!((chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339());
    let mut recent = good("recent", "a1", "1");
    recent["occurred_at"] = json!((chrono::Utc::now() - chrono::Duration::days(3000)).to_rfc3339());
    let reply = app
        .post(
            EVENTS,
            &writer("org-a"),
            &[JSON],
            json!([old, ahead, recent]).to_string(),
        )
        .await;
    let got = statuses(&reply);
    assert_eq!(got[0], (0, "rejected".into(), Some("out_of_range".into())));
    assert_eq!(got[1], (1, "rejected".into(), Some("out_of_range".into())));
    assert_eq!(got[2], (2, "accepted".into(), None));
    assert!(reply.body["results"][0]["description"]
        .as_str()
        .unwrap()
        .contains("3650 days"));
    // No partition was made for 1970 (one request used to create hundreds).
    let partitions = app
        .count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'usage_events'::regclass")
        .await;
    assert_eq!(partitions, 1);
}

#[actix_web::test]
async fn sending_needs_the_write_scope() {
    let app = app_with_accounts().await;
    let reply = app.post(EVENTS, &token("org-a"), &[JSON], "[]").await;
    assert_eq!((reply.status, reply.code()), (403, "insufficient_scope"));
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"usage-api\", error=\"insufficient_scope\", scope=\"express-accounts-usage:write\"")
    );
    // …and the write scope alone cannot read.
    let read = app.get("/express/usage/month", &writer("org-a")).await;
    assert_eq!(read.status, 403);
}

#[actix_web::test]
async fn bodies_out_of_bounds_are_refused_precisely() {
    let app = app_with_accounts().await;
    let w = writer("org-a");
    let huge = vec![b' '; 10 * 1024 * 1024 + 1];
    let reply = app.post(EVENTS, &w, &[JSON], huge).await;
    assert_eq!((reply.status, reply.code()), (413, "payload_too_large"));
    let many: Vec<Value> = (0..10_001)
        .map(|n| json!({"event_id": format!("e{n}")}))
        .collect();
    let reply = app
        .post(EVENTS, &w, &[JSON], serde_json::to_string(&many).unwrap())
        .await;
    assert_eq!((reply.status, reply.code()), (413, "payload_too_large"));
    assert!(reply.body["description"]
        .as_str()
        .unwrap()
        .contains("10000"));
    let reply = app
        .post(EVENTS, &w, &[JSON], "{\"not\": \"an array\"}")
        .await;
    assert_eq!((reply.status, reply.code()), (400, "invalid_body"));
    let reply = app
        .post(EVENTS, &w, &[("Content-Type", "text/csv")], "a,b")
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (415, "unsupported_media_type")
    );
    let reply = app
        .post(EVENTS, &w, &[JSON, ("Idempotency-Key", "")], "[]")
        .await;
    assert_eq!((reply.status, reply.code()), (400, "invalid_parameter"));
    // GET lists the raw events (read scope); other methods are refused.
    let get = app.get(EVENTS, &w).await;
    assert_eq!((get.status, get.code()), (403, "insufficient_scope"));
    let delete = app
        .client
        .delete(format!("{}{EVENTS}", app.address))
        .bearer_auth(&w)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 405);
    assert_eq!(delete.headers()["allow"], "GET, POST");
}

#[actix_web::test]
async fn an_idempotency_key_replays_the_first_answer() {
    let app = app_with_accounts().await;
    let w = writer("org-a");
    let batch = json!([good("k1", "a1", "1"), good("k2", "a1", "2")]).to_string();
    let key = ("Idempotency-Key", "batch-2023-08-01-0001");
    let first = app.post(EVENTS, &w, &[JSON, key], batch.clone()).await;
    assert_eq!(first.body["accepted"], 2);
    assert_eq!(first.header("idempotent-replayed"), None);
    let replay = app.post(EVENTS, &w, &[JSON, key], batch.clone()).await;
    assert_eq!(
        replay.text, first.text,
        "the stored answer, not 'duplicate' twice"
    );
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    let other = json!([good("k3", "a1", "1")]).to_string();
    let reused = app.post(EVENTS, &w, &[JSON, key], other).await;
    assert_eq!(
        (reused.status, reused.code()),
        (422, "idempotency_key_reused")
    );
    // Keys belong to an organization: another one may use the same key.
    let b = app
        .post(
            EVENTS,
            &writer("org-b"),
            &[JSON, key],
            json!([good("kb", "b1", "1")]).to_string(),
        )
        .await;
    assert_eq!(b.body["accepted"], 1);
}

#[actix_web::test]
async fn concurrent_requests_with_one_key_are_processed_once() {
    let app = app_with_accounts().await;
    let w = writer("org-a");
    let batch = json!([good("c1", "a1", "1")]).to_string();
    let key = ("Idempotency-Key", "concurrent-1");
    let headers = [JSON, key];
    let (a, b, c) = tokio::join!(
        app.post(EVENTS, &w, &headers, batch.clone()),
        app.post(EVENTS, &w, &headers, batch.clone()),
        app.post(EVENTS, &w, &headers, batch.clone()),
    );
    assert!(
        a.text == b.text && b.text == c.text,
        "{}\n{}\n{}",
        a.text,
        b.text,
        c.text
    );
    assert_eq!(a.body["accepted"], 1);
    let replayed = [&a, &b, &c]
        .iter()
        .filter(|r| r.header("idempotent-replayed").is_some())
        .count();
    assert_eq!(replayed, 2);
}

#[actix_web::test]
async fn sent_events_show_up_in_the_monthly_api_within_a_second() {
    let app = TestApp::spawn_with(Options {
        rollup_interval: Some(Duration::from_secs(30)),
        ..Options::default()
    })
    .await;
    app.accounts(&[("a1", "org-a")]).await;
    // The worker's interval is long: only the wake-up after the commit can make this fast.
    app.wait_until_ready().await;
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    let reply = app
        .post(
            EVENTS,
            &writer("org-a"),
            &[JSON],
            json!([good("w1", "a1", "3")]).to_string(),
        )
        .await;
    assert_eq!(reply.body["accepted"], 1);
    // The promise is about the time after the batch committed (the answer is sent after the
    // commit), not about how long the batch itself took on a machine busy with other tests.
    let started = std::time::Instant::now();
    loop {
        let page = app.get("/express/usage/month", &token("org-a")).await;
        if page.body["total"] == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "not visible after {:?}",
            started.elapsed()
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}
