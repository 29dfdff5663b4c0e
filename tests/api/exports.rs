//! Exports of the monthly list (DESIGN §2 "Exports"): `format=csv|ndjson` or `Accept` streams
//! the whole filtered, ordered result — never a page — equal to every page read through the
//! JSON API, CSV parsed back with a real parser (quotes, commas, newlines, unicode), NDJSON line
//! by line, gzip when asked; the 403 rule and parameter checks as for pages.

use serde_json::Value;

use crate::support::data::{at, csv_table, dec, event};
use crate::support::tokens::token;
use crate::support::TestApp;

const LIST: &str = "/express/usage/month";

async fn setup() -> TestApp {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a"), ("a2", "org-a"), ("b1", "org-b")])
        .await;
    let descriptions = [
        "plain",
        "say \"hi\", twice",
        "first line\nsecond line",
        "unicode ✓ 日本語",
        "trailing comma,",
    ];
    let mut events = Vec::new();
    for n in 0..180usize {
        let account = ["a1", "a2", "b1"][n % 3];
        let mut e = event(&format!("x-{n}"), account);
        e.product_id = format!("P-{}", n % 7);
        e.description = descriptions[n % descriptions.len()].to_owned();
        e.occurred_at = at("2023-01-15T00:00:00Z") + chrono::Duration::days(31 * (n as i64 % 9));
        e.quantity = dec(&format!("{}.{:04}", n % 13, (n * 37) % 10_000));
        e.unit_price = dec(["0.0085", "1.5", "0.000001"][n % 3]);
        events.push(e);
    }
    app.insert(&events).await;
    app.rollup().await;
    app
}

/// Every record of the list through its JSON pages (with `_links` removed) and the body texts.
async fn all_pages(app: &TestApp, query: &str) -> (Vec<Value>, String) {
    let mut records = Vec::new();
    let mut texts = String::new();
    for page in 1..=50 {
        let reply = app
            .get(
                &format!("{LIST}?{query}&per_page=7&page={page}"),
                &token("org-a"),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let list = reply.body["_embedded"]["usage"].as_array().unwrap().clone();
        if list.is_empty() {
            return (records, texts);
        }
        texts.push_str(&reply.text);
        for mut record in list {
            record.as_object_mut().unwrap().remove("_links");
            records.push(record);
        }
    }
    panic!("more than 50 pages");
}

/// A JSON record's value as the CSV writes it: strings as they are, null empty, numbers with
/// the digits the body carried (found in `texts` right after the record's id).
fn csv_field(record: &Value, name: &str, texts: &str) -> String {
    match &record[name] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(_) => {
            let id = record["id"].as_str().unwrap();
            let from = texts.find(&format!("\"id\":\"{id}\"")).unwrap();
            let rest = &texts[from..];
            let at = rest.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
            rest[at..].split([',', '}']).next().unwrap().to_owned()
        }
        other => panic!("unexpected {other}"),
    }
}

#[actix_web::test]
async fn month_exports_hold_every_page_in_order_as_csv_and_ndjson() {
    let app = setup().await;
    for query in [
        "",
        "order_by=description:asc,number_of_units:desc",
        "filter=account_id%20eq%20'a2'%20and%20month%20ge%20'2023-03'&order_by=month:asc",
    ] {
        let (want, texts) = all_pages(&app, query).await;
        assert!(want.len() > 7, "{query}: more than one page");
        for (path, headers) in [
            (format!("{LIST}?{query}&format=csv"), vec![]),
            (format!("{LIST}?{query}"), vec![("Accept", "text/csv")]),
            (
                format!("{LIST}?{query}&format=csv&page=3&per_page=1"),
                vec![("Accept-Encoding", "gzip")],
            ),
        ] {
            let response = app.download(&path, "org-a", &headers).await;
            let body = &response.body;
            assert_eq!(response.status, 200, "{path}: {body}");
            assert_eq!(response.headers["content-type"], "text/csv; charset=utf-8");
            assert_eq!(
                response.headers["content-disposition"],
                "attachment; filename=\"usage-month.csv\""
            );
            let (header, rows) = csv_table(body);
            assert_eq!(header[0], "id");
            assert_eq!(header.len(), 15);
            let expected: Vec<Vec<String>> = want
                .iter()
                .map(|record| {
                    header
                        .iter()
                        .map(|h| csv_field(record, h, &texts))
                        .collect()
                })
                .collect();
            assert_eq!(rows, expected, "{path}");
        }
        let response = app
            .download(&format!("{LIST}?{query}&format=ndjson"), "org-a", &[])
            .await;
        let body = &response.body;
        assert_eq!(response.headers["content-type"], "application/x-ndjson");
        let lines: Vec<Value> = body
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines, want, "{query}");
        // Every number as the pages wrote it.
        for line in body.lines() {
            let record: Value = serde_json::from_str(line).unwrap();
            for name in ["price", "number_of_units", "total_amount"] {
                assert!(
                    line.contains(&format!("\"{name}\":{}", csv_field(&record, name, &texts))),
                    "{line}"
                );
            }
        }
    }
}

#[actix_web::test]
async fn month_exports_keep_the_403_rule_and_name_bad_parameters() {
    let app = setup().await;
    let response = app
        .download(
            &format!("{LIST}?format=csv&filter=account_id%20eq%20'b1'"),
            "org-a",
            &[],
        )
        .await;
    let body = &response.body;
    assert_eq!(response.status, 403, "{body}");
    assert!(body.contains("forbidden_accounts"));
    let reply = app
        .get(&format!("{LIST}?format=xlsx&per_page=0"), &token("org-a"))
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.field_names(), ["format", "per_page"]);
    // An organization without usage exports a header row only.
    let response = app
        .download(
            &format!("{LIST}?format=csv&filter=month%20eq%20'1999-01'"),
            "org-a",
            &[],
        )
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body.lines().count(), 1);
}
