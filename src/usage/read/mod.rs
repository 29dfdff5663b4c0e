//! Reads of the rollup table, always inside one organization: a filtered, ordered page with its
//! exact total, and a single record by id.

pub mod bodies;
pub mod cache;
pub mod column;
pub mod filter;
pub mod order;
pub mod row;
pub mod seek;

pub use row::MonthlyRow;

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use uuid::Uuid;

use self::cache::ReadCache;
use self::column::KeyValue;
use self::filter::Filter;
use self::order::Order;
use self::seek::Side;
use super::model::{AccountId, OrganizationId};
use crate::db::schema::usage_monthly::{self, dsl as um};
use crate::db::schema::{accounts, organizations, rollup_dirty};
use diesel::sql_types::{Bool, Nullable, Text, Timestamptz};
use sha2::Digest;

/// A validated list request: which rows (the filter, its meaning and account ids computed at
/// parse), in which order, which page.
#[derive(Debug, Clone)]
pub struct ListRequest {
    pub filter: Option<Filter>,
    pub order: Order,
    pub page: u32,
    pub per_page: u32,
}

/// Where a page starts, when the caller followed a link that said so: right after the last row
/// of the page before it, or right before the first row of the page after it. Valid only for
/// the data version it was taken at. Made only by `Seek::new`, which checks the position against
/// the order it will seek in: a position that does not fit cannot exist.
#[derive(Debug, Clone)]
pub struct Seek {
    /// (database epoch, data version) it was taken at (see `Version::key`).
    version: (u64, i64),
    side: Side,
    position: Vec<KeyValue>,
}

impl Seek {
    /// A position under `order`, or `None` when it does not fit that order (a key missing, or
    /// a value of the wrong kind).
    pub fn new(
        version: (u64, i64),
        side: Side,
        position: Vec<KeyValue>,
        order: &Order,
    ) -> Option<Seek> {
        seek::fits(&position, order).then_some(Seek {
            version,
            side,
            position,
        })
    }
}

/// The state of an organization's readable data: its version (bumped in the same transaction as
/// every change to its rows or accounts) and how fresh it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub data_version: i64,
    /// Which database the version belongs to (migration 4's `usage_api_epoch()`, as this
    /// connection read it at connect time, hashed): a restore or a failover can bring back a
    /// data_version with other content, never the same (epoch, data_version).
    pub epoch: u64,
    /// Events ingested before this instant are all included: the oldest pending dirty mark of
    /// the organization; with none pending, the last rollup that touched it (or its creation).
    /// An organization that does not exist has no data, and reports the time of the read.
    pub as_of: DateTime<Utc>,
}

/// A page of rows, the exact number of rows matching the query, and the version they show.
#[derive(Debug, Clone)]
pub struct Page {
    pub total: i64,
    pub rows: Vec<MonthlyRow>,
    pub version: Version,
}

/// How the page was read; the tests compare every way with plain `OFFSET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Empty: the page lies past the end.
    Nothing,
    Offset,
    /// From the end, backwards: the last page, or any page nearer the end than the start.
    ReverseOffset,
    Seek,
}

type Boxed<'a> = usage_monthly::BoxedQuery<'a, Pg>;

fn scoped<'a>(organization: &'a OrganizationId, filter: Option<&Filter>) -> Boxed<'a> {
    let mut query = um::usage_monthly
        .filter(um::organization_id.eq(organization))
        .into_boxed();
    if let Some(filter) = filter {
        query = query.filter(filter.to_sql());
    }
    query
}

/// `query` in `order`, or in exactly the reverse of it (`reverse`: Postgres' ASC puts nulls last
/// and DESC first, so flipping every key flips the whole order).
fn ordered<'a>(mut query: Boxed<'a>, order: &Order, reverse: bool) -> Boxed<'a> {
    for key in order.keys() {
        query = query.then_order_by(key.field.sorted(key.descending != reverse));
    }
    query
}

#[diesel::declare_sql_function]
extern "SQL" {
    #[sql_name = "coalesce"]
    fn coalesce_time(
        pending: Nullable<Timestamptz>,
        rolled_up: Nullable<Timestamptz>,
        created: Timestamptz,
    ) -> Timestamptz;

    /// The connection's database epoch (set when it connected), or null.
    fn current_setting(name: Text, missing_ok: Bool) -> Nullable<Text>;
}

impl Version {
    /// What caches and validators key on: the same (epoch, data_version) is the same data.
    pub fn key(&self) -> (u64, i64) {
        (self.epoch, self.data_version)
    }
}

/// A stable 64-bit digest of the epoch text (the same on every replica).
fn epoch_of(text: Option<&str>) -> u64 {
    let digest = sha2::Sha256::digest(text.unwrap_or("").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// The organization's current [`Version`], in one statement (one snapshot).
pub async fn version(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
) -> QueryResult<Version> {
    let found = version_query(organization).first(conn).await.optional()?;
    Ok(version_of(found))
}

type VersionQuery<'a> =
    organizations::BoxedQuery<'a, Pg, (diesel::sql_types::BigInt, Timestamptz, Nullable<Text>)>;

fn version_query(organization: &OrganizationId) -> VersionQuery<'_> {
    let oldest_mark = rollup_dirty::table
        .filter(rollup_dirty::organization_id.eq(organization))
        .select(diesel::dsl::min(rollup_dirty::marked_at))
        .single_value()
        .assume_not_null()
        .nullable();
    organizations::table
        .filter(organizations::id.eq(organization))
        .select((
            organizations::data_version,
            coalesce_time(
                oldest_mark,
                organizations::rolled_up_at,
                organizations::created_at,
            ),
            current_setting("usage_api.epoch", true),
        ))
        .into_boxed()
}

type VersionRow = (i64, DateTime<Utc>, Option<String>);

fn version_of(found: Option<VersionRow>) -> Version {
    match found {
        Some((data_version, as_of, epoch)) => Version {
            data_version,
            epoch: epoch_of(epoch.as_deref()),
            as_of,
        },
        None => Version {
            data_version: 0,
            epoch: 0,
            as_of: Utc::now(),
        },
    }
}

/// The organization's accounts and the data version they belong to, in one statement.
pub async fn account_set(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
) -> QueryResult<(i64, Vec<AccountId>)> {
    let version = organizations::table
        .filter(organizations::id.eq(organization))
        .select(organizations::data_version)
        .single_value();
    let rows: Vec<(AccountId, Option<i64>)> = accounts::table
        .filter(accounts::organization_id.eq(organization))
        .select((accounts::id, version))
        .load(conn)
        .await?;
    match <[_]>::first(&rows) {
        None => Ok((
            self::version(conn, organization).await?.data_version,
            Vec::new(),
        )),
        Some((_, v)) => {
            let v = v.unwrap_or(0);
            Ok((v, rows.into_iter().map(|(id, _)| id).collect()))
        }
    }
}

/// What a list request comes to.
#[derive(Debug)]
pub enum Listed {
    /// The filter names accounts that are not the organization's (403 `forbidden_accounts`).
    Forbidden(Vec<AccountId>),
    /// The caller's copy is current (a conditional request): nothing more was read.
    NotModified(Version),
    Page(Page, Access),
}

/// Of the account ids `filter` names, those that are not accounts of `organization` (another
/// organization's and unknown ones alike). The organization's account set is read once per
/// data version: taken from `cache` for `version`, else read (with the version it belongs to,
/// which is `version` inside the caller's snapshot) and remembered.
pub async fn foreign_accounts(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    version: &Version,
    filter: Option<&Filter>,
    cache: &ReadCache,
) -> QueryResult<Vec<AccountId>> {
    let ids = filter.map(Filter::account_ids).unwrap_or_default();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let own = match cache.accounts(organization, version.key()) {
        Some(own) => own,
        None => {
            // Read on the same connection as `version`: the same epoch.
            let (data_version, own) = account_set(conn, organization).await?;
            cache.remember_accounts(organization, (version.epoch, data_version), own)
        }
    };
    Ok(ids
        .iter()
        .filter(|id| !own.contains(*id))
        .cloned()
        .collect())
}

/// Whether a version is the one the caller already has (a conditional request's test: the
/// HTTP layer knows how a version becomes an entity tag).
pub type Unchanged = Box<dyn Fn(&Version) -> bool + Send + Sync>;

/// The page of `query` in `organization` and the total, read in one snapshot so that they
/// agree even while the rollup writes, after the ownership check of the filter's accounts.
/// The total and the account set come from `cache` when this version's are known; the page is
/// read from whichever end is nearer, or from `seek` when it still holds for this version.
///
/// A conditional request (`unchanged`) is first answered from the organization's version and
/// account set alone, never reading usage_monthly: `NotModified` when the caller's copy is
/// current.
/// When it is not, the page is read as any other, and the version is read again inside the
/// page's snapshot. That second read is on purpose: taking the version only from the page's
/// snapshot would make every `304` read a page it then throws away, and `304`s are the
/// common case of a conditional request.
pub async fn list(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    query: &ListRequest,
    seek: Option<&Seek>,
    cache: &ReadCache,
    unchanged: Option<&Unchanged>,
) -> QueryResult<Listed> {
    if let Some(unchanged) = unchanged {
        let version = version(conn, organization).await?;
        let filter = query.filter.as_ref();
        let foreign = foreign_accounts(conn, organization, &version, filter, cache).await?;
        if !foreign.is_empty() {
            return Ok(Listed::Forbidden(foreign));
        }
        if unchanged(&version) {
            return Ok(Listed::NotModified(version));
        }
    }
    let filter = query.filter.as_ref();
    if let Some((key, total)) = cache.latest_total(organization, filter) {
        let ids = filter.map(Filter::account_ids).unwrap_or_default();
        let owned = ids.is_empty()
            || cache
                .accounts(organization, key)
                .is_some_and(|own| ids.iter().all(|id| own.contains(id)));
        if owned {
            let known = (key, total);
            if let Some(listed) = speculate(conn, organization, query, seek, known).await? {
                return Ok(listed);
            }
        }
    }
    conn.build_transaction()
        .read_only()
        .repeatable_read()
        .run(async |conn| list_in_snapshot(conn, organization, query, seek, cache).await)
        .await
}

/// The careful way, inside the caller's read-only REPEATABLE READ transaction: the version, the
/// ownership check, the total (cached per version) and the page, all of one snapshot.
async fn list_in_snapshot(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    query: &ListRequest,
    seek: Option<&Seek>,
    cache: &ReadCache,
) -> QueryResult<Listed> {
    let filter = query.filter.as_ref();
    let version = version(conn, organization).await?;
    let foreign = foreign_accounts(conn, organization, &version, filter, cache).await?;
    if !foreign.is_empty() {
        return Ok(Listed::Forbidden(foreign));
    }
    let total = match cache.total(organization, version.key(), filter) {
        Some(total) => total,
        None => {
            let total: i64 = scoped(organization, filter)
                .count()
                .get_result(conn)
                .await?;
            cache.remember_total(organization, version.key(), filter, total);
            total
        }
    };
    let (rows, access) = read_page(conn, organization, query, total, seek, version).await?;
    Ok(Listed::Page(
        Page {
            total,
            rows,
            version,
        },
        access,
    ))
}

/// Of the account ids `filter` names, those that are not `organization`'s: an export's 403
/// check, before it streams.
pub async fn export_check(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    filter: Option<&Filter>,
    cache: &ReadCache,
) -> QueryResult<Vec<AccountId>> {
    let version = version(conn, organization).await?;
    foreign_accounts(conn, organization, &version, filter, cache).await
}

/// Opens a cursor over every row of `query` (all pages), in its order: an export. Call inside
/// a transaction, then [`crate::db::cursor::fetch`] [`MonthlyRow`]s until a batch is short.
pub async fn declare_export(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    query: &ListRequest,
) -> QueryResult<()> {
    let rows = ordered(
        scoped(organization, query.filter.as_ref()),
        &query.order,
        false,
    )
    .select(MonthlyRow::as_select());
    crate::db::cursor::declare(conn, rows).await
}

/// `list`, run to completion in a task of its own even if the caller stops waiting (a client
/// that went away): the pipelined path sends `BEGIN` and `COMMIT` itself, and a connection must
/// never go back to the pool with a transaction still open. Takes everything it needs by value;
/// the request's deadline may still cancel its statements until it ends.
pub async fn list_to_completion(
    mut conn: crate::db::cancel::Checkout,
    organization: OrganizationId,
    query: ListRequest,
    seek: Option<Seek>,
    cache: std::sync::Arc<ReadCache>,
    unchanged: Option<Unchanged>,
) -> QueryResult<Listed> {
    let task = tokio::spawn(async move {
        let unchanged = unchanged.as_ref();
        list(
            &mut conn,
            &organization,
            &query,
            seek.as_ref(),
            &cache,
            unchanged,
        )
        .await
    });
    task.await
        .map_err(|err| diesel::result::Error::QueryBuilderError(Box::new(err)))?
}

/// How to read the page of `query` when the list has `total` rows in version `key` (epoch,
/// data version): `None` for a page past the end, else the query and whether it reads
/// backwards.
fn plan<'a>(
    organization: &'a OrganizationId,
    query: &ListRequest,
    total: i64,
    seek: Option<&Seek>,
    key: (u64, i64),
) -> Option<(Boxed<'a>, bool, Access)> {
    let per_page = i64::from(query.per_page);
    let start = i64::from(query.page - 1) * per_page;
    if start >= total {
        return None;
    }
    let on_page = per_page.min(total - start);
    let after_page = total - start - on_page;
    let filter = query.filter.as_ref();
    // A position of this very version that fits the order is sought; anything else is read by
    // the page's number.
    let sought = seek.filter(|seek| seek.version == key).and_then(|seek| {
        self::seek::predicate(&query.order, seek.side, &seek.position)
            .map(|predicate| (seek.side == Side::Before, predicate))
    });
    let (reverse, access, base) = match sought {
        Some((reverse, predicate)) => {
            let base =
                ordered(scoped(organization, filter), &query.order, reverse).filter(predicate);
            (reverse, Access::Seek, base)
        }
        _ if after_page < start => {
            let base = ordered(scoped(organization, filter), &query.order, true).offset(after_page);
            (true, Access::ReverseOffset, base)
        }
        _ => {
            let base = ordered(scoped(organization, filter), &query.order, false).offset(start);
            (false, Access::Offset, base)
        }
    };
    Some((base.limit(on_page), reverse, access))
}

async fn read_page(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    query: &ListRequest,
    total: i64,
    seek: Option<&Seek>,
    version: Version,
) -> QueryResult<(Vec<MonthlyRow>, Access)> {
    let Some((base, reverse, access)) = plan(organization, query, total, seek, version.key())
    else {
        return Ok((Vec::new(), Access::Nothing));
    };
    let mut rows: Vec<MonthlyRow> = base.select(MonthlyRow::as_select()).load(conn).await?;
    if reverse {
        rows.reverse();
    }
    Ok((rows, access))
}

/// The common case, in two round trips instead of four: when this server already knows the
/// total of the list at some data version, it plans the page for that version and sends
/// `BEGIN`, the version query and the page query at once (pipelined), then `COMMIT`. If the
/// snapshot turns out to be at that very version, the page is exact and done; otherwise
/// (the data changed meanwhile) `None`, and the caller reads it the careful way.
/// The hand-sent `BEGIN` and every way to its `COMMIT` or `ROLLBACK` stay in one function, where
/// a reader can check that no path leaves the transaction open: that is why it is long.
async fn speculate(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    query: &ListRequest,
    seek: Option<&Seek>,
    known: ((u64, i64), i64),
) -> QueryResult<Option<Listed>> {
    let (key, total) = known;
    let planned = plan(organization, query, total, seek, key);
    let reverse = planned.as_ref().is_some_and(|p| p.1);
    let access = planned.as_ref().map_or(Access::Nothing, |p| p.2);
    let shared: &AsyncPgConnection = conn;
    let (mut begin, mut read_version, mut read_page) = (shared, shared, shared);
    // Polled in this order, the three are sent in this order: the version and the page run in
    // the transaction's one snapshot. COMMIT is sent only after both have answered.
    let result = futures_util::future::try_join3(
        begin.batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SET LOCAL plan_cache_mode = force_generic_plan",
        ),
        version_query(organization).first::<VersionRow>(&mut read_version),
        async {
            match planned {
                Some((base, _, _)) => {
                    base.select(MonthlyRow::as_select())
                        .load::<MonthlyRow>(&mut read_page)
                        .await
                }
                None => Ok(Vec::new()),
            }
        },
    )
    .await;
    let mut end = shared;
    match result {
        Ok(((), found, mut rows)) => {
            end.batch_execute("COMMIT").await?;
            let version = version_of(Some(found));
            if version.key() != key {
                return Ok(None);
            }
            if reverse {
                rows.reverse();
            }
            Ok(Some(Listed::Page(
                Page {
                    total,
                    rows,
                    version,
                },
                access,
            )))
        }
        Err(diesel::result::Error::NotFound) => {
            end.batch_execute("ROLLBACK").await?;
            Ok(None)
        }
        Err(err) => {
            // The first error is the one to report. A ROLLBACK fails only on a connection that
            // is closed (the pool drops it) or was sent a cancel (its request's `Checkout`
            // closes it): neither goes back to the pool with this transaction open.
            let _ = end.batch_execute("ROLLBACK").await;
            Err(err)
        }
    }
}

/// One record of `organization` and the organization's version, in one snapshot.
pub async fn find_versioned(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    id: Uuid,
) -> QueryResult<(Version, Option<MonthlyRow>)> {
    conn.build_transaction()
        .read_only()
        .repeatable_read()
        .run(async |conn| {
            let version = version(conn, organization).await?;
            Ok((version, find(conn, organization, id).await?))
        })
        .await
}

/// One record of `organization`; `None` when it does not exist or belongs to another.
pub async fn find(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    id: Uuid,
) -> QueryResult<Option<MonthlyRow>> {
    um::usage_monthly
        .filter(um::organization_id.eq(organization))
        .filter(um::id.eq(id))
        .select(MonthlyRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// The secret that signs position tokens (migration 3's `page-cursor` key).
pub async fn cursor_key(conn: &mut AsyncPgConnection) -> QueryResult<Vec<u8>> {
    use crate::db::schema::signing_keys;
    signing_keys::table
        .filter(signing_keys::name.eq("page-cursor"))
        .select(signing_keys::secret)
        .first::<Vec<u8>>(conn)
        .await
}
