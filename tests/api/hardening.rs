//! Failing closed and leaking nothing: a misconfigured `serve` refuses to start, TLS to Postgres
//! is real, caches survive a restored database, and small leaks stay shut.

use std::process::Command;

use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use serde_json::json;

use crate::support::tokens::{token, writer};
use crate::support::TestApp;

const LIST: &str = "/express/usage/month";

/// `usage-api serve` with `env`; it must exit at once, with a message naming `needle`.
fn refuses_to_start(env: &[(&str, &str)], needle: &str) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_usage-api"));
    command
        .args(["serve", "--no-migrate"])
        .env("USAGE_API_BIND", "127.0.0.1:0")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env_remove("OAUTH_JWKS_URL")
        .env_remove("OAUTH_ISSUER")
        .env_remove("OAUTH_AUDIENCE")
        .env_remove("OAUTH_DEV_SECRET");
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().unwrap();
    assert!(!out.status.success(), "{env:?} started");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(needle), "{env:?}: {stderr}");
}

#[test]
fn serve_refuses_to_start_unless_it_fails_closed() {
    let jwks = ("OAUTH_JWKS_URL", "http://127.0.0.1:9/jwks.json");
    let issuer = ("OAUTH_ISSUER", "https://issuer.example/");
    let audience = ("OAUTH_AUDIENCE", "usage-api");
    let secret = (
        "OAUTH_DEV_SECRET",
        "a-development-secret-of-32-chars-or-more",
    );
    refuses_to_start(&[jwks], "OAUTH_ISSUER and OAUTH_AUDIENCE must be set");
    refuses_to_start(
        &[jwks, issuer],
        "OAUTH_ISSUER and OAUTH_AUDIENCE must be set",
    );
    refuses_to_start(
        &[jwks, audience],
        "OAUTH_ISSUER and OAUTH_AUDIENCE must be set",
    );
    refuses_to_start(
        &[jwks, issuer, audience, secret],
        "OAUTH_DEV_SECRET must not be set beside OAUTH_JWKS_URL",
    );
}

/// Whether the connection `url` reaches the server through runs over TLS.
async fn over_tls(url: &str) -> Result<bool, String> {
    #[derive(diesel::QueryableByName)]
    struct Ssl {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ssl: bool,
    }
    let mut conn = usage_api::db::connect::establish(url)
        .await
        .map_err(|err| err.to_string())?;
    let row: Ssl = diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(&mut conn)
        .await
        .map_err(|err| err.to_string())?;
    Ok(row.ssl)
}

#[actix_web::test]
async fn tls_to_postgres_is_real_and_verify_full_checks_the_ca() {
    let app = TestApp::spawn().await;
    let base = &app.db.url;
    // This machine's cluster runs with ssl = on (a self-signed certificate).
    assert_eq!(over_tls(&format!("{base}&sslmode=require")).await, Ok(true));
    assert_eq!(
        over_tls(&format!("{base}&sslmode=disable")).await,
        Ok(false)
    );
    assert_eq!(
        over_tls(base).await,
        Ok(true),
        "prefer, as libpq: TLS when offered"
    );

    // The self-signed certificate is not signed by any CA we trust: verify-full refuses it,
    // against the public roots and against another CA alike.
    for root in ["system", "/etc/ssl/certs/ISRG_Root_X1.pem"] {
        if root.starts_with('/') && !std::path::Path::new(root).exists() {
            continue;
        }
        let refused = over_tls(&format!("{base}&sslmode=verify-full&sslrootcert={root}")).await;
        assert!(refused.is_err(), "{root}: {refused:?}");
    }
    let missing = over_tls(&format!(
        "{base}&sslmode=verify-ca&sslrootcert=/nonexistent.pem"
    ))
    .await;
    assert!(missing.unwrap_err().contains("/nonexistent.pem"));

    // The server's pool, the migrations and the bulk loader all go through it.
    let url = format!("{base}&sslmode=require");
    usage_api::db::migrate::run(&url).await.unwrap();
    let client = usage_api::db::connect::client(&url).await.unwrap();
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    let pool = usage_api::db::pool::build(&url, &Default::default()).unwrap();
    let mut conn = pool.get().await.unwrap();
    conn.batch_execute("SELECT 1").await.unwrap();
}

#[actix_web::test]
async fn cached_totals_and_tags_do_not_survive_a_restored_database() {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a")]).await;
    let events: Vec<serde_json::Value> = ["P-1", "P-2", "P-3"]
        .iter()
        .enumerate()
        .map(|(n, product)| {
            json!({"event_id": format!("e{n}"), "account_id": "a1", "product_id": product,
                   "aggr_product_id": "AP", "type": "CALL", "unit": "MINUTES",
                   "occurred_at": "2023-08-10T10:00:00Z", "quantity": "1", "unit_price": "1",
                   "currency": "USD"})
        })
        .collect();
    app.post(
        "/express/usage/events",
        &writer("org-a"),
        &[("Content-Type", "application/json")],
        serde_json::Value::Array(events).to_string(),
    )
    .await;
    app.rollup().await;
    let before = app.get(LIST, &token("org-a")).await;
    assert_eq!(before.body["total"], 3);
    let tag = before.header("etag").unwrap().to_owned();

    // A point-in-time restore (or a failover to a lagging standby): other content under a
    // data_version the server has already seen, on another timeline.
    let version = app
        .count("SELECT data_version FROM organizations WHERE id = 'org-a'")
        .await;
    app.conn()
        .await
        .batch_execute(&format!(
            "BEGIN;
             DELETE FROM usage_monthly WHERE product_id = 'P-3';
             UPDATE organizations SET data_version = {version} WHERE id = 'org-a';
             CREATE OR REPLACE FUNCTION usage_api_epoch() RETURNS text LANGUAGE sql
                 AS $$ SELECT 'restored/00000002' $$;
             COMMIT;"
        ))
        .await
        .unwrap();
    // The server's connections broke with the old database; new ones reach the restored one.
    app.conn()
        .await
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = '{}' AND pid <> pg_backend_pid()",
            app.db.schema()
        ))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let after = loop {
        let reply = app.get(LIST, &token("org-a")).await;
        if reply.status == 200 {
            break reply;
        }
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    };
    assert_eq!(
        after.body["total"], 2,
        "not the total cached for the old database"
    );
    assert_ne!(after.header("etag").unwrap(), tag);
    let revalidated = app
        .get_with(
            LIST,
            &[
                ("Authorization", &format!("Bearer {}", token("org-a"))),
                ("If-None-Match", &tag),
            ],
        )
        .await;
    assert_eq!(revalidated.status, 200, "the old tag does not match");
}

#[actix_web::test]
async fn if_none_match_any_on_a_missing_or_foreign_record_is_a_404() {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a"), ("b1", "org-b")]).await;
    let event = json!([{"event_id": "e1", "account_id": "a1", "product_id": "P",
        "aggr_product_id": "AP", "type": "CALL", "unit": "MINUTES",
        "occurred_at": "2023-08-10T10:00:00Z", "quantity": "1", "unit_price": "1",
        "currency": "USD"}]);
    app.post(
        "/express/usage/events",
        &writer("org-a"),
        &[("Content-Type", "application/json")],
        event.to_string(),
    )
    .await;
    app.rollup().await;
    let page = app.get(LIST, &token("org-a")).await;
    let id = page.ids()[0].clone();
    let app = &app;
    let any = |org: &str, id: &str| {
        let authorization = format!("Bearer {}", token(org));
        let path = format!("{LIST}/{id}");
        async move {
            app.get_with(
                &path,
                &[("Authorization", &authorization), ("If-None-Match", "*")],
            )
            .await
        }
    };
    assert_eq!(any("org-a", &id).await.status, 304, "it exists");
    assert_eq!(
        any("org-b", &id).await.status,
        404,
        "another organization's"
    );
    let missing = "0123456789abcdef0123456789abcdef";
    assert_eq!(any("org-a", missing).await.status, 404, "missing");
}

#[actix_web::test]
async fn a_request_id_off_the_documented_pattern_is_replaced() {
    let app = TestApp::spawn().await;
    let echoed = |value: &'static str| {
        let app = &app;
        async move {
            app.get_with("/health/live", &[("X-Request-Id", value)])
                .await
                .header("x-request-id")
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(echoed("req-1:a_b.c").await, "req-1:a_b.c");
    for bad in ["has space", "semi;colon", "quote\"d", "é"] {
        let got = echoed(bad).await;
        assert_ne!(got, bad);
        assert_eq!(got.len(), 32, "a new id: {got}");
    }
    let long: &'static str = Box::leak("x".repeat(129).into_boxed_str());
    assert_eq!(echoed(long).await.len(), 32);
    let two = app
        .get_with(
            "/health/live",
            &[("X-Request-Id", "first"), ("X-Request-Id", "second")],
        )
        .await;
    let got = two.header("x-request-id").unwrap();
    assert!(got != "first" && got != "second", "{got}");
}

#[actix_web::test]
async fn errors_are_never_stored_or_sniffed() {
    let app = TestApp::spawn().await;
    // `send` checks Cache-Control: no-store and X-Content-Type-Options: nosniff on every error;
    // here one of each family, to be explicit.
    for reply in [
        app.get_with(LIST, &[]).await,
        app.get(&format!("{LIST}?page=0"), &token("org-a")).await,
        app.get("/nowhere", &token("org-a")).await,
    ] {
        assert!(reply.status >= 400);
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    }
}
