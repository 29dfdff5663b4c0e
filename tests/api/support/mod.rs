//! `TestApp`: the real server on a loopback port, against a fresh schema of the real Postgres,
//! verifying real tokens against a real JWKS server. Every response a test reads is checked
//! against openapi.yaml.

pub mod cluster;
pub mod data;
pub mod db;
pub mod jwks;
pub mod openapi;
pub mod tokens;

use std::net::TcpListener;
use std::num::NonZeroU32;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::web;
use diesel_async::AsyncPgConnection;
use jsonwebtoken::Algorithm;
use reqwest::header::HeaderMap;
use serde_json::Value;
use usage_api::app::AppState;
use usage_api::auth::admission::{Admission, Limits};
use usage_api::auth::Verifier;
use usage_api::config::AuthConfig;
use usage_api::db::cancel::Canceller;
use usage_api::db::{pool, PoolOptions};
use usage_api::usage::write::event::NewEvent;
use usage_api::usage::write::store;
use usage_api::usage::{accounts, rollup};

pub use db::TestDb;
pub use jwks::JwksServer;
use openapi::assert_matches_schema;

/// A query parameter's value, percent-encoded for a URL.
pub fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The configured public URL: links must be built from it, never from the Host header.
pub const PUBLIC_URL: &str = "https://usage.example.test/base";

pub struct TestApp {
    /// Where the server really listens.
    pub address: String,
    pub client: reqwest::Client,
    pub db: TestDb,
    pub jwks: JwksServer,
    handle: ServerHandle,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    /// The body as sent: exact decimals are checked on it, not on a parsed (f64) number.
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The ids of the records of a list page, in order.
    pub fn ids(&self) -> Vec<String> {
        self.body["_embedded"]["usage"]
            .as_array()
            .unwrap_or_else(|| panic!("not a page: {}", self.body))
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Asserts the body, as sent, contains `needle`: exact decimals are checked on the text, since
    /// a parsed JSON number would go through f64.
    #[track_caller]
    pub fn assert_text_contains(&self, needle: &str) {
        assert!(self.text.contains(needle), "{needle} not in {}", self.text);
    }

    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// The `name` of every entry of the error's `fields`.
    pub fn field_names(&self) -> Vec<String> {
        self.body["fields"]
            .as_array()
            .map(|f| {
                f.iter()
                    .map(|e| e["name"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// An answer read whole as text (see [`TestApp::download`]).
#[derive(Debug)]
pub struct Download {
    pub status: u16,
    pub headers: HeaderMap,
    /// Whether the body came gzip-coded.
    pub gzipped: bool,
    pub body: String,
}

pub struct Options {
    /// JWKS fetches unknown key ids may cause per minute.
    pub jwks_refreshes_per_minute: u32,
    pub kids: Vec<&'static str>,
    /// Point the server's pool somewhere else (e.g. nowhere) instead of the test schema.
    pub database_url: Option<String>,
    /// Run the server's background rollup worker at this interval (tests roll up by hand
    /// otherwise).
    pub rollup_interval: Option<Duration>,
    /// Give the server a read pool (DATABASE_READ_URL) on this URL.
    pub read_database_url: Option<String>,
    /// Callback hosts allowed although loopback (USAGE_API_WEBHOOK_ALLOW_HOSTS).
    pub webhook_allow_hosts: Vec<String>,
    /// Run the webhook delivery worker with these settings.
    pub deliveries: Option<usage_api::usage::triggers::deliver::Settings>,
    /// Per-organization limits; by default so high that no other test meets them.
    pub limits: Limits,
    /// The request deadline (USAGE_API_REQUEST_TIMEOUT_MS).
    pub request_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jwks_refreshes_per_minute: 10,
            kids: vec!["rsa-1", "ec-1", "ed-1"],
            database_url: None,
            rollup_interval: None,
            read_database_url: None,
            webhook_allow_hosts: Vec::new(),
            deliveries: None,
            limits: Limits {
                rate: NonZeroU32::new(1_000_000).unwrap(),
                burst: NonZeroU32::new(1_000_000).unwrap(),
                concurrency: 100_000,
                executing: NonZeroU32::new(100_000).unwrap(),
                turn_wait: Duration::from_secs(15),
            },
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> TestApp {
        let db = TestDb::new().await;
        let jwks = JwksServer::start(&options.kids);
        let config = AuthConfig {
            jwks_url: Some(jwks.url.clone()),
            issuer: Some(tokens::ISSUER.to_owned()),
            audience: Some(tokens::AUDIENCE.to_owned()),
            algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
            org_claim: "org_id".to_owned(),
            leeway: Duration::from_secs(30),
            jwks_refreshes_per_minute: options.jwks_refreshes_per_minute,
            jwks_max_age: Duration::from_secs(600),
            dev_secret: None,
        };
        let pool_options = PoolOptions {
            max_size: 4,
            ..PoolOptions::default()
        };
        let mut state = AppState::new(
            pool::build(
                options.database_url.as_deref().unwrap_or(&db.url),
                &pool_options,
            )
            .unwrap(),
            Verifier::new(config).unwrap(),
            PUBLIC_URL.to_owned(),
        );
        state.read_pool = options
            .read_database_url
            .as_deref()
            .map(|url| pool::build(url, &pool_options).unwrap());
        state.callbacks = std::sync::Arc::new(
            usage_api::usage::triggers::callback::CallbackPolicy::new(&options.webhook_allow_hosts),
        );
        state.deliveries = options.deliveries.clone();
        state.admission = Admission::new(options.limits);
        state.request_timeout = options.request_timeout;
        state.cancel_primary =
            Some(Canceller::new(options.database_url.as_deref().unwrap_or(&db.url)).unwrap());
        let state = web::Data::new(state);
        if let Some(interval) = options.rollup_interval {
            let args = usage_api::config::RollupArgs {
                rollup_interval_ms: interval.as_millis() as u64,
            };
            usage_api::cli::serve::start_rollup(&state, &args);
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let server = usage_api::cli::serve::start(state, listener, 1).unwrap();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        TestApp {
            address,
            client,
            db,
            jwks,
            handle,
        }
    }

    /// GET `path_and_query` with extra headers; the answer is checked against openapi.yaml.
    pub async fn get_with(&self, path_and_query: &str, headers: &[(&str, &str)]) -> Reply {
        let request = self.client.get(format!("{}{path_and_query}", self.address));
        let path = path_and_query.split('?').next().unwrap();
        let success = match path {
            "/express/usage/month" => Some(("application/hal+json", "UsagePage")),
            "/express/usage/categories" => Some(("application/hal+json", "CategoryList")),
            "/express/usage/events" => Some(("application/hal+json", "EventsPage")),
            p if p.contains("/Usage/Records") && !p.ends_with(".csv") => {
                Some(("application/json", "UsageRecordsPage"))
            }
            p if p.starts_with("/express/usage/month/") => {
                Some(("application/hal+json", "UsageRecord"))
            }
            p => trigger_schema(p),
        };
        send(request, headers, path_and_query, success).await
    }

    /// Sends `method` to `path` with a form body (`pairs`, none: no body) and a bearer token;
    /// checked against openapi.yaml.
    pub async fn form(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        pairs: &[(&str, &str)],
    ) -> Reply {
        let method_is_post = method == reqwest::Method::POST;
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(token);
        if !pairs.is_empty() {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
        }
        let bare = path.split('?').next().unwrap();
        let success = match trigger_schema(bare) {
            // A create answers the trigger it made.
            Some((media, "UsageTriggersPage")) if method_is_post => Some((media, "UsageTrigger")),
            other => other,
        };
        send(request, &[], path, success).await
    }

    /// POST `body` to `path` with a bearer token and extra headers; checked against openapi.yaml.
    pub async fn post(
        &self,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let request = self
            .client
            .post(format!("{}{path}", self.address))
            .bearer_auth(token)
            .body(body);
        send(
            request,
            headers,
            path,
            Some(("application/json", "IngestReport")),
        )
        .await
    }

    /// Waits (up to 10 s) until `/health/ready` answers 200: the issuer's keys are loaded.
    pub async fn wait_until_ready(&self) {
        let started = std::time::Instant::now();
        while self.get_with("/health/ready", &[]).await.status != 200 {
            assert!(started.elapsed() < Duration::from_secs(10), "never ready");
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GET with a bearer token.
    pub async fn get(&self, path_and_query: &str, token: &str) -> Reply {
        let authorization = format!("Bearer {token}");
        self.get_with(path_and_query, &[("Authorization", authorization.as_str())])
            .await
    }

    /// Follows an absolute link of the API (built on PUBLIC_URL) against the real address.
    pub async fn follow(&self, href: &str, token: &str) -> Reply {
        let rest = href
            .strip_prefix(PUBLIC_URL)
            .unwrap_or_else(|| panic!("link {href} is not built on {PUBLIC_URL}"));
        self.get(rest, token).await
    }

    /// GET `path` as `org` with extra headers, the body read whole as text (gunzipped when the
    /// answer is gzip-coded): for exports, which are not JSON.
    pub async fn download(&self, path: &str, org: &str, headers: &[(&str, &str)]) -> Download {
        let mut request = self
            .client
            .get(format!("{}{path}", self.address))
            .bearer_auth(tokens::token(org));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let gzipped = headers.get("content-encoding").is_some_and(|v| v == "gzip");
        let body = if gzipped {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text)
                .unwrap();
            text
        } else {
            String::from_utf8(bytes.to_vec()).unwrap()
        };
        Download {
            status,
            headers,
            gzipped,
            body,
        }
    }

    pub async fn conn(&self) -> AsyncPgConnection {
        self.db.conn().await
    }

    /// POSTs a JSON batch of events for `org` (a write token); answers (status, reason) per
    /// event, in order.
    pub async fn send_events(
        &self,
        org: &str,
        batch: serde_json::Value,
    ) -> Vec<(String, Option<String>)> {
        let reply = self
            .post(
                "/express/usage/events",
                &tokens::writer(org),
                &[("Content-Type", "application/json")],
                batch.to_string(),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["status"].as_str().unwrap().to_owned(),
                    r["reason"].as_str().map(str::to_owned),
                )
            })
            .collect()
    }

    /// Runs SQL statements on the test schema.
    pub async fn execute(&self, sql: &str) {
        diesel_async::SimpleAsyncConnection::batch_execute(&mut self.conn().await, sql)
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
    }

    /// Runs the real `usage-api` binary against the test schema, with `stdin` as its input.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_usage-api"))
            .args(args)
            .env("DATABASE_URL", &self.db.url)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run usage-api");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    /// The one bigint a query of the test schema answers (e.g. a `count(*)`).
    pub async fn count(&self, query: &str) -> i64 {
        use diesel_async::RunQueryDsl;
        diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
            "({query})"
        )))
        .get_result(&mut self.conn().await)
        .await
        .unwrap_or_else(|err| panic!("{query}: {err}"))
    }

    /// Creates accounts: (account id, organization id).
    pub async fn accounts(&self, pairs: &[(&str, &str)]) {
        let batch: Vec<accounts::NewAccount> = pairs
            .iter()
            .map(|(id, org)| accounts::NewAccount {
                id: (*id).to_owned(),
                organization_id: (*org).to_owned(),
                name: format!("Account {id}"),
            })
            .collect();
        accounts::upsert(&mut self.conn().await, &batch)
            .await
            .unwrap();
    }

    /// Inserts events (their accounts must exist) and answers the outcome of each.
    pub async fn insert(&self, events: &[NewEvent]) -> Vec<store::Outcome> {
        store::insert_events(&mut self.conn().await, events)
            .await
            .unwrap()
    }

    /// The incremental rollup, until no dirty group is left (what the server's worker does).
    pub async fn rollup(&self) -> rollup::RollupStats {
        rollup::run_until_clean(&mut self.conn().await)
            .await
            .unwrap()
    }

    /// The full rebuild.
    pub async fn rollup_full(&self) -> rollup::RollupStats {
        rollup::run_full(&mut self.conn().await).await.unwrap()
    }
}

/// A Python with the official `twilio` and `standardwebhooks` packages: `target/twilio-venv`,
/// made (and the packages installed from PyPI) the first time. `.ci/run` makes it before the tests.
pub fn twilio_python() -> std::path::PathBuf {
    use std::process::Command;
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/twilio-venv");
    let python = venv.join("bin/python");
    let ready = |python: &std::path::Path| {
        Command::new(python)
            .args(["-c", "import twilio, standardwebhooks"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready(&python) {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 (with venv) is needed for the twilio SDK test");
        assert!(made.success(), "python3 -m venv failed");
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", TWILIO_SDK, STANDARD_WEBHOOKS])
            .status()
            .expect("pip");
        assert!(
            installed.success(),
            "pip install {TWILIO_SDK} {STANDARD_WEBHOOKS} failed"
        );
    }
    assert!(
        ready(&python),
        "twilio or standardwebhooks is not importable in {}",
        venv.display()
    );
    python
}

/// Runs `tests/twilio/{script}` with the venv's Python (at most 300 s) on a thread of its own
/// (the server answers on this one), with `USAGE_API_BASE` and `USAGE_API_TOKEN` set and `env`;
/// it must succeed. Returns what it printed, as JSON.
pub async fn sdk_script(script: &str, address: &str, token: &str, env: &[(&str, &str)]) -> Value {
    let path = format!("{}/tests/twilio/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut command = std::process::Command::new("timeout");
    command
        .arg("300")
        .arg(twilio_python())
        .arg(path)
        .env("USAGE_API_BASE", address)
        .env("USAGE_API_TOKEN", token);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = actix_web::rt::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script}: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The SDK version the test drives (the newest at the time of writing).
const TWILIO_SDK: &str = "twilio==9.13.0";
/// The Standard Webhooks reference library the webhook receiver verifies deliveries with.
const STANDARD_WEBHOOKS: &str = "standardwebhooks==1.1.0";

/// The media type and schema of a usage-trigger route's success.
fn trigger_schema(path: &str) -> Option<(&'static str, &'static str)> {
    if path.starts_with("/express/usage/triggers/") && path.ends_with("/deliveries") {
        Some(("application/hal+json", "DeliveriesPage"))
    } else if path.ends_with("/Usage/Triggers.json") || path.ends_with("/Usage/Triggers") {
        Some(("application/json", "UsageTriggersPage"))
    } else if path.contains("/Usage/Triggers/") {
        Some(("application/json", "UsageTrigger"))
    } else {
        None
    }
}

/// Sends `request` and reads the reply whole. Every reply must carry X-Request-Id; a 200 must
/// have the media type and schema of `success` (when given), an error the JSON Error schema.
async fn send(
    mut request: reqwest::RequestBuilder,
    headers: &[(&str, &str)],
    what: &str,
    success: Option<(&str, &str)>,
) -> Reply {
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body: Value = if status == 304 || status == 204 {
        assert_eq!(text, "", "a {status} has no body");
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status} {what}: not JSON: {text}"))
    };
    assert!(
        headers.contains_key("x-request-id"),
        "no X-Request-Id on {what}"
    );
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match (status, success) {
        (200 | 201, Some((media_type, schema))) => {
            assert_eq!(content_type, media_type, "{what}");
            assert_matches_schema(schema, &body);
        }
        // Readiness: not ready (a Health body) is not an error body.
        (503, _) if what.starts_with("/health/") && body.get("code").is_none() => {
            assert_matches_schema("Health", &body)
        }
        (400.., _) => {
            assert_eq!(content_type, "application/json", "{what}");
            assert_matches_schema("Error", &body);
            // An error is about this request only.
            assert_eq!(headers.get("cache-control").unwrap(), "no-store", "{what}");
            assert_eq!(
                headers.get("x-content-type-options").unwrap(),
                "nosniff",
                "{what}"
            );
        }
        _ => {}
    }
    Reply {
        status,
        headers,
        body,
        text,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_web::rt::spawn(async move { handle.stop(false).await });
    }
}
