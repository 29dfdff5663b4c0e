//! The OAuth2 resource server with real keys and a real JWKS over loopback: what passes, what
//! does not (and with which challenge), key rotation, and that unknown key ids cannot hammer the
//! issuer.

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
        kids: vec!["rsa-1"],
        ..Options::default()
    })
    .await;
    app.wait_until_ready().await;
    assert_eq!(app.jwks.hits(), 1, "fetched at startup");
    assert_eq!(app.get(LIST, &token("org-a")).await.status, 200);
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

/// A token signed with the fixture key `rsa-1` but naming the key id `kid`.
fn naming_kid(kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let (_, key) = crate::support::tokens::private_key("rsa-1");
    encode(&header, &claims("org-a"), &key).unwrap()
}

#[actix_web::test]
async fn unknown_key_ids_do_not_hammer_the_jwks() {
    let app = TestApp::spawn().await; // a bucket of 10 fetches, refilled at 10 a minute
    app.wait_until_ready().await;
    assert_eq!(app.get(LIST, &token("org-a")).await.status, 200);
    let before = app.jwks.hits();
    for n in 0..40 {
        let reply = app.get(LIST, &naming_kid(&format!("made-up-{n}"))).await;
        assert_invalid_token(&reply, "signing key is unknown");
    }
    let fetched = app.jwks.hits() - before;
    assert!(
        (1..=10).contains(&fetched),
        "40 unknown kids made {fetched} fetches"
    );
    assert_eq!(app.get(LIST, &token("org-a")).await.status, 200);
}

#[actix_web::test]
async fn a_key_rotated_in_right_after_probes_is_picked_up_within_seconds() {
    let app = TestApp::spawn_with(Options {
        kids: vec!["rsa-1"],
        ..Options::default()
    })
    .await;
    app.wait_until_ready().await;
    // Someone probes with garbage key ids until the bucket is empty…
    for n in 0..15 {
        app.get(LIST, &naming_kid(&format!("probe-{n}"))).await;
    }
    // …and then the issuer rotates a key in: its tokens pass within seconds (the bucket
    // refills one fetch every 6 s), never a minute later.
    app.jwks.publish(&["rsa-1", "rsa-2"]);
    let rotated = sign("rsa-2", &claims("org-a"));
    let started = std::time::Instant::now();
    loop {
        let reply = app.get(LIST, &rotated).await;
        if reply.status == 200 {
            break;
        }
        assert_invalid_token(&reply, "signing key is unknown");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(8),
            "the rotated key was not picked up"
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[actix_web::test]
async fn an_unreachable_or_broken_jwks_is_an_outage_not_a_bad_token() {
    let app = TestApp::spawn().await;
    app.jwks.publish_raw(json!({"keys": "not a list"}));
    let reply = app.get(LIST, &token("org-a")).await;
    assert_eq!((reply.status, reply.code()), (503, "service_unavailable"));
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry));
    assert_eq!(
        reply.header("www-authenticate"),
        None,
        "not a token problem"
    );
    assert!(!reply.text.contains("127.0.0.1") && !reply.text.contains("jwks"));
    let ready = app.get_with("/health/ready", &[]).await;
    assert_eq!(
        (ready.status, ready.body["keys"].as_str()),
        (503, Some("not_loaded"))
    );

    // The issuer comes back: the same token passes, without a restart.
    app.jwks.publish(&["rsa-1", "ec-1", "ed-1"]);
    let started = std::time::Instant::now();
    while app.get(LIST, &token("org-a")).await.status != 200 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "never recovered"
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(app.get_with("/health/ready", &[]).await.status, 200);
}

#[actix_web::test]
async fn an_issuer_that_goes_down_does_not_stop_known_keys_but_unknown_ones_are_a_503() {
    let app = TestApp::spawn().await;
    app.wait_until_ready().await;
    app.jwks.stop().await;
    // A key we hold still verifies…
    assert_eq!(app.get(LIST, &token("org-a")).await.status, 200);
    // …a key we do not hold cannot be checked: 503, not 401.
    let reply = app.get(LIST, &sign("rsa-2", &claims("org-a"))).await;
    assert_eq!(
        (reply.status, reply.code()),
        (503, "service_unavailable"),
        "{}",
        reply.body
    );
    assert!(reply.header("retry-after").is_some());
}

#[actix_web::test]
async fn id_tokens_and_unstorable_organizations_are_refused() {
    let app = TestApp::spawn().await;
    let typed = |typ: &str| {
        let (alg, key) = crate::support::tokens::private_key("rsa-1");
        let mut header = Header::new(alg);
        header.kid = Some("rsa-1".into());
        header.typ = Some(typ.into());
        encode(&header, &claims("org-a"), &key).unwrap()
    };
    for typ in ["JWT", "at+jwt", "application/at+JWT"] {
        let reply = app.get(LIST, &typed(typ)).await;
        assert_eq!(reply.status, 200, "typ {typ}: {}", reply.body);
    }
    for typ in ["id_token+jwt", "logout+jwt", "secevent+jwt", "JOSE"] {
        assert_invalid_token(&app.get(LIST, &typed(typ)).await, "not an access token");
    }
    for org in [
        json!("org\u{0}a"),
        json!("x".repeat(129)),
        json!("a\nb"),
        json!(""),
    ] {
        let mut c = claims("org-a");
        c["org_id"] = org.clone();
        let reply = app.get(LIST, &sign("rsa-1", &c)).await;
        assert_invalid_token(&reply, "org_id");
    }
    let mut c = claims("org-a");
    c["org_id"] = json!("x".repeat(128));
    assert_eq!(
        app.get(LIST, &sign("rsa-1", &c)).await.status,
        200,
        "128 is the limit"
    );
    // The same claims through the write path.
    let mut c = claims("org-a");
    c["org_id"] = json!("org\u{0}a");
    c["scope"] = json!(crate::support::tokens::WRITE);
    let reply = app
        .post("/express/usage/events", &sign("rsa-1", &c), &[], "[]")
        .await;
    assert_eq!(reply.status, 401);
}
