//! Usage records by category and period in Twilio's wire format (DESIGN §2b), checked against
//! an independent computation over the events: every subresource, categories with their
//! descendants, currency and unit splits, zero-filled periods, `totalprice`, paging by the
//! relative URIs, the CSV, the 403 rule and the errors' `status`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use serde_json::Value;
use usage_api::usage::model::{Category, Direction, Unit, UsageType};
use usage_api::usage::write::event::NewEvent;

use crate::support::data::{at, category_of, csv_table, dec, event};
use crate::support::tokens::token;
use crate::support::{sdk_script, TestApp};

/// (category, start, end, currency, unit) → (count, usage, price), as strings of the wire.
type Records = BTreeMap<(String, String, String, String, String), (String, String, String)>;

/// (category, period start, currency, unit).
type SumKey = (String, NaiveDate, String, String);

fn d(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

/// Events of one account over days around month and year ends, several categories (explicit
/// and default), two currencies and two units.
fn events(prefix: &str, account: &str) -> Vec<NewEvent> {
    let days = [
        "2023-12-31T23:59:59Z",
        "2024-01-01T00:00:00Z",
        "2024-01-15T08:00:00Z",
        "2024-02-29T23:00:00Z",
    ];
    (0..24u32)
        .map(|n| {
            let mut e = event(&format!("{prefix}-{n}"), account);
            e.occurred_at = at(days[n as usize % days.len()]);
            e.usage_type = [UsageType::Call, UsageType::Message][n as usize % 2];
            e.direction =
                [Some(Direction::Inbound), None, Some(Direction::Outbound)][n as usize % 3];
            e.category = (n % 5 == 0).then_some(Category::CallsInboundLocal);
            e.currency = ["USD", "EUR"][(n / 6) as usize % 2].to_owned();
            e.unit = [Unit::Minutes, Unit::Segments][(n / 4) as usize % 2];
            e.quantity = dec(&format!("{}.{:03}", n % 7, n * 13 % 1000));
            e.unit_price = dec(["0.0085", "1.25", "0.5"][n as usize % 3]);
            e
        })
        .collect()
}

/// The catalogue's parents, as the categories route serves them: slug → ancestors (itself
/// included).
async fn ancestors(app: &TestApp) -> HashMap<String, Vec<String>> {
    let reply = app.get("/express/usage/categories", &token("org-a")).await;
    let parents: HashMap<String, Option<String>> = reply.body["_embedded"]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["slug"].as_str().unwrap().to_owned(),
                c["parent"].as_str().map(str::to_owned),
            )
        })
        .collect();
    parents
        .keys()
        .map(|slug| {
            let mut chain = vec![slug.clone()];
            while let Some(Some(parent)) = parents.get(chain.last().unwrap()) {
                chain.push(parent.clone());
            }
            (slug.clone(), chain)
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Cut {
    Whole,
    Day,
    Month,
    Year,
}

fn periods(cut: Cut, start: NaiveDate, end: NaiveDate) -> Vec<(NaiveDate, NaiveDate)> {
    let mut out = Vec::new();
    let mut from = start;
    while from <= end {
        let last = match cut {
            Cut::Whole => end,
            Cut::Day => from,
            Cut::Month => {
                let (y, m) = if from.month() == 12 {
                    (from.year() + 1, 1)
                } else {
                    (from.year(), from.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1)
                    .unwrap()
                    .pred_opt()
                    .unwrap()
            }
            Cut::Year => NaiveDate::from_ymd_opt(from.year(), 12, 31).unwrap(),
        }
        .min(end);
        out.push((from, last));
        from = last.succ_opt().unwrap();
    }
    out
}

/// The records an independent reading of the contract expects for `events` of the scope.
fn oracle(
    events: &[NewEvent],
    ancestors: &HashMap<String, Vec<String>>,
    cut: Cut,
    start: NaiveDate,
    end: NaiveDate,
    only: Option<&str>,
) -> Records {
    let periods = periods(cut, start, end);
    let mut sums: BTreeMap<SumKey, (i64, Decimal, Decimal)> = BTreeMap::new();
    for e in events {
        let day = e.occurred_at.date_naive();
        let Some(&(from, _)) = periods.iter().find(|(a, b)| *a <= day && day <= *b) else {
            continue;
        };
        let own = category_of(e);
        let mut keys: Vec<(String, String)> = ancestors[own]
            .iter()
            .map(|a| (a.clone(), e.unit.as_str().to_ascii_lowercase()))
            .collect();
        keys.push(("totalprice".to_owned(), e.currency.to_ascii_lowercase()));
        for (category, unit) in keys {
            let slot = sums
                .entry((category, from, e.currency.to_ascii_lowercase(), unit))
                .or_insert((0, Decimal::ZERO, Decimal::ZERO));
            slot.0 += 1;
            slot.1 += e.quantity;
            slot.2 += e.quantity * e.unit_price;
        }
    }
    let series: BTreeSet<(String, String, String)> = sums
        .keys()
        .filter(|k| only.is_none_or(|c| c == k.0))
        .map(|(c, _, cur, unit)| (c.clone(), cur.clone(), unit.clone()))
        .collect();
    let mut out = Records::new();
    for (category, currency, unit) in series {
        for (from, to) in &periods {
            let (n, q, p) = sums
                .get(&(category.clone(), *from, currency.clone(), unit.clone()))
                .copied()
                .unwrap_or((0, Decimal::ZERO, Decimal::ZERO));
            let total = category == "totalprice";
            out.insert(
                (
                    category.clone(),
                    from.to_string(),
                    to.to_string(),
                    currency.clone(),
                    unit.clone(),
                ),
                (
                    if total { String::new() } else { n.to_string() },
                    (if total { p } else { q }).normalize().to_string(),
                    p.normalize().to_string(),
                ),
            );
        }
    }
    out
}

fn records_of(body: &Value) -> Records {
    body["usage_records"]
        .as_array()
        .unwrap_or_else(|| panic!("no usage_records: {body}"))
        .iter()
        .map(|r| {
            let s = |k: &str| {
                r[k].as_str()
                    .unwrap_or_else(|| panic!("{k} not a string: {r}"))
                    .to_owned()
            };
            (
                (
                    s("category"),
                    s("start_date"),
                    s("end_date"),
                    s("price_unit"),
                    s("usage_unit"),
                ),
                (s("count"), s("usage"), s("price")),
            )
        })
        .collect()
}

/// Every record of `path` (relative), following `next_page_uri` to the end.
async fn walk(app: &TestApp, path: &str, org: &str) -> (Records, Vec<Value>) {
    let mut all = Records::new();
    let mut pages = Vec::new();
    let mut next = Some(path.to_owned());
    for _ in 0..500 {
        let Some(uri) = next.take() else { break };
        let reply = app.get(&uri, &token(org)).await;
        assert_eq!(reply.status, 200, "{uri}: {}", reply.body);
        let page = records_of(&reply.body);
        let before = all.len();
        all.extend(page.clone());
        assert_eq!(
            all.len(),
            before + page.len(),
            "a record repeated across pages"
        );
        next = reply.body["next_page_uri"].as_str().map(str::to_owned);
        pages.push(reply.body);
    }
    assert!(next.is_none(), "more than 500 pages");
    (all, pages)
}

async fn setup() -> (TestApp, Vec<NewEvent>, Vec<NewEvent>) {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a"), ("a2", "org-a"), ("b1", "org-b")])
        .await;
    let a1 = events("x", "a1");
    let a2 = events("y", "a2");
    let mut all = a1.clone();
    all.extend(a2.clone());
    all.extend(events("z", "b1"));
    app.insert(&all).await;
    app.rollup().await;
    let mut org_a = a1.clone();
    org_a.extend(a2);
    (app, org_a, a1)
}

#[actix_web::test]
async fn every_subresource_matches_an_independent_sum_of_the_events() {
    let (app, org_a, a1) = setup().await;
    let tree = ancestors(&app).await;
    // Organization-wide records read whole months from the monthly totals and the rest from
    // days: ranges with partial months at both ends, whole months only, and no whole month.
    for (start, end) in [
        ("2023-12-30", "2024-03-02"),
        ("2024-01-01", "2024-02-29"),
        ("2024-01-15", "2024-02-14"),
    ] {
        let range = format!("StartDate={start}&EndDate={end}");
        let (start, end) = (d(start), d(end));
        for (sub, cut) in [
            ("/Daily", Cut::Day),
            ("/Monthly", Cut::Month),
            ("/Yearly", Cut::Year),
            ("/AllTime", Cut::Whole),
            ("", Cut::Whole),
        ] {
            for (sid, scope) in [("org-a", &org_a), ("a1", &a1)] {
                let path = format!(
                    "/2010-04-01/Accounts/{sid}/Usage/Records{sub}.json?{range}&PageSize=1000"
                );
                let (got, _) = walk(&app, &path, "org-a").await;
                assert_eq!(got, oracle(scope, &tree, cut, start, end, None), "{path}");
                let one = format!("{path}&Category=calls");
                let (got, _) = walk(&app, &one, "org-a").await;
                assert_eq!(
                    got,
                    oracle(scope, &tree, cut, start, end, Some("calls")),
                    "{one}"
                );
            }
        }
    }
    let range = "StartDate=2023-12-30&EndDate=2024-03-02";
    // A category without usage is zero-filled over every period.
    let (got, _) = walk(
        &app,
        &format!(
            "/2012-04-24/Accounts/org-a/Usage/Records/Monthly.json?{range}&Category=fax-inbound"
        ),
        "org-a",
    )
    .await;
    assert_eq!(got.len(), 4);
    assert!(got
        .values()
        .all(|v| v == &("0".to_owned(), "0".to_owned(), "0".to_owned())));
}

#[actix_web::test]
async fn pages_follow_relative_uris_and_the_csv_holds_every_record() {
    let (app, org_a, _) = setup().await;
    let tree = ancestors(&app).await;
    let path = "/2010-04-01/Accounts/org-a/Usage/Records/Daily.json?StartDate=2023-12-31&EndDate=2024-01-20&PageSize=7";
    let (got, pages) = walk(&app, path, "org-a").await;
    assert_eq!(
        got,
        oracle(
            &org_a,
            &tree,
            Cut::Day,
            d("2023-12-31"),
            d("2024-01-20"),
            None
        )
    );
    assert!(pages.len() > 3);
    let first = &pages[0];
    assert_eq!(first["page"], 0);
    assert_eq!(first["page_size"], 7);
    assert_eq!(first["start"], 0);
    assert_eq!(first["end"], 6);
    assert!(first["previous_page_uri"].is_null());
    assert_eq!(pages[1]["previous_page_uri"], first["uri"]);
    assert!(pages.last().unwrap()["next_page_uri"].is_null());
    let record = &first["usage_records"][0];
    assert_eq!(record["account_sid"], "org-a");
    assert_eq!(record["api_version"], "2010-04-01");
    assert_eq!(record["category"], "calls");
    assert_eq!(record["description"], "All voice calls");
    assert_eq!(record["count_unit"], "calls");
    assert!(record["uri"].as_str().unwrap().starts_with(
        "/2010-04-01/Accounts/org-a/Usage/Records/Daily.json?Category=calls&StartDate="
    ));
    assert_eq!(
        record["subresource_uris"]["last_month"],
        "/2010-04-01/Accounts/org-a/Usage/Records/LastMonth.json?Category=calls"
    );

    // The CSV: every record of the range at once (more than one streamed chunk of 500), the
    // same sums, each record once.
    let (start, end) = (d("2023-11-01"), d("2024-03-31"));
    let want = oracle(&org_a, &tree, Cut::Day, start, end, None);
    assert!(want.len() > 1_000, "{} records", want.len());
    let response = app
        .client
        .get(format!("{}/2010-04-01/Accounts/org-a/Usage/Records/Daily.csv?StartDate={start}&EndDate={end}&PageSize=7", app.address))
        .bearer_auth(token("org-a"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    assert!(response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment;"));
    let text = response.text().await.unwrap();
    let (header, rows) = csv_table(&text);
    assert_eq!(
        header,
        [
            "category",
            "description",
            "account_sid",
            "start_date",
            "end_date",
            "count",
            "count_unit",
            "usage",
            "usage_unit",
            "price",
            "price_unit",
            "as_of"
        ]
    );
    let rows: Vec<_> = rows
        .iter()
        .map(|row| {
            let f = |i: usize| row[i].clone();
            ((f(0), f(3), f(4), f(10), f(8)), (f(5), f(7), f(9)))
        })
        .collect();
    assert_eq!(rows.len(), want.len(), "rows repeated or missing");
    let from_csv: Records = rows.into_iter().collect();
    assert_eq!(from_csv, want);
}

#[actix_web::test]
async fn another_organizations_sid_is_forbidden_and_errors_carry_their_status() {
    let (app, _, _) = setup().await;
    for sid in ["b1", "org-b", "nobody"] {
        let reply = app
            .get(
                &format!("/2010-04-01/Accounts/{sid}/Usage/Records.json"),
                &token("org-a"),
            )
            .await;
        assert_eq!(reply.status, 403, "{sid}");
        assert_eq!(reply.body["code"], "forbidden_accounts");
        assert_eq!(reply.body["status"], 403);
    }
    let reply = app.get("/2010-04-01/Accounts/org-a/Usage/Records/Daily.json?StartDate=2024-13-01&Category=bogus&PageSize=0", &token("org-a")).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body["status"], 400);
    assert_eq!(reply.field_names(), ["StartDate", "Category", "PageSize"]);
    for path in [
        "/2011-01-01/Accounts/org-a/Usage/Records.json",
        "/2010-04-01/Accounts/org-a/Usage/Records/Weekly.json",
        "/2010-04-01/Accounts/org-a/Usage/Records.xml",
    ] {
        let reply = app.get(path, &token("org-a")).await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.body["status"], 404);
    }
    let reply = app
        .get_with("/2010-04-01/Accounts/org-a/Usage/Records.json", &[])
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.body["status"], 401);
}

#[actix_web::test]
async fn the_official_twilio_sdk_reads_every_subresource_unchanged() {
    let (app, mut org_a, _) = setup().await;
    // Usage today, yesterday and last month too, for the fixed subresources.
    let today = chrono::Utc::now().date_naive();
    let first = today.with_day(1).unwrap();
    let last_month = first.pred_opt().unwrap().with_day(15).unwrap();
    let mut recent = Vec::new();
    for (n, day) in [today, today.pred_opt().unwrap(), last_month]
        .into_iter()
        .enumerate()
    {
        let mut e = event(&format!("recent-{n}"), "a2");
        e.occurred_at = day.and_hms_opt(0, 0, 5).unwrap().and_utc();
        e.quantity = dec(&format!("1.{n}5"));
        e.unit_price = dec("0.013");
        recent.push(e);
    }
    app.insert(&recent).await;
    app.rollup().await;
    org_a.extend(recent);
    let tree = ancestors(&app).await;

    let out = sdk_script(
        "records_sdk.py",
        &app.address,
        &token("org-a"),
        &[
            ("USAGE_API_SID", "org-a"),
            ("USAGE_API_START", "2023-12-30"),
            ("USAGE_API_END", "2024-03-02"),
        ],
    )
    .await;

    let as_records = |name: &str| -> Records {
        out[name]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: {out}"))
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
                assert_eq!(r["account_sid"], "org-a");
                assert_eq!(r["api_version"], "2010-04-01");
                (
                    (
                        s("category"),
                        s("start_date"),
                        s("end_date"),
                        s("price_unit"),
                        s("usage_unit"),
                    ),
                    (
                        s("count"),
                        s("usage"),
                        dec(&s("price")).normalize().to_string(),
                    ),
                )
            })
            .collect()
    };
    let (start, end) = (d("2023-12-30"), d("2024-03-02"));
    let month_start = first;
    let last_start = last_month.with_day(1).unwrap();
    let yesterday = today.pred_opt().unwrap();
    let expectations = [
        ("root", Cut::Whole, start, end, None),
        ("all_time", Cut::Whole, start, end, None),
        ("daily", Cut::Day, start, end, None),
        ("monthly", Cut::Month, start, end, None),
        ("yearly", Cut::Year, start, end, None),
        ("calls_monthly", Cut::Month, start, end, Some("calls")),
        ("today", Cut::Whole, today, today, None),
        ("yesterday", Cut::Whole, yesterday, yesterday, None),
        ("this_month", Cut::Whole, month_start, today, None),
        (
            "last_month",
            Cut::Whole,
            last_start,
            first.pred_opt().unwrap(),
            None,
        ),
    ];
    for (name, cut, from, to, only) in expectations {
        let want = oracle(&org_a, &tree, cut, from, to, only);
        assert!(!want.is_empty(), "{name}: the data must give it records");
        assert_eq!(as_records(name), want, "{name}");
    }
    // Auto-paging really paged: the daily list alone is several pages of 9.
    assert!(out["requests"].as_u64().unwrap() > 20, "{out}");
}

#[actix_web::test]
async fn any_page_of_a_range_read_once_is_answered_without_reading_it_again() {
    let (app, mut org_a, _) = setup().await;
    let tree = ancestors(&app).await;
    let range = "StartDate=2023-12-31&EndDate=2024-01-20";
    let path = format!("/2010-04-01/Accounts/org-a/Usage/Records/Daily.json?{range}&PageSize=7");
    let oracle_now = |events: &[NewEvent]| {
        oracle(
            events,
            &tree,
            Cut::Day,
            d("2023-12-31"),
            d("2024-01-20"),
            None,
        )
    };
    assert_eq!(app.get(&path, &token("org-a")).await.status, 200);

    // With the aggregates locked, a page never asked for is still answered: the range was read
    // whole, once, for this data version.
    let mut locker = app.conn().await;
    diesel_async::SimpleAsyncConnection::batch_execute(
        &mut locker,
        "BEGIN; LOCK TABLE usage_daily, usage_daily_totals, usage_monthly_totals \
         IN ACCESS EXCLUSIVE MODE",
    )
    .await
    .unwrap();
    let third = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        app.get(&format!("{path}&Page=3"), &token("org-a")),
    )
    .await;
    diesel_async::SimpleAsyncConnection::batch_execute(&mut locker, "ROLLBACK")
        .await
        .unwrap();
    let third = third.expect("a remembered range never waits for the aggregates");
    assert_eq!(third.status, 200, "{}", third.body);
    assert_eq!(third.body["page"], 3);
    assert_eq!(third.body["start"], 21);
    let (all, pages) = walk(&app, &path, "org-a").await;
    assert_eq!(all, oracle_now(&org_a));
    assert_eq!(third.body, pages[3], "the page the walk read by its link");
    assert_eq!(records_of(&third.body).len(), 7);

    // An account's records are its own entry: org-a's range never answers for a1.
    let a1 = app
        .get(&path.replace("/org-a/", "/a1/"), &token("org-a"))
        .await;
    assert_eq!(a1.status, 200);
    assert!(a1.body["usage_records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["account_sid"] == "a1"));

    // New usage in the range: the next answer is read again and shows it.
    let mut more = events("later", "a2");
    for e in &mut more {
        e.occurred_at = at("2024-01-10T12:00:00Z");
    }
    app.insert(&more).await;
    app.rollup().await;
    org_a.extend(more);
    let (after, _) = walk(&app, &path, "org-a").await;
    assert_eq!(after, oracle_now(&org_a));
    assert_ne!(after, all);
}
