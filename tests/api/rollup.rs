//! The incremental rollup: only dirty groups are recomputed, late events re-roll their month,
//! concurrent workers never double-count, a full rebuild gives identical rows and ids, the
//! server's worker makes new events visible on its own, and `as_of` tells how fresh a page is.

use std::time::Duration;

use serde_json::Value;
use usage_api::usage::rollup;
use usage_api::usage::write::event::NewEvent;

use crate::support::data::{at, dec, event};
use crate::support::tokens::token;
use crate::support::{Options, TestApp};

/// Events over 3 accounts × 4 products × 6 months (independent dimensions: 72 groups once
/// there are at least 72 events), each product with its own price.
fn spread(prefix: &str, count: u32) -> Vec<NewEvent> {
    (0..count)
        .map(|n| {
            let product = (n / 3) % 4;
            let mut e = event(
                &format!("{prefix}-{n}"),
                ["a1", "a2", "a3"][(n % 3) as usize],
            );
            e.product_id = format!("P-{product}");
            e.occurred_at = at(&format!(
                "2023-{:02}-{:02}T{:02}:00:00Z",
                1 + (n / 12) % 6,
                1 + n % 27,
                n % 24
            ));
            e.quantity = dec(&format!("{}.{:03}", n % 50, n % 997));
            e.unit_price = dec(["0.01", "0.0085", "2", "0.5"][product as usize]);
            e
        })
        .collect()
}

async fn all_rows(app: &TestApp) -> Vec<Value> {
    let reply = app
        .get(
            "/express/usage/month?per_page=250&order_by=id",
            &token("org-a"),
        )
        .await;
    assert_eq!(reply.status, 200);
    reply.body["_embedded"]["usage"].as_array().unwrap().clone()
}

async fn org_a() -> TestApp {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a"), ("a2", "org-a"), ("a3", "org-a")])
        .await;
    app
}

/// `usage-api rollup` takes the set-based pass when most groups are dirty (a bulk load), and
/// batches when few are; either way the rows and ids are the same.
#[actix_web::test]
async fn a_sized_run_chooses_the_set_based_pass_only_when_most_groups_are_dirty() {
    use usage_api::usage::rollup::{run_sized, Strategy};

    let app = org_a().await;
    app.insert(&spread("first", 300)).await;
    // 72 dirty groups, none rolled up yet: the set-based pass (with the threshold lowered to
    // this test's size), and a second run finds nothing to do.
    let (strategy, stats) = run_sized(&mut app.conn().await, 10).await.unwrap();
    assert_eq!(strategy, Strategy::SetBased);
    assert_eq!(stats.groups, 72);
    let first = all_rows(&app).await;
    assert_eq!(app.count("SELECT count(*) FROM rollup_dirty").await, 0);
    // A few late events for one account: too few marks, then fewer than half the groups.
    let mut late = spread("late", 12);
    for e in &mut late {
        e.account_id = "a1".into();
    }
    app.insert(&late).await;
    let dirty = app.count("SELECT count(*) FROM rollup_dirty").await;
    assert!(dirty > 0 && dirty * 2 < 18, "{dirty} dirty groups of 18");
    let (strategy, _) = run_sized(&mut app.conn().await, dirty + 1).await.unwrap();
    assert_eq!(
        strategy,
        Strategy::Incremental,
        "fewer marks than the threshold"
    );
    app.insert(
        &spread("later", 12)
            .into_iter()
            .map(|mut e| {
                e.account_id = "a1".into();
                e
            })
            .collect::<Vec<_>>(),
    )
    .await;
    let (strategy, _) = run_sized(&mut app.conn().await, 1).await.unwrap();
    assert_eq!(strategy, Strategy::Incremental, "most groups are clean");
    let incremental = all_rows(&app).await;
    let full = app.rollup_full().await;
    assert_eq!((full.changed, full.removed), (0, 0));
    assert_eq!(all_rows(&app).await, incremental);
    assert!(incremental.len() >= first.len());
}

#[actix_web::test]
async fn incremental_runs_and_a_full_rebuild_give_identical_rows_and_ids() {
    let app = org_a().await;
    app.insert(&spread("first", 300)).await;
    let stats = app.rollup().await;
    assert_eq!(stats.groups, 72, "3 accounts × 6 months × 4 products");
    // A second wave touching some groups again, plus late events for old months.
    let mut second = spread("second", 120);
    for e in second.iter_mut().step_by(5) {
        e.occurred_at = at("2022-12-31T23:59:59Z");
    }
    app.insert(&second).await;
    let stats = app.rollup().await;
    assert!(
        stats.groups > 0 && stats.groups < 90,
        "only dirty groups: {stats:?}"
    );
    let incremental = all_rows(&app).await;
    let full = app.rollup_full().await;
    assert_eq!(full.changed, 0, "the full rebuild finds nothing to change");
    assert_eq!(full.removed, 0);
    assert_eq!(all_rows(&app).await, incremental);
}

/// Every daily aggregate and organization total, as text, in key order.
async fn daily_rows(app: &TestApp) -> String {
    #[derive(diesel::QueryableByName)]
    struct Rows {
        #[diesel(sql_type = diesel::sql_types::Text)]
        rows: String,
    }
    let sql = "SELECT concat_ws(E'\\n',
        (SELECT string_agg(concat_ws('|', organization_id, account_id, day, category, currency,
                                     unit, event_count, quantity, amount), E'\\n'
                           ORDER BY organization_id, account_id, day, category, currency, unit)
           FROM usage_daily),
        (SELECT string_agg(concat_ws('|', organization_id, day, category, currency, unit,
                                     event_count, quantity, amount), E'\\n'
                           ORDER BY organization_id, day, category, currency, unit)
           FROM usage_daily_totals WHERE event_count <> 0),
        (SELECT string_agg(concat_ws('|', organization_id, month, category, currency, unit,
                                     event_count, quantity, amount), E'\\n'
                           ORDER BY organization_id, month, category, currency, unit)
           FROM usage_monthly_totals WHERE event_count <> 0)) AS rows";
    let rows: Rows =
        diesel_async::RunQueryDsl::get_result(diesel::sql_query(sql), &mut app.conn().await)
            .await
            .unwrap();
    rows.rows
}

/// A full pass hashes its groups when events share them and sorts the events when each is its
/// own group (the planner cannot tell): both give the incremental rollup's rows and ids.
#[actix_web::test]
async fn a_full_pass_groups_by_hash_or_sort_as_events_share_groups_with_identical_rows() {
    use rollup::{grouping, Grouping};

    for (count, expected) in [(300, Grouping::Hashed), (60, Grouping::Sorted)] {
        let app = org_a().await;
        app.insert(&spread("e", count)).await;
        assert_eq!(
            grouping(&mut app.conn().await).await.unwrap(),
            expected,
            "{count} events"
        );
        app.rollup().await;
        let (monthly, daily) = (all_rows(&app).await, daily_rows(&app).await);
        assert!(!daily.is_empty());
        app.execute(
            "TRUNCATE usage_monthly, usage_daily, usage_daily_totals, usage_monthly_totals",
        )
        .await;
        let stats = app.rollup_full().await;
        assert_eq!(stats.changed, monthly.len() as i64, "{count} events");
        assert_eq!(all_rows(&app).await, monthly, "{count} events");
        assert_eq!(daily_rows(&app).await, daily, "{count} events");
    }
}

#[actix_web::test]
async fn a_late_event_re_rolls_its_month_only() {
    let app = org_a().await;
    app.insert(&spread("base", 60)).await;
    app.rollup().await;
    let before = all_rows(&app).await;
    let mut late = event("late-1", "a1");
    late.product_id = "P-0".into();
    late.occurred_at = at("2023-01-31T23:59:59.999999Z");
    late.quantity = dec("1000");
    late.unit_price = dec("0.01");
    app.insert(&[late]).await;
    let stats = app.rollup().await;
    let in_that_month = before
        .iter()
        .filter(|r| r["account_id"] == "a1" && r["month"] == "2023-01")
        .count();
    assert_eq!(in_that_month, 4);
    assert_eq!(
        stats.groups, 4,
        "only (a1, 2023-01) was recomputed: its 4 groups"
    );
    assert_eq!(stats.changed, 1, "of which one changed");
    let after = all_rows(&app).await;
    let changed: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
    assert_eq!(changed.len(), 1);
    let (old, new) = changed[0];
    assert_eq!(old["id"], new["id"]);
    assert_eq!(
        (new["account_id"].as_str(), new["month"].as_str()),
        (Some("a1"), Some("2023-01"))
    );
}

#[actix_web::test]
async fn concurrent_workers_and_ingest_never_double_count() {
    let app = org_a().await;
    let events = spread("c", 600);
    // Four ingest batches and three rollup workers, all at once.
    let ingest = events.chunks(150).map(|chunk| {
        let chunk = chunk.to_vec();
        let url = app.db.url.clone();
        async move {
            let mut conn = crate::support::db::connect(&url).await;
            usage_api::usage::write::store::insert_events(&mut conn, &chunk)
                .await
                .unwrap();
        }
    });
    let workers = (0..3).map(|_| {
        let url = app.db.url.clone();
        async move {
            let mut conn = crate::support::db::connect(&url).await;
            for _ in 0..20 {
                rollup::run_pending(&mut conn, 7).await.unwrap();
            }
        }
    });
    futures_join(ingest.collect(), workers.collect()).await;
    app.rollup().await; // whatever the workers left
    let incremental = all_rows(&app).await;
    app.rollup_full().await;
    assert_eq!(
        all_rows(&app).await,
        incremental,
        "equal to a rebuild from scratch"
    );
    let units: rust_decimal::Decimal = incremental
        .iter()
        .map(|r| {
            r["number_of_units"]
                .to_string()
                .parse::<rust_decimal::Decimal>()
                .unwrap()
        })
        .sum();
    let expected: rust_decimal::Decimal = events.iter().map(|e| e.quantity).sum();
    assert_eq!(units, expected);
}

/// Runs every future at once on this test's runtime and waits for all of them.
async fn futures_join(
    a: Vec<impl std::future::Future<Output = ()> + 'static>,
    b: Vec<impl std::future::Future<Output = ()> + 'static>,
) {
    let mut handles: Vec<_> = a.into_iter().map(actix_web::rt::spawn).collect();
    handles.extend(b.into_iter().map(actix_web::rt::spawn));
    for handle in handles {
        handle.await.unwrap();
    }
}

#[actix_web::test]
async fn the_servers_worker_makes_new_events_visible_within_a_second() {
    let app = TestApp::spawn_with(Options {
        rollup_interval: Some(Duration::from_millis(100)),
        ..Options::default()
    })
    .await;
    app.accounts(&[("a1", "org-a")]).await;
    app.insert(&[event("e1", "a1")]).await;
    let started = std::time::Instant::now();
    loop {
        let reply = app.get("/express/usage/month", &token("org-a")).await;
        if reply.body["total"] == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "not rolled up: {}",
            reply.body
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[actix_web::test]
async fn as_of_tells_up_to_when_events_are_included() {
    let app = org_a().await;
    let before_ingest = chrono::Utc::now();
    app.insert(&[event("e1", "a1")]).await;
    let stale = app.get("/express/usage/month", &token("org-a")).await;
    let as_of =
        chrono::DateTime::parse_from_rfc3339(stale.body["as_of"].as_str().unwrap()).unwrap();
    assert_eq!(stale.body["total"], 0, "not rolled up yet");
    assert!(
        as_of <= chrono::Utc::now() && as_of >= before_ingest - chrono::Duration::seconds(5),
        "{as_of}"
    );
    // Another organization has nothing pending: its as_of is the time of the read.
    let other = app.get("/express/usage/month", &token("org-b")).await;
    let other_as_of =
        chrono::DateTime::parse_from_rfc3339(other.body["as_of"].as_str().unwrap()).unwrap();
    assert!(other_as_of > as_of);

    app.rollup().await;
    let read_at = chrono::Utc::now();
    let fresh = app.get("/express/usage/month", &token("org-a")).await;
    assert_eq!(fresh.body["total"], 1);
    let fresh_as_of =
        chrono::DateTime::parse_from_rfc3339(fresh.body["as_of"].as_str().unwrap()).unwrap();
    assert!(
        fresh_as_of >= read_at - chrono::Duration::seconds(1),
        "{fresh_as_of} vs {read_at}"
    );
}

#[actix_web::test]
async fn events_land_in_monthly_partitions_created_on_demand() {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let app = org_a().await;
    app.insert(&spread("p", 72)).await;
    let mut conn = app.conn().await;
    let partitions: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'usage_events'::regclass",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(partitions.n, 6, "one per month, 2023-01 to 2023-06");
    let in_march: Count = diesel::sql_query("SELECT count(*) AS n FROM usage_events_2023_03")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(in_march.n, 12);
}

/// A connection in a transaction that holds the monthly table: a rollup that reaches it waits,
/// as a long one would be at work, until the transaction is rolled back.
async fn hold_monthly_table(app: &TestApp) -> diesel_async::AsyncPgConnection {
    use diesel_async::RunQueryDsl;
    let mut blocker = app.conn().await;
    diesel::sql_query("BEGIN")
        .execute(&mut blocker)
        .await
        .unwrap();
    diesel::sql_query("LOCK TABLE usage_monthly IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    blocker
}

/// A rollup at work (held up here by a lock on the monthly table, as a long one would be)
/// never makes an ingest of the same (account, month) wait, and the ingest's mark outlives it.
#[actix_web::test]
async fn an_ingest_never_waits_for_a_rollup_at_work_and_its_mark_outlives_it() {
    use diesel_async::RunQueryDsl;
    for full in [false, true] {
        let app = org_a().await;
        app.insert(&[event("first", "a1")]).await;
        let mut blocker = hold_monthly_table(&app).await;
        let url = app.db.url.clone();
        let rolling = actix_web::rt::spawn(async move {
            let mut conn = crate::support::db::connect(&url).await;
            if full {
                rollup::run_full(&mut conn).await.unwrap();
            } else {
                rollup::run_pending(&mut conn, 100).await.unwrap();
            }
        });
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !rolling.is_finished(),
            "the rollup is at work, held by the lock"
        );
        // The same account and month: answered at once, while the rollup still works.
        let started = std::time::Instant::now();
        let mut second = event("second", "a1");
        second.quantity = dec("2");
        let answered = tokio::time::timeout(Duration::from_secs(1), app.insert(&[second])).await;
        assert!(
            answered.is_ok(),
            "full={full}: the ingest waited for the rollup"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        diesel::sql_query("ROLLBACK")
            .execute(&mut blocker)
            .await
            .unwrap();
        rolling.await.unwrap();
        // The rollup's snapshot may have missed "second": its mark stayed for the next run.
        app.rollup().await;
        let rows = all_rows(&app).await;
        assert_eq!(rows.len(), 1, "full={full}: {rows:?}");
        assert_eq!(
            rows[0]["number_of_units"], 3,
            "full={full}: both events, once each"
        );
        assert_eq!(app.count("SELECT count(*) FROM rollup_dirty").await, 0);
    }
}

/// A worker whose claim ran out and was taken over rolls back instead of writing over the
/// newer worker's result; nothing is lost and nothing counted twice.
#[actix_web::test]
async fn a_worker_that_lost_its_claim_rolls_back() {
    use diesel_async::RunQueryDsl;
    let app = org_a().await;
    app.insert(&[event("first", "a1")]).await;
    let mut blocker = hold_monthly_table(&app).await;
    let worker = |url: String| {
        actix_web::rt::spawn(async move {
            let mut conn = crate::support::db::connect(&url).await;
            rollup::run_pending(&mut conn, 100).await.unwrap()
        })
    };
    let slow = worker(app.db.url.clone());
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    // Its claim runs out (as after a minute of work); another worker takes the mark over.
    TestApp::execute(
        &app,
        "UPDATE rollup_dirty SET leased_until = now() - interval '1 second'",
    )
    .await;
    let mut second = event("second", "a1");
    second.quantity = dec("2");
    app.insert(&[second]).await;
    let newer = worker(app.db.url.clone());
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    diesel::sql_query("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();
    let (slow, newer) = (slow.await.unwrap(), newer.await.unwrap());
    assert_eq!(slow.0, 0, "the slow worker rolled back: {slow:?}");
    assert_eq!(newer.0, 1, "{newer:?}");
    app.rollup().await;
    let rows = all_rows(&app).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["number_of_units"], 3);
    assert_eq!(app.count("SELECT count(*) FROM rollup_dirty").await, 0);
}
