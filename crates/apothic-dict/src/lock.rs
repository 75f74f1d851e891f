//! Locks with fencing tokens, the etcd `Mutex` recipe on the engine's own key space.
//!
//! `lock` grants a lease and queues a key `SYSTEM_PREFIX lock\0 <len><name> <revision>` under
//! it, at one revision; that revision is the request's **fence**. The holder is the request
//! with the smallest fence, so successive holders have strictly increasing fences and waiters
//! are served in FIFO order. A request leaves the queue when unlocked or when its lease ends;
//! then the next one holds the lock. A lock protects a resource only if writes to it carry
//! the fence: [`Dict::put_fenced`] refuses stale ones (Kleppmann; etcd's revision fencing).

use crate::engine::{Dict, SYSTEM_PREFIX};
use crate::types::{DictError, Entry, LeaseId, Outcome, PutOptions, PutResult};

const LOCK_SPACE: &[u8] = b"lock\0";

/// A lock request: the holder or a waiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub name: Vec<u8>,
    pub owner: Vec<u8>,
    /// The revision at which the request was queued; strictly increasing across holders.
    pub fence: u64,
    /// The lease behind the request: keep it alive while holding or waiting.
    pub lease: LeaseId,
}

/// Where a lock request (or an election candidacy) stands in its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// First in line: the lock is held (or the candidate leads).
    Acquired,
    /// `ahead` earlier requests are still queued.
    Waiting { ahead: usize },
}

/// The key prefix of one named queue: length-prefixed, so no name's keys fall under another's.
pub(crate) fn queue_prefix(space: &[u8], name: &[u8]) -> Result<Vec<u8>, DictError> {
    let len = u32::try_from(name.len()).map_err(|_| DictError::InvalidArgument {
        reason: "a lock or election name must be under 4 GiB",
    })?;
    let mut prefix = Vec::with_capacity(SYSTEM_PREFIX.len() + space.len() + 4 + name.len() + 8);
    prefix.extend_from_slice(SYSTEM_PREFIX);
    prefix.extend_from_slice(space);
    prefix.extend_from_slice(&len.to_be_bytes());
    prefix.extend_from_slice(name);
    Ok(prefix)
}

/// A queue member's key: big-endian, so key order is revision order.
pub(crate) fn queue_key(prefix: &[u8], revision: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&revision.to_be_bytes());
    key
}

impl Dict {
    /// A named queue's members in FIFO order: (revision queued at, entry).
    pub(crate) fn queue_members<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (u64, &'a Entry)> + 'a {
        crate::engine::prefix_range(&self.system, prefix)
            .filter(move |(k, _)| k.len() == prefix.len() + 8)
            .map(|(_, e)| (e.create_revision, e))
    }

    /// Where the member queued at `revision` stands, if it is queued and its lease is live.
    pub(crate) fn standing_in(&self, prefix: &[u8], revision: u64, now: u64) -> Option<Standing> {
        let entry = self.system.get(&queue_key(prefix, revision))?;
        self.check_lease(entry.lease?, now).ok()?;
        let ahead = self
            .queue_members(prefix)
            .take_while(|(r, _)| *r < revision)
            .count();
        Some(if ahead == 0 {
            Standing::Acquired
        } else {
            Standing::Waiting { ahead }
        })
    }

    /// Queues a request for lock `name` under a new lease of `ttl_ms`, at one revision (the
    /// fence and the lease id). It holds the lock at once if nobody is ahead; otherwise watch
    /// [`Dict::lock_standing`] after each change. Requests are not reentrant.
    pub fn lock(
        &mut self,
        name: &[u8],
        owner: Vec<u8>,
        ttl_ms: u64,
        now: u64,
    ) -> Result<Outcome<(Lock, Standing)>, DictError> {
        let prefix = queue_prefix(LOCK_SPACE, name)?;
        let mut batch = self.batch();
        let lease = self.grant_in(&mut batch, ttl_ms, now)?;
        let fence = batch.revision;
        self.write(
            &mut batch,
            queue_key(&prefix, fence),
            owner.clone(),
            Some(lease.id),
        );
        let ahead = self
            .queue_members(&prefix)
            .take_while(|(r, _)| *r < fence)
            .count();
        let standing = if ahead == 0 {
            Standing::Acquired
        } else {
            Standing::Waiting { ahead }
        };
        let lock = Lock {
            name: name.to_vec(),
            owner,
            fence,
            lease: lease.id,
        };
        Ok(self.commit(batch, (lock, standing)))
    }

    /// Where request `fence` stands at `now`; `LockNotHeld` once it left the queue or its
    /// lease is overdue, so a waiter whose session ended never sees a grant (the Jepsen bug).
    pub fn lock_standing(&self, name: &[u8], fence: u64, now: u64) -> Result<Standing, DictError> {
        let prefix = queue_prefix(LOCK_SPACE, name)?;
        self.standing_in(&prefix, fence, now)
            .ok_or(DictError::LockNotHeld { fence })
    }

    /// The first request in line (its lease may be overdue but not yet swept).
    pub fn lock_holder(&self, name: &[u8]) -> Option<Lock> {
        let prefix = queue_prefix(LOCK_SPACE, name).ok()?;
        let (fence, entry) = self.queue_members(&prefix).next()?;
        Some(Lock {
            name: name.to_vec(),
            owner: entry.value.clone(),
            fence,
            lease: entry.lease?,
        })
    }

    /// Number of queued requests, the holder included.
    pub fn lock_queue_len(&self, name: &[u8]) -> usize {
        queue_prefix(LOCK_SPACE, name).map_or(0, |p| self.queue_members(&p).count())
    }

    /// Withdraws request `fence` (held or waiting) by revoking its lease; returns the holder
    /// after the call.
    pub fn unlock(&mut self, name: &[u8], fence: u64) -> Result<Outcome<Option<Lock>>, DictError> {
        let prefix = queue_prefix(LOCK_SPACE, name)?;
        let lease = self
            .system
            .get(&queue_key(&prefix, fence))
            .and_then(|e| e.lease)
            .ok_or(DictError::LockNotHeld { fence })?;
        let mut batch = self.batch();
        self.revoke_in(&mut batch, lease);
        let holder = self.lock_holder(name);
        Ok(self.commit(batch, holder))
    }

    /// Checks that `fence` holds lock `name` at `now`: `FenceStale` if a later request holds
    /// it, `LockNotHeld` if the lock is free, the request is still waiting, or its lease is
    /// overdue.
    pub fn check_fence(&self, name: &[u8], fence: u64, now: u64) -> Result<(), DictError> {
        let prefix = queue_prefix(LOCK_SPACE, name)?;
        let head = self.queue_members(&prefix).next();
        match head {
            Some((holder, entry)) if holder == fence => match entry.lease {
                Some(lease) if self.check_lease(lease, now).is_ok() => Ok(()),
                _ => Err(DictError::LockNotHeld { fence }),
            },
            Some((holder, _)) if holder > fence => Err(DictError::FenceStale {
                fence,
                current: holder,
            }),
            _ => Err(DictError::LockNotHeld { fence }),
        }
    }

    /// A put guarded by a fence: applied only if `fence` currently holds lock `name`
    /// (see [`Dict::check_fence`]); otherwise nothing is written.
    pub fn put_fenced(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        lock: &[u8],
        fence: u64,
        opts: PutOptions,
        now: u64,
    ) -> Result<Outcome<PutResult>, DictError> {
        self.check_fence(lock, fence, now)?;
        self.put(key, value, opts, now)
    }
}

#[cfg(test)]
#[path = "lock_tests.rs"]
mod tests;
