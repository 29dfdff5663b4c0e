//! Tenant isolation of the write path: event ids, voids and `Idempotency-Key`s are per
//! organization; an account's move takes its ids along (or is refused); races answer cleanly.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::tokens::{token, writer};
use crate::support::TestApp;

const EVENTS: &str = "/express/usage/events";
const JSON: (&str, &str) = ("Content-Type", "application/json");

fn call(event_id: &str, account: &str, quantity: &str) -> Value {
    json!({
        "event_id": event_id, "account_id": account, "product_id": "P", "aggr_product_id": "AP",
        "type": "CALL", "unit": "MINUTES", "occurred_at": "2023-08-10T10:00:00Z",
        "quantity": quantity, "unit_price": "2", "currency": "USD"
    })
}

fn void(event_id: &str, voids: &str) -> Value {
    json!({"event_id": event_id, "voids": voids})
}

async fn send(app: &TestApp, org: &str, batch: Value) -> Vec<(String, Option<String>)> {
    app.send_events(org, batch).await
}

fn accepted() -> (String, Option<String>) {
    ("accepted".into(), None)
}

async fn two_organizations() -> TestApp {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a"), ("b1", "org-b")]).await;
    app
}

/// The monthly total amount an organization sees (as the body's digits).
async fn total_amount(app: &TestApp, org: &str) -> Vec<String> {
    app.rollup().await;
    let page = app.get("/express/usage/month", &token(org)).await;
    page.body["_embedded"]["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["total_amount"].to_string())
        .collect()
}

#[actix_web::test]
async fn two_organizations_may_use_the_same_event_and_void_ids() {
    let app = two_organizations().await;
    // org-b goes first with ids org-a will use too: org-a must not see them at all.
    assert_eq!(
        send(
            &app,
            "org-b",
            json!([call("call-1", "b1", "7"), call("call-2", "b1", "1")])
        )
        .await,
        vec![accepted(), accepted()]
    );
    assert_eq!(
        send(&app, "org-b", json!([void("void-1", "call-2")])).await,
        vec![accepted()]
    );

    assert_eq!(
        send(
            &app,
            "org-a",
            json!([call("call-1", "a1", "5"), call("call-2", "a1", "3")])
        )
        .await,
        vec![accepted(), accepted()],
        "another organization's ids never collide"
    );
    assert_eq!(
        send(&app, "org-a", json!([void("void-1", "call-2")])).await,
        vec![accepted()],
        "nor do its void ids, nor its voided ids"
    );
    // Repeats are duplicates within each organization.
    assert_eq!(
        send(&app, "org-a", json!([call("call-1", "a1", "5")])).await[0].0,
        "duplicate"
    );
    assert_eq!(
        send(&app, "org-b", json!([void("void-1", "call-2")])).await[0].0,
        "duplicate"
    );

    // Both are counted, each without its voided call-2: a 5 × 2 and a 7 × 2.
    assert_eq!(total_amount(&app, "org-a").await, vec!["10"]);
    assert_eq!(total_amount(&app, "org-b").await, vec!["14"]);
    // And a rebuild agrees.
    app.rollup_full().await;
    assert_eq!(total_amount(&app, "org-a").await, vec!["10"]);
    assert_eq!(total_amount(&app, "org-b").await, vec!["14"]);
}

#[actix_web::test]
async fn a_void_cannot_reach_another_organizations_event() {
    let app = two_organizations().await;
    send(&app, "org-b", json!([call("x1", "b1", "1")])).await;
    let results = send(
        &app,
        "org-a",
        json!([void("v1", "x1"), {"event_id": "v2", "voids": "x1", "account_id": "b1"}]),
    )
    .await;
    assert_eq!(
        results[0],
        ("rejected".into(), Some("unknown event 'x1'".into()))
    );
    assert_eq!(
        results[1],
        ("rejected".into(), Some("unknown_account".into()))
    );
    assert_eq!(
        total_amount(&app, "org-b").await,
        vec!["2"],
        "still counted"
    );
}

#[actix_web::test]
async fn a_void_in_a_file_names_the_account_of_the_event_it_voids() {
    let app = two_organizations().await;
    send(&app, "org-a", json!([call("c1", "a1", "5")])).await;
    send(&app, "org-b", json!([call("c1", "b1", "7")])).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("voids.ndjson");
    std::fs::write(
        &file,
        [
            r#"{"event_id": "v1", "voids": "c1", "account_id": "b1"}"#,
            r#"{"event_id": "v2", "voids": "c1"}"#,
            r#"{"event_id": "v3", "voids": "c1", "account_id": "nobody"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let out = app.run(&["ingest", file.to_str().unwrap()], None);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("accepted: 1, duplicate: 0, rejected: 2"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2: account_id is missing"), "{stderr}");
    assert!(
        stderr.contains("line 3: unknown_account: 'nobody'"),
        "{stderr}"
    );
    // org-b's c1 is voided, org-a's is not.
    assert_eq!(total_amount(&app, "org-a").await, vec!["10"]);
    assert_eq!(total_amount(&app, "org-b").await, Vec::<String>::new());
}

#[actix_web::test]
async fn a_moving_account_takes_its_ids_along_or_the_move_is_refused() {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a"), ("a2", "org-a"), ("b1", "org-b")])
        .await;
    send(
        &app,
        "org-a",
        json!([call("e1", "a1", "1"), call("e2", "a2", "1")]),
    )
    .await;
    send(&app, "org-a", json!([void("v1", "e1")])).await;
    send(&app, "org-b", json!([call("e2", "b1", "3")])).await;
    app.rollup().await;

    let import = |pairs: &str| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("accounts.csv");
        std::fs::write(&file, format!("id,organization_id,name\n{pairs}")).unwrap();
        app.run(&["accounts", "import", file.to_str().unwrap()], None)
    };
    // a2's e2 is an id org-b already has: the whole file is refused, nothing moves.
    let refused = import("a1,org-b,\na2,org-b,\n");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("account 'a2' cannot move to organization 'org-b'")
            && stderr.contains("'e2'"),
        "{stderr}"
    );
    let owner = "SELECT count(*) FROM accounts WHERE organization_id = 'org-a'";
    assert_eq!(app.count(owner).await, 2, "nothing moved");

    // a1 (its event e1 and the void v1 of it) moves alone: its ids go with it.
    let moved = import("a1,org-b,\n");
    assert!(moved.status.success(), "{moved:?}");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM usage_event_ids WHERE organization_id = 'org-b' \
             AND event_id IN ('e1', 'v1')"
        )
        .await,
        2
    );
    assert_eq!(
        app.count("SELECT count(*) FROM usage_events WHERE organization_id = 'org-b'")
            .await,
        2
    );
    // In org-b, e1 is now known (a duplicate) and still voided; org-a may use e1 anew.
    assert_eq!(
        send(&app, "org-b", json!([call("e1", "a1", "1")])).await[0].0,
        "duplicate"
    );
    assert_eq!(
        send(&app, "org-a", json!([call("e1", "a2", "4")])).await[0],
        accepted()
    );
    assert_eq!(
        total_amount(&app, "org-b").await,
        vec!["6"],
        "only b1's e2: 3 × 2"
    );
}

#[actix_web::test]
async fn concurrent_voids_and_events_with_one_id_never_fail() {
    let app = two_organizations().await;
    send(&app, "org-a", json!([call("target", "a1", "1")])).await;
    for round in 0..10 {
        // The same id, as a void in some requests and as an event in others, at once.
        let id = format!("race-{round}");
        let as_void = json!([void(&id, "target")]).to_string();
        let as_event = json!([call(&id, "a1", "1")]).to_string();
        let w = writer("org-a");
        let (a, b, c, d) = tokio::join!(
            app.post(EVENTS, &w, &[JSON], as_void.clone()),
            app.post(EVENTS, &w, &[JSON], as_event.clone()),
            app.post(EVENTS, &w, &[JSON], as_void.clone()),
            app.post(EVENTS, &w, &[JSON], as_event.clone()),
        );
        let replies = [a, b, c, d];
        for reply in &replies {
            assert_eq!(reply.status, 200, "round {round}: {}", reply.body);
        }
        let accepted = replies.iter().filter(|r| r.body["accepted"] == 1).count();
        assert_eq!(accepted, 1, "round {round}: the id is taken exactly once");
    }
}

#[actix_web::test]
async fn an_expired_idempotency_key_is_free_again_and_deleted() {
    let app = two_organizations().await;
    let w = writer("org-a");
    let key = ("Idempotency-Key", "k-1");
    let first = app
        .post(
            EVENTS,
            &w,
            &[JSON, key],
            json!([call("i1", "a1", "1")]).to_string(),
        )
        .await;
    assert_eq!(first.body["accepted"], 1);
    // A day and a bit later (the stored answer is backdated)…
    app.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .await;
    // …the key serves another request instead of answering 422.
    let second = app
        .post(
            EVENTS,
            &w,
            &[JSON, key],
            json!([call("i2", "a1", "1")]).to_string(),
        )
        .await;
    assert_eq!(
        (second.status, second.body["accepted"].as_u64()),
        (200, Some(1))
    );
    assert_eq!(second.header("idempotent-replayed"), None);

    app.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .await;
    let cutoff = chrono::Utc::now() - chrono::Duration::hours(24);
    let deleted =
        usage_api::usage::write::idempotency::delete_expired_keys(&mut app.conn().await, cutoff)
            .await
            .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(app.count("SELECT count(*) FROM idempotency_keys").await, 0);
}

/// An accounts import and a rollup at work take their organizations' locks in one order (all
/// at once, in id order, as `rollup::lock_organizations` does). Before, each chunk of 1,000
/// accounts locked its own organizations as it was written: an import whose first chunk held
/// org-c while it waited for org-b deadlocked with a rollup holding org-b and waiting for org-c.
#[actix_web::test]
async fn an_accounts_import_and_a_rollup_at_work_never_deadlock() {
    use diesel_async::RunQueryDsl;

    let app = TestApp::spawn().await;
    let mut rows = String::from("id,organization_id,name\n");
    for n in 0..1000 {
        rows.push_str(&format!("c{n:04},org-c,\n"));
    }
    rows.push_str("b1,org-b,\n");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("accounts.csv");
    std::fs::write(&file, &rows).unwrap();
    let first = app.run(&["accounts", "import", file.to_str().unwrap()], None);
    assert!(first.status.success(), "{first:?}");
    // A rollup at work on org-b holds its lock…
    let mut rollup = app.conn().await;
    for sql in [
        "BEGIN",
        "SET LOCAL lock_timeout = '5s'",
        "SELECT id FROM organizations WHERE id = 'org-b' FOR UPDATE",
    ] {
        diesel::sql_query(sql).execute(&mut rollup).await.unwrap();
    }
    // …when the same file is imported again (every account is updated), and waits.
    let url = app.db.url.clone();
    let import = std::thread::spawn(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_usage-api"))
            .args(["accounts", "import", file.to_str().unwrap()])
            .env("DATABASE_URL", url)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    });
    let waits = "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = current_setting('application_name') \
                   AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()";
    let started = std::time::Instant::now();
    while app.count(waits).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the import never waited"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    // The rollup goes on to its next organization: the import holds none while it waits.
    diesel::sql_query("SELECT id FROM organizations WHERE id = 'org-c' FOR UPDATE")
        .execute(&mut rollup)
        .await
        .expect("the rollup waited for the import");
    diesel::sql_query("COMMIT")
        .execute(&mut rollup)
        .await
        .unwrap();
    let second = import.join().unwrap();
    assert!(second.status.success(), "{second:?}");
    assert_eq!(
        app.count("SELECT count(*) FROM accounts WHERE organization_id = 'org-c'")
            .await,
        1000
    );
}
