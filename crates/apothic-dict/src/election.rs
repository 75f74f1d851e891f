//! Leader elections, the etcd `Election` recipe on the engine's own key space.
//!
//! `campaign` queues a key `SYSTEM_PREFIX election\0 <len><name> <revision>` attached to the
//! candidate's lease; the candidacy with the smallest revision leads. That revision names the
//! leader's term (a fence for its writes); `proclaim` rewrites the leader's value and is refused
//! to anyone else; `resign` or the end of the lease hands leadership to the next in line.

use crate::engine::Dict;
use crate::lock::{queue_key, queue_prefix, Standing};
use crate::types::{DictError, Entry, LeaseId, Outcome};

const ELECTION_SPACE: &[u8] = b"election\0";

/// One candidate's place in an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidacy {
    pub election: Vec<u8>,
    pub candidate: Vec<u8>,
    /// The revision the candidacy was queued at: its identity and, once leading, its term.
    pub revision: u64,
    pub lease: LeaseId,
}

/// The current leader of an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub candidate: Vec<u8>,
    pub value: Vec<u8>,
    /// The candidacy's revision; strictly increases from one leader to the next.
    pub revision: u64,
    /// The revision of the last proclamation (or of the campaign).
    pub mod_revision: u64,
    pub lease: LeaseId,
}

/// Stored value: u32 big-endian candidate length, candidate, proclaimed value.
fn encode(candidate: &[u8], value: &[u8]) -> Result<Vec<u8>, DictError> {
    let len = u32::try_from(candidate.len()).map_err(|_| DictError::InvalidArgument {
        reason: "a candidate name must be under 4 GiB",
    })?;
    let mut out = Vec::with_capacity(4 + candidate.len() + value.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(candidate);
    out.extend_from_slice(value);
    Ok(out)
}

fn decode(stored: &[u8]) -> Option<(&[u8], &[u8])> {
    let len_bytes: [u8; 4] = stored.get(..4)?.try_into().ok()?;
    let len = usize::try_from(u32::from_be_bytes(len_bytes)).ok()?;
    let rest = stored.get(4..)?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

fn leader_of(revision: u64, entry: &Entry) -> Option<Leader> {
    let (candidate, value) = decode(&entry.value)?;
    Some(Leader {
        candidate: candidate.to_vec(),
        value: value.to_vec(),
        revision,
        mod_revision: entry.mod_revision,
        lease: entry.lease?,
    })
}

impl Dict {
    /// Enters `candidate` with `value` under `lease` (which must be live at `now`), at one
    /// revision. It leads at once if nobody is ahead; otherwise watch
    /// [`Dict::candidacy_standing`] after each change.
    pub fn campaign(
        &mut self,
        name: &[u8],
        candidate: Vec<u8>,
        value: Vec<u8>,
        lease: LeaseId,
        now: u64,
    ) -> Result<Outcome<(Candidacy, Standing)>, DictError> {
        let prefix = queue_prefix(ELECTION_SPACE, name)?;
        let stored = encode(&candidate, &value)?;
        self.check_lease(lease, now)?;
        let mut batch = self.batch();
        let revision = batch.revision;
        self.write(
            &mut batch,
            queue_key(&prefix, revision),
            stored,
            Some(lease),
        );
        let ahead = self
            .queue_members(&prefix)
            .take_while(|(r, _)| *r < revision)
            .count();
        let standing = if ahead == 0 {
            Standing::Acquired
        } else {
            Standing::Waiting { ahead }
        };
        let candidacy = Candidacy {
            election: name.to_vec(),
            candidate,
            revision,
            lease,
        };
        Ok(self.commit(batch, (candidacy, standing)))
    }

    /// Where candidacy `revision` stands at `now`; `NotLeader` once it left the queue or its
    /// lease is overdue.
    pub fn candidacy_standing(
        &self,
        name: &[u8],
        revision: u64,
        now: u64,
    ) -> Result<Standing, DictError> {
        let prefix = queue_prefix(ELECTION_SPACE, name)?;
        self.standing_in(&prefix, revision, now)
            .ok_or(DictError::NotLeader { revision })
    }

    /// Sets the leader's value; `NotLeader` unless candidacy `revision` leads with a live lease.
    pub fn proclaim(
        &mut self,
        name: &[u8],
        revision: u64,
        value: Vec<u8>,
        now: u64,
    ) -> Result<Outcome<Leader>, DictError> {
        let prefix = queue_prefix(ELECTION_SPACE, name)?;
        if self.standing_in(&prefix, revision, now) != Some(Standing::Acquired) {
            return Err(DictError::NotLeader { revision });
        }
        let key = queue_key(&prefix, revision);
        let current = self
            .system
            .get(&key)
            .ok_or(DictError::NotLeader { revision })?;
        let (candidate, _) = decode(&current.value).ok_or(DictError::NotLeader { revision })?;
        let stored = encode(candidate, &value)?;
        let lease = current.lease;
        let mut batch = self.batch();
        let (entry, _) = self.write(&mut batch, key, stored, lease);
        let leader = leader_of(revision, &entry).ok_or(DictError::NotLeader { revision })?;
        Ok(self.commit(batch, leader))
    }

    /// Withdraws candidacy `revision` (leading or waiting); its lease stays. Returns the leader
    /// after the call. `NotLeader` if the candidacy is not queued.
    pub fn resign(
        &mut self,
        name: &[u8],
        revision: u64,
    ) -> Result<Outcome<Option<Leader>>, DictError> {
        let prefix = queue_prefix(ELECTION_SPACE, name)?;
        let mut batch = self.batch();
        if self
            .remove(&mut batch, &queue_key(&prefix, revision))
            .is_none()
        {
            return Err(DictError::NotLeader { revision });
        }
        let leader = self.leader(name);
        Ok(self.commit(batch, leader))
    }

    /// The first candidacy in line (its lease may be overdue but not yet swept).
    pub fn leader(&self, name: &[u8]) -> Option<Leader> {
        let prefix = queue_prefix(ELECTION_SPACE, name).ok()?;
        let (revision, entry) = self.queue_members(&prefix).next()?;
        leader_of(revision, entry)
    }

    /// Every candidacy in line, leader first.
    pub fn candidates(&self, name: &[u8]) -> Vec<Leader> {
        let Ok(prefix) = queue_prefix(ELECTION_SPACE, name) else {
            return Vec::new();
        };
        self.queue_members(&prefix)
            .filter_map(|(r, e)| leader_of(r, e))
            .collect()
    }
}

#[cfg(test)]
#[path = "election_tests.rs"]
mod tests;
