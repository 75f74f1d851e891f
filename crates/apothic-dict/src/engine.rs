//! The key space: revisions, entries, point operations, compare-and-swap, restore.
//!
//! Leases, txns, locks and elections are further `impl Dict` blocks in their own modules.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::ops::Bound;

use crate::history::History;
use crate::types::{
    Change, Compare, CompareOp, DictConfig, DictError, Entry, Event, EventKind, Expect, LeaseId,
    Outcome, PutOptions, PutResult, Snapshot,
};

/// Keys under this prefix belong to the engine (lock queues, election queues). Users can
/// neither read nor write them through the key-space methods.
pub const SYSTEM_PREFIX: &[u8] = b"\0apothic\0";

pub fn is_system_key(key: &[u8]) -> bool {
    key.starts_with(SYSTEM_PREFIX)
}

#[derive(Debug)]
pub(crate) struct LeaseState {
    pub(crate) ttl_ms: u64,
    pub(crate) expires_at: u64,
    pub(crate) keys: BTreeSet<Vec<u8>>,
}

/// The changes of one call, all at `revision`; `Dict::commit` makes them current.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) revision: u64,
    pub(crate) changes: Vec<Change>,
}

#[derive(Debug)]
pub struct Dict {
    pub(crate) revision: u64,
    pub(crate) user: BTreeMap<Vec<u8>, Entry>,
    pub(crate) system: BTreeMap<Vec<u8>, Entry>,
    pub(crate) leases: HashMap<LeaseId, LeaseState>,
    /// Lease deadlines; entries of renewed or revoked leases are stale and skipped lazily.
    pub(crate) deadlines: BinaryHeap<Reverse<(u64, LeaseId)>>,
    pub(crate) history: History,
}

impl Dict {
    pub fn new(config: DictConfig) -> Self {
        Dict {
            revision: 0,
            user: BTreeMap::new(),
            system: BTreeMap::new(),
            leases: HashMap::new(),
            deadlines: BinaryHeap::new(),
            history: History::new(config.history, 0),
        }
    }

    /// Rebuilds the engine from persisted state. Every lease gets a full TTL from `now` (the
    /// etcd policy: no lease expires because the server was down); the watch history starts
    /// empty, compacted at the restored revision.
    pub fn restore(config: DictConfig, snapshot: Snapshot, now: u64) -> Result<Dict, DictError> {
        let invalid = |reason| Err(DictError::InvalidArgument { reason });
        let mut dict = Dict::new(config);
        dict.revision = snapshot.revision;
        dict.history = History::new(config.history, snapshot.revision);
        for (&id, &ttl_ms) in &snapshot.leases {
            if id == 0 || id > snapshot.revision || ttl_ms == 0 {
                return invalid("snapshot lease has a zero TTL or an id above the revision");
            }
            dict.insert_lease(id, ttl_ms, now);
        }
        for (key, entry) in snapshot.entries {
            let revisions_ok = entry.version >= 1
                && entry.create_revision >= 1
                && entry.create_revision <= entry.mod_revision
                && entry.mod_revision <= snapshot.revision;
            if !revisions_ok {
                return invalid("snapshot entry has inconsistent version or revisions");
            }
            if let Some(lease) = entry.lease {
                let Some(state) = dict.leases.get_mut(&lease) else {
                    return invalid("snapshot entry is attached to a lease the snapshot lacks");
                };
                state.keys.insert(key.clone());
            }
            dict.space_mut(&key).insert(key, entry);
        }
        Ok(dict)
    }

    /// The durable state, lock and election keys included; `restore` of it rebuilds this dict.
    pub fn export(&self) -> Snapshot {
        let mut entries = self.user.clone();
        entries.extend(self.system.iter().map(|(k, e)| (k.clone(), e.clone())));
        let leases = self.leases.iter().map(|(&id, l)| (id, l.ttl_ms)).collect();
        Snapshot {
            revision: self.revision,
            entries,
            leases,
        }
    }

    /// The revision of the last committed mutation (0 for a new dict).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.user.get(key)
    }

    /// User keys starting with `prefix`, in key order (the empty prefix lists them all).
    pub fn range<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a Entry)> + 'a {
        prefix_range(&self.user, prefix)
    }

    /// Number of user keys.
    pub fn len(&self) -> usize {
        self.user.len()
    }

    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
    }

    /// Writes `key`. With `opts.lease` the key is attached to that lease, which must be live at
    /// `now`; without it any earlier attachment is dropped.
    pub fn put(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        opts: PutOptions,
        now: u64,
    ) -> Result<Outcome<PutResult>, DictError> {
        check_user_key(&key)?;
        if let Some(lease) = opts.lease {
            self.check_lease(lease, now)?;
        }
        if opts.skip_if_exists {
            if let Some(existing) = self.user.get(&key) {
                let existing = existing.clone();
                return Ok(self.unchanged(PutResult::Skipped { existing }));
            }
        }
        let mut batch = self.batch();
        let (entry, prev) = self.write(&mut batch, key, value, opts.lease);
        Ok(self.commit(batch, PutResult::Written { entry, prev }))
    }

    /// Deletes `key`; returns the deleted entry. Deleting an absent key changes nothing and
    /// does not move the revision (etcd).
    pub fn delete(&mut self, key: &[u8]) -> Result<Outcome<Option<Entry>>, DictError> {
        check_user_key(key)?;
        let mut batch = self.batch();
        let prev = self.remove(&mut batch, key);
        Ok(self.commit(batch, prev))
    }

    /// Deletes `key` and returns its entry; `KeyNotFound` if it is absent.
    pub fn pop(&mut self, key: &[u8]) -> Result<Outcome<Entry>, DictError> {
        let outcome = self.delete(key)?;
        let entry = outcome
            .value
            .ok_or_else(|| DictError::KeyNotFound { key: key.to_vec() })?;
        Ok(Outcome {
            value: entry,
            revision: outcome.revision,
            changes: outcome.changes,
        })
    }

    /// Deletes every user key starting with `prefix` at one revision; returns how many.
    pub fn delete_prefix(&mut self, prefix: &[u8]) -> Outcome<usize> {
        let keys: Vec<Vec<u8>> = prefix_range(&self.user, prefix)
            .map(|(k, _)| k.to_vec())
            .collect();
        let mut batch = self.batch();
        for key in &keys {
            self.remove(&mut batch, key);
        }
        self.commit(batch, keys.len())
    }

    /// Deletes every user key at one revision (lock and election keys stay).
    pub fn clear(&mut self) -> Outcome<usize> {
        self.delete_prefix(b"")
    }

    /// Writes `new_value` iff the key matches `expect`; otherwise `CasConflict` with the current
    /// entry and revision. `lease` is as for [`Dict::put`].
    pub fn cas(
        &mut self,
        key: Vec<u8>,
        new_value: Vec<u8>,
        expect: Expect,
        lease: Option<LeaseId>,
        now: u64,
    ) -> Result<Outcome<Entry>, DictError> {
        check_user_key(&key)?;
        if let Some(lease) = lease {
            self.check_lease(lease, now)?;
        }
        self.check_expect(&key, expect)?;
        let mut batch = self.batch();
        let (entry, _) = self.write(&mut batch, key, new_value, lease);
        Ok(self.commit(batch, entry))
    }

    /// Deletes the key iff it matches `expect` (which then implies it exists); returns the
    /// deleted entry, or `CasConflict`.
    pub fn delete_if(&mut self, key: &[u8], expect: Expect) -> Result<Outcome<Entry>, DictError> {
        check_user_key(key)?;
        self.check_expect(key, expect)?;
        let mut batch = self.batch();
        match self.remove(&mut batch, key) {
            Some(prev) => Ok(self.commit(batch, prev)),
            None => Err(DictError::CasConflict {
                current: None,
                revision: self.revision,
            }),
        }
    }

    fn check_expect(&self, key: &[u8], expect: Expect) -> Result<(), DictError> {
        let compare = Compare {
            key: key.to_vec(),
            op: CompareOp::Equal,
            target: expect.into(),
        };
        if self.compare(&compare) {
            Ok(())
        } else {
            Err(DictError::CasConflict {
                current: self.user.get(key).cloned(),
                revision: self.revision,
            })
        }
    }

    /// Every event (user and system keys) with a revision above `after`, in revision order;
    /// `Compacted` when the history no longer holds all of them. Resume a watch by passing the
    /// last revision delivered.
    pub fn events_since(&self, after: u64) -> Result<Vec<Event>, DictError> {
        self.history.since(after)
    }

    /// The smallest `after` that `events_since` accepts.
    pub fn compacted_revision(&self) -> u64 {
        self.history.compacted()
    }

    /// Events currently retained by the watch history.
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    // ---- internals shared by the other modules ----

    pub(crate) fn batch(&self) -> Batch {
        Batch {
            revision: self.revision.saturating_add(1),
            changes: Vec::new(),
        }
    }

    /// Makes a batch current: the revision moves iff it changed something.
    pub(crate) fn commit<T>(&mut self, batch: Batch, value: T) -> Outcome<T> {
        if !batch.changes.is_empty() {
            self.revision = batch.revision;
            self.history
                .push(batch.changes.iter().filter_map(|c| match c {
                    Change::Kv(event) => Some(event.clone()),
                    _ => None,
                }));
        }
        Outcome {
            value,
            revision: self.revision,
            changes: batch.changes,
        }
    }

    pub(crate) fn unchanged<T>(&self, value: T) -> Outcome<T> {
        Outcome {
            value,
            revision: self.revision,
            changes: Vec::new(),
        }
    }

    pub(crate) fn space(&self, key: &[u8]) -> &BTreeMap<Vec<u8>, Entry> {
        if is_system_key(key) {
            &self.system
        } else {
            &self.user
        }
    }

    fn space_mut(&mut self, key: &[u8]) -> &mut BTreeMap<Vec<u8>, Entry> {
        if is_system_key(key) {
            &mut self.system
        } else {
            &mut self.user
        }
    }

    /// Writes a key at the batch revision, moving its lease attachment; the lease is checked
    /// by the caller. Returns the new entry and the previous one.
    pub(crate) fn write(
        &mut self,
        batch: &mut Batch,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> (Entry, Option<Entry>) {
        let revision = batch.revision;
        let prev = self.space(&key).get(&key).cloned();
        let entry = match &prev {
            Some(p) => Entry {
                value,
                version: p.version.saturating_add(1),
                create_revision: p.create_revision,
                mod_revision: revision,
                lease,
            },
            None => Entry {
                value,
                version: 1,
                create_revision: revision,
                mod_revision: revision,
                lease,
            },
        };
        let old_lease = prev.as_ref().and_then(|p| p.lease);
        if old_lease != lease {
            if let Some(state) = old_lease.and_then(|l| self.leases.get_mut(&l)) {
                state.keys.remove(&key);
            }
            if let Some(state) = lease.and_then(|l| self.leases.get_mut(&l)) {
                state.keys.insert(key.clone());
            }
        }
        self.space_mut(&key).insert(key.clone(), entry.clone());
        batch.changes.push(Change::Kv(Event {
            revision,
            kind: EventKind::Put,
            key,
            entry: Some(entry.clone()),
            prev: prev.clone(),
        }));
        (entry, prev)
    }

    /// Deletes a key at the batch revision; `None` (and no change) when it is absent.
    pub(crate) fn remove(&mut self, batch: &mut Batch, key: &[u8]) -> Option<Entry> {
        let prev = self.space_mut(key).remove(key)?;
        if let Some(state) = prev.lease.and_then(|l| self.leases.get_mut(&l)) {
            state.keys.remove(key);
        }
        batch.changes.push(Change::Kv(Event {
            revision: batch.revision,
            kind: EventKind::Delete,
            key: key.to_vec(),
            entry: None,
            prev: Some(prev.clone()),
        }));
        Some(prev)
    }

    /// A lease is usable iff it is known and not overdue at `now`, even before `expire` runs.
    pub(crate) fn check_lease(&self, lease: LeaseId, now: u64) -> Result<(), DictError> {
        match self.leases.get(&lease) {
            Some(state) if state.expires_at > now => Ok(()),
            _ => Err(DictError::LeaseNotFound { lease }),
        }
    }

    pub(crate) fn insert_lease(&mut self, id: LeaseId, ttl_ms: u64, now: u64) -> u64 {
        let expires_at = now.saturating_add(ttl_ms);
        self.leases.insert(
            id,
            LeaseState {
                ttl_ms,
                expires_at,
                keys: BTreeSet::new(),
            },
        );
        self.deadlines.push(Reverse((expires_at, id)));
        expires_at
    }
}

pub(crate) fn check_user_key(key: &[u8]) -> Result<(), DictError> {
    if is_system_key(key) {
        Err(DictError::InvalidArgument {
            reason: "keys starting with the system prefix are reserved",
        })
    } else {
        Ok(())
    }
}

pub(crate) fn prefix_range<'a>(
    map: &'a BTreeMap<Vec<u8>, Entry>,
    prefix: &'a [u8],
) -> impl Iterator<Item = (&'a [u8], &'a Entry)> + 'a {
    map.range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
        .map(|(k, e)| (k.as_slice(), e))
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
