//! Leases: TTLs measured on the server clock, kept alive by the client, that delete their
//! keys (at one revision, with delete events) when revoked or overdue.
//!
//! Granting and revoking are durable changes; a keepalive is not, because `restore` gives
//! every lease a full TTL anyway.

use std::cmp::Reverse;

use crate::engine::{Batch, Dict};
use crate::types::{Change, DictError, LeaseId, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: LeaseId,
    pub ttl_ms: u64,
    /// The lease ends at this time unless kept alive (a lower bound: it ends when `expire`
    /// runs at or after it).
    pub expires_at: u64,
    /// Keys attached to the lease.
    pub keys: usize,
}

impl Dict {
    /// Grants a lease of `ttl_ms`; its id is the revision of the grant.
    pub fn grant(&mut self, ttl_ms: u64, now: u64) -> Result<Outcome<LeaseInfo>, DictError> {
        let mut batch = self.batch();
        let info = self.grant_in(&mut batch, ttl_ms, now)?;
        Ok(self.commit(batch, info))
    }

    pub(crate) fn grant_in(
        &mut self,
        batch: &mut Batch,
        ttl_ms: u64,
        now: u64,
    ) -> Result<LeaseInfo, DictError> {
        if ttl_ms == 0 {
            return Err(DictError::InvalidArgument {
                reason: "a lease TTL must be positive",
            });
        }
        let id = batch.revision;
        let expires_at = self.insert_lease(id, ttl_ms, now);
        batch.changes.push(Change::LeaseGranted {
            revision: id,
            lease: id,
            ttl_ms,
        });
        Ok(LeaseInfo {
            id,
            ttl_ms,
            expires_at,
            keys: 0,
        })
    }

    /// Extends a live lease to `now + ttl`. An overdue lease cannot be revived, even before
    /// `expire` has swept it: its keys may already be promised to someone else.
    pub fn keepalive(&mut self, lease: LeaseId, now: u64) -> Result<LeaseInfo, DictError> {
        self.check_lease(lease, now)?;
        let state = self
            .leases
            .get_mut(&lease)
            .ok_or(DictError::LeaseNotFound { lease })?;
        state.expires_at = now.saturating_add(state.ttl_ms);
        let info = LeaseInfo {
            id: lease,
            ttl_ms: state.ttl_ms,
            expires_at: state.expires_at,
            keys: state.keys.len(),
        };
        self.deadlines.push(Reverse((info.expires_at, lease)));
        Ok(info)
    }

    /// Ends a lease now (live or overdue) and deletes its keys at one revision; returns the
    /// deleted keys in key order.
    pub fn revoke(&mut self, lease: LeaseId) -> Result<Outcome<Vec<Vec<u8>>>, DictError> {
        if !self.leases.contains_key(&lease) {
            return Err(DictError::LeaseNotFound { lease });
        }
        let mut batch = self.batch();
        let keys = self.revoke_in(&mut batch, lease);
        Ok(self.commit(batch, keys))
    }

    pub(crate) fn revoke_in(&mut self, batch: &mut Batch, lease: LeaseId) -> Vec<Vec<u8>> {
        let Some(state) = self.leases.remove(&lease) else {
            return Vec::new();
        };
        for key in &state.keys {
            self.remove(batch, key);
        }
        batch.changes.push(Change::LeaseRevoked {
            revision: batch.revision,
            lease,
        });
        state.keys.into_iter().collect()
    }

    /// Revokes every lease overdue at `now`, each at a revision of its own, in deadline order;
    /// returns their ids.
    pub fn expire(&mut self, now: u64) -> Outcome<Vec<LeaseId>> {
        let mut expired = Vec::new();
        let mut changes = Vec::new();
        while let Some(Reverse((deadline, lease))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            match self.leases.get(&lease) {
                Some(state) if state.expires_at == deadline => {}
                _ => continue, // revoked, or kept alive since: a later deadline entry stands for it
            }
            let mut batch = self.batch();
            self.revoke_in(&mut batch, lease);
            changes.extend(self.commit(batch, ()).changes);
            expired.push(lease);
        }
        Outcome {
            value: expired,
            revision: self.revision,
            changes,
        }
    }

    /// A lease's state, if it has not been revoked or swept (it may be overdue).
    pub fn lease(&self, lease: LeaseId) -> Option<LeaseInfo> {
        self.leases.get(&lease).map(|l| LeaseInfo {
            id: lease,
            ttl_ms: l.ttl_ms,
            expires_at: l.expires_at,
            keys: l.keys.len(),
        })
    }

    /// Keys attached to a lease, in key order.
    pub fn lease_keys(&self, lease: LeaseId) -> Vec<Vec<u8>> {
        self.leases
            .get(&lease)
            .map(|l| l.keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// When `expire` should next run: the earliest recorded deadline (possibly a stale,
    /// earlier one, never a later one).
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.peek().map(|Reverse((t, _))| *t)
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
