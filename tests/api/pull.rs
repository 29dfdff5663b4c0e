//! `usage-api pull` (DESIGN §4) against real servers on loopback: the product's own `serve`
//! binary, a real OAuth2 authorization server (oauth2-mock-server on Node, tests/oauth), and a
//! faulty proxy between them (tests/oauth/proxy.py). The file a pull writes must equal, byte for
//! byte, the server's own export of the same list: through 503s and short-lived tokens, after an
//! interruption and `--resume`, and when the data changes mid-pull.

use std::io::BufRead;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use usage_api::usage::write::event::NewEvent;

use crate::support::data::{at, dec, event};
use crate::support::TestApp;

const CLIENT_ID: &str = "reseller-1";
const SECRET: &str = "s3cret-of-the-reseller";
const AUDIENCE: &str = "usage-api";
const PER_PAGE: &str = "10";

/// tests/oauth's node_modules, installed (npm) the first time. `.ci/run` installs them first.
fn node_modules() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oauth");
    if !dir.join("node_modules/oauth2-mock-server").exists() {
        let installed = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .status()
            .expect("npm (Node 20) is needed for the pull tests");
        assert!(installed.success(), "npm install in tests/oauth failed");
    }
    dir
}

/// The authorization server: its issuer URL, and how many tokens it has issued.
struct AuthServer {
    child: Child,
    issuer: String,
    issued: Arc<AtomicUsize>,
}

impl AuthServer {
    fn start(ttl_secs: u32) -> AuthServer {
        let dir = node_modules();
        let mut child = Command::new("node")
            .arg(dir.join("server.mjs"))
            .args([CLIENT_ID, SECRET, &ttl_secs.to_string(), "org-a", AUDIENCE])
            .stdout(Stdio::piped())
            .spawn()
            .expect("node");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        let issuer = first["issuer"].as_str().unwrap().to_owned();
        let issued = Arc::new(AtomicUsize::new(0));
        let counter = issued.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains("issued") {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        AuthServer {
            child,
            issuer,
            issued,
        }
    }

    fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The faulty proxy in front of the server.
struct Proxy {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oauth/proxy.py"))
            .arg(upstream)
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap();
        Proxy { child, dir, port }
    }

    fn mode(&self, mode: Value) {
        std::fs::write(self.dir.path().join("mode.json"), mode.to_string()).unwrap();
    }

    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("requests.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `usage-api serve`, the real binary, trusting the authorization server; its rollup worker on.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(app: &TestApp, auth: &AuthServer) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_usage-api"))
            .args(["serve", "--no-migrate"])
            .env("DATABASE_URL", &app.db.url)
            .env("USAGE_API_BIND", format!("127.0.0.1:{port}"))
            .env("OAUTH_JWKS_URL", format!("{}/jwks", auth.issuer))
            .env("OAUTH_ISSUER", &auth.issuer)
            .env("OAUTH_AUDIENCE", AUDIENCE)
            .env("OAUTH_ALGORITHMS", "RS256")
            .env_remove("OAUTH_DEV_SECRET")
            .env("USAGE_API_ROLLUP_INTERVAL_MS", "100")
            .env("USAGE_API_DB_POOL_SIZE", "4")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("usage-api serve");
        let started = Instant::now();
        while reqwest::blocking_ready(&url).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "serve never ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny readiness probe without an async runtime (the test's runtime serves the in-process
/// app; this one is a separate process).
mod reqwest {
    pub fn blocking_ready(url: &str) -> Result<(), ()> {
        use std::io::{Read, Write};
        let address = url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).map_err(|_| ())?;
        write!(
            stream,
            "GET /health/ready HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|_| ())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).map_err(|_| ())?;
        answer.starts_with("HTTP/1.1 200").then_some(()).ok_or(())
    }
}

/// Runs `usage-api pull` with the client secret in its environment (or none), on its own thread.
async fn pull(base: &str, auth: &AuthServer, secret: Option<&str>, extra: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_usage-api"));
    command
        .arg("pull")
        .args(["--url", base, "--token-url", &auth.token_url()])
        .args(["--client-id", CLIENT_ID, "--per-page", PER_PAGE])
        .args(extra)
        .env_remove("USAGE_API_CLIENT_SECRET")
        .env("RUST_LOG", "warn");
    if let Some(secret) = secret {
        command.env("USAGE_API_CLIENT_SECRET", secret);
    }
    actix_web::rt::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// `n` events of org-a, each its own monthly row (a product per event), over two years.
fn events(prefix: &str, n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            let mut e = event(&format!("{prefix}-{i}"), ["a1", "a2"][i % 2]);
            e.product_id = format!("{prefix}-P{i:03}");
            e.occurred_at = at(&format!("202{}-{:02}-15T10:00:00Z", 3 + i % 2, 1 + i % 12));
            e.quantity = dec(&format!("{}.{:04}", i % 17, i * 37 % 10_000));
            e.unit_price = dec("0.0000001");
            e
        })
        .collect()
}

async fn setup() -> TestApp {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a"), ("a2", "org-a"), ("b1", "org-b")])
        .await;
    app.insert(&events("e", 95)).await;
    let mut other = event("b-1", "b1");
    other.product_id = "theirs".to_owned();
    app.insert(&[other]).await;
    app.rollup().await;
    app
}

/// The server's own export of the list, the file a pull must reproduce.
async fn export(app: &TestApp, format: &str) -> String {
    let got = app
        .download(
            &format!("/express/usage/month?format={format}"),
            "org-a",
            &[],
        )
        .await;
    assert_eq!(got.status, 200);
    got.body
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[actix_web::test]
async fn a_pull_through_503s_and_short_lived_tokens_writes_the_export_exactly() {
    let app = setup().await;
    let auth = AuthServer::start(2);
    let server = Server::start(&app, &auth);
    let proxy = Proxy::start(&server.url);
    proxy.mode(json!({"every": 3}));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("usage.csv");
    let out = pull(
        &proxy.url(),
        &auth,
        Some(SECRET),
        &["--output", file.to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written, export(&app, "csv").await);
    assert_eq!(
        written.lines().count(),
        96,
        "a header and 95 rows, none of org-b"
    );
    assert!(stderr(&out).contains("503"), "{}", stderr(&out));
    assert!(
        auth.issued.load(Ordering::SeqCst) >= 2,
        "the 2 s token was renewed mid-pull ({} issued): {}",
        auth.issued.load(Ordering::SeqCst),
        stderr(&out)
    );
    assert!(
        !dir.path().join("usage.csv.pull-state").exists(),
        "a complete pull leaves no state"
    );

    // NDJSON to stdout: the export's lines, with the numbers' digits as sent.
    proxy.mode(json!({}));
    let out = pull(&proxy.url(), &auth, Some(SECRET), &["--format", "ndjson"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        export(&app, "ndjson").await
    );

    // The raw events, through the 503s again: the server's own export of them, exactly.
    proxy.mode(json!({"every": 3}));
    let events_file = dir.path().join("events.csv");
    let out = pull(
        &proxy.url(),
        &auth,
        Some(SECRET),
        &[
            "--resource",
            "events",
            "--output",
            events_file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let got = app
        .download("/express/usage/events?format=csv", "org-a", &[])
        .await;
    assert_eq!(got.status, 200);
    let written = std::fs::read_to_string(&events_file).unwrap();
    assert_eq!(written, got.body);
    assert_eq!(
        written.lines().count(),
        96,
        "a header and org-a's 95 events"
    );
}

#[actix_web::test]
async fn refusals_end_with_the_documented_exit_codes() {
    let app = setup().await;
    let auth = AuthServer::start(60);
    let server = Server::start(&app, &auth);
    // A wrong secret: 3.
    let out = pull(&server.url, &auth, Some("wrong"), &[]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid_client"), "{}", stderr(&out));
    // No secret at all, or a filter the server refuses: 2.
    let out = pull(&server.url, &auth, None, &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = pull(&server.url, &auth, Some(SECRET), &["--filter", "month eq"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // A scope the server does not know grants nothing: 3.
    let out = pull(&server.url, &auth, Some(SECRET), &["--scope", "other:read"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // Nobody listening: 4, after retries.
    let out = pull(
        "http://127.0.0.1:9",
        &auth,
        Some(SECRET),
        &["--retries", "2"],
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
}

#[actix_web::test]
async fn an_interrupted_pull_resumes_without_a_duplicate_or_a_gap() {
    let app = setup().await;
    let auth = AuthServer::start(60);
    let server = Server::start(&app, &auth);
    let proxy = Proxy::start(&server.url);
    proxy.mode(json!({"fail_after": 4}));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("usage.csv");
    let args = ["--output", file.to_str().unwrap()];
    let out = pull(&proxy.url(), &auth, Some(SECRET), &args).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let partial = std::fs::read_to_string(&file).unwrap();
    assert_eq!(partial.lines().count(), 41, "a header and 4 complete pages");
    let before = proxy.requests().len();

    proxy.mode(json!({}));
    let resume = ["--output", file.to_str().unwrap(), "--resume"];
    let out = pull(&proxy.url(), &auth, Some(SECRET), &resume).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("resuming after 40 rows"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        export(&app, "csv").await
    );
    // It went on from page 5: 6 more pages (the last holds 5 rows), none read twice.
    assert_eq!(proxy.requests().len() - before, 6, "{:?}", proxy.requests());
    // A finished pull resumed again does nothing.
    let out = pull(&proxy.url(), &auth, Some(SECRET), &resume).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

#[actix_web::test]
async fn a_pull_whose_data_changes_midway_starts_over_and_writes_one_version() {
    let app = setup().await;
    let auth = AuthServer::start(60);
    let server = Server::start(&app, &auth);
    let proxy = Proxy::start(&server.url);
    proxy.mode(json!({"delay_ms": 300}));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("usage.csv");
    let base = proxy.url();
    let running = {
        let path = file.to_str().unwrap().to_owned();
        let auth_url = auth.token_url();
        std::thread::spawn(move || {
            Command::new(env!("CARGO_BIN_EXE_usage-api"))
                .arg("pull")
                .args(["--url", &base, "--token-url", &auth_url])
                .args(["--client-id", CLIENT_ID, "--per-page", PER_PAGE])
                .args(["--output", &path])
                .env("USAGE_API_CLIENT_SECRET", SECRET)
                .output()
                .unwrap()
        })
    };
    let started = Instant::now();
    while proxy.requests().len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the pull never started"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    // New usage mid-pull; the server's own rollup worker takes it in.
    app.insert(&events("late", 3)).await;
    let out = actix_web::rt::task::spawn_blocking(move || running.join().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("changed during the pull"),
        "{}",
        stderr(&out)
    );
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        written.lines().count(),
        99,
        "all 98 rows of the new version, once each"
    );
    assert_eq!(written, export(&app, "csv").await);
}
