//! `usage-api accounts import`, `ingest` and `rollup`, run as the real binary against the test
//! schema: good lines kept, bad lines named with their line numbers, the same file twice changes
//! nothing.

use std::process::{Command, Output};

use crate::support::tokens::token;
use crate::support::TestApp;

fn usage_api(app: &TestApp, args: &[&str], stdin: Option<&str>) -> Output {
    app.run(args, stdin)
}

fn out(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    )
}

const ACCOUNTS_CSV: &str =
    "id,organization_id,name\na1,org-a,Support\na2,org-a,Sales\n,org-a,no id\nb1,org-b,Other\n";

fn line(event_id: &str, account: &str, quantity: &str) -> String {
    format!(
        r#"{{"event_id":"{event_id}","account_id":"{account}","product_id":"P-1","aggr_product_id":"AP-1","type":"CALL","unit":"MINUTES","direction":"INBOUND","resolution":null,"description":"Call","wallet_name":"main","occurred_at":"2023-08-01T10:00:00Z","quantity":{quantity},"unit_price":"0.5","currency":"USD"}}"#
    )
}

fn mixed_ndjson() -> String {
    [
        line("e1", "a1", "10"),                                       // 1 good
        "{not json".to_owned(),                                       // 2 bad JSON
        line("e2", "nobody", "1"),                                    // 3 unknown account
        String::new(),                                                // 4 blank: skipped
        line("e3", "a1", "-1"),                                       // 5 negative
        line("e4", "a2", "2.25"),                                     // 6 good
        line("e1", "a1", "10"),                                       // 7 duplicate in the file
        line("e5", "a1", "1").replace("\"USD\"", "\"US\""),           // 8 bad currency
        line("e6", "b1", "4"),                                        // 9 good (org-b)
        line("e7", "a1", "1").replace("\"Call\"", "\"Ca\\u0000ll\""), // 10 NUL
    ]
    .join("\n")
}

#[actix_web::test]
async fn a_mixed_file_keeps_the_good_lines_names_the_bad_ones_and_is_idempotent() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts.csv");
    std::fs::write(&accounts, ACCOUNTS_CSV).unwrap();
    let imported = usage_api(
        &app,
        &["accounts", "import", accounts.to_str().unwrap()],
        None,
    );
    assert!(imported.status.success(), "{:?}", out(&imported));
    assert_eq!(
        out(&imported),
        (
            "accounts: 3, rejected: 1".to_owned(),
            "line 4: id is missing".to_owned()
        )
    );

    let events = dir.path().join("events.ndjson");
    std::fs::write(&events, mixed_ndjson()).unwrap();
    let first = usage_api(&app, &["ingest", events.to_str().unwrap()], None);
    assert!(first.status.success(), "{:?}", out(&first));
    let (stdout, stderr) = out(&first);
    assert_eq!(stdout, "accepted: 3, duplicate: 1, rejected: 5");
    let rejects: Vec<&str> = stderr.lines().collect();
    assert_eq!(rejects.len(), 5, "{stderr}");
    assert!(
        rejects.contains(&"line 10: description contains a NUL character"),
        "{stderr}"
    );
    assert!(rejects[0].starts_with("line 2: invalid JSON"), "{stderr}");
    assert!(
        rejects.contains(&"line 5: quantity must not be negative"),
        "{stderr}"
    );
    assert!(
        rejects.contains(&"line 8: currency 'US' is not an ISO 4217 code"),
        "{stderr}"
    );
    assert!(
        rejects
            .contains(&"line 3: unknown_account: 'nobody' is not an account of this organization"),
        "{stderr}"
    );

    let rolled = usage_api(&app, &["rollup"], None);
    assert!(rolled.status.success(), "{:?}", out(&rolled));
    assert_eq!(out(&rolled).0, "aggregates: 3, changed: 3, removed: 0");
    let before = app.get("/express/usage/month", &token("org-a")).await;
    assert_eq!(before.body["total"], 2);

    // The same file again: nothing new, the same rejects, the same totals.
    let rejects_file = dir.path().join("rejects.txt");
    let second = usage_api(
        &app,
        &[
            "ingest",
            events.to_str().unwrap(),
            "--rejects",
            rejects_file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(
        out(&second),
        (
            "accepted: 0, duplicate: 4, rejected: 5".to_owned(),
            String::new()
        )
    );
    assert_eq!(
        std::fs::read_to_string(&rejects_file)
            .unwrap()
            .lines()
            .count(),
        5
    );
    let rolled = usage_api(&app, &["rollup", "--full"], None);
    assert_eq!(out(&rolled).0, "aggregates: 3, changed: 0, removed: 0");
    let after = app.get("/express/usage/month", &token("org-a")).await;
    assert_eq!(after.body["_embedded"], before.body["_embedded"]);
    after.assert_text_contains(r#""number_of_units":10,"total_amount":5,"#);
    after.assert_text_contains(r#""number_of_units":2.25,"total_amount":1.125,"#);
}

#[actix_web::test]
async fn csv_and_standard_input_load_the_same_way() {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a")]).await;
    let csv = "event_id,account_id,product_id,aggr_product_id,type,unit,direction,resolution,description,wallet_name,occurred_at,quantity,unit_price,currency\n\
               c1,a1,P-1,AP-1,MESSAGE,SEGMENTS,OUTBOUND,,\"SMS, international\",digital,2023-08-01T10:00:00Z,3,0.0079,EUR\n\
               c2,a1,P-1,AP-1,SMS,SEGMENTS,OUTBOUND,,SMS,digital,2023-08-01T10:00:00Z,3,0.0079,EUR\n\
               c3,a1,P-1,AP-1,MESSAGE,SEGMENTS,OUTBOUND\n\
               c4,a1,P-1,AP-1,MESSAGE,SEGMENTS,OUTBOUND,,\"SMS, international\",digital,2023-08-20T10:00:00Z,1_000,0.0079,EUR\n";
    let loaded = usage_api(&app, &["ingest", "-", "--format", "csv"], Some(csv));
    assert!(loaded.status.success(), "{:?}", out(&loaded));
    let (stdout, stderr) = out(&loaded);
    assert_eq!(stdout, "accepted: 1, duplicate: 0, rejected: 3");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        vec![
            "line 3: type 'SMS' is not one of AMD, API_REQUEST, CALL, CALL_SERVICE, CREDIT_COMMIT, DIALER, MESSAGE, NUMBER, PRODUCT_SERVICE, RECHARGE, SPEECH_TRANSCRIPTION, VOICEMAIL_TRANSCRIPTION, OTHER",
            "line 4: has 7 fields; the header has 14",
            "line 5: quantity '1_000' is not a decimal number",
        ]
    );
    let ndjson = line("n1", "a1", "\"7\"");
    let loaded = usage_api(&app, &["ingest", "-"], Some(&ndjson));
    assert_eq!(out(&loaded).0, "accepted: 1, duplicate: 0, rejected: 0");
    assert!(usage_api(&app, &["rollup"], None).status.success());
    let reply = app
        .get("/express/usage/month?order_by=currency", &token("org-a"))
        .await;
    assert_eq!(reply.body["total"], 2);
    assert_eq!(
        reply.body["_embedded"]["usage"][0]["description"],
        "SMS, international"
    );
    reply.assert_text_contains(r#""number_of_units":3,"total_amount":0.0237,"#);
}

#[actix_web::test]
async fn a_file_whose_format_cannot_be_told_is_refused_before_loading() {
    let app = TestApp::spawn().await;
    let output = usage_api(&app, &["ingest", "events.txt"], None);
    assert!(!output.status.success());
    assert!(out(&output).1.contains("--format"), "{:?}", out(&output));
}

#[actix_web::test]
async fn development_tokens_need_the_development_secret() {
    let app = TestApp::spawn().await;
    let refused = usage_api(&app, &["token", "--org", "org-a"], None);
    assert!(!refused.status.success());
    assert!(
        out(&refused).1.contains("OAUTH_DEV_SECRET"),
        "{:?}",
        out(&refused)
    );

    let secret = "a-development-secret-of-32-chars-or-more";
    let minted = Command::new(env!("CARGO_BIN_EXE_usage-api"))
        .args(["token", "--org", "org-a"])
        .env("OAUTH_DEV_SECRET", secret)
        .output()
        .unwrap();
    assert!(minted.status.success(), "{:?}", minted);
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let verify = |dev_secret: Option<&str>| {
        let config = usage_api::config::AuthConfig {
            jwks_url: None,
            issuer: None,
            audience: None,
            algorithms: vec![jsonwebtoken::Algorithm::RS256],
            org_claim: "org_id".into(),
            leeway: std::time::Duration::from_secs(30),
            jwks_refreshes_per_minute: 10,
            jwks_max_age: std::time::Duration::from_secs(600),
            dev_secret: dev_secret.map(str::to_owned),
        };
        usage_api::auth::Verifier::new(config)
    };
    let principal = verify(Some(secret)).unwrap().verify(&token).await.unwrap();
    assert_eq!(principal.organization_id, "org-a");
    assert_eq!(principal.scopes, vec!["express-accounts-usage:read"]);
    let other = verify(Some("another-secret-that-is-long-enough-too")).unwrap();
    assert_eq!(
        other.verify(&token).await.unwrap_err(),
        usage_api::auth::verifier::Refusal::Invalid("the token's signature is invalid".into())
    );
    assert!(verify(None).is_err(), "no key at all: refuse to start");
}

#[actix_web::test]
async fn the_demo_loads_every_usage_type_once_and_prints_a_working_token() {
    let app = TestApp::spawn().await;
    let secret = "demo-secret-demo-secret-demo-secret-42";
    let demo = |app: &TestApp| {
        Command::new(env!("CARGO_BIN_EXE_usage-api"))
            .args(["demo", "--no-serve", "--bind", "127.0.0.1:18081"])
            .env("DATABASE_URL", &app.db.url)
            .env("OAUTH_DEV_SECRET", secret)
            .output()
            .unwrap()
    };
    let first = demo(&app);
    assert!(first.status.success(), "{:?}", out(&first));
    let (stdout, _) = out(&first);
    assert!(stdout.contains("0 already loaded"), "{stdout}");
    assert!(stdout.contains("curl -s -H \"Authorization: Bearer $TOKEN\" 'http://127.0.0.1:18081/express/usage/month"), "{stdout}");
    let token = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("export TOKEN="))
        .expect("a token line")
        .to_owned();

    // The demo organization's rows: every usage type, a year of months, five accounts.
    let rows = app
        .get(
            "/express/usage/month?per_page=250",
            &crate::support::tokens::token("demo-org"),
        )
        .await;
    let total = rows.body["total"].as_i64().unwrap();
    assert!(total > 500, "{total}");
    let mut types = std::collections::BTreeSet::new();
    let mut months = std::collections::BTreeSet::new();
    let mut page = 1;
    loop {
        let reply = app
            .get(
                &format!("/express/usage/month?per_page=250&page={page}"),
                &crate::support::tokens::token("demo-org"),
            )
            .await;
        for r in reply.body["_embedded"]["usage"].as_array().unwrap() {
            types.insert(r["type"].as_str().unwrap().to_owned());
            months.insert(r["month"].as_str().unwrap().to_owned());
        }
        if reply.body["_links"].get("next").is_none() {
            break;
        }
        page += 1;
    }
    assert_eq!(types.len(), 13, "{types:?}");
    assert_eq!(months.len(), 12, "{months:?}");

    // The printed usage-records example answers, with the demo's calls month by month.
    let records = stdout
        .lines()
        .filter_map(|l| l.split("'http://127.0.0.1:18081").nth(1))
        .find(|rest| rest.contains("/Usage/Records/Monthly.json"))
        .and_then(|rest| rest.split('\'').next())
        .expect("a usage-records example");
    let reply = app
        .get(records, &crate::support::tokens::token("demo-org"))
        .await;
    assert_eq!(reply.status, 200, "{records}: {}", reply.body);
    let listed = reply.body["usage_records"].as_array().unwrap();
    assert!(listed.len() >= 12, "{records}: {}", reply.body);
    assert!(listed.iter().all(|r| r["category"] == "calls"));
    assert!(listed.iter().any(|r| r["count"] != "0"));

    // The printed token is accepted by a server that knows the development secret.
    let config = usage_api::config::AuthArgs {
        jwks_url: None,
        issuer: None,
        audience: None,
        algorithms: "RS256".into(),
        org_claim: "org_id".into(),
        leeway_secs: 30,
        jwks_refreshes_per_minute: 10,
        dev_secret: Some(secret.into()),
    }
    .config()
    .unwrap();
    let principal = usage_api::auth::Verifier::new(config)
        .unwrap()
        .verify(&token)
        .await
        .unwrap();
    assert_eq!(principal.organization_id, "demo-org");

    // Running it again adds nothing.
    let second = demo(&app);
    let (stdout, _) = out(&second);
    assert!(stdout.contains("(0 new events"), "{stdout}");
    let again = app
        .get(
            "/express/usage/month?per_page=250",
            &crate::support::tokens::token("demo-org"),
        )
        .await;
    assert_eq!(again.body["total"], total);
}
