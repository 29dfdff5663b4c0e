//! Per-organization limits and the request deadline: one tenant cannot starve the others, and
//! a request past its deadline stops its database work (a real lock on the real Postgres holds
//! the slow requests; pg_stat_activity shows whether their statements still wait).

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use diesel_async::{AsyncPgConnection, RunQueryDsl};
use usage_api::auth::admission::Limits;

use crate::support::tokens::token;
use crate::support::{Options, TestApp};

const LIST: &str = "/express/usage/month";
const CATEGORIES: &str = "/express/usage/categories";

/// Holds an exclusive lock on the test schema's monthly table from a connection of its own, so
/// that every read of it waits; dropped (or `release`d), the reads go on.
struct Blocker {
    conn: AsyncPgConnection,
}

impl Blocker {
    async fn hold(app: &TestApp) -> Blocker {
        let mut conn = app.conn().await;
        diesel::sql_query("BEGIN").execute(&mut conn).await.unwrap();
        diesel::sql_query("LOCK TABLE usage_monthly IN ACCESS EXCLUSIVE MODE")
            .execute(&mut conn)
            .await
            .unwrap();
        Blocker { conn }
    }

    async fn release(mut self) {
        diesel::sql_query("ROLLBACK")
            .execute(&mut self.conn)
            .await
            .unwrap();
    }
}

/// The server's statements that wait for a lock now (its connections are named after the
/// test's schema).
async fn waiting(app: &TestApp) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let count: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE application_name = current_setting('application_name') \
           AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
    )
    .get_result(&mut app.conn().await)
    .await
    .unwrap();
    count.n
}

async fn wait_for_waiting(app: &TestApp, n: i64, within: Duration) {
    let started = Instant::now();
    while waiting(app).await != n {
        assert!(
            started.elapsed() < within,
            "not {n} waiting within {within:?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn past_its_rate_an_organization_gets_429_with_when_to_come_back() {
    let app = TestApp::spawn_with(Options {
        limits: Limits::new(1, 3, 100),
        ..Options::default()
    })
    .await;
    let org_a = token("org-a");
    for _ in 0..3 {
        assert_eq!(app.get(CATEGORIES, &org_a).await.status, 200);
    }
    let refused = app.get(CATEGORIES, &org_a).await;
    assert_eq!(
        (refused.status, refused.code()),
        (429, "rate_limited"),
        "{}",
        refused.body
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.header("ratelimit-limit"), Some("3"));
    assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
    assert_eq!(refused.header("ratelimit-reset"), Some("1"));
    assert!(refused.body["description"]
        .as_str()
        .unwrap()
        .contains("rate"));
    // Another organization has its own bucket; a token that is not valid is not counted.
    assert_eq!(app.get(CATEGORIES, &token("org-b")).await.status, 200);
    assert_eq!(app.get(CATEGORIES, "not-a-token").await.status, 401);
    // A second later the bucket holds one request again.
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.get(CATEGORIES, &org_a).await.status, 200);
    assert_eq!(app.get(CATEGORIES, &org_a).await.status, 429);
}

#[actix_web::test]
async fn requests_in_flight_are_limited_per_organization_not_across_them() {
    let app = TestApp::spawn_with(Options {
        limits: Limits::new(1000, 1000, 1),
        ..Options::default()
    })
    .await;
    let blocker = Blocker::hold(&app).await;
    let held = {
        let (client, url, org_a) = (
            app.client.clone(),
            format!("{}{LIST}", app.address),
            token("org-a"),
        );
        actix_web::rt::spawn(
            async move { client.get(url).bearer_auth(org_a).send().await.unwrap() },
        )
    };
    wait_for_waiting(&app, 1, Duration::from_secs(10)).await;
    // org-a has its one request in flight: the next is turned away at once.
    let refused = app.get(CATEGORIES, &token("org-a")).await;
    assert_eq!((refused.status, refused.code()), (429, "rate_limited"));
    assert_eq!(refused.header("ratelimit-limit"), Some("1"));
    assert!(refused.body["description"]
        .as_str()
        .unwrap()
        .contains("in flight"));
    // org-b is not held up by org-a.
    assert_eq!(app.get(CATEGORIES, &token("org-b")).await.status, 200);
    blocker.release().await;
    assert_eq!(held.await.unwrap().status(), 200);
    // Answered, its place is free again.
    assert_eq!(app.get(CATEGORIES, &token("org-a")).await.status, 200);
}

/// Sends a GET of `path` with `token` on a task of its own; its status when awaited.
fn spawn_get(app: &TestApp, path: &str, token: String) -> actix_web::rt::task::JoinHandle<u16> {
    let (client, url) = (app.client.clone(), format!("{}{path}", app.address));
    actix_web::rt::spawn(async move {
        client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

#[actix_web::test]
async fn an_organizations_requests_run_in_turns_and_a_long_wait_is_refused() {
    let app = TestApp::spawn_with(Options {
        limits: Limits {
            executing: NonZeroU32::new(1).unwrap(),
            turn_wait: Duration::from_millis(1500),
            ..Limits::new(1000, 1000, 8)
        },
        ..Options::default()
    })
    .await;
    let blocker = Blocker::hold(&app).await;
    let first = spawn_get(&app, LIST, token("org-a"));
    wait_for_waiting(&app, 1, Duration::from_secs(10)).await;
    // org-a's second request is admitted but waits for its turn: it never reaches the
    // database while the first runs.
    let started = Instant::now();
    let second = spawn_get(&app, LIST, token("org-a"));
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        waiting(&app).await,
        1,
        "org-a's second request ran beside its first"
    );
    // org-b's request runs at once.
    let other = spawn_get(&app, LIST, token("org-b"));
    wait_for_waiting(&app, 2, Duration::from_secs(10)).await;
    // Past the wait for a turn, the second is refused rather than run too late to answer.
    let refused = second.await.unwrap();
    let waited = started.elapsed();
    assert_eq!(refused, 429);
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let refused = app.get(LIST, &token("org-a")).await;
    assert_eq!((refused.status, refused.code()), (429, "rate_limited"));
    assert_eq!(refused.header("ratelimit-limit"), Some("1"));
    assert!(refused.header("retry-after").is_some());
    assert!(
        refused.body["description"]
            .as_str()
            .unwrap()
            .contains("1 at a time"),
        "{}",
        refused.body
    );
    // One that waits while the first is released gets its turn and its answer.
    let third = spawn_get(&app, LIST, token("org-a"));
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(waiting(&app).await, 2);
    blocker.release().await;
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(other.await.unwrap(), 200);
    assert_eq!(third.await.unwrap(), 200);
}

#[actix_web::test]
async fn past_its_deadline_a_request_is_a_503_and_its_statement_is_cancelled() {
    let app = TestApp::spawn_with(Options {
        request_timeout: Duration::from_millis(700),
        ..Options::default()
    })
    .await;
    let blocker = Blocker::hold(&app).await;
    let started = Instant::now();
    let late = app.get(LIST, &token("org-a")).await;
    let took = started.elapsed();
    assert_eq!(
        (late.status, late.code()),
        (503, "service_unavailable"),
        "{}",
        late.body
    );
    assert!(late.header("retry-after").is_some());
    assert!(
        late.body["description"]
            .as_str()
            .unwrap()
            .contains("deadline (700 ms)"),
        "{}",
        late.body
    );
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // The lock is still held, yet the statement no longer waits for it: it was cancelled, not
    // left to run until the statement timeout (10 s) with no one to read its answer.
    wait_for_waiting(&app, 0, Duration::from_secs(1)).await;
    blocker.release().await;
    // The connection it used serves the next request.
    assert_eq!(app.get(LIST, &token("org-a")).await.status, 200);
}

#[actix_web::test]
async fn a_read_whose_client_went_away_has_its_statement_cancelled() {
    let app = TestApp::spawn().await; // a deadline of 30 s: only the departure can stop it
    let blocker = Blocker::hold(&app).await;
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let request = impatient
        .get(format!("{}{LIST}", app.address))
        .bearer_auth(token("org-a"))
        .send();
    let gave_up = actix_web::rt::spawn(request);
    wait_for_waiting(&app, 1, Duration::from_secs(10)).await;
    assert!(
        gave_up.await.unwrap().is_err(),
        "the read was held by the lock"
    );
    // The client is gone (its connection closed); the lock is still held, yet the statement no
    // longer waits: cancelled within a second, not left for the deadline.
    wait_for_waiting(&app, 0, Duration::from_secs(1)).await;
    blocker.release().await;
    assert_eq!(app.get(LIST, &token("org-a")).await.status, 200);
}

/// The server's connections start no parallel workers unless told to: one request's query is
/// one backend, so an organization's heavy reads take at most its concurrency's worth of cores.
#[actix_web::test]
async fn server_connections_run_each_query_in_one_backend_unless_configured() {
    use usage_api::db::{pool, PoolOptions};

    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        workers: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        timeout: String,
    }
    let db = crate::support::db::TestDb::new().await;
    for (workers, want) in [(None, "0"), (Some(3), "3")] {
        let mut options = PoolOptions {
            max_size: 1,
            statement_timeout: Duration::from_millis(4321),
            ..PoolOptions::default()
        };
        if let Some(workers) = workers {
            options.parallel_workers = workers;
        }
        let pool = pool::build(&db.url, &options).unwrap();
        let mut conn = pool.get().await.unwrap();
        let setting: Setting = diesel::sql_query(
            "SELECT current_setting('max_parallel_workers_per_gather') AS workers, \
                    current_setting('statement_timeout') AS timeout",
        )
        .get_result(&mut conn)
        .await
        .unwrap();
        assert_eq!(setting.workers, want);
        assert_eq!(setting.timeout, "4321ms");
    }
}

/// A request's deadline cancels the statements of the connections it holds, never one it gave
/// back to the pool: by then that connection may run another request's statement (seen under
/// load as other organizations' requests failing: `bench/load.sh`).
#[actix_web::test]
async fn a_deadline_never_cancels_a_connection_its_request_gave_back() {
    use std::sync::Arc;
    use usage_api::db::cancel::{Canceller, Checkout, Checkouts, CHECKOUTS};
    use usage_api::db::{pool, PoolOptions};

    let db = crate::support::db::TestDb::new().await;
    let pool = pool::build(
        &db.url,
        &PoolOptions {
            max_size: 1,
            ..PoolOptions::default()
        },
    )
    .unwrap();
    let canceller = Canceller::new(&db.url).unwrap();
    let checkout = |checkouts: Arc<Checkouts>| {
        let (pool, canceller) = (pool.clone(), canceller.clone());
        CHECKOUTS.scope(checkouts, async move {
            Checkout::register(pool.get().await.unwrap(), Some(&canceller))
        })
    };
    // The first request uses the pool's one connection, and gives it back.
    let first = Arc::new(Checkouts::default());
    let conn = checkout(first.clone()).await;
    assert_eq!(first.len(), 1);
    drop(conn);
    assert!(
        first.is_empty(),
        "a connection given back is still the request's"
    );
    // The second request runs a statement on that same connection while the first one's
    // deadline passes: the statement is not the first request's to cancel.
    let second = Arc::new(Checkouts::default());
    let mut conn = checkout(second.clone()).await;
    let after = |ms| actix_web::rt::time::sleep(Duration::from_millis(ms));
    let (slept, ()) = tokio::join!(
        diesel::sql_query("SELECT pg_sleep(0.6)").execute(&mut *conn),
        async {
            after(150).await;
            first.cancel_all().await;
        }
    );
    assert!(
        slept.is_ok(),
        "another request's statement was cancelled: {slept:?}"
    );
    // The second request's own deadline stops it.
    let started = Instant::now();
    let (slept, ()) = tokio::join!(
        diesel::sql_query("SELECT pg_sleep(5)").execute(&mut *conn),
        async {
            after(150).await;
            second.cancel_all().await;
        }
    );
    let err = slept.unwrap_err().to_string();
    assert!(err.contains("canceling statement"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A connection that was sent a cancel is closed when given back, never handed out again: a
    // cancel Postgres gets to late could stop its next statement, another request's.
    let cancelled = backend(&mut conn).await;
    drop(conn);
    let mut next = checkout(Arc::new(Checkouts::default())).await;
    assert_ne!(backend(&mut next).await, cancelled);
    drop(next);
    // One that was not is reused.
    let mut again = checkout(Arc::new(Checkouts::default())).await;
    let kept = backend(&mut again).await;
    drop(again);
    let mut same = checkout(Arc::new(Checkouts::default())).await;
    assert_eq!(backend(&mut same).await, kept);
}

/// The backend process of `conn`.
async fn backend(conn: &mut AsyncPgConnection) -> i32 {
    #[derive(diesel::QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let row: Pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result(conn)
        .await
        .unwrap();
    row.pid
}
