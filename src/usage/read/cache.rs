//! What the read path remembers between requests: exact totals per (organization, filter, data
//! version) and each organization's account set per data version.
//!
//! Both are keyed by `organizations.data_version`, which moves in the same transaction as every
//! change to the organization's rows or accounts (triggers, migration 3), and by the database
//! epoch (migration 4), which tells a restored or failed-over database's versions apart. A version is read in
//! the same snapshot as the rows it serves, so an entry can never describe other data than the
//! request sees: nothing is ever invalidated, stale versions simply age out. Every replica
//! keeps its own cache and stays stateless. Both caches are bounded.

use std::collections::HashSet;
use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::Weighter;

use super::filter::Filter;
use crate::usage::digest;
use crate::usage::model::{AccountId, OrganizationId};

/// Totals remembered (32-byte key and an i64 each: about 6 MB at most).
const COUNT_ENTRIES: usize = 100_000;
/// Account ids remembered across all organizations (about 100 bytes each at most).
const ACCOUNT_IDS: u64 = 500_000;

#[derive(Clone)]
struct AccountsWeight;

/// (epoch, data version): see `monthly::Version::key`.
pub type VersionKey = (u64, i64);

impl Weighter<(OrganizationId, VersionKey), Arc<HashSet<AccountId>>> for AccountsWeight {
    fn weight(&self, _key: &(OrganizationId, VersionKey), set: &Arc<HashSet<AccountId>>) -> u64 {
        set.len() as u64 + 1
    }
}

pub struct ReadCache {
    counts: Cache<[u8; 32], i64>,
    /// The newest (data version, total) seen per (organization, filter): lets a read plan its
    /// page before it knows the version, and check the guess in the same snapshot.
    latest: Cache<[u8; 32], (VersionKey, i64)>,
    accounts: Cache<(OrganizationId, VersionKey), Arc<HashSet<AccountId>>, AccountsWeight>,
}

impl Default for ReadCache {
    fn default() -> Self {
        Self {
            counts: Cache::new(COUNT_ENTRIES),
            latest: Cache::new(COUNT_ENTRIES),
            accounts: Cache::with_weighter(10_000, ACCOUNT_IDS, AccountsWeight),
        }
    }
}

/// The filter's meaning, independent of spelling (keyword case, spaces, parentheses), so that
/// `month eq '2024-01'` and `MONTH  EQ '2024-01'` share one total. `version` is left out of
/// the key of `latest`.
fn count_key(
    organization: &OrganizationId,
    version: Option<VersionKey>,
    filter: Option<&Filter>,
) -> [u8; 32] {
    let version = version.map(|(epoch, version)| {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&epoch.to_le_bytes());
        bytes[8..].copy_from_slice(&version.to_le_bytes());
        bytes
    });
    digest::sha256(&[
        organization.as_str().as_bytes(),
        version
            .as_ref()
            .map_or(b"latest".as_slice(), |v| v.as_slice()),
        filter.map_or(b"".as_slice(), |f| f.meaning().as_slice()),
    ])
}

impl ReadCache {
    pub fn total(
        &self,
        organization: &OrganizationId,
        version: VersionKey,
        filter: Option<&Filter>,
    ) -> Option<i64> {
        self.counts
            .get(&count_key(organization, Some(version), filter))
    }

    /// The newest (data version, total) this server has seen for the list.
    pub fn latest_total(
        &self,
        organization: &OrganizationId,
        filter: Option<&Filter>,
    ) -> Option<(VersionKey, i64)> {
        self.latest.get(&count_key(organization, None, filter))
    }

    pub fn remember_total(
        &self,
        organization: &OrganizationId,
        version: VersionKey,
        filter: Option<&Filter>,
        total: i64,
    ) {
        self.counts
            .insert(count_key(organization, Some(version), filter), total);
        let latest = count_key(organization, None, filter);
        if self
            .latest
            .get(&latest)
            // A newer version of the same database, or any version of another one.
            .is_none_or(|(seen, _)| seen.0 != version.0 || seen.1 <= version.1)
        {
            self.latest.insert(latest, (version, total));
        }
    }

    pub fn accounts(
        &self,
        organization: &OrganizationId,
        version: VersionKey,
    ) -> Option<Arc<HashSet<AccountId>>> {
        self.accounts.get(&(organization.clone(), version))
    }

    pub fn remember_accounts(
        &self,
        organization: &OrganizationId,
        version: VersionKey,
        ids: Vec<AccountId>,
    ) -> Arc<HashSet<AccountId>> {
        let set = Arc::new(ids.into_iter().collect::<HashSet<_>>());
        self.accounts
            .insert((organization.clone(), version), set.clone());
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_per_organization_version_and_meaning() {
        let cache = ReadCache::default();
        let (org, org2) = (OrganizationId::parse("org"), OrganizationId::parse("org2"));
        let (org, org2) = (&org.unwrap(), &org2.unwrap());
        let a = crate::usage::read::filter::parse("month eq '2024-01'").unwrap();
        let b = crate::usage::read::filter::parse("MONTH   EQ '2024-01'").unwrap();
        let c = crate::usage::read::filter::parse("month eq '2024-02'").unwrap();
        cache.remember_total(org, (1, 3), a.as_ref(), 7);
        assert_eq!(cache.total(org, (1, 3), b.as_ref()), Some(7));
        assert_eq!(cache.total(org, (1, 4), a.as_ref()), None);
        assert_eq!(
            cache.total(org, (2, 3), a.as_ref()),
            None,
            "another database"
        );
        assert_eq!(cache.total(org2, (1, 3), a.as_ref()), None);
        assert_eq!(cache.total(org, (1, 3), c.as_ref()), None);
        assert_eq!(cache.total(org, (1, 3), None), None);
        // A restored database's older version replaces the newest known of the old one.
        cache.remember_total(org, (2, 1), a.as_ref(), 9);
        assert_eq!(cache.latest_total(org, a.as_ref()), Some(((2, 1), 9)));
    }
}
