//! Observability: `GET /metrics` (requests by route pattern, the pools, the rollup, ingest, JWKS
//! fetches) and the one JSON log line per request, against the real server, never naming an
//! organization, an account or a token.
//!
//! The metrics recorder is one per process and `cargo test` runs the tests of this binary in
//! parallel in one process: counters are checked with `>=`, never as exact totals.

use std::io::Read;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::tokens::{self, token, writer};
use crate::support::TestApp;

/// Names no other test uses, so that finding them in the metrics could only be a leak.
const ORG: &str = "org-observed-5e1f";
const ACCOUNT: &str = "acct-observed-5e1f";
const RECORD_ID: &str = "0b5e77ed0b5e77ed0b5e77ed0b5e77ed";

fn event(event_id: &str) -> Value {
    json!({
        "event_id": event_id, "account_id": ACCOUNT, "product_id": "P-1",
        "aggr_product_id": "AP-1", "type": "CALL", "unit": "MINUTES", "direction": "OUTBOUND",
        "resolution": "ANSWERED", "description": "Outbound call", "wallet_name": "main",
        "occurred_at": "2023-08-01T10:00:00Z", "quantity": "3", "unit_price": "0.014",
        "currency": "USD"
    })
}

/// One scrape at a time in this process: the gauges sampled at a scrape (the pools, the
/// rollup's lag) are the process's, and another test's scrape must not set them between this
/// one's sampling and its rendering.
static SCRAPES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `GET /metrics`, as Prometheus scrapes it.
async fn scrape(app: &TestApp) -> String {
    let _alone = SCRAPES.lock().await;
    let address = &app.address;
    let response = app
        .client
        .get(format!("{address}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let media = response.headers()["content-type"].to_str().unwrap();
    assert!(media.starts_with("text/plain; version=0.0.4"), "{media}");
    response.text().await.unwrap()
}

/// The sum of the samples of `name` whose labels include every pair of `labels`; `None` when
/// there is none.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let pairs: Vec<&str> = label_text.split(',').collect();
        let has =
            |(key, value): &(&str, &str)| pairs.contains(&format!("{key}=\"{value}\"").as_str());
        if metric == name && labels.iter().all(has) {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap();
        }
    }
    found
}

#[track_caller]
fn at_least(text: &str, name: &str, labels: &[(&str, &str)], least: f64) {
    let value =
        sample(text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"));
    assert!(value >= least, "{name} {labels:?} = {value} < {least}");
}

/// An authenticated list, a record by id (an unknown one), a Twilio route naming the
/// organization in its path, an unknown path, and an event ingested twice.
async fn some_traffic(app: &TestApp) {
    // Twice each: the second answer is the remembered one.
    for _ in 0..2 {
        assert_eq!(
            app.get("/express/usage/month", &token(ORG)).await.status,
            200
        );
    }
    let record = format!("/express/usage/month/{RECORD_ID}");
    assert_eq!(app.get(&record, &token(ORG)).await.status, 404);
    let records = format!("/2010-04-01/Accounts/{ORG}/Usage/Records.json");
    for _ in 0..2 {
        assert_eq!(app.get(&records, &token(ORG)).await.status, 200);
    }
    let unknown = app.get_with(&format!("/no/such/{ORG}"), &[]).await;
    assert_eq!(unknown.status, 404);
    for _ in 0..2 {
        let batch = json!([event("obs-1")]).to_string();
        let reply = app
            .post(
                "/express/usage/events",
                &writer(ORG),
                &[("Content-Type", "application/json")],
                batch,
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
}

/// Requests by route pattern, method and status; their durations; those in flight.
fn assert_requests(text: &str) {
    let requests = "usage_api_http_requests_total";
    let list = [
        ("route", "/express/usage/month"),
        ("method", "GET"),
        ("status", "200"),
    ];
    at_least(text, requests, &list, 1.0);
    let show = [
        ("route", "/express/usage/month/{id}"),
        ("method", "GET"),
        ("status", "404"),
    ];
    at_least(text, requests, &show, 1.0);
    let records = "/{version}/Accounts/{sid}/Usage/{records:Records.*}";
    at_least(
        text,
        requests,
        &[("route", records), ("status", "200")],
        1.0,
    );
    at_least(
        text,
        requests,
        &[("route", "unmatched"), ("status", "404")],
        1.0,
    );
    let ingest = [
        ("route", "/express/usage/events"),
        ("method", "POST"),
        ("status", "200"),
    ];
    at_least(text, requests, &ingest, 2.0);

    let histogram = "usage_api_http_request_duration_seconds";
    let every = [
        ("route", "/express/usage/month"),
        ("status", "200"),
        ("le", "+Inf"),
    ];
    at_least(text, &format!("{histogram}_bucket"), &every, 1.0);
    at_least(text, &format!("{histogram}_count"), &list, 1.0);
    // This very scrape is in flight while the metrics are rendered.
    at_least(text, "usage_api_http_requests_in_flight", &[], 1.0);
}

/// Ingest outcomes, the pool, the rollup's lag, the issuer's keys.
fn assert_the_rest(text: &str) {
    let ingested = "usage_api_ingest_events_total";
    at_least(text, ingested, &[("outcome", "accepted")], 1.0);
    at_least(text, ingested, &[("outcome", "duplicate")], 1.0);
    // Every test app's pool has 4 connections at most (support::TestApp).
    let primary = [("pool", "primary")];
    assert_eq!(sample(text, "usage_api_db_pool_max", &primary), Some(4.0));
    for state in ["idle", "in_use"] {
        let labels = [("pool", "primary"), ("state", state)];
        at_least(text, "usage_api_db_pool_connections", &labels, 0.0);
    }
    at_least(text, "usage_api_db_pool_waiting", &primary, 0.0);
    at_least(text, "usage_api_rollup_lag_seconds", &[], 0.0);
    for route in ["month", "records"] {
        let remembered = "usage_api_remembered_answers_total";
        at_least(
            text,
            remembered,
            &[("route", route), ("outcome", "miss")],
            1.0,
        );
        at_least(
            text,
            remembered,
            &[("route", route), ("outcome", "hit")],
            1.0,
        );
    }
    // The server fetched the issuer's keys when it started.
    at_least(
        text,
        "usage_api_jwks_fetches_total",
        &[("outcome", "ok")],
        1.0,
    );
}

#[actix_web::test]
async fn metrics_count_requests_by_route_pattern_and_never_name_a_tenant() {
    let app = TestApp::spawn().await;
    app.accounts(&[(ACCOUNT, ORG)]).await;
    some_traffic(&app).await;
    let text = scrape(&app).await;
    assert_requests(&text);
    assert_the_rest(&text);
    for secret in [ORG, ACCOUNT, RECORD_ID, "/no/such"] {
        assert!(
            !text.contains(secret),
            "{secret} is in the metrics:\n{text}"
        );
    }
}

#[actix_web::test]
async fn metrics_follow_the_rollup_and_the_issuers_outages() {
    let app = TestApp::spawn().await;
    app.accounts(&[(ACCOUNT, ORG)]).await;
    app.send_events(ORG, json!([event("obs-lag")])).await;
    // The event waits for a rollup (the test app runs none by itself).
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    let waiting = scrape(&app).await;
    at_least(&waiting, "usage_api_rollup_lag_seconds", &[], 1.0);

    let stats = app.rollup().await;
    assert!(stats.groups >= 1);
    let done = scrape(&app).await;
    let lag = sample(&done, "usage_api_rollup_lag_seconds", &[]).unwrap();
    assert!(lag < 1.0, "the lag is still {lag} after the rollup");
    at_least(&done, "usage_api_rollup_batch_seconds_count", &[], 1.0);
    at_least(&done, "usage_api_rollup_marks_total", &[], 1.0);
    at_least(&done, "usage_api_rollup_groups_total", &[], 1.0);
    let changed = [("table", "monthly"), ("change", "changed")];
    at_least(&done, "usage_api_rollup_aggregates_total", &changed, 1.0);

    // A key the server does not have while the issuer is down: a fetch, and it fails.
    app.jwks.stop().await;
    let unknown_key = tokens::sign("rsa-2", &tokens::claims(ORG));
    assert_eq!(
        app.get("/express/usage/month", &unknown_key).await.status,
        503
    );
    let outage = scrape(&app).await;
    at_least(
        &outage,
        "usage_api_jwks_fetches_total",
        &[("outcome", "error")],
        1.0,
    );
}

/// `usage-api serve`, the real binary, with JSON logs: its standard output and error go to
/// files.
struct Server {
    child: Child,
    address: String,
    stdout: tempfile::NamedTempFile,
    stderr: tempfile::NamedTempFile,
}

impl Server {
    /// Starts it on the test schema `database_url`, trusting the test JWKS `jwks_url`, and waits
    /// until it is ready (blocking: run it off the test's runtime).
    fn start(database_url: &str, jwks_url: &str) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let stdout = tempfile::NamedTempFile::new().unwrap();
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_usage-api"))
            .args(["serve", "--no-migrate"])
            .env("DATABASE_URL", database_url)
            .env("USAGE_API_BIND", format!("127.0.0.1:{port}"))
            .env("OAUTH_JWKS_URL", jwks_url)
            .env("OAUTH_ISSUER", tokens::ISSUER)
            .env("OAUTH_AUDIENCE", tokens::AUDIENCE)
            .env_remove("OAUTH_DEV_SECRET")
            .env("USAGE_API_ROLLUP_INTERVAL_MS", "0")
            .env("USAGE_API_DB_POOL_SIZE", "2")
            .env("USAGE_API_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(stdout.reopen().unwrap())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .expect("usage-api serve");
        let server = Server {
            child,
            address: format!("http://127.0.0.1:{port}"),
            stdout,
            stderr,
        };
        let started = Instant::now();
        while !server.ready() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "serve never ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// `/health/ready` answers 200 (without an async runtime: the test's serves the JWKS).
    fn ready(&self) -> bool {
        use std::io::Write;
        let address = self.address.trim_start_matches("http://");
        let Ok(mut stream) = std::net::TcpStream::connect(address) else {
            return false;
        };
        let request =
            format!("GET /health/ready HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        let mut answer = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.1 200")
    }

    /// Everything the server has written so far: (standard output, standard error).
    fn output(&self) -> (String, String) {
        let read = |file: &tempfile::NamedTempFile| {
            let mut text = String::new();
            file.reopen().unwrap().read_to_string(&mut text).unwrap();
            text
        };
        (read(&self.stdout), read(&self.stderr))
    }

    /// [`Server::output`] once standard error holds a whole line for each of `request_ids`
    /// (the log is written by a thread of its own, just after the answer), without a line still
    /// being written; at most 5 s.
    async fn output_with(&self, request_ids: &[&str]) -> (String, String) {
        for _ in 0..100 {
            let (stdout, stderr) = self.output();
            let whole = &stderr[..stderr.rfind('\n').map_or(0, |end| end + 1)];
            if request_ids
                .iter()
                .all(|id| whole.contains(&format!("\"{id}\"")))
            {
                return (stdout, whole.to_owned());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.output()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The log line of the request `request_id`, parsed.
fn request_line(output: &str, request_id: &str) -> Value {
    let lines: Vec<Value> = output
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .filter(|line: &Value| line["span"]["request_id"] == request_id)
        .filter(|line| line["message"] == "request")
        .collect();
    assert_eq!(lines.len(), 1, "one line for {request_id} in:\n{output}");
    lines.into_iter().next().unwrap()
}

/// GETs `path` from `server` with a request id and, when given, a token; answers the status.
async fn get(app: &TestApp, server: &Server, path: &str, id: &str, token: Option<&str>) -> u16 {
    let mut request = app
        .client
        .get(format!("{}{path}", server.address))
        .header("X-Request-Id", id);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], id);
    response.status().as_u16()
}

#[actix_web::test]
async fn each_request_is_one_json_line_with_its_id_route_and_organization_never_its_token() {
    let app = TestApp::spawn().await;
    app.accounts(&[(ACCOUNT, ORG)]).await;
    let (database_url, jwks_url) = (app.db.url.clone(), app.jwks.url.clone());
    let start = move || Server::start(&database_url, &jwks_url);
    let server = actix_web::rt::task::spawn_blocking(start).await.unwrap();
    let secret = token(ORG);
    // A token in the query string is never read, and never logged either.
    let path = format!("/express/usage/month/{RECORD_ID}?access_token={secret}&marker=q5x");
    assert_eq!(
        get(&app, &server, &path, "obs-json-1", Some(&secret)).await,
        404
    );
    let unknown = format!("/no/such/{ORG}");
    assert_eq!(get(&app, &server, &unknown, "obs-json-2", None).await, 404);

    let (stdout, stderr) = server.output_with(&["obs-json-1", "obs-json-2"]).await;
    let line = request_line(&stderr, "obs-json-1");
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["status"], 404, "{line}");
    let duration = line["duration_ms"].as_f64();
    assert!(duration.is_some_and(|ms| ms >= 0.0), "{line}");
    assert_eq!(line["span"]["method"], "GET", "{line}");
    assert_eq!(line["span"]["route"], "/express/usage/month/{id}", "{line}");
    assert_eq!(line["span"]["organization"], ORG, "{line}");
    assert_eq!(line["span"]["subject"], "client-1", "{line}");
    let anonymous = request_line(&stderr, "obs-json-2");
    assert_eq!(anonymous["span"]["route"], "unmatched", "{anonymous}");
    assert!(
        anonymous["span"].get("organization").is_none(),
        "{anonymous}"
    );
    for leak in [
        secret.as_str(),
        RECORD_ID,
        "q5x",
        "access_token",
        "/no/such",
    ] {
        assert!(!stderr.contains(leak), "{leak} is in the log:\n{stderr}");
        assert!(
            !stdout.contains(leak),
            "{leak} is on standard output:\n{stdout}"
        );
    }
}
