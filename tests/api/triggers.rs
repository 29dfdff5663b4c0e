//! Usage triggers (DESIGN §2d): the resource in Twilio's wire format (also through the official
//! `twilio` SDK), firing once per period from the aggregates, and deliveries verified by the
//! `standardwebhooks` library in a real receiver on loopback: retries with the same id, GET and
//! POST, parent categories, no firing across accounts or organizations, durable across a server
//! restart, and callbacks to forbidden addresses refused.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Datelike, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use usage_api::usage::triggers::deliver::Settings;
use usage_api::usage::write::event::NewEvent;

use crate::support::data::{dec, event};
use crate::support::tokens::{token, triggers as triggers_token, AUDIENCE, ISSUER};
use crate::support::{sdk_script, twilio_python, Options, TestApp};

const TRIGGERS: &str = "/2010-04-01/Accounts/org-a/Usage/Triggers.json";

/// A webhook receiver (tests/twilio/receiver.py) that verifies each request with the
/// `standardwebhooks` library and logs it.
struct Receiver {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Receiver {
    fn start() -> Receiver {
        Self::start_in(tempfile::tempdir().unwrap(), 0)
    }

    fn start_in(dir: tempfile::TempDir, port: u16) -> Receiver {
        let mut child = Command::new(twilio_python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/twilio/receiver.py"
            ))
            .arg(dir.path())
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python receiver");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the receiver's port");
        Receiver { child, dir, port }
    }

    /// Stops the receiver, keeping its directory (secrets, plan, log) for the next one.
    fn stop(mut self) -> (tempfile::TempDir, u16) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn update(&self, name: &str, path: &str, value: Value) {
        let mut all: Value = std::fs::read(self.file(name))
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or_else(|_| json!({}));
        all[path] = value;
        let temporary = self.file(&format!("{name}.new"));
        std::fs::write(&temporary, all.to_string()).unwrap();
        std::fs::rename(temporary, self.file(name)).unwrap();
    }

    fn secret(&self, path: &str, secret: &str) {
        self.update("secrets.json", path, json!(secret));
    }

    fn plan(&self, path: &str, statuses: &[u16]) {
        self.plan_values(path, json!(statuses));
    }

    /// How to answer the path's first requests: statuses, or "slow" (200 after 3 s).
    fn plan_values(&self, path: &str, answers: Value) {
        self.update("plan.json", path, answers);
    }

    fn log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.file("log.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The log once it holds `n` requests for `path` (at most 30 s).
    async fn wait_for(&self, path: &str, n: usize) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let seen: Vec<Value> = self
                .log()
                .into_iter()
                .filter(|l| l["path"] == path)
                .collect();
            if seen.len() >= n {
                return seen;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{path}: {} of {n} requests: {:?}",
                seen.len(),
                self.log()
            );
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Quick retries, so that a test sees several attempts in a second.
fn quick() -> Settings {
    Settings {
        concurrency: 4,
        timeout: Duration::from_secs(2),
        backoff: Duration::from_millis(100),
        retry_window: Duration::from_secs(60),
        poll: Duration::from_millis(50),
    }
}

/// The callback hosts the tests allow (`USAGE_API_WEBHOOK_ALLOW_HOSTS`).
const ALLOW: &str = "127.0.0.1,localhost";

async fn spawn(deliveries: Option<Settings>) -> TestApp {
    let app = TestApp::spawn_with(Options {
        webhook_allow_hosts: ALLOW.split(',').map(str::to_owned).collect(),
        deliveries,
        ..Options::default()
    })
    .await;
    app.accounts(&[("a1", "org-a"), ("a2", "org-a"), ("b1", "org-b")])
        .await;
    app
}

/// Creates a trigger as `org`, expecting 201; returns its body.
async fn create(app: &TestApp, org: &str, path: &str, pairs: &[(&str, &str)]) -> Value {
    let reply = app
        .form(Method::POST, path, &triggers_token(org), pairs)
        .await;
    assert_eq!(reply.status, 201, "{pairs:?}: {}", reply.text);
    reply.body
}

/// Events of today (UTC) for `account`: `n` inbound calls of `quantity` minutes at 0.5 USD.
fn today(prefix: &str, account: &str, n: usize, quantity: &str) -> Vec<NewEvent> {
    let midnight = Utc::now()
        .date_naive()
        .and_time(chrono::NaiveTime::MIN)
        .and_utc();
    (0..n)
        .map(|i| {
            let mut e = event(&format!("{prefix}-{i}"), account);
            e.occurred_at = (Utc::now() - chrono::Duration::seconds(5)).max(midnight);
            e.quantity = dec(quantity);
            e.unit_price = dec("0.5");
            e
        })
        .collect()
}

#[actix_web::test]
async fn triggers_are_created_listed_fetched_updated_and_deleted() {
    let app = spawn(None).await;
    let org_a = triggers_token("org-a");
    let created = create(
        &app,
        "org-a",
        TRIGGERS,
        &[
            ("CallbackUrl", "http://127.0.0.1:9/hook?x=1"),
            ("TriggerValue", "100.50"),
            ("UsageCategory", "calls"),
            ("Recurring", "monthly"),
            ("TriggerBy", "price"),
            ("FriendlyName", "Calls over budget"),
        ],
    )
    .await;
    let sid = created["sid"].as_str().unwrap().to_owned();
    assert!(created["webhook_secret"]
        .as_str()
        .unwrap()
        .starts_with("whsec_"));
    assert_eq!(created["account_sid"], "org-a");
    assert_eq!(created["api_version"], "2010-04-01");
    assert_eq!(created["callback_method"], "POST");
    assert_eq!(created["trigger_value"], "100.5");
    assert_eq!(created["current_value"], "0");
    assert_eq!(created["price_unit"], "usd");
    assert_eq!(created["date_fired"], Value::Null);
    assert_eq!(
        created["uri"],
        format!("/2010-04-01/Accounts/org-a/Usage/Triggers/{sid}.json")
    );
    assert_eq!(
        created["usage_record_uri"],
        "/2010-04-01/Accounts/org-a/Usage/Records/ThisMonth.json?Category=calls"
    );
    let one = format!("/2010-04-01/Accounts/org-a/Usage/Triggers/{sid}.json");

    // Fetch shows everything but the secret; so does the list.
    let fetched = app.form(Method::GET, &one, &org_a, &[]).await;
    assert_eq!(fetched.status, 200);
    assert!(fetched.body.get("webhook_secret").is_none());
    assert_eq!(fetched.body["friendly_name"], "Calls over budget");
    // An account-scoped trigger with an offset: the current value plus N.
    app.insert(&today("t", "a1", 3, "2")).await;
    app.rollup().await;
    let offset = create(
        &app,
        "org-a",
        "/2012-04-24/Accounts/a1/Usage/Triggers.json",
        &[
            ("CallbackUrl", "http://127.0.0.1:9/a1"),
            ("TriggerValue", "+10"),
            ("UsageCategory", "calls"),
            ("Recurring", "daily"),
        ],
    )
    .await;
    assert_eq!(offset["current_value"], "6");
    assert_eq!(offset["trigger_value"], "16");
    assert_eq!(offset["api_version"], "2012-04-24");
    let listed = app.form(Method::GET, TRIGGERS, &org_a, &[]).await;
    assert_eq!(listed.status, 200);
    let sids: Vec<&str> = listed.body["usage_triggers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["sid"].as_str().unwrap())
        .collect();
    assert_eq!(
        sids,
        [sid.as_str()],
        "the list is the AccountSid's triggers"
    );
    assert_eq!(listed.body["next_page_uri"], Value::Null);
    let filtered = app
        .form(
            Method::GET,
            &format!("{TRIGGERS}?Recurring=daily"),
            &org_a,
            &[],
        )
        .await;
    assert_eq!(filtered.body["usage_triggers"], json!([]));
    let bad = app
        .form(
            Method::GET,
            &format!("{TRIGGERS}?TriggerBy=weight&PageSize=0"),
            &org_a,
            &[],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.field_names(), ["TriggerBy", "PageSize"]);
    assert_eq!(bad.body["status"], 400);

    // Update: the callback, its method and the name only.
    let updated = app
        .form(
            Method::POST,
            &one,
            &org_a,
            &[
                ("CallbackUrl", "http://127.0.0.1:9/new"),
                ("CallbackMethod", "GET"),
                ("TriggerValue", "1"),
            ],
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["callback_url"], "http://127.0.0.1:9/new");
    assert_eq!(updated.body["callback_method"], "GET");
    assert_eq!(updated.body["trigger_value"], "100.5");
    assert_eq!(updated.body["friendly_name"], "Calls over budget");

    // Another organization's trigger, or another scope's, is not there.
    let org_b = triggers_token("org-b");
    let foreign = format!("/2010-04-01/Accounts/org-b/Usage/Triggers/{sid}.json");
    assert_eq!(
        app.form(Method::GET, &foreign, &org_b, &[]).await.status,
        404
    );
    assert_eq!(
        app.form(Method::DELETE, &foreign, &org_b, &[]).await.status,
        404
    );
    let elsewhere = format!("/2010-04-01/Accounts/a1/Usage/Triggers/{sid}.json");
    assert_eq!(
        app.form(Method::GET, &elsewhere, &org_a, &[]).await.status,
        404
    );
    // Another organization's AccountSid, as a scope, is forbidden whether it exists or not.
    for sid in ["org-b", "b1", "nobody"] {
        let path = format!("/2010-04-01/Accounts/{sid}/Usage/Triggers.json");
        let listed = app.form(Method::GET, &path, &org_a, &[]).await;
        assert_eq!(listed.status, 403, "{sid}");
        assert_eq!(listed.code(), "forbidden_accounts");
        let created = app
            .form(
                Method::POST,
                &path,
                &org_a,
                &[
                    ("CallbackUrl", "http://127.0.0.1:9/x"),
                    ("TriggerValue", "1"),
                    ("UsageCategory", "sms"),
                ],
            )
            .await;
        assert_eq!(created.status, 403, "{sid}");
    }
    // The triggers scope is needed; the read scope is not enough.
    let read_only = app.form(Method::GET, TRIGGERS, &token("org-a"), &[]).await;
    assert_eq!(read_only.status, 403);
    assert_eq!(read_only.code(), "insufficient_scope");
    assert_eq!(
        app.form(
            Method::GET,
            &format!("/express/usage/triggers/{sid}/deliveries"),
            &token("org-a"),
            &[]
        )
        .await
        .status,
        403
    );
    assert_eq!(
        app.form(
            Method::GET,
            &format!("/express/usage/triggers/{sid}/deliveries"),
            &org_b,
            &[]
        )
        .await
        .status,
        404
    );

    // Delete: 204, then gone.
    let deleted = app.form(Method::DELETE, &one, &org_a, &[]).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(app.form(Method::GET, &one, &org_a, &[]).await.status, 404);
    assert_eq!(
        app.form(Method::DELETE, &one, &org_a, &[]).await.status,
        404
    );
}

#[actix_web::test]
async fn every_bad_field_of_a_create_is_named_at_once() {
    let app = spawn(None).await;
    let org_a = triggers_token("org-a");
    let reply = app
        .form(Method::POST, TRIGGERS, &org_a, &[("FriendlyName", "x")])
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.field_names(),
        ["CallbackUrl", "TriggerValue", "UsageCategory"]
    );
    let long = "n".repeat(65);
    let reply = app
        .form(
            Method::POST,
            TRIGGERS,
            &org_a,
            &[
                ("CallbackUrl", "http://127.0.0.1:9/x"),
                ("TriggerValue", "-1"),
                ("UsageCategory", "teleportation"),
                ("CallbackMethod", "PUT"),
                ("Recurring", "hourly"),
                ("TriggerBy", "weight"),
                ("PriceUnit", "dollars"),
                ("FriendlyName", &long),
            ],
        )
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.field_names(),
        [
            "TriggerValue",
            "UsageCategory",
            "CallbackMethod",
            "Recurring",
            "TriggerBy",
            "PriceUnit",
            "FriendlyName"
        ]
    );
    // A parameter given twice is refused, not guessed at.
    let twice = app
        .form(
            Method::POST,
            TRIGGERS,
            &org_a,
            &[
                ("CallbackUrl", "http://127.0.0.1:9/a"),
                ("CallbackUrl", "http://127.0.0.1:9/b"),
                ("TriggerValue", "1"),
                ("UsageCategory", "calls"),
            ],
        )
        .await;
    assert_eq!(twice.status, 400);
    assert_eq!(twice.field_names(), ["CallbackUrl"]);
    // Larger than 16 KiB: the API's own 413 (a JSON error body).
    let large = app
        .form(
            Method::POST,
            TRIGGERS,
            &org_a,
            &[("FriendlyName", &"x".repeat(17 * 1024))],
        )
        .await;
    assert_eq!(large.status, 413);
    assert_eq!(large.code(), "payload_too_large");
    // Not a form: 415.
    let json_body = app
        .client
        .post(format!("{}{TRIGGERS}", app.address))
        .bearer_auth(&org_a)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), 415);
    // Methods the resource does not have.
    let put = app
        .client
        .put(format!("{}{TRIGGERS}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 405);
    assert_eq!(
        put.headers()["allow"],
        "GET, POST",
        "the collection has no DELETE"
    );
    let put_one = app
        .client
        .put(format!(
            "{}/2010-04-01/Accounts/org-a/Usage/Triggers/UT0123456789abcdef0123456789abcdef.json",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(put_one.status(), 405);
    assert_eq!(put_one.headers()["allow"], "GET, POST, DELETE");
    // Unknown parameters are ignored, however often they come (as Twilio does).
    let ignored = app
        .form(
            Method::POST,
            TRIGGERS,
            &org_a,
            &[
                ("CallbackUrl", "http://127.0.0.1:9/a"),
                ("TriggerValue", "1"),
                ("UsageCategory", "calls"),
                ("Unknown", "1"),
                ("Unknown", "2"),
            ],
        )
        .await;
    assert_eq!(ignored.status, 201, "{}", ignored.text);
    // A NUL cannot be stored: a 400 naming the field, on create and on update (not a 500).
    let nul = app
        .form(
            Method::POST,
            TRIGGERS,
            &org_a,
            &[
                ("CallbackUrl", "http://127.0.0.1:9/a"),
                ("TriggerValue", "1"),
                ("UsageCategory", "calls"),
                ("FriendlyName", "a\0b"),
            ],
        )
        .await;
    assert_eq!(nul.status, 400, "{}", nul.text);
    assert_eq!(nul.field_names(), ["FriendlyName"]);
    let one = format!(
        "/2010-04-01/Accounts/org-a/Usage/Triggers/{}.json",
        ignored.body["sid"].as_str().unwrap()
    );
    let nul = app
        .form(Method::POST, &one, &org_a, &[("FriendlyName", "\0")])
        .await;
    assert_eq!(nul.status, 400, "{}", nul.text);
    assert_eq!(nul.field_names(), ["FriendlyName"]);
}

#[actix_web::test]
async fn callbacks_to_addresses_that_are_not_public_are_refused() {
    // No host allowed: the strict rule of production.
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a")]).await;
    let org_a = triggers_token("org-a");
    for url in [
        "http://127.0.0.1:9/hook",
        "https://127.0.0.1/hook",
        "https://10.0.0.7/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[fd00:ec2::254]/hook",
        "https://localhost/hook",
        "https://2130706433/hook",
        "https://user:password@example.com/hook",
        "http://example.com/hook",
        "ftp://example.com/hook",
        "not a url",
    ] {
        let reply = app
            .form(
                Method::POST,
                TRIGGERS,
                &org_a,
                &[
                    ("CallbackUrl", url),
                    ("TriggerValue", "1"),
                    ("UsageCategory", "calls"),
                ],
            )
            .await;
        assert_eq!(reply.status, 400, "{url}: {}", reply.text);
        assert_eq!(reply.field_names(), ["CallbackUrl"], "{url}");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM usage_triggers").await,
        0,
        "nothing was stored"
    );
}

#[actix_web::test]
async fn the_limit_is_a_thousand_triggers_per_organization() {
    let app = spawn(None).await;
    app.execute(
        "INSERT INTO usage_triggers (organization_id, sid, account_sid, api_version, \
             callback_url, callback_method, trigger_by, price_unit, usage_category, \
             trigger_value, secret, date_created, date_updated) \
         SELECT 'org-a', 'UT' || md5(n::text), 'org-a', '2010-04-01', 'http://127.0.0.1:9/', \
             'POST', 'usage', 'usd', 'calls', 1000000, decode(repeat('ab', 32), 'hex'), \
             now(), now() \
         FROM generate_series(1, 999) n",
    )
    .await;
    let pairs = [
        ("CallbackUrl", "http://127.0.0.1:9/x"),
        ("TriggerValue", "1"),
        ("UsageCategory", "sms"),
    ];
    create(&app, "org-a", TRIGGERS, &pairs).await;
    let refused = app
        .form(Method::POST, TRIGGERS, &triggers_token("org-a"), &pairs)
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(refused.code(), "limit_reached");
    // Another organization is not affected.
    create(
        &app,
        "org-b",
        "/2010-04-01/Accounts/org-b/Usage/Triggers.json",
        &pairs,
    )
    .await;
}

#[actix_web::test]
async fn a_trigger_fires_once_per_period_and_every_delivery_verifies() {
    let app = spawn(Some(quick())).await;
    let receiver = Receiver::start();
    let today_utc = Utc::now().date_naive();
    // (name, scope, pairs): each watched path gets its own trigger.
    let watch = |path: &str, scope: &str, extra: &[(&'static str, &'static str)]| {
        let mut pairs: Vec<(String, String)> = vec![
            ("CallbackUrl".into(), receiver.url(path)),
            ("UsageCategory".into(), "calls".into()),
        ];
        pairs.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        (path.to_owned(), scope.to_owned(), pairs)
    };
    let plans = [
        // Organization-wide, daily, POST: Σ minutes of calls (its children included) ≥ 5.
        watch(
            "/org-daily",
            "org-a",
            &[("TriggerValue", "5"), ("Recurring", "daily")],
        ),
        // One account, monthly, GET: 3 calls.
        watch(
            "/a1-monthly",
            "a1",
            &[
                ("TriggerValue", "3"),
                ("Recurring", "monthly"),
                ("TriggerBy", "count"),
                ("CallbackMethod", "GET"),
            ],
        ),
        // Price in USD, today: 0.5 × 6.5 minutes = 3.25 USD ≥ 2.5.
        watch(
            "/org-price",
            "org-a",
            &[
                ("TriggerValue", "2.5"),
                ("TriggerBy", "price"),
                ("Recurring", "daily"),
            ],
        ),
        // Price in EUR: the USD usage never reaches it.
        watch(
            "/org-eur",
            "org-a",
            &[
                ("TriggerValue", "0.01"),
                ("TriggerBy", "price"),
                ("PriceUnit", "eur"),
            ],
        ),
        // Another account of the same organization, with 1 call: fires only if a1's 3 calls
        // were counted with it.
        watch(
            "/a2",
            "a2",
            &[
                ("TriggerValue", "3"),
                ("TriggerBy", "count"),
                ("Recurring", "daily"),
            ],
        ),
        // Another category: never fires.
        watch(
            "/sms",
            "org-a",
            &[("TriggerValue", "1"), ("TriggerBy", "count")],
        ),
        // Another organization, with 1 call today: fires only if org-a's were counted with it.
        watch(
            "/org-b",
            "org-b",
            &[
                ("TriggerValue", "3"),
                ("TriggerBy", "count"),
                ("Recurring", "daily"),
            ],
        ),
    ];
    let mut sids = std::collections::HashMap::new();
    for (path, scope, pairs) in &plans {
        let mut pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if path == "/sms" {
            pairs.retain(|(k, _)| *k != "UsageCategory");
            pairs.push(("UsageCategory", "sms"));
        }
        let org = if scope == "org-b" { "org-b" } else { "org-a" };
        let body = create(
            &app,
            org,
            &format!("/2010-04-01/Accounts/{scope}/Usage/Triggers.json"),
            &pairs,
        )
        .await;
        receiver.secret(path, body["webhook_secret"].as_str().unwrap());
        sids.insert(
            path.clone(),
            (scope.clone(), body["sid"].as_str().unwrap().to_owned()),
        );
    }

    // Below every threshold: nothing fires. Usage of other periods (last month for all, and
    // yesterday for a2: the same month unless today is the 1st) would cross every daily and
    // monthly threshold if a period's bounds were wrong.
    let mut before = Vec::new();
    for (n, (account, days_ago)) in [("a1", 0), ("a2", 0), ("a2", 1)].into_iter().enumerate() {
        let when = match days_ago {
            0 => {
                let first = today_utc.with_day(1).unwrap();
                first.pred_opt().unwrap().with_day(15).unwrap()
            }
            _ => today_utc.pred_opt().unwrap(),
        };
        if days_ago == 1 && when.month() != today_utc.month() {
            continue;
        }
        for e in 0..5 {
            let mut old = event(&format!("old-{n}-{e}"), account);
            old.occurred_at = when.and_hms_opt(12, 0, 0).unwrap().and_utc();
            old.quantity = dec("10");
            before.push(old);
        }
    }
    app.insert(&before).await;
    app.insert(&today("one", "a1", 2, "2")).await;
    app.insert(&today("other-account", "a2", 1, "0.5")).await;
    app.insert(&today("other-org", "b1", 1, "1")).await;
    assert_eq!(app.rollup().await.fired, 0);
    // a1 crosses 5 minutes, 3 calls and 2.5 USD (inbound calls: children of `calls`).
    app.insert(&today("two", "a1", 1, "2")).await;
    assert_eq!(app.rollup().await.fired, 3);
    // More usage in the same periods fires nothing again.
    app.insert(&today("three", "a1", 4, "3")).await;
    assert_eq!(app.rollup().await.fired, 0);

    for path in ["/org-daily", "/a1-monthly", "/org-price"] {
        let seen = receiver.wait_for(path, 1).await;
        let (scope, sid) = &sids[path];
        let request = &seen[0];
        assert_eq!(request["verified"], true, "{request}");
        assert_eq!(request["status"], 200);
        let fields = &request["fields"];
        let period = match path {
            "/org-daily" => today_utc,
            "/a1-monthly" => today_utc.with_day(1).unwrap(),
            _ => today_utc,
        };
        let id = format!("{scope}-FIRES-{sid}-{period}");
        assert_eq!(request["webhook_id"], id.as_str());
        assert_eq!(fields["IdempotencyToken"], id.as_str());
        assert_eq!(fields["AccountSid"], scope.as_str());
        assert_eq!(fields["UsageTriggerSid"], sid.as_str());
        assert_eq!(fields["UsageCategory"], "calls");
        chrono::DateTime::parse_from_rfc2822(fields["DateFired"].as_str().unwrap()).unwrap();
        match path {
            "/org-daily" => {
                assert_eq!(request["method"], "POST");
                assert_eq!(request["content_type"], "application/x-www-form-urlencoded");
                assert_eq!(fields["Recurring"], "daily");
                assert_eq!(fields["TriggerBy"], "usage");
                assert_eq!(fields["TriggerValue"], "5");
                assert_eq!(fields["CurrentValue"], "6.5");
                assert_eq!(
                    fields["UsageRecordUri"],
                    format!(
                        "/2010-04-01/Accounts/org-a/Usage/Records/Daily.json?Category=calls&StartDate={today_utc}&EndDate={today_utc}"
                    )
                );
            }
            "/a1-monthly" => {
                assert_eq!(request["method"], "GET");
                assert!(request["query"]
                    .as_str()
                    .unwrap()
                    .contains("IdempotencyToken="));
                assert_eq!(fields["Recurring"], "monthly");
                assert_eq!(fields["TriggerBy"], "count");
                assert_eq!(fields["CurrentValue"], "3");
            }
            _ => {
                assert_eq!(fields["Recurring"], "daily");
                assert_eq!(fields["TriggerBy"], "price");
                assert_eq!(fields["CurrentValue"], "3.25");
            }
        }
    }
    // Give stray deliveries time to arrive: none does, and nothing arrived twice.
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    let log = receiver.log();
    assert_eq!(log.len(), 3, "{log:?}");
    // The resource shows when it fired and what it watches now; the deliveries route its attempt.
    let org_a = triggers_token("org-a");
    let (_, sid) = &sids["/org-daily"];
    let fetched = app
        .form(
            Method::GET,
            &format!("/2010-04-01/Accounts/org-a/Usage/Triggers/{sid}.json"),
            &org_a,
            &[],
        )
        .await;
    assert_ne!(fetched.body["date_fired"], Value::Null);
    assert_eq!(fetched.body["current_value"], "18.5");
    let deliveries = wait_state(&app, "org-a", sid, "delivered").await;
    let attempts = deliveries["_embedded"]["deliveries"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["outcome"], "delivered");
    assert_eq!(attempts[0]["response_status"], 200);
    let delivered = log.iter().find(|l| l["path"] == "/org-daily").unwrap();
    assert_eq!(attempts[0]["webhook_id"], delivered["webhook_id"]);
    let (_, eur) = &sids["/org-eur"];
    let none = app
        .form(
            Method::GET,
            &format!("/express/usage/triggers/{eur}/deliveries"),
            &org_a,
            &[],
        )
        .await;
    assert_eq!(none.status, 200);
    assert_eq!(none.body["total"], 0);
    // Operators see firings and deliveries (counters of the whole test process).
    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "usage_api_trigger_firings_total ",
        "usage_api_webhook_attempts_total{outcome=\"delivered\"} ",
        "usage_api_webhook_deliveries_total{state=\"delivered\"} ",
        "usage_api_webhook_delivery_lag_seconds_bucket{le=\"5\"} ",
    ] {
        assert!(metrics.contains(needle), "{needle} in {metrics}");
    }
}

/// The deliveries page of `sid` once its newest attempt's delivery is in `state` (at most 30 s).
async fn wait_state(app: &TestApp, org: &str, sid: &str, state: &str) -> Value {
    let started = Instant::now();
    loop {
        let page = app
            .form(
                Method::GET,
                &format!("/express/usage/triggers/{sid}/deliveries?per_page=250"),
                &triggers_token(org),
                &[],
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        if page.body["_embedded"]["deliveries"][0]["delivery_state"] == state {
            return page.body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never {state}: {}",
            page.text
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn a_failed_delivery_is_retried_with_the_same_id_then_given_up() {
    let app = spawn(Some(Settings {
        retry_window: Duration::from_secs(3),
        ..quick()
    }))
    .await;
    let receiver = Receiver::start();
    receiver.plan_values("/flaky", json!([302, 503]));
    receiver.plan("/down", &[500; 200]);
    receiver.plan_values("/slow", json!(["slow"]));
    let mut sids = Vec::new();
    for path in ["/flaky", "/down", "/slow"] {
        let body = create(
            &app,
            "org-a",
            TRIGGERS,
            &[
                ("CallbackUrl", &receiver.url(path)),
                ("TriggerValue", "1"),
                ("UsageCategory", "calls"),
                ("TriggerBy", "count"),
                ("Recurring", "yearly"),
            ],
        )
        .await;
        receiver.secret(path, body["webhook_secret"].as_str().unwrap());
        sids.push(body["sid"].as_str().unwrap().to_owned());
    }
    app.insert(&today("e", "a2", 1, "1")).await;
    assert_eq!(app.rollup().await.fired, 3);

    // A redirect is an answer like any other non-2xx: not followed, retried.
    let seen = receiver.wait_for("/flaky", 3).await;
    let statuses: Vec<&Value> = seen.iter().map(|l| &l["status"]).collect();
    assert_eq!(statuses, [&json!(302), &json!(503), &json!(200)]);
    assert!(receiver.log().iter().all(|l| l["path"] != "/elsewhere"));
    let ids: std::collections::BTreeSet<&str> = seen
        .iter()
        .map(|l| l["webhook_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "every attempt carries the same webhook-id: {ids:?}"
    );
    assert!(seen.iter().all(|l| l["verified"] == true), "{seen:?}");
    let year = Utc::now().date_naive().with_ordinal(1).unwrap();
    assert_eq!(
        *ids.iter().next().unwrap(),
        format!("org-a-FIRES-{}-{year}", sids[0])
    );
    let page = wait_state(&app, "org-a", &sids[0], "delivered").await;
    let outcomes: Vec<(&Value, &Value)> = page["_embedded"]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (&a["attempt"], &a["response_status"]))
        .collect();
    assert_eq!(
        outcomes,
        [
            (&json!(3), &json!(200)),
            (&json!(2), &json!(503)),
            (&json!(1), &json!(302))
        ],
        "newest first"
    );
    // A receiver slower than the timeout (2 s here) is given up on and tried again.
    let page = wait_state(&app, "org-a", &sids[2], "delivered").await;
    let outcomes: Vec<&Value> = page["_embedded"]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["outcome"])
        .collect();
    assert_eq!(outcomes, [&json!("delivered"), &json!("timeout")]);
    // Always 500: retried until the window closes, then failed, and no attempt after it.
    let page = wait_state(&app, "org-a", &sids[1], "failed").await;
    let attempts = page["_embedded"]["deliveries"].as_array().unwrap();
    assert!(attempts.len() >= 3, "{page}");
    assert!(attempts.iter().all(|a| a["outcome"] == "http_error"));
    assert_eq!(attempts[0]["next_attempt_at"], Value::Null);
    let count = receiver.wait_for("/down", attempts.len()).await.len();
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.wait_for("/down", count).await.len(),
        count,
        "no attempt after failed"
    );
}

/// `usage-api serve` (the real binary) on the test's schema, delivering quickly.
fn serve(app: &TestApp, port: u16, allow: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_usage-api"))
        .args(["serve", "--no-migrate"])
        .env("DATABASE_URL", &app.db.url)
        .env("USAGE_API_BIND", format!("127.0.0.1:{port}"))
        .env("OAUTH_JWKS_URL", &app.jwks.url)
        .env("OAUTH_ISSUER", ISSUER)
        .env("OAUTH_AUDIENCE", AUDIENCE)
        .env_remove("OAUTH_DEV_SECRET")
        .env("USAGE_API_WEBHOOK_ALLOW_HOSTS", allow)
        .env("USAGE_API_WEBHOOK_BACKOFF_MS", "100")
        .env("USAGE_API_WEBHOOK_POLL_MS", "50")
        .env("USAGE_API_WEBHOOK_TIMEOUT_MS", "1000")
        .env("USAGE_API_ROLLUP_INTERVAL_MS", "100")
        .env("USAGE_API_DB_POOL_SIZE", "4")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("usage-api serve")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[actix_web::test]
async fn a_delivery_survives_a_server_restart_and_is_checked_where_it_connects() {
    let app = spawn(None).await;
    // The receiver is down at first: its port is known, nothing listens there.
    let receiver = Receiver::start();
    let (dir, port) = receiver.stop();
    // One callback by address, one by name (checked where the name resolves, when it connects).
    let mut sids = Vec::new();
    let mut secrets = json!({});
    for (path, host) in [("/durable", "127.0.0.1"), ("/named", "localhost")] {
        let callback = format!("http://{host}:{port}{path}");
        let body = create(
            &app,
            "org-a",
            TRIGGERS,
            &[
                ("CallbackUrl", &callback),
                ("TriggerValue", "1"),
                ("UsageCategory", "calls-inbound"),
                ("TriggerBy", "count"),
            ],
        )
        .await;
        sids.push(body["sid"].as_str().unwrap().to_owned());
        secrets[path] = body["webhook_secret"].clone();
    }
    std::fs::write(dir.path().join("secrets.json"), secrets.to_string()).unwrap();
    let recorded = |outcome: &'static str| {
        let app = &app;
        let sids = &sids;
        async move {
            let started = Instant::now();
            for sid in sids {
                while app
                    .count(&format!(
                        "SELECT count(*) FROM usage_trigger_attempts \
                         WHERE trigger_sid = '{sid}' AND outcome = '{outcome}'"
                    ))
                    .await
                    == 0
                {
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "never {outcome}"
                    );
                    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    };

    // A first server fires them (its own rollup) and fails to deliver: connection refused.
    let mut first = serve(&app, free_port(), ALLOW);
    app.insert(&today("r", "a1", 1, "1")).await;
    recorded("connection_error").await;
    first.kill().unwrap();
    first.wait().unwrap();

    // A server that does not allow loopback refuses to connect there, at delivery time, be it
    // an address or a name that resolves to one.
    let mut strict = serve(&app, free_port(), "");
    recorded("forbidden_address").await;
    strict.kill().unwrap();
    strict.wait().unwrap();
    let others = app
        .count(
            "SELECT count(*) FROM usage_trigger_attempts \
             WHERE outcome NOT IN ('connection_error', 'forbidden_address')",
        )
        .await;
    assert_eq!(others, 0, "nothing reached a receiver yet");

    // The receiver is back; a new server delivers each firing, once, verified.
    let receiver = Receiver::start_in(dir, port);
    let mut second = serve(&app, free_port(), ALLOW);
    let durable = receiver.wait_for("/durable", 1).await;
    let named = receiver.wait_for("/named", 1).await;
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(receiver.log().len(), 2, "{:?}", receiver.log());
    assert_eq!(durable[0]["verified"], true, "{}", durable[0]);
    assert_eq!(named[0]["verified"], true, "{}", named[0]);
    assert_eq!(
        app.count("SELECT count(*) FROM usage_trigger_firings WHERE state = 'delivered'")
            .await,
        2
    );
}

#[actix_web::test]
async fn the_official_twilio_sdk_manages_triggers_unchanged() {
    let app = spawn(None).await;
    app.insert(&today("sdk", "a1", 2, "1.5")).await;
    app.rollup().await;
    let out = sdk_script(
        "triggers_sdk.py",
        &app.address,
        &triggers_token("org-a"),
        &[("USAGE_API_SID", "a1")],
    )
    .await;
    let created = &out["created"];
    assert!(created["sid"].as_str().unwrap().starts_with("UT"));
    assert_eq!(created["account_sid"], "a1");
    assert_eq!(created["usage_category"], "calls");
    assert_eq!(created["recurring"], "monthly");
    assert_eq!(created["trigger_by"], "usage");
    assert_eq!(created["trigger_value"], "1000");
    assert_eq!(created["current_value"], "3");
    assert_eq!(created["callback_method"], "POST");
    assert_eq!(created["date_fired"], Value::Null);
    assert_eq!(out["listed"], json!([created["sid"]]));
    assert_eq!(out["filtered"], json!([]));
    assert_eq!(out["fetched"]["sid"], created["sid"]);
    assert_eq!(out["updated"]["friendly_name"], "renamed");
    assert_eq!(out["updated"]["callback_method"], "GET");
    assert_eq!(out["deleted"], true);
    assert_eq!(out["after_delete"], 404);
    // The SDK's pager walked several pages of the list.
    assert_eq!(out["paged"].as_array().unwrap().len(), 5);
}

#[actix_web::test]
async fn usage_is_never_added_across_units() {
    let app = spawn(None).await;
    let body = create(
        &app,
        "org-a",
        TRIGGERS,
        &[
            ("CallbackUrl", "http://127.0.0.1:9/units"),
            ("TriggerValue", "5"),
            ("UsageCategory", "calls"),
            ("Recurring", "monthly"),
        ],
    )
    .await;
    let sid = body["sid"].as_str().unwrap().to_owned();
    // 3 minutes and 4 seconds of calls: 7 of nothing. The trigger watches the larger sum, 4.
    let mut events = today("min", "a1", 3, "1");
    let mut seconds = today("sec", "a2", 4, "1");
    for e in &mut seconds {
        e.unit = usage_api::usage::model::Unit::Seconds;
    }
    events.append(&mut seconds);
    app.insert(&events).await;
    assert_eq!(app.rollup().await.fired, 0);
    let path = format!("/2010-04-01/Accounts/org-a/Usage/Triggers/{sid}.json");
    let fetched = app
        .form(Method::GET, &path, &triggers_token("org-a"), &[])
        .await;
    assert_eq!(fetched.body["current_value"], "4");
    // A fifth second reaches it.
    let mut fifth = today("sec-5", "a2", 1, "1");
    fifth[0].unit = usage_api::usage::model::Unit::Seconds;
    app.insert(&fifth).await;
    assert_eq!(app.rollup().await.fired, 1);
}
