//! The ownership rule: a filter that names any account outside the caller's organization —
//! foreign or non-existent, alone, mixed, nested, negated or in a list — is a 403
//! `forbidden_accounts` naming exactly the offending ids; and rows of other organizations never
//! appear.

use crate::support::data::event;
use crate::support::encode;
use crate::support::tokens::token;
use crate::support::TestApp;

async fn app_with_two_organizations() -> TestApp {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a"), ("a2", "org-a"), ("b1", "org-b")])
        .await;
    app.insert(&[event("e1", "a1"), event("e2", "a2"), event("e3", "b1")])
        .await;
    app.rollup().await;
    app
}

fn offending(reply: &crate::support::Reply) -> Vec<String> {
    assert_eq!(
        (reply.status, reply.code()),
        (403, "forbidden_accounts"),
        "{}",
        reply.body
    );
    reply.body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["name"], "account_id");
            f["description"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[actix_web::test]
async fn accounts_outside_the_organization_are_refused_wherever_they_are_named() {
    let app = app_with_two_organizations().await;
    let token = token("org-a");
    let cases: [(&str, &[&str]); 8] = [
        ("account_id eq 'b1'", &["b1"]),
        ("account_id eq 'does-not-exist'", &["does-not-exist"]),
        ("account_id eq 'a1' or account_id eq 'b1'", &["b1"]),
        (
            "month eq '2023-08' and (type eq 'CALL' or not (account_id eq 'b1'))",
            &["b1"],
        ),
        ("account_id in ('a1', 'b1', 'zz')", &["b1", "zz"]),
        ("account_id ne 'b1'", &["b1"]),
        ("not account_id gt 'b1'", &["b1"]),
        ("ACCOUNT_ID IN ('a2') AND account_id eq 'b1'", &["b1"]),
    ];
    for (filter, expected) in cases {
        let reply = app
            .get(
                &format!("/express/usage/month?filter={}", encode(filter)),
                &token,
            )
            .await;
        assert_eq!(offending(&reply), expected.to_vec(), "{filter}");
    }
}

#[actix_web::test]
async fn a_foreign_account_and_a_missing_one_look_the_same() {
    let app = app_with_two_organizations().await;
    let token = token("org-a");
    let foreign = app
        .get(
            &format!(
                "/express/usage/month?filter={}",
                encode("account_id eq 'b1'")
            ),
            &token,
        )
        .await;
    let missing = app
        .get(
            &format!(
                "/express/usage/month?filter={}",
                encode("account_id eq 'b2'")
            ),
            &token,
        )
        .await;
    let strip = |mut body: serde_json::Value| {
        body["fields"][0]["description"] = serde_json::Value::Null;
        body
    };
    assert_eq!(strip(foreign.body), strip(missing.body));
}

#[actix_web::test]
async fn own_accounts_pass_and_other_organizations_rows_never_show() {
    let app = app_with_two_organizations().await;
    let reply = app
        .get(
            &format!(
                "/express/usage/month?filter={}",
                encode("account_id in ('a1', 'a2')")
            ),
            &token("org-a"),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["total"], 2);
    let all = app.get("/express/usage/month", &token("org-a")).await;
    let accounts: Vec<&str> = all.body["_embedded"]["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["account_id"].as_str().unwrap())
        .collect();
    assert_eq!(accounts.len(), 2);
    assert!(!accounts.contains(&"b1"));
    let b = app.get("/express/usage/month", &token("org-b")).await;
    assert_eq!(b.body["total"], 1);
    assert_eq!(b.body["_embedded"]["usage"][0]["account_id"], "b1");
    // org-a's accounts are foreign to org-b.
    let reply = app
        .get(
            &format!(
                "/express/usage/month?filter={}",
                encode("account_id eq 'a1'")
            ),
            &token("org-b"),
        )
        .await;
    assert_eq!(offending(&reply), vec!["a1"]);
}

#[actix_web::test]
async fn an_account_that_moves_takes_its_aggregates_along_at_once() {
    let app = app_with_two_organizations().await;
    let before = app.get("/express/usage/month", &token("org-a")).await;
    let moved_record = before.body["_embedded"]["usage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["account_id"] == "a1")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    app.accounts(&[("a1", "org-b")]).await; // no rollup in between
    let a = app.get("/express/usage/month", &token("org-a")).await;
    assert_eq!(a.body["total"], 1);
    assert_ne!(a.body["_embedded"]["usage"][0]["account_id"], "a1");
    let shown = app
        .get(
            &format!("/express/usage/month/{moved_record}"),
            &token("org-a"),
        )
        .await;
    assert_eq!(shown.status, 404);
    let b = app
        .get(
            &format!("/express/usage/month/{moved_record}"),
            &token("org-b"),
        )
        .await;
    assert_eq!(b.status, 200);
    assert_eq!(
        app.get("/express/usage/month", &token("org-b")).await.body["total"],
        2
    );
    let stats = app.rollup().await;
    assert_eq!(stats.changed, 0, "the rollup agrees with the move");
}
