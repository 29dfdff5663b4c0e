//! The OAuth2 resource server with real keys and a real JWKS over loopback: what passes, what
//! does not (and with which challenge), key rotation, and that unknown key ids cannot hammer the
//! issuer.

use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::support::tokens::{b64, claims, key_file, sign, token, READ};
use crate::support::{Options, Reply, TestApp};

const LIST: &str = "/express/usage/month";

async fn with_authorization(app: &TestApp, value: &str) -> Reply {
    app.get_with(LIST, &[("Authorization", value)]).await
}

fn assert_invalid_token(reply: &Reply, reason: &str) {
    assert_eq!(
        (reply.status, reply.code()),
        (401, "invalid_token"),
        "{reason}: {}",
        reply.body
    );
    let challenge = reply.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"usage-api\", error=\"invalid_token\""),
        "{reason}: {challenge}"
    );
    let description = reply.body["description"].as_str().unwrap();
    assert!(description.contains(reason), "{description} !~ {reason}");
}

#[actix_web::test]
async fn a_request_without_a_bearer_token_gets_a_plain_challenge() {
    let app = TestApp::spawn().await;
    for reply in [
        app.get_with(LIST, &[]).await,
        with_authorization(&app, "Basic dXNlcjpwYXNz").await,
        with_authorization(&app, "Bearer").await,
        // A token in the query string is never accepted.
        app.get_with(&format!("{LIST}?access_token={}", token("org-a")), &[])
            .await,
    ] {
        assert_eq!(
            (reply.status, reply.code()),
            (401, "unauthorized"),
            "{}",
            reply.body
        );
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"usage-api\"")
        );
    }
}

#[actix_web::test]
async fn valid_tokens_of_every_allowed_algorithm_pass() {
    let app = TestApp::spawn().await;
    for kid in ["rsa-1", "ec-1", "ed-1"] {
        let reply = app.get(LIST, &sign(kid, &claims("org-a"))).await;
        assert_eq!(reply.status, 200, "{kid}: {}", reply.body);
    }
    // The scheme name is case-insensitive; `scp` works as well as `scope`.
    let reply = with_authorization(&app, &format!("bearer {}", token("org-a"))).await;
    assert_eq!(reply.status, 200);
    let mut scp = claims("org-a");
    scp.as_object_mut().unwrap().remove("scope");
    scp["scp"] = json!(["openid", READ]);
    assert_eq!(app.get(LIST, &sign("rsa-1", &scp)).await.status, 200);
    // No nbf at all is fine: it is checked when present.
    let mut no_nbf = claims("org-a");
    no_nbf.as_object_mut().unwrap().remove("nbf");
    assert_eq!(app.get(LIST, &sign("rsa-1", &no_nbf)).await.status, 200);
}

#[actix_web::test]
async fn invalid_tokens_are_refused_with_a_reason() {
    let app = TestApp::spawn().await;
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims("org-a");
        change(&mut c);
        sign("rsa-1", &c)
    };
    let now = crate::support::tokens::now();
    let cases: Vec<(String, &str)> = vec![
        ("garbage".into(), "malformed"),
        ("a.b.c".into(), "malformed"),
        (with(&|c| c["exp"] = json!(now - 120)), "expired"),
        (with(&|c| c["nbf"] = json!(now + 600)), "not valid yet"),
        (
            with(&|c| c["iss"] = json!("https://evil.example/")),
            "issuer",
        ),
        (with(&|c| c["aud"] = json!("someone-else")), "audience"),
        (with(&|c| c["aud"] = json!(["a", "b"])), "audience"),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "'exp'",
        ),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
            "'iss'",
        ),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            "'aud'",
        ),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("org_id");
            }),
            "'org_id'",
        ),
        (with(&|c| c["org_id"] = json!("")), "'org_id'"),
        (with(&|c| c["org_id"] = json!(42)), "'org_id'"),
        (with(&|c| c["exp"] = json!("tomorrow")), "'exp'"),
    ];
    for (token, reason) in cases {
        assert_invalid_token(&app.get(LIST, &token).await, reason);
    }
}

#[actix_web::test]
async fn forged_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let payload = b64(claims("org-a").to_string().as_bytes());

    // alg: none, with and without a signature.
    let none = b64(br#"{"alg":"none","typ":"JWT","kid":"rsa-1"}"#);
    assert_invalid_token(
        &app.get(LIST, &format!("{none}.{payload}.")).await,
        "malformed",
    );

    // HS256 "signed" with the RSA public key: the classic confusion attack.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let confused = encode(
        &header,
        &claims("org-a"),
        &EncodingKey::from_secret(&key_file("rsa-1.pub.pem")),
    )
    .unwrap();
    assert_invalid_token(&app.get(LIST, &confused).await, "HS256 is not accepted");

    // A key id the issuer never published.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("nobody".into());
    let (_, key) = crate::support::tokens::private_key("rsa-1");
    let unknown = encode(&header, &claims("org-a"), &key).unwrap();
    assert_invalid_token(&app.get(LIST, &unknown).await, "signing key is unknown");

    // The right kid, signed by the wrong key.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let (_, other) = crate::support::tokens::private_key("rsa-2");
    let wrong_key = encode(&header, &claims("org-a"), &other).unwrap();
    assert_invalid_token(&app.get(LIST, &wrong_key).await, "signature is invalid");

    // An RSA algorithm naming the EC key.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("ec-1".into());
    let mismatched = encode(&header, &claims("org-a"), &key).unwrap();
    assert_invalid_token(&app.get(LIST, &mismatched).await, "does not match its key");

    // A payload changed after signing (another organization).
    let good = token("org-a");
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims("org-b").to_string().as_bytes()),
        parts[2]
    );
    assert_invalid_token(&app.get(LIST, &tampered).await, "signature is invalid");

    // Two Authorization headers, and one too large to read.
    let reply = app
        .get_with(
            LIST,
            &[
                ("Authorization", &format!("Bearer {good}")),
                ("Authorization", &format!("Bearer {good}")),
            ],
        )
        .await;
    assert_invalid_token(&reply, "more than one");
    let huge = format!("Bearer {}", "a".repeat(10_000));
    assert_invalid_token(&with_authorization(&app, &huge).await, "too large");
}

#[actix_web::test]
async fn a_token_without_the_read_scope_is_forbidden_with_a_challenge() {
    let app = TestApp::spawn().await;
    let mut c = claims("org-a");
    c["scope"] = json!("express-accounts-usage:write openid");
    let reply = app.get(LIST, &sign("rsa-1", &c)).await;
    assert_eq!((reply.status, reply.code()), (403, "insufficient_scope"));
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"usage-api\", error=\"insufficient_scope\", scope=\"express-accounts-usage:read\"")
    );
    let show = app
        .get(
            &format!("{LIST}/0123456789abcdef0123456789abcdef"),
            &sign("rsa-1", &c),
        )
        .await;
    assert_eq!(show.status, 403);
}

#[actix_web::test]
async fn rotated_keys_are_picked_up_and_retired_keys_stop_working() {
    let app = TestApp::spawn_with(Options {
        jwks_min_refresh: Duration::ZERO,
        kids: vec!["rsa-1"],
        ..Options::default()
    })
    .await;
    assert_eq!(app.jwks.hits(), 0, "fetched lazily");
    assert_eq!(app.get(LIST, &token("org-a")).await.status, 200);
    assert_eq!(app.jwks.hits(), 1);
    assert_eq!(app.get(LIST, &token("org-a")).await.status, 200);
    assert_eq!(app.jwks.hits(), 1, "cached");

    app.jwks.publish(&["rsa-2"]);
    let rotated = sign("rsa-2", &claims("org-a"));
    assert_eq!(
        app.get(LIST, &rotated).await.status,
        200,
        "the new kid triggers a refresh"
    );
    assert_eq!(app.jwks.hits(), 2);
    assert_invalid_token(
        &app.get(LIST, &token("org-a")).await,
        "signing key is unknown",
    );
}

#[actix_web::test]
async fn unknown_key_ids_do_not_hammer_the_jwks() {
    let app = TestApp::spawn().await; // at most one refresh a minute
    assert_eq!(app.get(LIST, &token("org-a")).await.status, 200);
    assert_eq!(app.jwks.hits(), 1);
    let (_, key) = crate::support::tokens::private_key("rsa-1");
    for n in 0..25 {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(format!("made-up-{n}"));
        let forged = encode(&header, &claims("org-a"), &key).unwrap();
        assert_eq!(app.get(LIST, &forged).await.status, 401);
    }
    assert_eq!(app.jwks.hits(), 1, "no refresh within the minimum interval");
    assert_eq!(app.get(LIST, &token("org-a")).await.status, 200);
}

#[actix_web::test]
async fn an_unreachable_or_broken_jwks_refuses_tokens_without_leaking_details() {
    let app = TestApp::spawn().await;
    app.jwks.publish_raw(json!({"keys": "not a list"}));
    let reply = app.get(LIST, &token("org-a")).await;
    assert_invalid_token(&reply, "signing key is unknown");
    assert!(!reply.text.contains("127.0.0.1") && !reply.text.contains("jwks"));
}
