//! Daily aggregates by category (migration 5): the rollup keeps `usage_daily`, the
//! organization-wide `usage_daily_totals` and `usage_monthly_totals` (migration 6) exactly
//! equal to an independent sum of the events —
//! default and explicit categories, UTC day boundaries, voids, late events, an account that
//! moves — and a full rebuild leaves them identical. Events name categories over HTTP and in
//! files; an unknown one rejects that event alone.

use std::collections::BTreeMap;

use diesel::sql_types::{BigInt, Date, Text};
use diesel::QueryableByName;
use rust_decimal::Decimal;
use serde_json::json;
use usage_api::usage::model::{Category, Direction, Unit, UsageType};
use usage_api::usage::write::event::NewEvent;

use crate::support::data::{at, category_of, dec, event};
use crate::support::TestApp;

/// (organization, account, day, category, currency, unit) → (count, Σ quantity, Σ amount).
type Days = BTreeMap<(String, String, String, String, String, String), (i64, Decimal, Decimal)>;

/// The oracle: the days of `events` (each with its organization), voided (organization, id)s
/// left out.
fn expected(events: &[(&str, NewEvent)], voided: &[(&str, &str)]) -> Days {
    let mut days = Days::new();
    for (org, e) in events {
        if voided.contains(&(*org, e.event_id.as_str())) {
            continue;
        }
        let category = category_of(e).to_owned();
        let key = (
            (*org).to_owned(),
            e.account_id.to_string(),
            e.occurred_at.date_naive().to_string(),
            category,
            e.currency.clone(),
            e.unit.as_str().to_owned(),
        );
        let slot = days.entry(key).or_insert((0, Decimal::ZERO, Decimal::ZERO));
        slot.0 += 1;
        slot.1 += e.quantity;
        slot.2 += e.quantity * e.unit_price;
    }
    days
}

/// The oracle's days summed over accounts (the account part of the key left empty).
fn summed(days: &Days) -> Days {
    summed_by(days, |day| day.to_owned())
}

/// The oracle's days summed over accounts and months (the day part of the key the month's
/// first day).
fn summed_monthly(days: &Days) -> Days {
    summed_by(days, |day| format!("{}-01", &day[..7]))
}

fn summed_by(days: &Days, period: impl Fn(&str) -> String) -> Days {
    let mut totals = Days::new();
    for ((org, _, day, category, currency, unit), (n, q, a)) in days {
        let key = (
            org.clone(),
            String::new(),
            period(day),
            category.clone(),
            currency.clone(),
            unit.clone(),
        );
        let slot = totals
            .entry(key)
            .or_insert((0, Decimal::ZERO, Decimal::ZERO));
        slot.0 += n;
        slot.1 += q;
        slot.2 += a;
    }
    totals
}

#[derive(QueryableByName)]
struct DayRow {
    #[diesel(sql_type = Text)]
    organization_id: String,
    #[diesel(sql_type = Text)]
    account_id: String,
    #[diesel(sql_type = Date)]
    day: chrono::NaiveDate,
    #[diesel(sql_type = Text)]
    category: String,
    #[diesel(sql_type = Text)]
    currency: String,
    #[diesel(sql_type = Text)]
    unit: String,
    #[diesel(sql_type = BigInt)]
    event_count: i64,
    #[diesel(sql_type = Text)]
    quantity: String,
    #[diesel(sql_type = Text)]
    amount: String,
}

async fn load(app: &TestApp, sql: &str) -> Days {
    use diesel_async::RunQueryDsl;
    let rows: Vec<DayRow> = diesel::sql_query(sql)
        .load(&mut app.conn().await)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
    rows.into_iter()
        .map(|r| {
            (
                (
                    r.organization_id,
                    r.account_id,
                    r.day.to_string(),
                    r.category,
                    r.currency,
                    r.unit,
                ),
                (r.event_count, dec(&r.quantity), dec(&r.amount)),
            )
        })
        .collect()
}

/// What the rollup wrote: per account, organization-wide per day and per month (rows with
/// events only).
async fn stored(app: &TestApp) -> (Days, Days, Days) {
    let days = load(
        app,
        "SELECT organization_id, account_id, day, category, currency, unit, event_count, \
         quantity::text AS quantity, amount::text AS amount FROM usage_daily",
    )
    .await;
    let totals = load(
        app,
        "SELECT organization_id, '' AS account_id, day, category, currency, unit, event_count, \
         quantity::text AS quantity, amount::text AS amount FROM usage_daily_totals \
         WHERE event_count > 0",
    )
    .await;
    let months = load(
        app,
        "SELECT organization_id, '' AS account_id, month AS day, category, currency, unit, \
         event_count, quantity::text AS quantity, amount::text AS amount \
         FROM usage_monthly_totals WHERE event_count > 0",
    )
    .await;
    (days, totals, months)
}

/// Events around UTC day, month and year boundaries, of several types and directions, with
/// explicit categories, two currencies and two units, exact decimals.
fn mixed(prefix: &str, account: &str, count: u32) -> Vec<NewEvent> {
    let times = [
        "2023-12-31T23:59:59.999999Z",
        "2024-01-01T00:00:00Z",
        "2024-01-31T23:59:59.999999Z",
        "2024-02-01T00:00:00.000001Z",
        "2024-02-29T12:00:00Z",
        "2024-02-29T23:59:59Z",
    ];
    (0..count)
        .map(|n| {
            let mut e = event(&format!("{prefix}-{n}"), account);
            e.occurred_at = at(times[n as usize % times.len()]);
            e.usage_type = [UsageType::Call, UsageType::Message, UsageType::Number][n as usize % 3];
            e.direction = [
                Some(Direction::Inbound),
                Some(Direction::Outbound),
                None,
                Some(Direction::Other),
            ][n as usize % 4];
            e.category = match n % 7 {
                0 => Some(Category::CallsSip),
                1 => Some(Category::PhonenumbersPurchase),
                _ => None,
            };
            e.currency = ["USD", "EUR"][(n / 5) as usize % 2].to_owned();
            e.unit = [Unit::Minutes, Unit::Segments][(n / 3) as usize % 2];
            e.quantity = dec(&format!("{}.{:04}", n % 13, (n * 37) % 10_000));
            e.unit_price = dec(["0.0085", "1.5", "0.000001", "0"][n as usize % 4]);
            e
        })
        .collect()
}

async fn assert_exact(app: &TestApp, events: &[(&str, NewEvent)], voided: &[(&str, &str)]) {
    let want = expected(events, voided);
    let (days, totals, months) = stored(app).await;
    assert_eq!(days, want, "usage_daily");
    assert_eq!(totals, summed(&want), "usage_daily_totals");
    assert_eq!(months, summed_monthly(&want), "usage_monthly_totals");
}

#[actix_web::test]
async fn daily_aggregates_equal_an_independent_sum_through_voids_late_events_and_a_full_rebuild() {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a"), ("a2", "org-a"), ("b1", "org-b")])
        .await;
    let mut events: Vec<(&str, NewEvent)> = Vec::new();
    for (org, account, prefix) in [
        ("org-a", "a1", "x"),
        ("org-a", "a2", "y"),
        ("org-b", "b1", "x"),
    ] {
        for e in mixed(prefix, account, 60) {
            events.push((org, e));
        }
    }
    let batch: Vec<NewEvent> = events.iter().map(|(_, e)| e.clone()).collect();
    app.insert(&batch).await;
    app.rollup().await;
    assert_exact(&app, &events, &[]).await;

    // Voids (over HTTP, for org-a) and a late event in an already rolled-up day.
    let replies = app
        .send_events(
            "org-a",
            json!([{"event_id": "v1", "voids": "x-3"}, {"event_id": "v2", "voids": "y-10"}]),
        )
        .await;
    assert!(
        replies.iter().all(|(status, _)| status == "accepted"),
        "{replies:?}"
    );
    let mut late = event("late-1", "a1");
    late.occurred_at = at("2024-01-01T00:00:00Z");
    late.quantity = dec("0.333333333333");
    late.unit_price = dec("3");
    app.insert(std::slice::from_ref(&late)).await;
    events.push(("org-a", late));
    app.rollup().await;
    // org-b's x-3 is its own event: voiding org-a's leaves it counted.
    assert_exact(&app, &events, &[("org-a", "x-3"), ("org-a", "y-10")]).await;

    // A full rebuild changes nothing and leaves no empty organization-wide day or month.
    let before = stored(&app).await;
    let stats = app.rollup_full().await;
    assert_eq!(stats.days_changed, 0, "the rebuild rewrote days");
    assert_eq!(stored(&app).await, before);
    for table in ["usage_daily_totals", "usage_monthly_totals"] {
        assert_eq!(
            app.count(&format!(
                "SELECT count(*) FROM {table} WHERE event_count = 0"
            ))
            .await,
            0,
            "{table}"
        );
    }
}

#[actix_web::test]
async fn a_rebuild_repairs_damaged_days_and_an_account_that_moves_takes_its_days_along() {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a"), ("a2", "org-a")]).await;
    let mut events: Vec<(&str, NewEvent)> = Vec::new();
    for (account, prefix) in [("a1", "p"), ("a2", "q")] {
        for e in mixed(prefix, account, 30) {
            events.push(("org-a", e));
        }
    }
    let batch: Vec<NewEvent> = events.iter().map(|(_, e)| e.clone()).collect();
    app.insert(&batch).await;
    app.rollup().await;
    assert_exact(&app, &events, &[]).await;

    // a2 moves to org-b: its days leave org-a at once, and the rollup writes them under org-b.
    app.accounts(&[("a2", "org-b")]).await;
    assert_eq!(
        app.count("SELECT count(*) FROM usage_daily WHERE account_id = 'a2'")
            .await,
        0
    );
    app.rollup().await;
    for (org, e) in &mut events {
        if e.account_id == "a2" {
            *org = "org-b";
        }
    }
    assert_exact(&app, &events, &[]).await;

    // Damage both tables; the full rebuild puts every row back.
    app.execute(
        "UPDATE usage_daily SET amount = amount + 1 WHERE account_id = 'a1'; \
         DELETE FROM usage_daily_totals WHERE organization_id = 'org-b'; \
         INSERT INTO usage_daily_totals VALUES ('org-x', '2024-01-01', 'calls', 'USD', 'MINUTES', 1, 1, 1); \
         UPDATE usage_monthly_totals SET quantity = 0 WHERE organization_id = 'org-a'; \
         INSERT INTO usage_monthly_totals VALUES ('org-x', '2024-01-01', 'calls', 'USD', 'MINUTES', 1, 1, 1)",
    )
    .await;
    app.rollup_full().await;
    assert_exact(&app, &events, &[]).await;
}

#[actix_web::test]
async fn events_name_their_category_over_http_and_in_files_and_an_unknown_one_is_rejected_alone() {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a")]).await;
    let base = json!({"account_id": "a1", "product_id": "p", "aggr_product_id": "ap",
        "type": "CALL", "unit": "MINUTES", "occurred_at": "2024-03-01T10:00:00Z",
        "quantity": "2", "unit_price": "0.5", "currency": "USD"});
    let with = |id: &str, category: Option<&str>| {
        let mut e = base.clone();
        e["event_id"] = json!(id);
        if let Some(c) = category {
            e["category"] = json!(c);
        }
        e
    };
    let replies = app
        .send_events(
            "org-a",
            json!([
                with("h1", Some("calls-sip")),
                with("h2", Some("calls-bogus")),
                with("h3", Some("totalprice")),
                with("h4", None),
                with("h5", Some("CALLS")),
            ]),
        )
        .await;
    let statuses: Vec<&str> = replies.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        statuses,
        ["accepted", "rejected", "rejected", "accepted", "rejected"]
    );
    let reason = replies[1].1.as_deref().unwrap();
    assert!(
        reason.starts_with("category 'calls-bogus' is not one of calls, calls-inbound"),
        "{reason}"
    );

    // A CSV file with a category column (empty: the default).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.csv");
    std::fs::write(
        &path,
        "event_id,account_id,product_id,aggr_product_id,type,unit,occurred_at,quantity,unit_price,currency,category\n\
         f1,a1,p,ap,MESSAGE,SEGMENTS,2024-03-01T11:00:00Z,3,0.01,USD,sms-outbound-longcode\n\
         f2,a1,p,ap,MESSAGE,SEGMENTS,2024-03-01T11:00:00Z,1,0.01,USD,\n\
         f3,a1,p,ap,MESSAGE,SEGMENTS,2024-03-01T11:00:00Z,1,0.01,USD,sms-nowhere\n",
    )
    .unwrap();
    let output = app.run(&["ingest", path.to_str().unwrap()], None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 4: category 'sms-nowhere' is not one of"),
        "{stderr}"
    );
    app.rollup().await;
    let categories = load(
        &app,
        "SELECT organization_id, account_id, day, category, currency, unit, event_count, \
         quantity::text AS quantity, amount::text AS amount FROM usage_daily ORDER BY category",
    )
    .await;
    let found: Vec<(&str, i64, String)> = categories
        .iter()
        .map(|(k, v)| (k.3.as_str(), v.0, v.2.to_string()))
        .collect();
    assert_eq!(
        found,
        [
            ("calls", 1, "1".to_owned()),
            ("calls-sip", 1, "1".to_owned()),
            ("sms", 1, "0.01".to_owned()),
            ("sms-outbound-longcode", 1, "0.03".to_owned()),
        ]
    );
}

#[actix_web::test]
async fn the_catalogue_is_served_in_order_and_matches_the_slugs_events_may_name() {
    let app = TestApp::spawn().await;
    let reply = app
        .get(
            "/express/usage/categories",
            &crate::support::tokens::token("org-a"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let listed = reply.body["_embedded"]["categories"].as_array().unwrap();
    assert_eq!(reply.body["count"], listed.len());
    let slugs: Vec<&str> = listed.iter().map(|c| c["slug"].as_str().unwrap()).collect();
    let mut named: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
    named.push("totalprice");
    assert_eq!(slugs, named, "the catalogue and the Category type disagree");
    assert_eq!(
        listed[1],
        json!({"slug": "calls-inbound", "parent": "calls",
               "description": "Inbound voice calls", "count_unit": "calls"})
    );
    assert_eq!(listed.last().unwrap()["count_unit"], "");
    // Descendants: calls has every calls-* category below it, grandchildren included.
    assert_eq!(
        app.count(
            "SELECT count(*) FROM usage_category_tree WHERE ancestor = 'calls' \
             AND descendant LIKE 'calls%'"
        )
        .await,
        7
    );
}
