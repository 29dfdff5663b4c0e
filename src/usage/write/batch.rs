//! One batch of entries on its way to the database: the outcome of each entry as it becomes
//! known, and the dirty marks it makes.

use std::collections::{HashMap, HashSet};

use super::event::{coded, Entry, NewEvent, NewVoid, UNKNOWN_ACCOUNT};
use crate::usage::model::{AccountId, OrganizationId};
use crate::usage::rollup::dirty::DirtyMark;

/// The organization of each account a batch names (those it may use).
pub type Owners = HashMap<AccountId, OrganizationId>;

/// The outcome of one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    Rejected(String),
}

/// An entry to store: its index in the batch, its organization, and itself.
pub type Candidate<'a, T> = (usize, &'a OrganizationId, &'a T);

/// What a batch comes to so far: an outcome per entry (once known) and the dirty keys.
pub struct Batch {
    pub outcomes: Vec<Option<Outcome>>,
    pub dirty: Vec<DirtyMark>,
}

impl Batch {
    pub fn new(len: usize) -> Self {
        Batch {
            outcomes: vec![None; len],
            dirty: Vec::new(),
        }
    }

    /// Gives each entry its organization (or its refusal), and keeps the first entry of each
    /// (organization, id) as the candidate: later ones are duplicates.
    pub fn candidates<'a>(
        &mut self,
        entries: &'a [Entry],
        organization: Option<&'a OrganizationId>,
        owners: &'a Owners,
    ) -> (Vec<Candidate<'a, NewEvent>>, Vec<Candidate<'a, NewVoid>>) {
        let mut seen: HashSet<(&OrganizationId, &str)> = HashSet::new();
        let (mut events, mut voids) = (Vec::new(), Vec::new());
        for (index, entry) in entries.iter().enumerate() {
            let placed = match entry {
                Entry::Event(event) => owners
                    .get(&event.account_id)
                    .map(|org| (org, event.event_id.as_str()))
                    .ok_or_else(|| unknown_account(&event.account_id)),
                Entry::Void(void) => void_organization(void, organization, owners)
                    .map(|org| (org, void.event_id.as_str())),
            };
            let (org, id) = match placed {
                Ok(placed) => placed,
                Err(refusal) => {
                    self.outcomes[index] = Some(refusal);
                    continue;
                }
            };
            if !seen.insert((org, id)) {
                self.outcomes[index] = Some(Outcome::Duplicate);
                continue;
            }
            match entry {
                Entry::Event(event) => events.push((index, org, event)),
                Entry::Void(void) => voids.push((index, org, void)),
            }
        }
        (events, voids)
    }
}

fn unknown_account(account: &AccountId) -> Outcome {
    Outcome::Rejected(coded(
        UNKNOWN_ACCOUNT,
        format!("'{account}' is not an account of this organization"),
    ))
}

/// The organization a void acts in: the caller's (HTTP; an account it names must be one of
/// the caller's), or that of the account it names (files, where the account is required).
fn void_organization<'a>(
    void: &NewVoid,
    organization: Option<&'a OrganizationId>,
    owners: &'a Owners,
) -> Result<&'a OrganizationId, Outcome> {
    match (&void.account_id, organization) {
        (Some(account), _) => owners.get(account).ok_or_else(|| unknown_account(account)),
        (None, Some(org)) => Ok(org),
        (None, None) => Err(Outcome::Rejected(
            "account_id is missing: a void names the account of the event it voids".to_owned(),
        )),
    }
}
