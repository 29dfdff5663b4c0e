//! Raw usage records (`GET /express/usage/events`, DESIGN §2c): a walk through `next` visits
//! every event of the organization once, in order, equal to an independent computation, and
//! `prev` walks back; every filter; voids hidden and shown; exports (CSV parsed back with a real
//! CSV parser, NDJSON, gzip) equal the pages; a client that goes away stops the database work.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use usage_api::usage::model::{Category, Direction, Resolution, UsageType};
use usage_api::usage::write::event::NewEvent;

use crate::support::data::{at, category_of, csv_table, dec, event};
use crate::support::tokens::token;
use crate::support::{TestApp, PUBLIC_URL};

/// Events with every kind of value: ties on `occurred_at`, UTC day edges, explicit categories,
/// descriptions that need CSV quoting and unicode, exact decimals.
fn events(prefix: &str, accounts: &[&str], count: usize) -> Vec<NewEvent> {
    let descriptions = [
        "Inbound call",
        "say \"hello\", then hang up",
        "two\nlines",
        "unicode ✓ 日本語 — ok",
        "comma, only",
    ];
    (0..count)
        .map(|n| {
            let mut e = event(&format!("{prefix}-{n:03}"), accounts[n % accounts.len()]);
            // Three events share each instant (ties are broken by event_id).
            let minute = (n / 3) as i64;
            e.occurred_at = at("2024-01-30T23:00:00Z") + chrono::Duration::minutes(minute * 37);
            e.usage_type = [UsageType::Call, UsageType::Message, UsageType::Number][n % 3];
            e.direction = [Some(Direction::Inbound), Some(Direction::Outbound), None][n % 3];
            e.resolution = [Some(Resolution::Answered), None][n % 2];
            e.category = (n % 7 == 0).then_some(Category::CallsSip);
            e.description = descriptions[n % descriptions.len()].to_owned();
            e.quantity = dec(&format!("{}.{:03}", n % 11, (n * 37) % 1000));
            e.unit_price = dec(["0.0085", "1.50", "0.000001", "0"][n % 4]);
            e.currency = ["USD", "EUR"][n % 2].to_owned();
            e
        })
        .collect()
}

/// The oracle's order: newest first, then event_id descending (bytewise).
fn newest_first(mut events: Vec<NewEvent>) -> Vec<NewEvent> {
    events.sort_by(|a, b| {
        (b.occurred_at, b.event_id.as_bytes()).cmp(&(a.occurred_at, a.event_id.as_bytes()))
    });
    events
}

fn text(d: Decimal) -> String {
    d.normalize().to_string()
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// What the API must show of `e` (everything but `ingested_at`), as the CSV writes it.
fn expected_row(e: &NewEvent, voided_by: Option<&str>) -> Vec<String> {
    vec![
        e.event_id.clone(),
        e.account_id.to_string(),
        category_of(e).to_owned(),
        e.product_id.clone(),
        e.aggr_product_id.clone(),
        e.usage_type.as_str().to_owned(),
        e.description.clone(),
        e.direction.map_or("", |d| d.as_str()).to_owned(),
        e.resolution.map_or("", |r| r.as_str()).to_owned(),
        e.unit.as_str().to_owned(),
        text(e.quantity),
        text(e.unit_price),
        text(e.quantity * e.unit_price),
        e.currency.clone(),
        e.wallet_name.clone(),
        time(e.occurred_at),
        voided_by.unwrap_or("").to_owned(),
    ]
}

/// A JSON event as the same row (numbers taken from the body's text, never through f64).
fn json_row(event: &Value, exact: &str) -> Vec<String> {
    let s = |name: &str| event[name].as_str().unwrap_or("").to_owned();
    let id = s("event_id");
    // The three numbers, exactly as sent, follow `unit` in the body.
    let key = format!("\"unit\":\"{}\",\"quantity\":", s("unit"));
    let from = exact
        .find(&format!("\"event_id\":{}", json!(id)))
        .unwrap_or_else(|| panic!("{id} not in the body"));
    let rest = &exact[from..];
    let numbers = &rest[rest.find(&key).unwrap() + key.len() - "\"quantity\":".len()..];
    let number = |name: &str| -> String {
        let at = numbers.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
        numbers[at..].split([',', '}']).next().unwrap().to_owned()
    };
    vec![
        id,
        s("account_id"),
        s("category"),
        s("product_id"),
        s("aggr_product_id"),
        s("type"),
        s("description"),
        s("direction"),
        s("resolution"),
        s("unit"),
        number("quantity"),
        number("unit_price"),
        number("amount"),
        s("currency"),
        s("wallet_name"),
        s("occurred_at"),
        s("voided_by"),
    ]
}

/// Every page of `path` through `next`: the rows in order and the pages.
async fn walk(app: &TestApp, path: &str, org: &str) -> (Vec<Vec<String>>, Vec<Value>) {
    let mut rows = Vec::new();
    let mut pages = Vec::new();
    let mut reply = app.get(path, &token(org)).await;
    for _ in 0..200 {
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        let events = reply.body["_embedded"]["events"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(reply.body["count"], events.len());
        rows.extend(events.iter().map(|e| json_row(e, &reply.text)));
        pages.push(reply.body.clone());
        match reply.body["_links"]["next"]["href"].as_str() {
            Some(next) => reply = app.follow(next, &token(org)).await,
            None => return (rows, pages),
        }
    }
    panic!("more than 200 pages");
}

struct Setup {
    app: TestApp,
    /// org-a's events, newest first.
    org_a: Vec<NewEvent>,
}

async fn setup() -> Setup {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a"), ("a2", "org-a"), ("b1", "org-b")])
        .await;
    let org_a = events("e", &["a1", "a2"], 60);
    // org-b uses the same event ids: none of its events may show to org-a.
    let org_b = events("e", &["b1"], 20);
    app.insert(&org_a).await;
    app.insert(&org_b).await;
    Setup {
        app,
        org_a: newest_first(org_a),
    }
}

#[actix_web::test]
async fn a_walk_through_next_visits_every_event_once_in_order_and_prev_walks_back() {
    let Setup { app, org_a } = setup().await;
    let want: Vec<Vec<String>> = org_a.iter().map(|e| expected_row(e, None)).collect();
    let (got, pages) = walk(&app, "/express/usage/events?per_page=7", "org-a").await;
    assert_eq!(got, want);
    assert_eq!(pages.len(), 9);
    let first = &pages[0];
    assert!(first["_links"].get("prev").is_none());
    assert!(pages.last().unwrap()["_links"].get("next").is_none());
    assert_eq!(
        first["_links"]["first"]["href"],
        format!("{PUBLIC_URL}/express/usage/events?per_page=7")
    );
    // `as_of` is the organization's freshness, the same on every page while nothing changes.
    for page in &pages {
        assert_eq!(page["per_page"], 7);
        assert!(page["as_of"].as_str().unwrap().ends_with('Z'));
        assert_eq!(page["as_of"], first["as_of"]);
    }
    // Back from the last page through `prev`: the same pages, in reverse.
    let mut page = pages.last().unwrap().clone();
    for want in pages.iter().rev().skip(1) {
        let prev = page["_links"]["prev"]["href"].as_str().unwrap().to_owned();
        let reply = app.follow(&prev, &token("org-a")).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["_embedded"], want["_embedded"]);
        page = reply.body;
    }
    assert!(
        page["_links"].get("prev").is_none(),
        "back at the first page"
    );
    // An event ingested later shows on page 1, not between the pages already walked.
    let mut late = event("z-late", "a1");
    late.occurred_at = at("2030-01-01T00:00:00Z");
    app.insert(&[late]).await;
    let reply = app
        .get("/express/usage/events?per_page=1", &token("org-a"))
        .await;
    assert_eq!(reply.body["_embedded"]["events"][0]["event_id"], "z-late");
    // Once rolled up, the change shows in `as_of` too (a pull of the events starts over on it).
    app.rollup().await;
    let reply = app
        .get("/express/usage/events?per_page=1", &token("org-a"))
        .await;
    assert_ne!(reply.body["as_of"], first["as_of"]);
}

/// Which events of the oracle a filter keeps.
type Keep = Box<dyn Fn(&NewEvent) -> bool>;

#[actix_web::test]
async fn every_filter_matches_the_oracle_and_voids_are_hidden_or_shown() {
    let Setup { app, org_a } = setup().await;
    let replies = app
        .send_events(
            "org-a",
            json!([{"event_id": "v1", "voids": "e-004"}, {"event_id": "v2", "voids": "e-031"}]),
        )
        .await;
    assert!(replies.iter().all(|(s, _)| s == "accepted"), "{replies:?}");
    let voided = |e: &NewEvent| match e.event_id.as_str() {
        "e-004" => Some("v1"),
        "e-031" => Some("v2"),
        _ => None,
    };
    let cases: Vec<(&str, Keep)> = vec![
        ("", Box::new(|_| true)),
        ("account_id=a2", Box::new(|e| e.account_id == "a2")),
        (
            "category=calls",
            Box::new(|e| category_of(e).starts_with("calls")),
        ),
        (
            "category=calls-sip",
            Box::new(|e| category_of(e) == "calls-sip"),
        ),
        ("category=totalprice", Box::new(|_| true)),
        (
            "type=MESSAGE",
            Box::new(|e| e.usage_type == UsageType::Message),
        ),
        (
            "start_date=2024-01-31&end_date=2024-01-31",
            Box::new(|e| e.occurred_at.date_naive().to_string() == "2024-01-31"),
        ),
        (
            "start_date=2024-01-31&type=CALL&account_id=a1",
            Box::new(|e| {
                e.occurred_at >= at("2024-01-31T00:00:00Z")
                    && e.usage_type == UsageType::Call
                    && e.account_id == "a1"
            }),
        ),
    ];
    for (filters, keep) in &cases {
        for include_voided in [false, true] {
            let want: Vec<Vec<String>> = org_a
                .iter()
                .filter(|e| keep(e) && (include_voided || voided(e).is_none()))
                .map(|e| expected_row(e, voided(e)))
                .collect();
            let path = format!(
                "/express/usage/events?{filters}&include_voided={include_voided}&per_page=9"
            );
            let (got, _) = walk(&app, &path, "org-a").await;
            assert_eq!(got, want, "{path}");
        }
    }
    // Another organization's account is forbidden, and an unknown one.
    for account in ["b1", "nobody"] {
        let reply = app
            .get(
                &format!("/express/usage/events?account_id={account}"),
                &token("org-a"),
            )
            .await;
        assert_eq!(reply.status, 403);
        assert_eq!(reply.code(), "forbidden_accounts");
    }
    // org-b sees its own 20 events only.
    let (got, _) = walk(&app, "/express/usage/events?per_page=1000", "org-b").await;
    assert_eq!(got.len(), 20);
    assert!(got.iter().all(|row| row[1] == "b1"));
}

#[actix_web::test]
async fn bad_parameters_are_all_named_and_cursors_are_bound_to_their_query() {
    let Setup { app, .. } = setup().await;
    let reply = app
        .get(
            "/express/usage/events?per_page=0&type=BOGUS&category=nope&start_date=2024-13-01\
             &include_voided=maybe&format=xml&end_date=-x",
            &token("org-a"),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.field_names(),
        [
            "category",
            "type",
            "start_date",
            "end_date",
            "include_voided",
            "per_page",
            "format"
        ]
    );
    let reply = app
        .get(
            "/express/usage/events?start_date=2024-02-02&end_date=2024-02-01",
            &token("org-a"),
        )
        .await;
    assert_eq!(reply.field_names(), ["start_date"]);

    let page = app
        .get(
            "/express/usage/events?per_page=5&type=CALL",
            &token("org-a"),
        )
        .await;
    let next = page.body["_links"]["next"]["href"].as_str().unwrap();
    let cursor = next.split("cursor=").nth(1).unwrap();
    // The same cursor with another filter, page size or organization, or altered: a 400.
    for (path, org) in [
        (
            format!("/express/usage/events?per_page=5&type=MESSAGE&cursor={cursor}"),
            "org-a",
        ),
        (
            format!("/express/usage/events?per_page=6&type=CALL&cursor={cursor}"),
            "org-a",
        ),
        (
            format!("/express/usage/events?per_page=5&type=CALL&cursor={cursor}"),
            "org-b",
        ),
        (
            format!("/express/usage/events?per_page=5&type=CALL&cursor=A{cursor}"),
            "org-a",
        ),
    ] {
        let reply = app.get(&path, &token(org)).await;
        assert_eq!(reply.status, 400, "{path}");
        assert_eq!(reply.field_names(), ["cursor"], "{path}");
    }
    // Without the read scope: 403.
    let reply = app
        .get(
            "/express/usage/events",
            &crate::support::tokens::writer("org-a"),
        )
        .await;
    assert_eq!(reply.status, 403);
}

#[actix_web::test]
async fn exports_hold_the_whole_result_as_csv_and_ndjson_gzip_or_not() {
    let Setup { app, org_a } = setup().await;
    let want: Vec<Vec<String>> = org_a
        .iter()
        .filter(|e| e.account_id == "a1")
        .map(|e| expected_row(e, None))
        .collect();
    let (paged, _) = walk(
        &app,
        "/express/usage/events?account_id=a1&per_page=4",
        "org-a",
    )
    .await;
    assert_eq!(paged, want);

    for (path, headers, gzip) in [
        (
            "/express/usage/events?account_id=a1&format=csv",
            vec![],
            false,
        ),
        (
            "/express/usage/events?account_id=a1&per_page=2",
            vec![("Accept", "text/csv")],
            false,
        ),
        (
            "/express/usage/events?account_id=a1&format=csv",
            vec![("Accept-Encoding", "gzip")],
            true,
        ),
    ] {
        let response = app.download(path, "org-a", &headers).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(response.headers["content-type"], "text/csv; charset=utf-8");
        assert_eq!(
            response.headers["content-disposition"],
            "attachment; filename=\"usage-events.csv\""
        );
        assert_eq!(response.gzipped, gzip, "{path}");
        let body = response.body;
        let (header, mut rows) = csv_table(&body);
        assert_eq!(header.len(), 18);
        assert_eq!(header[0], "event_id");
        assert_eq!(header[16], "ingested_at");
        for row in &mut rows {
            row.remove(16); // ingested_at: not part of the oracle
        }
        assert_eq!(rows, want, "{path}");
    }

    for (path, headers, gzip) in [
        (
            "/express/usage/events?account_id=a1&format=ndjson",
            vec![],
            false,
        ),
        (
            "/express/usage/events?account_id=a1",
            vec![
                ("Accept", "application/x-ndjson"),
                ("Accept-Encoding", "br, gzip;q=0.5"),
            ],
            true,
        ),
    ] {
        let response = app.download(path, "org-a", &headers).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(response.headers["content-type"], "application/x-ndjson");
        assert_eq!(response.gzipped, gzip, "{path}");
        let body = response.body;
        let rows: Vec<Vec<String>> = body
            .lines()
            .map(|line| json_row(&serde_json::from_str(line).unwrap(), line))
            .collect();
        assert_eq!(rows, want, "{path}");
    }
    // format=json wins over Accept; the 403 rule holds for exports too.
    let response = app
        .download(
            "/express/usage/events?format=json",
            "org-a",
            &[("Accept", "text/csv")],
        )
        .await;
    assert_eq!(response.headers["content-type"], "application/hal+json");
    let response = app
        .download(
            "/express/usage/events?account_id=b1&format=csv",
            "org-a",
            &[],
        )
        .await;
    assert_eq!(response.status, 403);
}

/// Backends of this database still working on (or holding open) an export's cursor.
async fn exporting(app: &TestApp) -> i64 {
    app.count(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND state <> 'idle' AND query LIKE '%usage_api_export%'",
    )
    .await
}

#[actix_web::test]
async fn a_client_that_goes_away_mid_export_stops_the_database_work() {
    // One request of an organization runs at a time: an export gives its turn back once its
    // first rows are read, so a slow reader does not hold the organization's other requests.
    let app = TestApp::spawn_with(crate::support::Options {
        limits: usage_api::auth::admission::Limits {
            executing: std::num::NonZeroU32::MIN,
            turn_wait: std::time::Duration::from_secs(1),
            ..crate::support::Options::default().limits
        },
        ..crate::support::Options::default()
    })
    .await;
    app.accounts(&[("big", "org-big")]).await;
    // 200,000 events straight into the table (the export reads only usage_events).
    app.execute(
        "SELECT usage_events_ensure_partition('2024-03-01');
         INSERT INTO usage_events (event_id, account_id, organization_id, product_id,
                aggr_product_id, usage_type, description, currency, unit, unit_price,
                wallet_name, quantity, occurred_at)
         SELECT 'big-' || n, 'big', 'org-big', 'P', 'AP', 'CALL', repeat('x', 200), 'USD',
                'MINUTES', 0.5, 'w', n, timestamptz '2024-03-01' + n * interval '1 second'
         FROM generate_series(1, 200000) n",
    )
    .await;
    let mut response = app
        .client
        .get(format!(
            "{}/express/usage/events?format=ndjson",
            app.address
        ))
        .bearer_auth(token("org-big"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"{\"event_id\":\"big-200000\""));
    // The client stops reading: the export waits for it, its cursor open.
    actix_web::rt::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        exporting(&app).await,
        1,
        "the export is not open while the client reads"
    );
    let beside = app.get("/express/usage/month", &token("org-big")).await;
    assert_eq!(
        beside.status, 200,
        "the export kept its turn: {}",
        beside.text
    );
    drop(response);
    let started = std::time::Instant::now();
    while exporting(&app).await > 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the export's transaction outlived its client"
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn an_account_id_with_a_nul_is_a_400_not_a_500() {
    let app = crate::support::TestApp::spawn().await;
    let reply = app
        .get(
            "/express/usage/events?account_id=a%00b",
            &crate::support::tokens::token("org-a"),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.field_names(), ["account_id"]);
    // The same byte as an AccountSid of the Twilio-format routes: not the caller's, a 403.
    for path in [
        "/2010-04-01/Accounts/a%00b/Usage/Records.json",
        "/2010-04-01/Accounts/a%00b/Usage/Triggers.json",
    ] {
        let token = if path.contains("Triggers") {
            crate::support::tokens::triggers("org-a")
        } else {
            crate::support::tokens::token("org-a")
        };
        let reply = app.get(path, &token).await;
        assert_eq!(reply.status, 403, "{path}: {}", reply.text);
    }
}
