use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use apothic_types::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Deliveries after which an item whose lease expires is dead-lettered; 0 means never.
    pub max_deliveries: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    #[error("claim {claim_id} is not held: its lease expired or it was already settled")]
    LeaseLost { claim_id: u64 },
    #[error("item {item_id} is not in the queue")]
    NotFound { item_id: u64 },
}

impl QueueError {
    pub fn code(&self) -> ErrorCode {
        match self {
            QueueError::LeaseLost { .. } => ErrorCode::QueueLeaseLost,
            QueueError::NotFound { .. } => ErrorCode::NotFound,
        }
    }
}

/// A granted claim: the caller holds `item_id` until `lease_expires_at` unless it renews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub claim_id: u64,
    pub item_id: u64,
    pub payload: Vec<u8>,
    pub delivery_count: u32,
    pub lease_expires_at: u64,
}

/// A lease that ran out: the item went back to the queue, or to the dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub claim_id: u64,
    pub item_id: u64,
    pub delivery_count: u32,
    pub dead_lettered: bool,
}

#[derive(Debug)]
struct Item {
    payload: Vec<u8>,
    delivery_count: u32,
    /// The claim that currently holds the item, if any.
    claim_id: Option<u64>,
}

#[derive(Debug)]
struct Lease {
    item_id: u64,
    expires_at: u64,
}

#[derive(Debug)]
pub struct Queue {
    config: QueueConfig,
    next_item_id: u64,
    next_claim_id: u64,
    items: HashMap<u64, Item>,
    /// Visible items in delivery order. May hold ids removed since; they are skipped.
    ready: VecDeque<u64>,
    /// Items not visible before a time (released with a delay, or put with one).
    delayed: BinaryHeap<Reverse<(u64, u64)>>,
    leases: HashMap<u64, Lease>,
    /// Lease deadlines; entries of renewed or settled claims are stale and skipped lazily.
    deadlines: BinaryHeap<Reverse<(u64, u64)>>,
    dead: Vec<(u64, Vec<u8>, u32)>,
}

impl Queue {
    pub fn new(config: QueueConfig) -> Self {
        Queue {
            config,
            next_item_id: 1,
            next_claim_id: 1,
            items: HashMap::new(),
            ready: VecDeque::new(),
            delayed: BinaryHeap::new(),
            leases: HashMap::new(),
            deadlines: BinaryHeap::new(),
            dead: Vec::new(),
        }
    }

    /// Adds an item, visible at `now + delay_ms`; returns its id.
    pub fn put(&mut self, payload: Vec<u8>, now: u64, delay_ms: u64) -> u64 {
        let item_id = self.next_item_id;
        self.next_item_id += 1;
        self.insert(item_id, payload, 0, now, delay_ms);
        item_id
    }

    /// Re-inserts an item recovered from durable state after a restart, keeping its delivery
    /// count so that max_deliveries still holds across restarts.
    pub fn restore(
        &mut self,
        payload: Vec<u8>,
        delivery_count: u32,
        now: u64,
        delay_ms: u64,
    ) -> u64 {
        let item_id = self.next_item_id;
        self.next_item_id += 1;
        self.insert(item_id, payload, delivery_count, now, delay_ms);
        item_id
    }

    fn insert(
        &mut self,
        item_id: u64,
        payload: Vec<u8>,
        delivery_count: u32,
        now: u64,
        delay_ms: u64,
    ) {
        self.items.insert(
            item_id,
            Item {
                payload,
                delivery_count,
                claim_id: None,
            },
        );
        self.schedule(item_id, now, delay_ms);
    }

    fn schedule(&mut self, item_id: u64, now: u64, delay_ms: u64) {
        if delay_ms == 0 {
            self.ready.push_back(item_id);
        } else {
            self.delayed
                .push(Reverse((now.saturating_add(delay_ms), item_id)));
        }
    }

    /// Claims the oldest visible item for `lease_ms`, after first expiring overdue leases.
    pub fn claim(&mut self, now: u64, lease_ms: u64) -> (Option<Claim>, Vec<Expired>) {
        let expired = self.expire(now);
        self.promote_delayed(now);
        while let Some(item_id) = self.ready.pop_front() {
            let Some(item) = self.items.get_mut(&item_id) else {
                continue;
            };
            if item.claim_id.is_some() {
                continue;
            }
            let claim_id = self.next_claim_id;
            self.next_claim_id += 1;
            item.delivery_count += 1;
            item.claim_id = Some(claim_id);
            let expires_at = now.saturating_add(lease_ms);
            self.leases.insert(
                claim_id,
                Lease {
                    item_id,
                    expires_at,
                },
            );
            self.deadlines.push(Reverse((expires_at, claim_id)));
            let claim = Claim {
                claim_id,
                item_id,
                payload: item.payload.clone(),
                delivery_count: item.delivery_count,
                lease_expires_at: expires_at,
            };
            return (Some(claim), expired);
        }
        (None, expired)
    }

    fn promote_delayed(&mut self, now: u64) {
        while let Some(Reverse((visible_at, item_id))) = self.delayed.peek().copied() {
            if visible_at > now {
                break;
            }
            self.delayed.pop();
            if self
                .items
                .get(&item_id)
                .is_some_and(|i| i.claim_id.is_none())
            {
                self.ready.push_back(item_id);
            }
        }
    }

    /// Settles a claim: the item leaves the queue. Returns the item's payload.
    pub fn ack(&mut self, claim_id: u64) -> Result<Vec<u8>, QueueError> {
        let lease = self
            .leases
            .remove(&claim_id)
            .ok_or(QueueError::LeaseLost { claim_id })?;
        let item = self
            .items
            .remove(&lease.item_id)
            .ok_or(QueueError::LeaseLost { claim_id })?;
        Ok(item.payload)
    }

    /// Extends a held claim to `now + lease_ms`; returns the new deadline.
    pub fn renew(&mut self, claim_id: u64, now: u64, lease_ms: u64) -> Result<u64, QueueError> {
        let lease = self
            .leases
            .get_mut(&claim_id)
            .ok_or(QueueError::LeaseLost { claim_id })?;
        if lease.expires_at <= now {
            // Overdue but not yet swept: the lease is lost all the same, so that a renewal can
            // never resurrect a claim whose item may already be promised to someone else.
            return Err(QueueError::LeaseLost { claim_id });
        }
        lease.expires_at = now.saturating_add(lease_ms);
        self.deadlines.push(Reverse((lease.expires_at, claim_id)));
        Ok(lease.expires_at)
    }

    /// Gives a claimed item back, visible again after `delay_ms`. The delivery stays counted.
    pub fn release(&mut self, claim_id: u64, now: u64, delay_ms: u64) -> Result<(), QueueError> {
        let lease = self
            .leases
            .remove(&claim_id)
            .ok_or(QueueError::LeaseLost { claim_id })?;
        if let Some(item) = self.items.get_mut(&lease.item_id) {
            item.claim_id = None;
        }
        self.schedule(lease.item_id, now, delay_ms);
        Ok(())
    }

    /// Removes an item whether it is visible, delayed or claimed (a cancelled call).
    pub fn remove(&mut self, item_id: u64) -> Result<(), QueueError> {
        let item = self
            .items
            .remove(&item_id)
            .ok_or(QueueError::NotFound { item_id })?;
        if let Some(claim_id) = item.claim_id {
            self.leases.remove(&claim_id);
        }
        Ok(())
    }

    /// Returns every lease overdue at `now` to the queue, or dead-letters its item when it has
    /// been delivered `max_deliveries` times.
    pub fn expire(&mut self, now: u64) -> Vec<Expired> {
        let mut expired = Vec::new();
        while let Some(Reverse((deadline, claim_id))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let Some(lease) = self.leases.get(&claim_id) else {
                continue;
            };
            if lease.expires_at != deadline {
                continue; // renewed since; a later deadline entry stands for it
            }
            let item_id = lease.item_id;
            self.leases.remove(&claim_id);
            let Some(item) = self.items.get_mut(&item_id) else {
                continue;
            };
            item.claim_id = None;
            let delivery_count = item.delivery_count;
            let dead =
                self.config.max_deliveries > 0 && delivery_count >= self.config.max_deliveries;
            if dead {
                if let Some(item) = self.items.remove(&item_id) {
                    self.dead.push((item_id, item.payload, delivery_count));
                }
            } else {
                self.ready.push_front(item_id);
            }
            expired.push(Expired {
                claim_id,
                item_id,
                delivery_count,
                dead_lettered: dead,
            });
        }
        expired
    }

    /// The earliest time at which a lease may expire or a delayed item become visible.
    pub fn next_deadline(&self) -> Option<u64> {
        let lease = self.deadlines.peek().map(|Reverse((t, _))| *t);
        let delayed = self.delayed.peek().map(|Reverse((t, _))| *t);
        match (lease, delayed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes the items dead-lettered since the last call: (item id, payload, deliveries).
    pub fn take_dead_letters(&mut self) -> Vec<(u64, Vec<u8>, u32)> {
        std::mem::take(&mut self.dead)
    }

    /// Items in the queue, claimed or not.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.leases.len()
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
