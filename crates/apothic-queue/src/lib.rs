//! The queue engine: ordered items, claims with leases, redelivery on lease expiry, delayed
//! visibility and dead-lettering after `max_deliveries`.
//!
//! Time is an explicit argument (milliseconds on any monotonic clock) so that every decision
//! is deterministic and testable; the binding crate supplies the clock. The engine holds the
//! hot state only: durability is the caller's job (it writes each accepted mutation before it
//! acknowledges it, and rebuilds the engine with [`Queue::restore`] on start).

mod engine;

pub use engine::{Claim, Expired, Queue, QueueConfig, QueueError};
