//! The database away, for real: the real binary started before its database can be reached
//! (a loopback port where nothing listens yet, later forwarding to the real Postgres), and
//! stopped with SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::cluster::Cluster;
use crate::support::db::test_database_url;

const DEV_SECRET: &str = "fault-tests-development-secret-0123456789";

/// The test database's URL, parsed.
fn postgres() -> url::Url {
    url::Url::parse(test_database_url()).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Forwards every connection made to `port` to the real Postgres, from when it is started.
async fn forward(port: u16) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let real = postgres();
    let target = format!(
        "{}:{}",
        real.host_str().unwrap(),
        real.port().unwrap_or(5432)
    );
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

/// `GET path` on the server with an optional bearer token: (status, body).
async fn get(base: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = client.get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer = request.send().await.ok()?;
    Some((answer.status().as_u16(), answer.text().await.ok()?))
}

async fn eventually(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[actix_web::test]
async fn serve_started_while_its_database_is_away_becomes_ready_when_it_appears() {
    let db_port = free_port();
    let name = format!("usage_api_late_{}", uuid::Uuid::new_v4().simple());
    let mut late = postgres();
    late.set_host(Some("127.0.0.1")).unwrap();
    late.set_port(Some(db_port)).unwrap();
    late.set_path(&name);
    late.set_query(Some("sslmode=disable"));
    let url = late.to_string();
    let http_port = free_port();
    let server = format!("http://127.0.0.1:{http_port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_usage-api"))
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("USAGE_API_BIND", format!("127.0.0.1:{http_port}"))
        .env("OAUTH_DEV_SECRET", DEV_SECRET)
        .env_remove("OAUTH_JWKS_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("usage-api serve");
    let token = Command::new(env!("CARGO_BIN_EXE_usage-api"))
        .args(["token", "--org", "org-a"])
        .env("OAUTH_DEV_SECRET", DEV_SECRET)
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();

    // Up, but not ready: the probe says why, and the API answers 503 with Retry-After.
    eventually("serve answers", Duration::from_secs(20), async || {
        get(&server, "/health/live", None).await.is_some()
    })
    .await;
    let (status, body) = get(&server, "/health/ready", None).await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"database\":\"unavailable\""), "{body}");
    let (status, body) = get(&server, "/express/usage/month", Some(&token))
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("service_unavailable"), "{body}");

    // The database appears: serve creates its database, migrates it and opens, unrestarted.
    let forwarder = forward(db_port).await;
    eventually("ready", Duration::from_secs(20), async || {
        get(&server, "/health/ready", None).await.map(|a| a.0) == Some(200)
    })
    .await;
    let (status, body) = get(&server, "/express/usage/month", Some(&token))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");

    // SIGTERM: a graceful stop, exit status 0.
    sigterm(&child);
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "never exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    forwarder.abort();
    let mut admin_url = postgres();
    admin_url.set_path("/postgres");
    let mut admin = crate::support::db::connect(admin_url.as_str()).await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")),
        &mut admin,
    )
    .await
    .unwrap();
}

/// Sends `request` to the server, which answers whatever the database does; a 503 must say
/// when to come back.
async fn answered(request: reqwest::RequestBuilder) -> (u16, reqwest::Response) {
    let answer = request
        .send()
        .await
        .expect("the server answers while the database is away");
    let status = answer.status().as_u16();
    if status == 503 {
        assert!(answer.headers().contains_key("retry-after"));
    }
    (status, answer)
}

/// One producer: sends batches of fresh events until `stop`, retrying a batch answered 503
/// (as a client should) until it is answered 200. Returns the ids it sent and every status.
async fn produce(
    base: String,
    token: String,
    producer: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<String>, Vec<u16>) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (mut ids, mut statuses) = (Vec::new(), Vec::new());
    for batch in 0..10_000 {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let events: Vec<serde_json::Value> = (0..5)
            .map(|i| {
                serde_json::json!({
                    "event_id": format!("p{producer}-{batch}-{i}"), "account_id": "a1",
                    "product_id": "P-1", "aggr_product_id": "AP-1", "type": "CALL",
                    "unit": "MINUTES", "description": "call", "wallet_name": "main",
                    "occurred_at": "2026-11-15T10:00:00Z", "quantity": "1",
                    "unit_price": "0.5", "currency": "USD"
                })
            })
            .collect();
        for _ in 0..200 {
            let request = client
                .post(format!("{base}/express/usage/events"))
                .bearer_auth(&token)
                .json(&events);
            let (status, answer) = answered(request).await;
            statuses.push(status);
            if status == 200 {
                let report: serde_json::Value = answer.json().await.unwrap();
                for result in report["results"].as_array().unwrap() {
                    assert!(
                        ["accepted", "duplicate"].contains(&result["status"].as_str().unwrap()),
                        "{result}"
                    );
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ids.extend((0..5).map(|i| format!("p{producer}-{batch}-{i}")));
    }
    (ids, statuses)
}

/// One reader: reads the monthly list until `stop`; every status.
async fn read(
    base: String,
    token: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<u16> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut statuses = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && statuses.len() < 100_000 {
        let request = client
            .get(format!("{base}/express/usage/month"))
            .bearer_auth(&token);
        statuses.push(answered(request).await.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    statuses
}

/// After the database comes back: a read and a write both succeed within 2 s.
async fn recovers(base: &str, token: &str, writer: &str) {
    eventually("reads recover", Duration::from_secs(2), async || {
        get(base, "/express/usage/month", Some(token))
            .await
            .map(|a| a.0)
            == Some(200)
    })
    .await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    eventually("writes recover", Duration::from_secs(2), async || {
        let probe = serde_json::json!([{
            "event_id": format!("probe-{}", uuid::Uuid::new_v4().simple()), "account_id": "a1",
            "product_id": "P-1", "aggr_product_id": "AP-1", "type": "CALL", "unit": "MINUTES",
            "description": "call", "wallet_name": "main", "occurred_at": "2026-11-15T10:00:00Z",
            "quantity": "0", "unit_price": "0.5", "currency": "USD"
        }]);
        let answer = client
            .post(format!("{base}/express/usage/events"))
            .bearer_auth(writer)
            .json(&probe)
            .send()
            .await;
        answer.map(|a| a.status().as_u16()).ok() == Some(200)
    })
    .await;
}

/// The events table's count and Σ quantity of a1's events, read from the cluster.
fn cluster_sql(cluster: &Cluster, sql: &str) -> String {
    let output = Command::new("psql")
        .args(["-X", "-At", &cluster.url("usage_api"), "-c", sql])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[actix_web::test]
async fn restarts_killed_backends_and_an_outage_under_load_lose_nothing_and_count_nothing_twice() {
    let cluster = Cluster::start();
    let server = Serve::start(
        &["serve"],
        &[
            ("DATABASE_URL", &cluster.url("usage_api")),
            ("USAGE_API_ROLLUP_INTERVAL_MS", "200"),
            ("USAGE_API_DB_POOL_SIZE", "4"),
            ("USAGE_API_REQUEST_TIMEOUT_MS", "3000"),
            // The load is one organization's: its limits are tested elsewhere.
            ("USAGE_API_ORG_RATE", "100000"),
            ("USAGE_API_ORG_BURST", "100000"),
            ("USAGE_API_ORG_CONCURRENCY", "1000"),
            ("USAGE_API_ORG_EXECUTING", "1000"),
        ],
    )
    .await;
    let base = server.base.clone();
    cluster_sql(
        &cluster,
        "INSERT INTO organizations (id) VALUES ('org-a'); \
         INSERT INTO accounts (id, organization_id, name) VALUES ('a1', 'org-a', 'A1')",
    );
    let (reader, writer) = tokens();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producers: Vec<_> = (0..3)
        .map(|p| tokio::spawn(produce(base.clone(), writer.clone(), p, stop.clone())))
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(read(base.clone(), reader.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 1. A restart.
    cluster.stop();
    cluster.start_again();
    recovers(&base, &reader, &writer).await;
    // 2. Every backend of the database killed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.terminate_backends("usage_api");
    recovers(&base, &reader, &writer).await;
    // 3. Away for 10 s: not ready meanwhile, back without a restart of serve.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body) = get(&base, "/health/ready", None).await.unwrap();
    assert_eq!(status, 503, "{body}");
    tokio::time::sleep(Duration::from_secs(8)).await;
    cluster.start_again();
    recovers(&base, &reader, &writer).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = Vec::new();
    let mut statuses = Vec::new();
    for producer in producers {
        let (ids, answers) = producer.await.unwrap();
        sent.extend(ids);
        statuses.extend(answers);
    }
    for reader in readers {
        statuses.extend(reader.await.unwrap());
    }
    let odd: Vec<&u16> = statuses
        .iter()
        .filter(|s| ![200, 503].contains(*s))
        .collect();
    assert!(odd.is_empty(), "answers other than 200 and 503: {odd:?}");
    assert!(statuses.contains(&503), "the faults were never seen");
    assert!(sent.len() >= 15, "{} events sent", sent.len());

    // Every event sent was stored exactly once, and the rollup counts each once.
    eventually("rolled up", Duration::from_secs(20), async || {
        cluster_sql(&cluster, "SELECT count(*) FROM rollup_dirty") == "0"
    })
    .await;
    let stored = cluster_sql(
        &cluster,
        "SELECT count(*) || ' ' || count(DISTINCT event_id) FROM usage_events \
         WHERE event_id NOT LIKE 'probe-%'",
    );
    assert_eq!(stored, format!("{0} {0}", sent.len()));
    let units = cluster_sql(
        &cluster,
        "SELECT trim_scale(sum(number_of_units)) FROM usage_monthly",
    );
    assert_eq!(units, sent.len().to_string());
}

/// The real binary serving on a free loopback port with a development secret and `env`, ready;
/// killed when dropped.
struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    async fn start(args: &[&str], env: &[(&str, &str)]) -> Serve {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_usage-api"))
            .args(args)
            .env("USAGE_API_BIND", format!("127.0.0.1:{port}"))
            .env("OAUTH_DEV_SECRET", DEV_SECRET)
            .env_remove("OAUTH_JWKS_URL")
            .env("RUST_LOG", "error")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("usage-api serve");
        let server = Serve {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        eventually("ready", Duration::from_secs(30), async || {
            get(&server.base, "/health/ready", None).await.map(|a| a.0) == Some(200)
        })
        .await;
        server
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Development tokens of org-a: (read, write).
fn tokens() -> (String, String) {
    let mint = |scope: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_usage-api"))
            .args(["token", "--org", "org-a", "--scope", scope])
            .env("OAUTH_DEV_SECRET", DEV_SECRET)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    (
        mint("express-accounts-usage:read"),
        mint("express-accounts-usage:write"),
    )
}

/// The API's monthly list read over HTTP: (Σ number_of_units as text, as_of).
async fn units_and_as_of(base: &str, token: &str) -> (String, String) {
    let (status, body) = get(base, "/express/usage/month", Some(token))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let units: rust_decimal::Decimal = page["_embedded"]["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["number_of_units"]
                .to_string()
                .parse::<rust_decimal::Decimal>()
                .unwrap()
        })
        .sum();
    (
        units.to_string(),
        page["as_of"].as_str().unwrap().to_owned(),
    )
}

/// POSTs one event of `quantity` for a1 and waits until the primary has rolled it up.
async fn send_one(base: &str, writer: &str, primary: &Cluster, id: &str, quantity: &str) {
    let event = serde_json::json!([{
        "event_id": id, "account_id": "a1", "product_id": "P-1", "aggr_product_id": "AP-1",
        "type": "CALL", "unit": "MINUTES", "description": "call", "wallet_name": "main",
        "occurred_at": "2026-11-15T10:00:00Z", "quantity": quantity, "unit_price": "1",
        "currency": "USD"
    }]);
    let answer = reqwest::Client::new()
        .post(format!("{base}/express/usage/events"))
        .bearer_auth(writer)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    eventually(
        "rolled up on the primary",
        Duration::from_secs(10),
        async || cluster_sql(primary, "SELECT count(*) FROM rollup_dirty") == "0",
    )
    .await;
}

#[actix_web::test]
async fn reads_come_from_a_streaming_standby_as_of_its_replay_and_follow_its_promotion() {
    let primary = Cluster::start();
    let migrated = Command::new(env!("CARGO_BIN_EXE_usage-api"))
        .arg("migrate")
        .env("DATABASE_URL", primary.url("usage_api"))
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");
    cluster_sql(
        &primary,
        "INSERT INTO organizations (id) VALUES ('org-a'); \
         INSERT INTO accounts (id, organization_id, name) VALUES ('a1', 'org-a', 'A1')",
    );
    let standby = primary.standby();
    let server = Serve::start(
        &["serve", "--no-migrate"],
        &[
            ("DATABASE_URL", &primary.url("usage_api")),
            ("DATABASE_READ_URL", &standby.url("usage_api")),
            ("USAGE_API_ROLLUP_INTERVAL_MS", "100"),
        ],
    )
    .await;
    let base = server.base.clone();
    let (reader, writer) = tokens();

    // Written to the primary, read from the standby once it has replayed it.
    send_one(&base, &writer, &primary, "e1", "1").await;
    eventually("replayed", Duration::from_secs(10), async || {
        units_and_as_of(&base, &reader).await.0 == "1"
    })
    .await;
    // Replay paused: the primary moves on, the API still answers the standby's state, and its
    // as_of says so (it does not move).
    cluster_sql(&standby, "SELECT pg_wal_replay_pause()");
    let (_, paused_as_of) = units_and_as_of(&base, &reader).await;
    send_one(&base, &writer, &primary, "e2", "2").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        units_and_as_of(&base, &reader).await,
        ("1".to_owned(), paused_as_of.clone()),
        "read from the paused standby, as of its replay"
    );
    cluster_sql(&standby, "SELECT pg_wal_replay_resume()");
    eventually("caught up", Duration::from_secs(10), async || {
        let (units, as_of) = units_and_as_of(&base, &reader).await;
        units == "3" && as_of > paused_as_of
    })
    .await;

    // A failover: the standby is promoted, and the old primary (still serve's primary) takes
    // an event the promoted node never sees. Reads follow the promoted node: its state, then
    // its own new data (the same data version as the old primary's, other content), never a
    // total of the old primary's.
    standby.promote();
    send_one(&base, &writer, &primary, "e3", "4").await;
    let file = tempfile::Builder::new()
        .suffix(".ndjson")
        .tempfile()
        .unwrap();
    std::fs::write(
        file.path(),
        "{\"event_id\": \"e4\", \"account_id\": \"a1\", \"product_id\": \"P-1\", \
         \"aggr_product_id\": \"AP-1\", \"type\": \"CALL\", \"unit\": \"MINUTES\", \
         \"description\": \"call\", \"wallet_name\": \"main\", \
         \"occurred_at\": \"2026-11-15T11:00:00Z\", \"quantity\": \"8\", \
         \"unit_price\": \"1\", \"currency\": \"USD\"}\n",
    )
    .unwrap();
    assert_eq!(units_and_as_of(&base, &reader).await.0, "3");
    for args in [
        vec!["ingest", file.path().to_str().unwrap()],
        vec!["rollup"],
    ] {
        let done = Command::new(env!("CARGO_BIN_EXE_usage-api"))
            .args(&args)
            .env("DATABASE_URL", standby.url("usage_api"))
            .output()
            .unwrap();
        assert!(done.status.success(), "{args:?}: {done:?}");
    }
    assert_eq!(
        cluster_sql(&primary, "SELECT sum(number_of_units) FROM usage_monthly"),
        "7"
    );
    eventually(
        "the promoted node's own data",
        Duration::from_secs(10),
        async || units_and_as_of(&base, &reader).await.0 == "11",
    )
    .await;
}
