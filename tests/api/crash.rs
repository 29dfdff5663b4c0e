//! Crash safety, for real: the binary is killed with SIGKILL in the middle of an ingest and in
//! the middle of a rollup, run again, and the totals must then be exact — nothing lost, nothing
//! counted twice.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use rust_decimal::Decimal;

use crate::support::TestApp;

const EVENTS: u64 = 200_000;

fn spawn(app: &TestApp, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_usage-api"))
        .args(args)
        .env("DATABASE_URL", &app.db.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> String {
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "nothing rejected: {stderr}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[derive(diesel::QueryableByName, Debug, PartialEq)]
struct Totals {
    #[diesel(sql_type = BigInt)]
    rows: i64,
    #[diesel(sql_type = Text)]
    units: String,
    #[diesel(sql_type = Text)]
    amount: String,
}

async fn scalar(app: &TestApp, sql: &str) -> i64 {
    app.count(sql).await
}

async fn totals(app: &TestApp) -> Totals {
    diesel::sql_query(
        "SELECT count(*) AS rows, coalesce(sum(number_of_units), 0)::text AS units, \
         coalesce(sum(total_amount), 0)::text AS amount FROM usage_monthly",
    )
    .get_result(&mut app.conn().await)
    .await
    .unwrap()
}

/// Kills `child` with SIGKILL as soon as `ready` holds (checked every 20 ms), asserting it was
/// still running then.
async fn kill_when(child: &mut Child, what: &str, mut ready: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !ready().await {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            panic!("{what} finished ({status}) before it could be killed: {stderr}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} never got going"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[actix_web::test]
async fn killed_mid_ingest_and_mid_rollup_a_rerun_gives_exact_totals() {
    let app = TestApp::spawn().await;
    let accounts: Vec<(String, &str)> = (0..40).map(|n| (format!("acc-{n:02}"), "org-a")).collect();
    let pairs: Vec<(&str, &str)> = accounts.iter().map(|(a, o)| (a.as_str(), *o)).collect();
    app.accounts(&pairs).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let (mut units, mut amount) = (Decimal::ZERO, Decimal::ZERO);
    for n in 0..EVENTS {
        let quantity = Decimal::new((n * 7919 % 100_000) as i64, 3);
        let price = Decimal::new([85, 140, 1, 2500][(n % 4) as usize], 4);
        units += quantity;
        amount += quantity * price;
        writeln!(
            file,
            r#"{{"event_id":"ev-{n}","account_id":"acc-{:02}","product_id":"P-{}","aggr_product_id":"AP","type":"CALL","unit":"MINUTES","occurred_at":"2023-{:02}-{:02}T{:02}:{:02}:00Z","quantity":"{quantity}","unit_price":"{price}","currency":"USD"}}"#,
            n % 40,
            n % 3,
            1 + n % 12,
            1 + n % 28,
            n % 24,
            n % 60
        )
        .unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let path = path.to_str().unwrap();

    // 1. Kill the ingester once its first batch has committed.
    let mut ingest = spawn(&app, &["ingest", path]);
    kill_when(&mut ingest, "ingest", async || {
        scalar(&app, "SELECT count(*) AS n FROM usage_event_ids").await > 0
    })
    .await;
    let committed = scalar(&app, "SELECT count(*) AS n FROM usage_events").await as u64;
    assert!(
        committed > 0 && committed < EVENTS,
        "killed mid-file: {committed} of {EVENTS}"
    );
    assert_eq!(committed % 50_000, 0, "whole batches or nothing");

    // Running it again finishes the job: what was committed is a duplicate, nothing twice.
    let rerun = finish(spawn(&app, &["ingest", path]));
    assert_eq!(
        rerun,
        format!(
            "accepted: {}, duplicate: {committed}, rejected: 0",
            EVENTS - committed
        )
    );
    assert_eq!(
        scalar(&app, "SELECT count(*) AS n FROM usage_events").await as u64,
        EVENTS
    );

    // 2. Kill a full rollup while its big statement runs.
    let mut rollup = spawn(&app, &["rollup", "--full"]);
    kill_when(&mut rollup, "rollup", async || {
        scalar(&app, "SELECT count(*) AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE '-- The rollup: recompute%' AND pid <> pg_backend_pid()").await > 0
    })
    .await;
    // Postgres notices the dead client and rolls the transaction back.
    let started = Instant::now();
    while scalar(&app, "SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE '-- The rollup: recompute%' AND pid <> pg_backend_pid()").await > 0 {
        assert!(started.elapsed() < Duration::from_secs(60));
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        totals(&app).await.rows,
        0,
        "nothing of the killed rollup is visible"
    );
    assert!(
        scalar(&app, "SELECT count(*) AS n FROM rollup_dirty").await > 0,
        "the marks wait for the next run"
    );

    // 3. The next run does the whole job, exactly.
    let done = finish(spawn(&app, &["rollup"]));
    assert!(done.starts_with("aggregates: 120,"), "{done}"); // (n % 40, n % 12, n % 3) takes lcm(40, 12, 3) = 120 values
    let got = totals(&app).await;
    assert_eq!(got.rows, 120);
    assert_eq!(got.units.parse::<Decimal>().unwrap(), units);
    assert_eq!(got.amount.parse::<Decimal>().unwrap(), amount);
    assert_eq!(
        scalar(&app, "SELECT count(*) AS n FROM rollup_dirty").await,
        0
    );
    // And a full rebuild agrees to the digit.
    assert_eq!(
        finish(spawn(&app, &["rollup", "--full"])),
        "aggregates: 120, changed: 0, removed: 0"
    );
}
