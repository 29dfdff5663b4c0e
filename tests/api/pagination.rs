//! Paging: totals, counts, every link on the first, a middle, the last and a past-the-end page;
//! walking `next` sees every row exactly once; ordering; the `show` resource.

use std::collections::BTreeSet;

use crate::support::data::{dec, event};
use crate::support::tokens::token;
use crate::support::{TestApp, PUBLIC_URL};

/// 23 aggregates for account a1 (org-a), 2 for a2 (org-a), 3 for b1 (org-b).
async fn app_with_rows() -> TestApp {
    let app = TestApp::spawn().await;
    app.accounts(&[("a1", "org-a"), ("a2", "org-a"), ("b1", "org-b")])
        .await;
    let mut events = Vec::new();
    for n in 0..23 {
        let mut e = event(&format!("a1-{n}"), "a1");
        e.product_id = format!("P-{n:02}");
        e.quantity = dec(&format!("{}", n + 1));
        events.push(e);
    }
    for n in 0..2 {
        let mut e = event(&format!("a2-{n}"), "a2");
        e.product_id = format!("P-{n:02}");
        events.push(e);
    }
    for n in 0..3 {
        let mut e = event(&format!("b1-{n}"), "b1");
        e.product_id = format!("P-{n:02}");
        events.push(e);
    }
    app.insert(&events).await;
    app.rollup().await;
    app
}

fn href(page: u32, rest: &str) -> String {
    format!("{PUBLIC_URL}/express/usage/month?page={page}&per_page=5{rest}")
}

/// A `prev` or `next` link: the plain page link, then a position token as its last parameter.
fn seek_link(link: &serde_json::Value) -> String {
    let link = link["href"].as_str().unwrap();
    let (plain, cursor) = link.split_once("&cursor=").expect("a position token");
    assert!(
        !cursor.is_empty()
            && cursor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{cursor}"
    );
    plain.to_owned()
}

#[actix_web::test]
async fn walking_next_returns_every_row_exactly_once_with_exact_links() {
    let app = app_with_rows().await;
    let token = token("org-a");
    let filter = "account_id eq 'a1'";
    let rest = "&filter=account_id%20eq%20%27a1%27&order_by=total_amount%3Adesc";
    let mut reply = app
        .get("/express/usage/month?per_page=5&filter=account_id%20eq%20'a1'&order_by=total_amount:desc", &token)
        .await;
    let mut seen = Vec::new();
    let mut page = 1;
    loop {
        assert_eq!(reply.status, 200, "{}", reply.body);
        let body = &reply.body;
        assert_eq!(body["total"], 23);
        assert_eq!(body["total_pages"], 5);
        assert_eq!(body["page"], page);
        assert_eq!(body["per_page"], 5);
        let expected_count = if page < 5 { 5 } else { 3 };
        assert_eq!(body["count"], expected_count);
        assert_eq!(reply.ids().len(), expected_count as usize);
        let links = &body["_links"];
        assert_eq!(links["self"]["href"], href(page, rest));
        assert_eq!(links["first"]["href"], href(1, rest));
        assert_eq!(links["last"]["href"], href(5, rest));
        assert_eq!(
            links["show"]["href"],
            format!("{PUBLIC_URL}/express/usage/month/{{id}}")
        );
        assert_eq!(links["show"]["templated"], true);
        if page == 1 {
            assert!(links.get("prev").is_none(), "no prev on page 1");
        } else {
            assert_eq!(seek_link(&links["prev"]), href(page - 1, rest));
        }
        seen.extend(reply.ids());
        if page == 5 {
            assert!(links.get("next").is_none(), "no next on the last page");
            break;
        }
        assert_eq!(seek_link(&links["next"]), href(page + 1, rest));
        let next = links["next"]["href"].as_str().unwrap().to_owned();
        reply = app.follow(&next, &token).await;
        page += 1;
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), 23, "every row exactly once");
    assert_eq!(seen.len(), 23);
    // Ordered by total_amount descending: 23, 22, … 1.
    let all = app
        .get(
            &format!(
                "/express/usage/month?per_page=250&filter={}",
                filter.replace(' ', "%20")
            ),
            &token,
        )
        .await;
    assert_eq!(all.ids().into_iter().collect::<BTreeSet<_>>(), unique);
}

#[actix_web::test]
async fn page_past_the_end_is_empty_with_links() {
    let app = app_with_rows().await;
    let reply = app
        .get("/express/usage/month?page=9&per_page=5", &token("org-a"))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["count"], 0);
    assert_eq!(reply.body["total"], 25);
    assert_eq!(reply.body["total_pages"], 5);
    assert_eq!(reply.body["page"], 9);
    assert_eq!(reply.ids(), Vec::<String>::new());
    let links = &reply.body["_links"];
    assert_eq!(links["first"]["href"], href(1, ""));
    assert_eq!(links["last"]["href"], href(5, ""));
    assert_eq!(
        links["prev"]["href"],
        href(5, ""),
        "back to the last page with data"
    );
    assert!(links.get("next").is_none());
    let just_past = app
        .get("/express/usage/month?page=6&per_page=5", &token("org-a"))
        .await;
    assert_eq!(just_past.body["_links"]["prev"]["href"], href(5, ""));
}

#[actix_web::test]
async fn an_empty_list_has_first_and_last_on_page_one() {
    let app = TestApp::spawn().await;
    let reply = app
        .get("/express/usage/month?per_page=5", &token("org-empty"))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["total"], 0);
    assert_eq!(reply.body["total_pages"], 0);
    assert_eq!(reply.body["count"], 0);
    let links = &reply.body["_links"];
    assert_eq!(links["first"]["href"], href(1, ""));
    assert_eq!(links["last"]["href"], href(1, ""));
    assert!(links.get("prev").is_none() && links.get("next").is_none());
}

#[actix_web::test]
async fn default_order_is_id_descending_and_ties_break_by_id() {
    let app = app_with_rows().await;
    let token = token("org-a");
    let reply = app.get("/express/usage/month?per_page=250", &token).await;
    let ids = reply.ids();
    assert_eq!(ids.len(), 25, "org-a's rows only");
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(ids, sorted);

    // Every a1 row has the same month: the tie is broken by id, ascending.
    let reply = app
        .get(
            "/express/usage/month?per_page=250&order_by=month:desc,account_id",
            &token,
        )
        .await;
    let rows = reply.body["_embedded"]["usage"].as_array().unwrap().clone();
    let keys: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["account_id"].as_str().unwrap().to_owned(),
                r["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(keys, expected);

    let reply = app
        .get(
            "/express/usage/month?per_page=3&order_by=number_of_units:desc",
            &token,
        )
        .await;
    let units: Vec<i64> = reply.body["_embedded"]["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["number_of_units"].as_i64().unwrap())
        .collect();
    assert_eq!(units, vec![23, 22, 21]);
}

#[actix_web::test]
async fn show_returns_one_record_of_the_callers_organization() {
    let app = app_with_rows().await;
    let list = app
        .get("/express/usage/month?per_page=1", &token("org-a"))
        .await;
    let record = list.body["_embedded"]["usage"][0].clone();
    let self_href = record["_links"]["self"]["href"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        self_href,
        format!(
            "{PUBLIC_URL}/express/usage/month/{}",
            record["id"].as_str().unwrap()
        )
    );

    let shown = app.follow(&self_href, &token("org-a")).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body, record);

    // Another organization's record and a record that does not exist look the same.
    let foreign = app.follow(&self_href, &token("org-b")).await;
    assert_eq!((foreign.status, foreign.code()), (404, "not_found"));
    let missing = app
        .get(
            "/express/usage/month/0123456789abcdef0123456789abcdef",
            &token("org-a"),
        )
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body, foreign.body);

    let malformed = app
        .get("/express/usage/month/not-an-id", &token("org-a"))
        .await;
    assert_eq!(
        (malformed.status, malformed.code()),
        (400, "invalid_parameter")
    );
    assert_eq!(malformed.field_names(), vec!["id"]);
}

#[actix_web::test]
async fn a_page_has_the_documented_shape() {
    let app = TestApp::spawn().await;
    app.accounts(&[("5ea75fe7aa224700012eae40", "org-a")]).await;
    let mut e = event("e-1", "5ea75fe7aa224700012eae40");
    e.product_id = "TD-LIC-APP-RC-101910".to_owned();
    e.usage_type = usage_api::usage::model::UsageType::Number;
    e.description = "SIP Number".to_owned();
    e.unit = usage_api::usage::model::Unit::Numbers;
    e.resolution = None;
    e.quantity = dec("5");
    e.unit_price = dec("1.00");
    app.insert(&[e]).await;
    app.rollup().await;
    let reply = app.get("/express/usage/month", &token("org-a")).await;
    insta::assert_json_snapshot!(reply.body, { ".as_of" => "[as_of]" });
}

#[actix_web::test]
async fn unknown_query_parameters_are_ignored_and_links_come_from_configuration() {
    let app = app_with_rows().await;
    let reply = app
        .get_with(
            "/express/usage/month?per_page=5&colour=blue",
            &[
                ("Authorization", &format!("Bearer {}", token("org-a"))),
                ("Host", "evil.example"),
                ("X-Forwarded-Host", "evil.example"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["_links"]["self"]["href"], href(1, ""));
}
