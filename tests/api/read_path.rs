//! The read path's optimisations return exactly what the plain query returns: cached totals and
//! account sets, pages read backwards from the end, pages reached through position tokens, and
//! conditional requests — before and after new data is rolled up. The oracle is plain SQL
//! (`ORDER BY … LIMIT … OFFSET …`) run directly against the test schema.

use diesel::sql_types::Text;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use usage_api::usage::write::event::NewEvent;

use crate::support::data::{at, dec, event};
use crate::support::encode;
use crate::support::tokens::token;
use crate::support::{Options, Reply, TestApp, PUBLIC_URL};

/// (order_by parameter, the same order in SQL).
const ORDERS: &[(&str, &str)] = &[
    ("", "id DESC"),
    ("month:desc", "month DESC, id ASC"),
    ("direction", "direction ASC, id ASC"),
    (
        "resolution:desc,total_amount",
        "resolution DESC, total_amount ASC, id ASC",
    ),
    ("account_id,month", "account_id ASC, month ASC, id ASC"),
    ("price:desc,id:desc", "price DESC, id DESC"),
];

/// (filter parameter, the same condition in SQL).
const FILTERS: &[(&str, &str)] = &[
    ("", "true"),
    ("month ge '2023-03'", "month >= '2023-03-01'"),
    (
        "direction eq null or account_id eq 'a2'",
        "(direction IS NULL OR account_id = 'a2')",
    ),
];

/// Events for org-a (accounts a1–a4) that give aggregates with every kind of key: nulls in
/// direction and resolution, equal months and prices, several accounts. `salt` makes new ones.
fn events(salt: &str, n: usize) -> Vec<NewEvent> {
    let directions = [Some("INBOUND"), Some("OUTBOUND"), None];
    let resolutions = [None, Some("ANSWERED"), Some("MISSED"), None, Some("OTHER")];
    let prices = ["1", "0.5", "2.25", "0.5"];
    (0..n)
        .map(|i| {
            let mut e = event(&format!("{salt}-{i}"), &format!("a{}", i % 4 + 1));
            e.product_id = format!("P-{salt}-{:02}", i % 7);
            e.direction = crate::support::data::direction(directions[i % 3]);
            e.resolution = crate::support::data::resolution(resolutions[i % 5]);
            e.unit_price = dec(prices[i % 4]);
            e.quantity = dec(&format!("{}.{}", i % 9 + 1, i % 3));
            e.occurred_at = at(&format!("2023-{:02}-1{}T10:00:00Z", i % 5 + 1, i % 9));
            e
        })
        .collect()
}

async fn app_with_rows() -> TestApp {
    let app = TestApp::spawn().await;
    app.accounts(&[
        ("a1", "org-a"),
        ("a2", "org-a"),
        ("a3", "org-a"),
        ("a4", "org-a"),
        ("b1", "org-b"),
    ])
    .await;
    app.insert(&events("first", 60)).await;
    let mut other = event("b-0", "b1");
    other.direction = None;
    app.insert(&[other]).await;
    app.rollup().await;
    app
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = Text)]
    id: String,
}

/// The plain query: every id of org-a matching `condition`, in `order`.
async fn oracle(app: &TestApp, condition: &str, order: &str) -> Vec<String> {
    let sql = format!(
        "SELECT replace(id::text, '-', '') AS id FROM usage_monthly \
         WHERE organization_id = 'org-a' AND {condition} ORDER BY {order}"
    );
    diesel::sql_query(sql)
        .load::<Id>(&mut app.conn().await)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.id)
        .collect()
}

fn list_path(page: usize, per_page: usize, filter: &str, order_by: &str) -> String {
    format!(
        "/express/usage/month?page={page}&per_page={per_page}&filter={}&order_by={}",
        encode(filter),
        encode(order_by)
    )
}

fn link(reply: &Reply, name: &str) -> Option<String> {
    reply.body["_links"][name]["href"]
        .as_str()
        .map(str::to_owned)
}

fn chunk(all: &[String], page: usize, per_page: usize) -> Vec<String> {
    all.iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect()
}

/// Every page of one (filter, order, page size), reached by number, by walking `next` from the
/// first, and by walking `prev` from `last`, equals the plain query's page.
async fn check_every_way(
    app: &TestApp,
    filter: (&str, &str),
    order: (&str, &str),
    per_page: usize,
) {
    let token = token("org-a");
    let all = oracle(app, filter.1, order.1).await;
    assert!(all.len() > 2 * per_page, "enough rows to page through");
    let pages = all.len().div_ceil(per_page);
    let case = format!(
        "filter {:?}, order {:?}, per_page {per_page}",
        filter.0, order.0
    );

    for page in 1..=pages + 1 {
        let reply = app
            .get(&list_path(page, per_page, filter.0, order.0), &token)
            .await;
        assert_eq!(reply.status, 200, "{case}: {}", reply.body);
        assert_eq!(reply.body["total"], all.len(), "{case}");
        assert_eq!(
            reply.ids(),
            chunk(&all, page, per_page),
            "{case}: page {page} by number"
        );
    }

    let first = app
        .get(&list_path(1, per_page, filter.0, order.0), &token)
        .await;
    let last = app.follow(&link(&first, "last").unwrap(), &token).await;
    let forward: Vec<usize> = (1..=pages).collect();
    walk(app, &token, first, "next", &forward, &all, per_page, &case).await;
    let backward: Vec<usize> = (1..=pages).rev().collect();
    walk(app, &token, last, "prev", &backward, &all, per_page, &case).await;
}

/// Follows `rel` links from `reply`, which must visit exactly `pages` in that order, each page
/// equal to the plain query's; the link is missing only on the last of them, and carries a
/// position token wherever it is present.
#[allow(clippy::too_many_arguments)]
async fn walk(
    app: &TestApp,
    token: &str,
    mut reply: Reply,
    rel: &str,
    pages: &[usize],
    all: &[String],
    per_page: usize,
    case: &str,
) {
    for (i, &page) in pages.iter().enumerate() {
        assert_eq!(reply.body["page"], page, "{case}");
        assert_eq!(
            reply.ids(),
            chunk(all, page, per_page),
            "{case}: page {page} via {rel}"
        );
        let Some(href) = link(&reply, rel) else {
            assert_eq!(
                i + 1,
                pages.len(),
                "{case}: {rel} is missing only at the end"
            );
            return;
        };
        assert!(href.contains("&cursor="), "{case}: {href}");
        reply = app.follow(&href, token).await;
        assert_eq!(reply.status, 200, "{case}: {}", reply.body);
    }
    panic!("{case}: {rel} went past page {:?}", pages.last());
}

#[actix_web::test]
async fn every_way_to_a_page_returns_the_plain_querys_rows() {
    let app = app_with_rows().await;
    for &filter in FILTERS {
        for &order in ORDERS {
            check_every_way(&app, filter, order, 7).await;
        }
    }
    check_every_way(&app, FILTERS[0], ORDERS[3], 4).await;
}

#[actix_web::test]
async fn after_new_data_is_rolled_up_totals_pages_and_old_links_are_exact() {
    let app = app_with_rows().await;
    let token = token("org-a");
    let (filter, order) = (FILTERS[1], ORDERS[1]);
    let before = oracle(&app, filter.1, order.1).await;
    let page1 = app.get(&list_path(1, 5, filter.0, order.0), &token).await;
    assert_eq!(page1.body["total"], before.len());
    let next = link(&page1, "next").unwrap();
    let last = link(&page1, "last").unwrap();
    let page3 = app.get(&list_path(3, 5, filter.0, order.0), &token).await;
    let prev = link(&page3, "prev").unwrap();
    let tag = page1.header("etag").unwrap().to_owned();

    // New aggregates land everywhere in the order, and some existing ones change.
    app.insert(&events("second", 25)).await;
    let mut grown = event("first-0-more", "a1");
    grown.product_id = "P-first-00".to_owned();
    app.insert(&[grown]).await;
    app.rollup().await;
    let after = oracle(&app, filter.1, order.1).await;
    assert!(after.len() > before.len());

    for (href, page) in [(&next, 2), (&prev, 2)] {
        let reply = app.follow(href, &token).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(
            reply.body["total"],
            after.len(),
            "the cached total moved on"
        );
        assert_eq!(
            reply.ids(),
            chunk(&after, page, 5),
            "an old token reads page {page} by number"
        );
    }
    let reply = app.follow(&last, &token).await;
    let old_last_page = before.len().div_ceil(5);
    assert_eq!(reply.ids(), chunk(&after, old_last_page, 5));
    let revalidated = app
        .get_with(
            &list_path(1, 5, filter.0, order.0),
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("If-None-Match", &tag),
            ],
        )
        .await;
    assert_eq!(revalidated.status, 200, "new data, new validator");
    assert_ne!(revalidated.header("etag").unwrap(), tag);
    assert_eq!(revalidated.ids(), chunk(&after, 1, 5));
    check_every_way(&app, filter, order, 5).await;
}

/// Sends GET `path` with a token and an If-None-Match header.
async fn conditional(app: &TestApp, path: &str, token: &str, tag: &str) -> Reply {
    app.get_with(
        path,
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("If-None-Match", tag),
        ],
    )
    .await
}

#[actix_web::test]
async fn conditional_requests_answer_304_only_for_the_same_body() {
    let app = app_with_rows().await;
    let token_a = token("org-a");
    let path = "/express/usage/month?per_page=5&filter=month%20ge%20'2023-02'";
    let first = app.get(path, &token_a).await;
    assert_eq!(first.status, 200);
    let tag = first.header("etag").expect("an ETag").to_owned();
    assert!(
        tag.starts_with('"') && tag.ends_with('"') && tag.len() == 34,
        "{tag}"
    );
    assert_eq!(first.header("cache-control"), Some("private, no-cache"));
    assert_eq!(first.header("vary"), Some("Authorization"));

    let again = app.get(path, &token_a).await;
    assert_eq!(
        again.header("etag"),
        Some(tag.as_str()),
        "strong: same body, same tag"
    );
    assert_eq!(again.text, first.text);

    for candidate in [
        tag.clone(),
        format!("W/{tag}"),
        format!("\"x\", {tag}"),
        "*".to_owned(),
    ] {
        let reply = conditional(&app, path, &token_a, &candidate).await;
        assert_eq!(reply.status, 304, "{candidate}");
        assert_eq!(reply.text, "");
        assert_eq!(reply.header("etag"), Some(tag.as_str()));
        assert_eq!(reply.header("cache-control"), Some("private, no-cache"));
        assert_eq!(reply.header("vary"), Some("Authorization"));
    }
    let other = conditional(&app, path, &token_a, "\"0123\"").await;
    assert_eq!(other.status, 200);
    assert_eq!(other.text, first.text);

    // Another page, page size, filter spelling or order is another body, another tag.
    for variant in [
        "/express/usage/month?per_page=5&page=2&filter=month%20ge%20'2023-02'",
        "/express/usage/month?per_page=6&filter=month%20ge%20'2023-02'",
        "/express/usage/month?per_page=5&filter=MONTH%20GE%20'2023-02'",
        "/express/usage/month?per_page=5&filter=month%20ge%20'2023-02'&order_by=month",
    ] {
        let reply = conditional(&app, variant, &token_a, &tag).await;
        assert_eq!(reply.status, 200, "{variant}");
        assert_ne!(reply.header("etag"), Some(tag.as_str()), "{variant}");
    }
    // Another organization never revalidates org-a's body.
    let reply = conditional(&app, path, &token("org-b"), &tag).await;
    assert_eq!(reply.status, 200);
    assert_ne!(reply.header("etag"), Some(tag.as_str()));

    // The ownership rule comes first: a foreign account is a 403 even when revalidating.
    let foreign = "/express/usage/month?filter=account_id%20eq%20'b1'";
    let reply = conditional(&app, foreign, &token_a, "*").await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.code(), "forbidden_accounts");

    // Pending events change as_of, and so the tag, before they are rolled up.
    app.insert(&events("pending", 1)).await;
    let reply = conditional(&app, path, &token_a, &tag).await;
    assert_eq!(reply.status, 200, "as_of moved back to the pending event");
    let pending_tag = reply.header("etag").unwrap().to_owned();
    assert_ne!(pending_tag, tag);
    assert_eq!(
        conditional(&app, path, &token_a, &pending_tag).await.status,
        304
    );
}

#[actix_web::test]
async fn a_revalidation_does_not_read_usage_monthly() {
    let app = app_with_rows().await;
    let token_a = token("org-a");
    let path = "/express/usage/month?per_page=5&filter=account_id%20eq%20'a2'";
    let tag = app
        .get(path, &token_a)
        .await
        .header("etag")
        .unwrap()
        .to_owned();

    // Hold a lock that blocks every reader of usage_monthly, then revalidate.
    let mut locker = app.conn().await;
    diesel_async::SimpleAsyncConnection::batch_execute(
        &mut locker,
        "BEGIN; LOCK TABLE usage_monthly IN ACCESS EXCLUSIVE MODE",
    )
    .await
    .unwrap();
    let revalidated = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        conditional(&app, path, &token_a, &tag),
    )
    .await;
    // A plain read of a page never served does wait for the lock: the lock is real.
    let plain = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        app.get(&format!("{path}&page=2"), &token_a),
    )
    .await;
    diesel_async::SimpleAsyncConnection::batch_execute(&mut locker, "ROLLBACK")
        .await
        .unwrap();
    let reply = revalidated.expect("a revalidation never waits for usage_monthly");
    assert_eq!(reply.status, 304);
    assert!(plain.is_err(), "a full read waits for the lock");
}

#[actix_web::test]
async fn position_tokens_are_tamper_proof_and_bound_to_their_query() {
    let app = app_with_rows().await;
    let token_a = token("org-a");
    let page1 = app
        .get("/express/usage/month?per_page=5&order_by=month", &token_a)
        .await;
    let next = link(&page1, "next").unwrap();
    let (plain, cursor) = next.split_once("&cursor=").unwrap();
    assert_eq!(
        plain,
        format!("{PUBLIC_URL}/express/usage/month?page=2&per_page=5&order_by=month")
    );
    let refused = |reply: &Reply| {
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert_eq!(reply.code(), "invalid_parameter");
        assert_eq!(reply.field_names(), vec!["cursor"]);
    };
    // Altered: one character, the signature cut off, garbage, too long.
    let mut altered = cursor.to_owned().into_bytes();
    let middle = altered.len() / 2;
    altered[middle] = if altered[middle] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    for bad in [
        altered.as_str(),
        &cursor[22..],
        "not-a-token",
        "%00",
        &"A".repeat(2049),
    ] {
        let path = format!("/express/usage/month?page=2&per_page=5&order_by=month&cursor={bad}");
        refused(&app.get(&path, &token_a).await);
    }
    // Moved to another page, page size, order, filter or organization.
    for path in [
        format!("/express/usage/month?page=3&per_page=5&order_by=month&cursor={cursor}"),
        format!("/express/usage/month?page=2&per_page=6&order_by=month&cursor={cursor}"),
        format!("/express/usage/month?page=2&per_page=5&order_by=month:desc&cursor={cursor}"),
        format!("/express/usage/month?page=2&per_page=5&cursor={cursor}"),
        format!(
            "/express/usage/month?page=2&per_page=5&order_by=month&filter=month%20eq%20'2023-01'&cursor={cursor}"
        ),
    ] {
        refused(&app.get(&path, &token_a).await);
    }
    refused(&app.follow(&next, &token("org-b")).await);
    // Untouched, it works.
    assert_eq!(app.follow(&next, &token_a).await.status, 200);
}

#[actix_web::test]
async fn account_changes_reach_the_ownership_check_at_once() {
    let app = app_with_rows().await;
    let token_a = token("org-a");
    let by_a5 = "/express/usage/month?filter=account_id%20eq%20'a5'";
    assert_eq!(app.get(by_a5, &token_a).await.status, 403);
    app.accounts(&[("a5", "org-a")]).await;
    let reply = app.get(by_a5, &token_a).await;
    assert_eq!(
        reply.status, 200,
        "a new account is the organization's at once"
    );
    assert_eq!(reply.body["total"], 0);

    let by_a1 = "/express/usage/month?filter=account_id%20eq%20'a1'";
    let a1 = app.get(by_a1, &token_a).await;
    assert_eq!(a1.status, 200);
    let a1_rows = a1.body["total"].as_i64().unwrap();
    assert!(a1_rows > 0);
    let before_move = app.get("/express/usage/month", &token_a).await;
    // a1 moves to org-b, with its aggregates.
    app.accounts(&[("a1", "org-b")]).await;
    assert_eq!(app.get(by_a1, &token_a).await.status, 403);
    let moved = app.get(by_a1, &token("org-b")).await;
    assert_eq!(moved.status, 200);
    assert_eq!(moved.body["total"], a1_rows);
    let after_move = app.get("/express/usage/month", &token_a).await;
    assert_eq!(
        after_move.body["total"].as_i64().unwrap(),
        before_move.body["total"].as_i64().unwrap() - a1_rows,
        "the cached total follows the move"
    );
}

#[actix_web::test]
async fn reads_go_to_the_read_database_when_one_is_configured() {
    // The "replica" is another schema with other data: what the list shows proves where it
    // was read, while events still go to the primary.
    let replica = crate::support::db::TestDb::new().await;
    let app = TestApp::spawn_with(Options {
        read_database_url: Some(replica.url.clone()),
        ..Options::default()
    })
    .await;
    app.accounts(&[("a1", "org-a")]).await;
    app.insert(&[event("primary-1", "a1")]).await;
    app.rollup().await;
    let mut replica_conn = replica.conn().await;
    usage_api::usage::accounts::upsert(
        &mut replica_conn,
        &[usage_api::usage::accounts::NewAccount {
            id: "a1".to_owned(),
            organization_id: "org-a".to_owned(),
            name: "replica".to_owned(),
        }],
    )
    .await
    .unwrap();
    let mut on_replica = event("replica-1", "a1");
    on_replica.quantity = dec("42");
    usage_api::usage::write::store::insert_events(&mut replica_conn, &[on_replica])
        .await
        .unwrap();
    usage_api::usage::rollup::run_until_clean(&mut replica_conn)
        .await
        .unwrap();

    let reply = app.get("/express/usage/month", &token("org-a")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["total"], 1);
    assert_eq!(reply.body["_embedded"]["usage"][0]["number_of_units"], 42);
    let id = reply.ids()[0].clone();
    let shown = app
        .get(&format!("/express/usage/month/{id}"), &token("org-a"))
        .await;
    assert_eq!(shown.status, 200, "show reads the replica too");
}

#[actix_web::test]
async fn a_record_revalidates_until_its_data_changes() {
    let app = app_with_rows().await;
    let token_a = token("org-a");
    let list = app
        .get(
            "/express/usage/month?filter=account_id%20eq%20'a1'",
            &token_a,
        )
        .await;
    let ids = list.ids();
    let path = format!("/express/usage/month/{}", ids[0]);
    let first = app.get(&path, &token_a).await;
    assert_eq!(first.status, 200);
    let tag = first.header("etag").unwrap().to_owned();
    assert_eq!(first.header("cache-control"), Some("private, no-cache"));
    assert_eq!(first.header("vary"), Some("Authorization"));
    let again = conditional(&app, &path, &token_a, &tag).await;
    assert_eq!(again.status, 304);
    assert_eq!(again.header("etag"), Some(tag.as_str()));
    let other = app
        .get(&format!("/express/usage/month/{}", ids[1]), &token_a)
        .await;
    assert_ne!(
        other.header("etag"),
        Some(tag.as_str()),
        "one tag per record"
    );
    // Another organization's token gets the 404, never a 304.
    let foreign = conditional(&app, &path, &token("org-b"), &tag).await;
    assert_eq!(foreign.status, 404);

    // Grow that very aggregate: same group key, one more event.
    let record = &first.body;
    let mut more = event("a1-more", "a1");
    more.product_id = record["product_id"].as_str().unwrap().to_owned();
    more.direction = crate::support::data::direction(record["direction"].as_str());
    more.resolution = crate::support::data::resolution(record["resolution"].as_str());
    more.unit_price = dec(&record["price"].to_string());
    more.occurred_at = at(&format!(
        "{}-20T10:00:00Z",
        record["month"].as_str().unwrap()
    ));
    app.insert(&[more]).await;
    app.rollup().await;
    let changed = conditional(&app, &path, &token_a, &tag).await;
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag"), Some(tag.as_str()));
    assert_ne!(changed.body["number_of_units"], record["number_of_units"]);
}

/// Holds a lock that blocks every reader of `tables` until the returned connection rolls back.
async fn lock_out(app: &TestApp, tables: &str) -> diesel_async::AsyncPgConnection {
    let mut locker = app.conn().await;
    diesel_async::SimpleAsyncConnection::batch_execute(
        &mut locker,
        &format!("BEGIN; LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"),
    )
    .await
    .unwrap();
    locker
}

#[actix_web::test]
async fn an_unchanged_page_is_answered_as_served_without_reading_it_again() {
    let app = app_with_rows().await;
    let token_a = token("org-a");
    let path = "/express/usage/month?per_page=5&page=3&filter=account_id%20eq%20'a2'";
    let first = app.get(path, &token_a).await;
    assert_eq!(first.status, 200);
    let tag = first.header("etag").unwrap().to_owned();

    // Usage_monthly cannot be read while locked: the same request is still answered, the very
    // bytes of the first answer with its validators.
    let mut locker = lock_out(&app, "usage_monthly").await;
    let again =
        tokio::time::timeout(std::time::Duration::from_secs(5), app.get(path, &token_a)).await;
    diesel_async::SimpleAsyncConnection::batch_execute(&mut locker, "ROLLBACK")
        .await
        .unwrap();
    let again = again.expect("an unchanged answer never waits for usage_monthly");
    assert_eq!(again.status, 200);
    assert_eq!(again.text, first.text);
    assert_eq!(again.header("etag"), Some(tag.as_str()));
    assert_eq!(again.header("content-type"), first.header("content-type"));
    assert_eq!(again.header("cache-control"), Some("private, no-cache"));

    // Another organization asking the same never gets org-a's answer.
    let other = app.get(path, &token("org-b")).await;
    assert_eq!(other.status, 403, "a2 is not org-b's account");

    // New data for the page: the next answer is read again and shows it.
    let mut more = events("later", 8);
    for e in &mut more {
        e.account_id = "a2".into();
    }
    app.insert(&more).await;
    app.rollup().await;
    let after = app.get(path, &token_a).await;
    assert_eq!(after.status, 200);
    assert_ne!(after.header("etag"), Some(tag.as_str()));
    assert_eq!(
        after.ids(),
        chunk(&oracle(&app, "account_id = 'a2'", "id DESC").await, 3, 5)
    );
    assert_eq!(
        after.body["total"].as_i64(),
        Some(oracle(&app, "account_id = 'a2'", "id DESC").await.len() as i64)
    );
}
