//! The dict engine: the hot state of a durable, etcd-style key/value store.
//!
//! One global **revision** counter per [`Dict`]: every committed mutation takes the next
//! revision, and all the changes of one call (a txn, a lease revocation, a clear) share it.
//! Each key carries `version` (1 on create, +1 per write, reset by delete), `create_revision`,
//! `mod_revision` and an optional lease, exactly as etcd v3.
//!
//! On top of the key space: compare-and-swap and multi-key transactions; leases that delete
//! their keys when revoked or overdue; locks whose fence token is the revision at which the
//! request was queued (so it strictly increases across successive holders); leader elections;
//! and a bounded watch history that answers "every event after revision R" or says
//! [`DictError::Compacted`].
//!
//! Locks and elections are ordinary entries under [`SYSTEM_PREFIX`] (the etcd concurrency
//! recipe), so the only durable state is: entries, leases and the revision. Those keys live in a
//! space of their own: user reads, writes and `len` never see them; their events do appear in
//! the watch history and in [`Change`] lists (see [`Event::is_system`]).
//!
//! Time is an explicit argument (milliseconds on the server's monotonic clock), so every
//! decision is deterministic and testable. Durability is the caller's job: every mutating method
//! returns an [`Outcome`] whose `changes` the caller writes (applying them to a [`Snapshot`]
//! is the reference) before it acknowledges the call; on start it rebuilds the engine with
//! [`Dict::restore`]. A restore gives every lease a full TTL from the restore time (the etcd
//! policy: no lease expires because the server was down), and the watch history starts empty
//! at the restored revision.

mod election;
mod engine;
mod history;
mod lease;
mod lock;
mod txn;
mod types;

pub use election::{Candidacy, Leader};
pub use engine::{is_system_key, Dict, SYSTEM_PREFIX};
pub use lease::LeaseInfo;
pub use lock::{Lock, Standing};
pub use types::{
    Change, Compare, CompareOp, CompareTarget, DictConfig, DictError, Entry, Event, EventKind,
    Expect, LeaseId, Outcome, PutOptions, PutResult, Snapshot, TxnOp, TxnOpResult, TxnResult,
};

#[cfg(test)]
#[path = "prop_tests.rs"]
mod prop_tests;
