//! `Idempotency-Key`: the first request with a key is processed and its answer stored; a repeat
//! of the same request gets that answer, another request with the key is refused — for
//! `USAGE_API_IDEMPOTENCY_TTL_HOURS`, after which the key is free again and a periodic job
//! deletes the answer. Keys are per organization.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::db::schema::idempotency_keys as keys;
use crate::usage::model::OrganizationId;

/// An `Idempotency-Key` and the digest of the request it came with.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyKey<'a> {
    pub key: &'a str,
    pub request_hash: &'a str,
    /// Answers stored before this instant have expired (`USAGE_API_IDEMPOTENCY_TTL_HOURS`): the
    /// key is then free again, whether or not the cleaning job has deleted it yet.
    pub expired_before: DateTime<Utc>,
}

/// What became of a submitted batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submission {
    /// Processed now; the rendered answer (stored under the key, if any).
    Stored(String),
    /// The same key and request were processed before: their stored answer.
    Replayed(String),
    /// The key was used before for a different request.
    KeyReused,
}

/// Claims `key` for this request; `Some` is the answer when the key is taken (by the same
/// request: replay it; by another: refuse). An expired key is taken over: one conditional
/// UPDATE, so of two requests racing for it exactly one wins.
pub(super) async fn claim_key(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    key: IdempotencyKey<'_>,
) -> QueryResult<Option<Submission>> {
    let claimed = diesel::insert_into(keys::table)
        .values((
            keys::organization_id.eq(organization),
            keys::key.eq(key.key),
            keys::request_hash.eq(key.request_hash),
            keys::response.eq(""),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    if claimed > 0 {
        return Ok(None);
    }
    let renewed = diesel::update(keys::table.find((organization, key.key)))
        .filter(keys::created_at.lt(key.expired_before))
        .set((
            keys::request_hash.eq(key.request_hash),
            keys::response.eq(""),
            keys::created_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    if renewed > 0 {
        return Ok(None);
    }
    let (hash, response): (String, String) = keys::table
        .find((organization, key.key))
        .select((keys::request_hash, keys::response))
        .first(conn)
        .await?;
    Ok(Some(if hash == key.request_hash {
        Submission::Replayed(response)
    } else {
        Submission::KeyReused
    }))
}

/// Deletes the `Idempotency-Key` answers stored before `expired_before`, a bounded batch at a
/// time; returns how many went.
pub async fn delete_expired_keys(
    conn: &mut AsyncPgConnection,
    expired_before: DateTime<Utc>,
) -> QueryResult<usize> {
    // A bounded batch per statement, so that no single delete holds many row locks for long.
    const BATCH: usize = 10_000;
    let mut deleted = 0;
    loop {
        let batch = diesel::sql_query(
            "DELETE FROM idempotency_keys WHERE ctid IN \
             (SELECT ctid FROM idempotency_keys WHERE created_at < $1 LIMIT 10000)",
        )
        .bind::<diesel::sql_types::Timestamptz, _>(expired_before)
        .execute(conn)
        .await?;
        deleted += batch;
        if batch < BATCH {
            return Ok(deleted);
        }
    }
}
