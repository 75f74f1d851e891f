//! The watch history: the last N events in a ring, evicted a whole revision at a time.

use std::collections::VecDeque;

use crate::types::{DictError, Event};

#[derive(Debug)]
pub(crate) struct History {
    capacity: usize,
    events: VecDeque<Event>,
    /// Every event with a revision at or below this one may be gone; all later ones are here.
    compacted: u64,
}

impl History {
    pub(crate) fn new(capacity: usize, compacted: u64) -> Self {
        History {
            capacity,
            events: VecDeque::new(),
            compacted,
        }
    }

    /// Appends the events of one committed revision, then evicts the oldest revisions until
    /// the ring fits. A revision is never split: a watcher sees all of it or none (W4).
    pub(crate) fn push(&mut self, events: impl IntoIterator<Item = Event>) {
        self.events.extend(events);
        while self.events.len() > self.capacity {
            let Some(oldest) = self.events.pop_front() else {
                break;
            };
            self.compacted = oldest.revision;
            while self
                .events
                .front()
                .is_some_and(|e| e.revision == oldest.revision)
            {
                self.events.pop_front();
            }
        }
    }

    /// Every retained event with a revision above `after`, in order; `Compacted` when some of
    /// them are no longer retained.
    pub(crate) fn since(&self, after: u64) -> Result<Vec<Event>, DictError> {
        if after < self.compacted {
            return Err(DictError::Compacted {
                requested: after,
                oldest: self.compacted,
            });
        }
        let start = self.events.partition_point(|e| e.revision <= after);
        Ok(self.events.range(start..).cloned().collect())
    }

    pub(crate) fn compacted(&self) -> u64 {
        self.compacted
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
