//! Reads of the rollup table, always inside one organization: a filtered, ordered page with its
//! exact total, and a single record by id.

pub mod cache;
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
use self::filter::Filter;
use self::order::{Order, SortField};
use self::seek::{KeyValue, Side};
use super::model::OrganizationId;
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

fn scoped<'a>(organization_id: &'a str, filter: Option<&Filter>) -> Boxed<'a> {
    let mut query = um::usage_monthly
        .filter(um::organization_id.eq(organization_id))
        .into_boxed();
    if let Some(filter) = filter {
        query = query.filter(filter.to_sql());
    }
    query
}

macro_rules! order_by {
    ($query:expr, $column:expr, $descending:expr) => {
        if $descending {
            $query.then_order_by($column.desc())
        } else {
            $query.then_order_by($column.asc())
        }
    };
}

/// `query` in `order`, or in exactly the reverse of it (`reverse`: Postgres' ASC puts nulls last
/// and DESC first, so flipping every key flips the whole order).
fn ordered<'a>(mut query: Boxed<'a>, order: &Order, reverse: bool) -> Boxed<'a> {
    for key in order.keys() {
        let d = key.descending != reverse;
        query = match key.field {
            SortField::Id => order_by!(query, um::id, d),
            SortField::AccountId => order_by!(query, um::account_id, d),
            SortField::ProductId => order_by!(query, um::product_id, d),
            SortField::AggrProductId => order_by!(query, um::aggr_product_id, d),
            SortField::Month => order_by!(query, um::month, d),
            SortField::Type => order_by!(query, um::usage_type, d),
            SortField::Description => order_by!(query, um::description, d),
            SortField::Currency => order_by!(query, um::currency, d),
            SortField::Direction => order_by!(query, um::direction, d),
            SortField::Resolution => order_by!(query, um::resolution, d),
            SortField::Unit => order_by!(query, um::unit, d),
            SortField::Price => order_by!(query, um::price, d),
            SortField::WalletName => order_by!(query, um::wallet_name, d),
            SortField::NumberOfUnits => order_by!(query, um::number_of_units, d),
            SortField::TotalAmount => order_by!(query, um::total_amount, d),
        };
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
pub async fn version(conn: &mut AsyncPgConnection, organization_id: &str) -> QueryResult<Version> {
    let found = version_query(organization_id)
        .first(conn)
        .await
        .optional()?;
    Ok(version_of(found))
}

type VersionQuery<'a> =
    organizations::BoxedQuery<'a, Pg, (diesel::sql_types::BigInt, Timestamptz, Nullable<Text>)>;

fn version_query(organization_id: &str) -> VersionQuery<'_> {
    let oldest_mark = rollup_dirty::table
        .filter(rollup_dirty::organization_id.eq(organization_id))
        .select(diesel::dsl::min(rollup_dirty::marked_at))
        .single_value()
        .assume_not_null()
        .nullable();
    organizations::table
        .filter(organizations::id.eq(organization_id))
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
    organization_id: &str,
) -> QueryResult<(i64, Vec<String>)> {
    let version = organizations::table
        .filter(organizations::id.eq(organization_id))
        .select(organizations::data_version)
        .single_value();
    let rows: Vec<(String, Option<i64>)> = accounts::table
        .filter(accounts::organization_id.eq(organization_id))
        .select((accounts::id, version))
        .load(conn)
        .await?;
    match <[_]>::first(&rows) {
        None => Ok((
            self::version(conn, organization_id).await?.data_version,
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
    Forbidden(Vec<String>),
    /// The caller's copy is current (a conditional request): nothing more was read.
    NotModified(Version),
    Page(Page, Access),
}

/// Of the account ids `filter` names, those that are not accounts of `organization_id` (another
/// organization's and unknown ones alike). The organization's account set is read once per
/// data version: taken from `cache` for `version`, else read (with the version it belongs to,
/// which is `version` inside the caller's snapshot) and remembered.
pub async fn foreign_accounts(
    conn: &mut AsyncPgConnection,
    organization_id: &str,
    version: &Version,
    filter: Option<&Filter>,
    cache: &ReadCache,
) -> QueryResult<Vec<String>> {
    let ids = filter.map(Filter::account_ids).unwrap_or_default();
    if ids.is_empty() {
        return Ok(ids);
    }
    let own = match cache.accounts(organization_id, version.key()) {
        Some(own) => own,
        None => {
            // Read on the same connection as `version`: the same epoch.
            let (data_version, own) = account_set(conn, organization_id).await?;
            cache.remember_accounts(organization_id, (version.epoch, data_version), own)
        }
    };
    Ok(ids.into_iter().filter(|id| !own.contains(id)).collect())
}

/// Whether a version is the one the caller already has (a conditional request's test: the
/// HTTP layer knows how a version becomes an entity tag).
pub type Unchanged = Box<dyn Fn(&Version) -> bool + Send + Sync>;

/// The page of `query` in `organization_id` and the total, read in one snapshot so that they
/// agree even while the rollup writes, after the ownership check of the filter's accounts.
/// The total and the account set come from `cache` when this version's are known; the page is
/// read from whichever end is nearer, or from `seek` when it still holds for this version.
///
/// A conditional request (`unchanged`) is first answered from the organization's version and
/// account set alone, never reading usage_monthly: `NotModified` when the caller's copy is
/// current.
pub async fn list(
    conn: &mut AsyncPgConnection,
    organization_id: &str,
    query: &ListRequest,
    seek: Option<&Seek>,
    cache: &ReadCache,
    unchanged: Option<&Unchanged>,
) -> QueryResult<Listed> {
    if let Some(unchanged) = unchanged {
        let version = version(conn, organization_id).await?;
        let filter = query.filter.as_ref();
        let foreign = foreign_accounts(conn, organization_id, &version, filter, cache).await?;
        if !foreign.is_empty() {
            return Ok(Listed::Forbidden(foreign));
        }
        if unchanged(&version) {
            return Ok(Listed::NotModified(version));
        }
    }
    let filter = query.filter.as_ref();
    if let Some((key, total)) = cache.latest_total(organization_id, filter) {
        let ids = filter.map(Filter::account_ids).unwrap_or_default();
        let owned = ids.is_empty()
            || cache
                .accounts(organization_id, key)
                .is_some_and(|own| ids.iter().all(|id| own.contains(id)));
        if owned {
            let known = (key, total);
            if let Some(listed) = speculate(conn, organization_id, query, seek, known).await? {
                return Ok(listed);
            }
        }
    }
    conn.build_transaction()
        .read_only()
        .repeatable_read()
        .run(async |conn| list_in_snapshot(conn, organization_id, query, seek, cache).await)
        .await
}

/// The careful way, inside the caller's read-only REPEATABLE READ transaction: the version, the
/// ownership check, the total (cached per version) and the page, all of one snapshot.
async fn list_in_snapshot(
    conn: &mut AsyncPgConnection,
    organization_id: &str,
    query: &ListRequest,
    seek: Option<&Seek>,
    cache: &ReadCache,
) -> QueryResult<Listed> {
    let filter = query.filter.as_ref();
    let version = version(conn, organization_id).await?;
    let foreign = foreign_accounts(conn, organization_id, &version, filter, cache).await?;
    if !foreign.is_empty() {
        return Ok(Listed::Forbidden(foreign));
    }
    let total = match cache.total(organization_id, version.key(), filter) {
        Some(total) => total,
        None => {
            let total: i64 = scoped(organization_id, filter)
                .count()
                .get_result(conn)
                .await?;
            cache.remember_total(organization_id, version.key(), filter, total);
            total
        }
    };
    let (rows, access) = read_page(conn, organization_id, query, total, seek, version).await?;
    Ok(Listed::Page(
        Page {
            total,
            rows,
            version,
        },
        access,
    ))
}

/// `list`, run to completion in a task of its own even if the caller stops waiting (a client
/// that went away): the pipelined path sends `BEGIN` and `COMMIT` itself, and a connection must
/// never go back to the pool with a transaction still open. Takes everything it needs by value.
pub async fn list_to_completion(
    mut conn: crate::db::pool::DbConn,
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
            organization.as_str(),
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
    organization_id: &'a str,
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
                ordered(scoped(organization_id, filter), &query.order, reverse).filter(predicate);
            (reverse, Access::Seek, base)
        }
        _ if after_page < start => {
            let base =
                ordered(scoped(organization_id, filter), &query.order, true).offset(after_page);
            (true, Access::ReverseOffset, base)
        }
        _ => {
            let base = ordered(scoped(organization_id, filter), &query.order, false).offset(start);
            (false, Access::Offset, base)
        }
    };
    Some((base.limit(on_page), reverse, access))
}

async fn read_page(
    conn: &mut AsyncPgConnection,
    organization_id: &str,
    query: &ListRequest,
    total: i64,
    seek: Option<&Seek>,
    version: Version,
) -> QueryResult<(Vec<MonthlyRow>, Access)> {
    let Some((base, reverse, access)) = plan(organization_id, query, total, seek, version.key())
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
    organization_id: &str,
    query: &ListRequest,
    seek: Option<&Seek>,
    known: ((u64, i64), i64),
) -> QueryResult<Option<Listed>> {
    let (key, total) = known;
    let planned = plan(organization_id, query, total, seek, key);
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
        version_query(organization_id).first::<VersionRow>(&mut read_version),
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
            // The connection may be unusable (its error is the one to report); the pool checks
            // connections before handing them out again.
            let _ = end.batch_execute("ROLLBACK").await;
            Err(err)
        }
    }
}

/// One record of `organization_id` and the organization's version, in one snapshot.
pub async fn find_versioned(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    id: Uuid,
) -> QueryResult<(Version, Option<MonthlyRow>)> {
    let organization_id = organization.as_str();
    conn.build_transaction()
        .read_only()
        .repeatable_read()
        .run(async |conn| {
            let version = version(conn, organization_id).await?;
            Ok((version, find(conn, organization_id, id).await?))
        })
        .await
}

/// One record of `organization_id`; `None` when it does not exist or belongs to another.
pub async fn find(
    conn: &mut AsyncPgConnection,
    organization_id: &str,
    id: Uuid,
) -> QueryResult<Option<MonthlyRow>> {
    um::usage_monthly
        .filter(um::organization_id.eq(organization_id))
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
