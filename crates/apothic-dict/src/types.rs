//! Value types of the dict engine: entries, events, durable changes, options and errors.

use std::collections::BTreeMap;

use apothic_types::ErrorCode;

use crate::engine::is_system_key;

/// A lease id. Ids are the revision at which the lease was granted, so they are never reused,
/// not even across restarts.
pub type LeaseId = u64;

/// One key's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    /// 1 on create, +1 per write; a deleted key starts again at 1.
    pub version: u64,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: u64,
    /// Revision of the last write to the key.
    pub mod_revision: u64,
    /// The lease the key is attached to; the key is deleted when the lease ends.
    pub lease: Option<LeaseId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// A change to one key, as a watcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub revision: u64,
    pub kind: EventKind,
    pub key: Vec<u8>,
    /// The entry written: `Some` for a put, `None` for a delete.
    pub entry: Option<Entry>,
    /// The entry before the change (`None` when a put created the key).
    pub prev: Option<Entry>,
}

impl Event {
    /// Whether the event is about a lock or election key rather than a user key.
    pub fn is_system(&self) -> bool {
        is_system_key(&self.key)
    }
}

/// One durable change. The caller persists each, in order, before acknowledging the call that
/// produced it; [`Snapshot::apply`] is the reference for what persisting means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A key was written or deleted (the same event goes to the watch history).
    Kv(Event),
    /// A lease was granted; its id is the revision.
    LeaseGranted {
        revision: u64,
        lease: LeaseId,
        ttl_ms: u64,
    },
    /// A lease was revoked or expired; the deletions of its keys are `Kv` changes of the same
    /// revision.
    LeaseRevoked { revision: u64, lease: LeaseId },
}

impl Change {
    pub fn revision(&self) -> u64 {
        match self {
            Change::Kv(event) => event.revision,
            Change::LeaseGranted { revision, .. } | Change::LeaseRevoked { revision, .. } => {
                *revision
            }
        }
    }
}

/// What a mutating call returns: its result, the store revision after the call (the header
/// revision of etcd), and the changes to persist (empty when the call changed nothing; the
/// revision then did not move).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<T> {
    pub value: T,
    pub revision: u64,
    pub changes: Vec<Change>,
}

/// Options of a put. A put replaces the key's lease: `lease: None` detaches it (etcd).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOptions {
    pub lease: Option<LeaseId>,
    /// Leave an existing key alone (Modal `Dict.put(skip_if_exists=True)`).
    pub skip_if_exists: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutResult {
    Written {
        entry: Entry,
        prev: Option<Entry>,
    },
    /// `skip_if_exists` was set and the key exists: nothing was written.
    Skipped {
        existing: Entry,
    },
}

/// The expectation of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The key exists with exactly this value.
    Value(Vec<u8>),
    /// The key has this version; 0 means the key is absent.
    Version(u64),
    /// The key was last written at this revision; 0 means the key is absent.
    ModRevision(u64),
}

/// One condition of a txn: `<key's target field> <op> <operand>`. An absent key has version,
/// create and mod revision 0 and lease 0; a `Value` compare on an absent key is false (etcd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub op: CompareOp,
    pub target: CompareTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// The field compared and the operand; values compare as bytes, lexicographically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    Value(Vec<u8>),
    Version(u64),
    CreateRevision(u64),
    ModRevision(u64),
    /// The lease id, 0 for none.
    Lease(LeaseId),
}

impl Compare {
    pub fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: CompareTarget) -> Self {
        Compare {
            key: key.into(),
            op,
            target,
        }
    }
}

impl From<Expect> for CompareTarget {
    fn from(expect: Expect) -> Self {
        match expect {
            Expect::Value(v) => CompareTarget::Value(v),
            Expect::Version(v) => CompareTarget::Version(v),
            Expect::ModRevision(r) => CompareTarget::ModRevision(r),
        }
    }
}

/// One operation of a txn branch, applied in order; a get sees earlier writes of its branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    Get {
        key: Vec<u8>,
    },
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResult {
    Get(Option<Entry>),
    Put {
        entry: Entry,
        prev: Option<Entry>,
    },
    /// The deleted entry, `None` when the key was absent.
    Delete(Option<Entry>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether every compare held, so the success branch ran.
    pub succeeded: bool,
    pub results: Vec<TxnOpResult>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DictConfig {
    /// Events kept for `events_since`; older ones are compacted away (whole revisions at a time).
    pub history: usize,
}

impl Default for DictConfig {
    fn default() -> Self {
        DictConfig { history: 10_000 }
    }
}

/// The durable state of a dict: what the caller persists and what [`crate::Dict::restore`]
/// rebuilds from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub revision: u64,
    /// Every entry, lock and election keys included.
    pub entries: BTreeMap<Vec<u8>, Entry>,
    /// Live leases: id -> TTL in milliseconds.
    pub leases: BTreeMap<LeaseId, u64>,
}

impl Snapshot {
    /// Persists one change: what a durable store does with each element of `Outcome::changes`.
    pub fn apply(&mut self, change: &Change) {
        self.revision = self.revision.max(change.revision());
        match change {
            Change::Kv(event) => match &event.entry {
                Some(entry) => {
                    self.entries.insert(event.key.clone(), entry.clone());
                }
                None => {
                    self.entries.remove(&event.key);
                }
            },
            Change::LeaseGranted { lease, ttl_ms, .. } => {
                self.leases.insert(*lease, *ttl_ms);
            }
            Change::LeaseRevoked { lease, .. } => {
                self.leases.remove(lease);
            }
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DictError {
    #[error("compare failed at revision {revision}")]
    CasConflict {
        current: Option<Entry>,
        revision: u64,
    },
    #[error("key {key:?} is not in the dict")]
    KeyNotFound { key: Vec<u8> },
    #[error("lease {lease} is unknown or expired")]
    LeaseNotFound { lease: LeaseId },
    #[error("fence {fence} is stale: fence {current} has been issued since")]
    FenceStale { fence: u64, current: u64 },
    #[error("the lock is not held by fence {fence}")]
    LockNotHeld { fence: u64 },
    #[error("candidacy {revision} does not lead the election")]
    NotLeader { revision: u64 },
    #[error("events after revision {requested} are compacted; resume from {oldest} or later")]
    Compacted { requested: u64, oldest: u64 },
    #[error("invalid argument: {reason}")]
    InvalidArgument { reason: &'static str },
}

impl DictError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DictError::CasConflict { .. } => ErrorCode::DictCasConflict,
            DictError::KeyNotFound { .. } => ErrorCode::NotFound,
            DictError::LeaseNotFound { .. } => ErrorCode::DictLeaseNotFound,
            DictError::FenceStale { .. } => ErrorCode::DictFenceStale,
            DictError::LockNotHeld { .. } => ErrorCode::LockNotHeld,
            DictError::NotLeader { .. } => ErrorCode::ElectionNotLeader,
            DictError::Compacted { .. } => ErrorCode::DictCompacted,
            DictError::InvalidArgument { .. } => ErrorCode::InvalidArgument,
        }
    }
}
