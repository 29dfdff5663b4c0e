//! Migrations 4 and 6 on existing data, and the database errors the write path must tell apart by
//! SQLSTATE (deadlocks and timeouts are races and outages, not bugs).

use diesel::result::{DatabaseErrorKind, Error};
use diesel::Connection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::MigrationHarness;

use crate::support::tokens::token;
use crate::support::TestApp;

/// Runs `count` migrations on `url` (one by one, on a thread of its own as the harness needs).
fn migrate_some(url: &str, count: usize) {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut conn =
            <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(&url).unwrap();
        for _ in 0..count {
            conn.run_next_migration(usage_api::db::migrate::MIGRATIONS)
                .unwrap();
        }
    })
    .join()
    .unwrap();
}

/// A new, empty schema beside the app's (named after it, with `suffix`): its name, a database
/// URL that works in it, and a connection to drop it with afterwards.
async fn schema_beside(app: &TestApp, suffix: &str) -> (String, String, AsyncPgConnection) {
    let schema = format!("{}_{suffix}", app.db.schema());
    let url = app.db.url.replace(
        &format!("search_path%3D{}", app.db.schema()),
        &format!("search_path%3D{schema}"),
    );
    let mut admin = app.conn().await;
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    (schema, url, admin)
}

#[actix_web::test]
async fn existing_events_ids_voids_and_marks_take_their_accounts_organization() {
    // A fresh schema, migrated only up to the global ledger (migrations 1 to 3)…
    let app = TestApp::spawn().await;
    let (schema, url, mut admin) = schema_beside(&app, "old").await;
    migrate_some(&url, 3);
    let mut old = crate::support::db::connect(&url).await;
    // …with data in the old shape: one event id used once, a void, a pending mark.
    old.batch_execute(
        "INSERT INTO organizations (id) VALUES ('org-a'), ('org-b');
         INSERT INTO accounts (id, organization_id) VALUES ('a1', 'org-a'), ('b1', 'org-b');
         SELECT usage_events_ensure_partition('2023-08-01');
         INSERT INTO usage_events (event_id, account_id, product_id, aggr_product_id,
                usage_type, description, currency, unit, unit_price, wallet_name, quantity,
                occurred_at)
           VALUES ('e1', 'a1', 'P', 'AP', 'CALL', '', 'USD', 'MINUTES', 2, '', 5,
                   '2023-08-02T00:00:00Z'),
                  ('e2', 'b1', 'P', 'AP', 'CALL', '', 'USD', 'MINUTES', 2, '', 7,
                   '2023-08-02T00:00:00Z');
         INSERT INTO usage_event_ids (event_id, account_id, occurred_at)
           VALUES ('e1', 'a1', '2023-08-02T00:00:00Z'), ('e2', 'b1', '2023-08-02T00:00:00Z'),
                  ('v1', 'b1', '2023-08-02T00:00:00Z');
         INSERT INTO usage_voids (event_id, voided_event_id, account_id, month)
           VALUES ('v1', 'e2', 'b1', '2023-08-01');
         INSERT INTO rollup_dirty (account_id, month, organization_id)
           VALUES ('a1', '2023-08-01', 'org-a'), ('b1', '2023-08-01', 'org-b');",
    )
    .await
    .unwrap();
    // Then the rest: migration 4 carries every row over to its account's organization.
    usage_api::db::migrate::run(&url).await.unwrap();
    let count = |query: &str| {
        let url = url.clone();
        let query = query.to_owned();
        async move {
            let client = usage_api::db::connect::client(&url).await.unwrap();
            client
                .query_one(&query, &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(
        count(
            "SELECT count(*) FROM usage_events WHERE (organization_id, event_id) IN \
               (('org-a', 'e1'), ('org-b', 'e2'))"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM usage_event_ids WHERE (organization_id, event_id) IN \
               (('org-a', 'e1'), ('org-b', 'e2'), ('org-b', 'v1'))"
        )
        .await,
        3
    );
    assert_eq!(
        count("SELECT count(*) FROM usage_voids WHERE organization_id = 'org-b'").await,
        1
    );
    assert_eq!(count("SELECT count(*) FROM rollup_dirty").await, 2);
    // The rollup then counts each organization's events, the void still applied.
    let mut conn = crate::support::db::connect(&url).await;
    usage_api::usage::rollup::run_until_clean(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        count(
            "SELECT count(*) FROM usage_monthly WHERE organization_id = 'org-a' \
               AND total_amount = 10"
        )
        .await,
        1
    );
    assert_eq!(
        count("SELECT count(*) FROM usage_monthly WHERE organization_id = 'org-b'").await,
        0,
        "e2 was voided"
    );
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    // (And the app's own schema, migrated whole, still serves.)
    assert_eq!(
        app.get("/express/usage/month", &token("org-a"))
            .await
            .status,
        200
    );
}

#[actix_web::test]
async fn migration_6_sums_the_existing_days_into_organization_months() {
    let app = TestApp::spawn().await;
    let (schema, url, mut admin) = schema_beside(&app, "m6").await;
    migrate_some(&url, 5);
    let mut old = crate::support::db::connect(&url).await;
    // Days as migration 5's rollup leaves them: a month boundary, two currencies, a day whose
    // events were all voided (zero), scales that differ.
    old.batch_execute(
        "INSERT INTO usage_daily_totals
           (organization_id, day, category, currency, unit, event_count, quantity, amount)
         VALUES ('org-a', '2024-01-01', 'calls', 'USD', 'MINUTES', 2, 1.50, 0.10),
                ('org-a', '2024-01-31', 'calls', 'USD', 'MINUTES', 1, 2.5, 0.20),
                ('org-a', '2024-02-01', 'calls', 'USD', 'MINUTES', 4, 1, 1),
                ('org-a', '2024-01-15', 'calls', 'EUR', 'MINUTES', 1, 3, 3),
                ('org-a', '2024-01-16', 'sms', 'USD', 'SEGMENTS', 0, 0, 0),
                ('org-b', '2024-01-02', 'calls', 'USD', 'MINUTES', 7, 7, 7);",
    )
    .await
    .unwrap();
    usage_api::db::migrate::run(&url).await.unwrap();
    let client = usage_api::db::connect::client(&url).await.unwrap();
    let rows: Vec<String> = client
        .query(
            "SELECT concat_ws(' ', organization_id, month, category, currency, unit, \
                    event_count, quantity, amount) \
             FROM usage_monthly_totals ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        rows,
        [
            "org-a 2024-01-01 calls EUR MINUTES 1 3 3",
            "org-a 2024-01-01 calls USD MINUTES 3 4 0.3",
            "org-a 2024-02-01 calls USD MINUTES 4 1 1",
            "org-b 2024-01-01 calls USD MINUTES 7 7 7",
        ]
    );
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

#[actix_web::test]
async fn deadlocks_are_races_and_timeouts_are_outages() {
    let app = TestApp::spawn().await;
    app.conn()
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)")
        .await
        .unwrap();
    // Two transactions taking two rows in opposite orders: Postgres aborts one (40P01).
    let (mut one, mut two) = (app.conn().await, app.conn().await);
    one.batch_execute("BEGIN; UPDATE t SET id = id WHERE id = 1")
        .await
        .unwrap();
    two.batch_execute("BEGIN; UPDATE t SET id = id WHERE id = 2")
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        one.batch_execute("UPDATE t SET id = id WHERE id = 2"),
        two.batch_execute("UPDATE t SET id = id WHERE id = 1"),
    );
    let lost = a
        .err()
        .or(b.err())
        .expect("one of them is the deadlock's victim");
    assert!(
        matches!(
            lost,
            Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _)
        ),
        "{lost:?}"
    );
    assert!(usage_api::error::is_race(&lost));
    let answer = usage_api::error::ApiError::from(lost);
    assert_eq!(answer.code(), "conflict");

    // A statement timeout (57014) is the database not serving now: 503, not 500.
    let mut slow = app.conn().await;
    let timeout = slow
        .batch_execute("SET statement_timeout = 50; SELECT pg_sleep(2)")
        .await
        .unwrap_err();
    let answer = usage_api::error::ApiError::from(timeout);
    assert_eq!(answer.code(), "service_unavailable");
}
