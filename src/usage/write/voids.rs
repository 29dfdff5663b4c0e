//! Voids: a correction names an earlier event of its organization, which every aggregate then
//! leaves out. A void is idempotent by its own id (claimed in the ledger like an event's), and
//! one event is voided at most once.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::batch::{Batch, Candidate, Outcome};
use super::event::NewVoid;
use super::ledger::{claim, Claim, LedgerKey};
use crate::db::schema::{usage_event_ids, usage_voids};
use crate::usage::model::{AccountId, Month, OrganizationId};
use crate::usage::rollup::dirty::DirtyMark;

/// A void whose target was found: the voided event's account and time.
struct Resolved<'a> {
    index: usize,
    organization_id: &'a OrganizationId,
    void: &'a NewVoid,
    account_id: AccountId,
    occurred_at: DateTime<Utc>,
}

impl Resolved<'_> {
    /// The void's own ledger key.
    fn key(&self) -> LedgerKey {
        (self.organization_id.clone(), self.void.event_id.clone())
    }

    /// The voided event's month (first day).
    fn month(&self) -> NaiveDate {
        Month::of(self.occurred_at).first_day()
    }
}

/// Stores the batch's voids (first of their id in the batch, organization known). The event a
/// void cancels must exist in its organization (of the void's account, when it names one), not
/// be a void, and not be voided already. Its (account, month) is marked dirty so that the
/// rollup drops the event.
pub(super) async fn store_voids(
    conn: &mut AsyncPgConnection,
    voids: &[Candidate<'_, NewVoid>],
    batch: &mut Batch,
) -> QueryResult<()> {
    let known = Targets::read(conn, voids).await?;
    let mut resolved: Vec<Resolved> = Vec::new();
    for &(index, org, void) in voids {
        match known.resolve(org, void) {
            Ok((account_id, occurred_at)) => resolved.push(Resolved {
                index,
                organization_id: org,
                void,
                account_id,
                occurred_at,
            }),
            Err(refusal) => batch.outcomes[index] = Some(refusal),
        }
    }
    // The voids' own ids, claimed in the ledger like events' (a repeat is a duplicate).
    resolved.sort_unstable_by(|a, b| {
        (a.organization_id, &a.void.event_id).cmp(&(b.organization_id, &b.void.event_id))
    });
    let claims: Vec<Claim> = resolved
        .iter()
        .map(|r| Claim {
            organization_id: r.organization_id,
            event_id: &r.void.event_id,
            account_id: &r.account_id,
            occurred_at: r.occurred_at,
        })
        .collect();
    let new = claim(conn, &claims).await?;
    let (claimed, duplicates): (Vec<Resolved>, Vec<Resolved>) =
        resolved.into_iter().partition(|r| new.contains(&r.key()));
    for r in duplicates {
        batch.outcomes[r.index] = Some(Outcome::Duplicate);
    }
    if claimed.is_empty() {
        return Ok(());
    }
    insert_void_rows(conn, claimed, batch).await
}

/// The voids' targets as the ledger knows them (this transaction's events included), and which
/// of them are voids (the batch's own voids among them).
struct Targets {
    events: HashMap<LedgerKey, (AccountId, DateTime<Utc>)>,
    voids: HashSet<LedgerKey>,
}

impl Targets {
    async fn read(
        conn: &mut AsyncPgConnection,
        voids: &[Candidate<'_, NewVoid>],
    ) -> QueryResult<Targets> {
        let organizations: Vec<&OrganizationId> = voids.iter().map(|v| v.1).collect();
        let named: Vec<&str> = voids.iter().map(|v| v.2.voids.as_str()).collect();
        let events = usage_event_ids::table
            .filter(usage_event_ids::organization_id.eq_any(&organizations))
            .filter(usage_event_ids::event_id.eq_any(&named))
            .select((
                usage_event_ids::organization_id,
                usage_event_ids::event_id,
                usage_event_ids::account_id,
                usage_event_ids::occurred_at,
            ))
            .load::<(OrganizationId, String, AccountId, DateTime<Utc>)>(conn)
            .await?
            .into_iter()
            .map(|(org, id, account, at)| ((org, id), (account, at)))
            .collect();
        let mut are_voids: HashSet<LedgerKey> = usage_voids::table
            .filter(usage_voids::organization_id.eq_any(&organizations))
            .filter(usage_voids::event_id.eq_any(&named))
            .select((usage_voids::organization_id, usage_voids::event_id))
            .load::<LedgerKey>(conn)
            .await?
            .into_iter()
            .collect();
        are_voids.extend(
            voids
                .iter()
                .map(|(_, org, v)| ((*org).clone(), v.event_id.clone())),
        );
        Ok(Targets {
            events,
            voids: are_voids,
        })
    }

    /// The account and time of the event `void` cancels, or why it cannot.
    fn resolve(
        &self,
        org: &OrganizationId,
        void: &NewVoid,
    ) -> Result<(AccountId, DateTime<Utc>), Outcome> {
        let key = (org.clone(), void.voids.clone());
        if self.voids.contains(&key) {
            let reason = format!("'{}' is a void; it cannot be voided", void.voids);
            return Err(Outcome::Rejected(reason));
        }
        match self.events.get(&key) {
            // A void naming an account must name the voided event's.
            Some((account, at)) if void.account_id.as_ref().is_none_or(|a| a == account) => {
                Ok((account.clone(), *at))
            }
            _ => Err(Outcome::Rejected(format!("unknown event '{}'", void.voids))),
        }
    }
}

/// One void per voided event: the first of the batch wins; the others, and any void of an
/// event voided before, give their ledger claim back.
async fn insert_void_rows(
    conn: &mut AsyncPgConnection,
    mut claimed: Vec<Resolved<'_>>,
    batch: &mut Batch,
) -> QueryResult<()> {
    claimed.sort_by(|a, b| {
        (a.organization_id, &a.void.voids, a.index).cmp(&(
            b.organization_id,
            &b.void.voids,
            b.index,
        ))
    });
    let rows: Vec<_> = claimed
        .iter()
        .map(|r| {
            (
                usage_voids::organization_id.eq(r.organization_id),
                usage_voids::event_id.eq(&r.void.event_id),
                usage_voids::voided_event_id.eq(&r.void.voids),
                usage_voids::account_id.eq(&r.account_id),
                usage_voids::month.eq(r.month()),
            )
        })
        .collect();
    let stored: HashSet<LedgerKey> = diesel::insert_into(usage_voids::table)
        .values(&rows)
        .on_conflict_do_nothing()
        .returning((usage_voids::organization_id, usage_voids::event_id))
        .get_results::<LedgerKey>(conn)
        .await?
        .into_iter()
        .collect();
    for r in claimed {
        let key = r.key();
        if stored.contains(&key) {
            batch.dirty.push(DirtyMark {
                organization_id: key.0,
                account_id: r.account_id.clone(),
                month: r.month(),
            });
            batch.outcomes[r.index] = Some(Outcome::Accepted);
        } else {
            diesel::delete(usage_event_ids::table.find((&key.0, &key.1)))
                .execute(conn)
                .await?;
            let reason = format!("event '{}' is already voided", r.void.voids);
            batch.outcomes[r.index] = Some(Outcome::Rejected(reason));
        }
    }
    Ok(())
}
