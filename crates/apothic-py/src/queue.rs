//! `QueueRef`: a handle over one `apothic_queue::Queue`. Calls are in-memory and take
//! microseconds, so they hold a short mutex rather than hopping to another thread.

use std::sync::Mutex;

use apothic_queue::{Queue, QueueConfig};
use apothic_types::ErrorCode;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::clock::now_ms;
use crate::errors::{core_error, CoreErr};

/// (claim_id, item_id, payload, delivery_count, lease_expires_at_ms)
type ClaimTuple<'py> = (u64, u64, Bound<'py, PyBytes>, u32, u64);
/// (claim_id, item_id, delivery_count, dead_lettered)
type ExpiredTuple = (u64, u64, u32, bool);

#[pyclass(frozen, module = "apothic._core")]
pub struct QueueRef {
    inner: Mutex<Queue>,
}

impl QueueRef {
    fn with<T>(&self, f: impl FnOnce(&mut Queue) -> T) -> PyResult<T> {
        let mut q = self.inner.lock().map_err(|_| {
            core_error(
                ErrorCode::Internal,
                "queue state poisoned by an earlier panic",
            )
        })?;
        Ok(f(&mut q))
    }
}

#[pymethods]
impl QueueRef {
    #[new]
    #[pyo3(signature = (max_deliveries=0))]
    fn new(max_deliveries: u32) -> Self {
        QueueRef {
            inner: Mutex::new(Queue::new(QueueConfig { max_deliveries })),
        }
    }

    #[pyo3(signature = (payload, delay_ms=0))]
    fn put(&self, payload: &[u8], delay_ms: u64) -> PyResult<u64> {
        let payload = payload.to_vec();
        self.with(|q| q.put(payload, now_ms(), delay_ms))
    }

    #[pyo3(signature = (payload, delivery_count, delay_ms=0))]
    fn restore(&self, payload: &[u8], delivery_count: u32, delay_ms: u64) -> PyResult<u64> {
        let payload = payload.to_vec();
        self.with(|q| q.restore(payload, delivery_count, now_ms(), delay_ms))
    }

    /// Claims the oldest visible item; also returns the leases that expired on the way.
    fn claim<'py>(
        &self,
        py: Python<'py>,
        lease_ms: u64,
    ) -> PyResult<(Option<ClaimTuple<'py>>, Vec<ExpiredTuple>)> {
        let (claim, expired) = self.with(|q| q.claim(now_ms(), lease_ms))?;
        let claim = claim.map(|c| {
            (
                c.claim_id,
                c.item_id,
                PyBytes::new(py, &c.payload),
                c.delivery_count,
                c.lease_expires_at,
            )
        });
        let expired = expired
            .into_iter()
            .map(|e| (e.claim_id, e.item_id, e.delivery_count, e.dead_lettered))
            .collect();
        Ok((claim, expired))
    }

    fn ack<'py>(&self, py: Python<'py>, claim_id: u64) -> PyResult<Bound<'py, PyBytes>> {
        let payload = self.with(|q| q.ack(claim_id))?.map_err(CoreErr::from)?;
        Ok(PyBytes::new(py, &payload))
    }

    fn renew(&self, claim_id: u64, lease_ms: u64) -> PyResult<u64> {
        Ok(self
            .with(|q| q.renew(claim_id, now_ms(), lease_ms))?
            .map_err(CoreErr::from)?)
    }

    #[pyo3(signature = (claim_id, delay_ms=0))]
    fn release(&self, claim_id: u64, delay_ms: u64) -> PyResult<()> {
        Ok(self
            .with(|q| q.release(claim_id, now_ms(), delay_ms))?
            .map_err(CoreErr::from)?)
    }

    fn remove(&self, item_id: u64) -> PyResult<()> {
        Ok(self.with(|q| q.remove(item_id))?.map_err(CoreErr::from)?)
    }

    fn expire(&self) -> PyResult<Vec<ExpiredTuple>> {
        self.with(|q| {
            q.expire(now_ms())
                .into_iter()
                .map(|e| (e.claim_id, e.item_id, e.delivery_count, e.dead_lettered))
                .collect()
        })
    }

    /// Milliseconds until the next lease deadline or delayed item, if any.
    fn next_deadline_in_ms(&self) -> PyResult<Option<u64>> {
        self.with(|q| q.next_deadline().map(|t| t.saturating_sub(now_ms())))
    }

    fn __len__(&self) -> PyResult<usize> {
        self.with(|q| q.len())
    }

    fn in_flight(&self) -> PyResult<usize> {
        self.with(|q| q.in_flight())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<QueueRef>()
}
