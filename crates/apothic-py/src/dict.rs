//! `DictRef`: a handle over one `apothic_dict::Dict`. Every mutation returns
//! `(value, revision, changes)`; the control plane persists `changes` before it answers.
//! Entries cross as `(value, version, create_revision, mod_revision, lease)` tuples.

use std::collections::BTreeMap;
use std::sync::Mutex;

use apothic_dict::{
    Change, Dict, DictConfig, DictError, Entry, Expect, Outcome, PutOptions, PutResult, Snapshot,
    Standing,
};
use apothic_types::ErrorCode;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::clock::now_ms;
use crate::errors::{core_error, CoreErr};

/// A persisted entry as `restore` takes it: (key, value, version, create_rev, mod_rev, lease).
type StoredEntry = (Vec<u8>, Vec<u8>, u64, u64, u64, Option<u64>);

/// (revision, "put" | "delete", key, entry or None): one watch event.
type WatchEvent<'py> = (
    u64,
    &'static str,
    Bound<'py, PyBytes>,
    Option<EntryTuple<'py>>,
);

type EntryTuple<'py> = (Bound<'py, PyBytes>, u64, u64, u64, Option<u64>);
/// ("kv", revision, key, entry or None) | ("lease_granted", revision, lease, ttl_ms) |
/// ("lease_revoked", revision, lease, 0): one durable change.
type ChangeTuple<'py> = (
    &'static str,
    u64,
    Bound<'py, PyAny>,
    Option<EntryTuple<'py>>,
    u64,
);

fn entry<'py>(py: Python<'py>, e: &Entry) -> EntryTuple<'py> {
    (
        PyBytes::new(py, &e.value),
        e.version,
        e.create_revision,
        e.mod_revision,
        e.lease,
    )
}

fn changes<'py>(py: Python<'py>, changes: &[Change]) -> PyResult<Vec<ChangeTuple<'py>>> {
    changes
        .iter()
        .map(|c| {
            Ok(match c {
                Change::Kv(ev) => (
                    "kv",
                    ev.revision,
                    PyBytes::new(py, &ev.key).into_any(),
                    ev.entry.as_ref().map(|e| entry(py, e)),
                    0,
                ),
                Change::LeaseGranted {
                    revision,
                    lease,
                    ttl_ms,
                } => (
                    "lease_granted",
                    *revision,
                    lease.into_pyobject(py)?.into_any(),
                    None,
                    *ttl_ms,
                ),
                Change::LeaseRevoked { revision, lease } => (
                    "lease_revoked",
                    *revision,
                    lease.into_pyobject(py)?.into_any(),
                    None,
                    0,
                ),
            })
        })
        .collect()
}

impl From<DictError> for CoreErr {
    fn from(e: DictError) -> Self {
        CoreErr::Dict(e)
    }
}

#[pyclass(frozen, module = "apothic._core")]
pub struct DictRef {
    inner: Mutex<Dict>,
}

impl DictRef {
    fn with<T>(&self, f: impl FnOnce(&mut Dict) -> T) -> PyResult<T> {
        let mut d = self.inner.lock().map_err(|_| {
            core_error(
                ErrorCode::Internal,
                "dict state poisoned by an earlier panic",
            )
        })?;
        Ok(f(&mut d))
    }
}

type Mutation<'py, T> = (T, u64, Vec<ChangeTuple<'py>>);

fn done<'py, T, U>(
    py: Python<'py>,
    outcome: Outcome<T>,
    map: impl FnOnce(Python<'py>, T) -> U,
) -> PyResult<Mutation<'py, U>> {
    let changes = changes(py, &outcome.changes)?;
    Ok((map(py, outcome.value), outcome.revision, changes))
}

fn put_result<'py>(py: Python<'py>, r: PutResult) -> (bool, EntryTuple<'py>) {
    match r {
        PutResult::Written { entry: e, .. } => (true, entry(py, &e)),
        PutResult::Skipped { existing } => (false, entry(py, &existing)),
    }
}

fn standing(s: Standing) -> (bool, usize) {
    match s {
        Standing::Acquired => (true, 0),
        Standing::Waiting { ahead } => (false, ahead),
    }
}

#[pymethods]
impl DictRef {
    #[new]
    #[pyo3(signature = (history=10_000))]
    fn new(history: usize) -> Self {
        DictRef {
            inner: Mutex::new(Dict::new(DictConfig { history })),
        }
    }

    /// Rebuilds from persisted state: entries `(key, value, version, create_rev, mod_rev, lease)`
    /// and leases `(id, ttl_ms)`.
    #[staticmethod]
    #[pyo3(signature = (revision, entries, leases, history=10_000))]
    fn restore(
        revision: u64,
        entries: Vec<StoredEntry>,
        leases: Vec<(u64, u64)>,
        history: usize,
    ) -> PyResult<Self> {
        let mut snapshot = Snapshot {
            revision,
            entries: BTreeMap::new(),
            leases: leases.into_iter().collect(),
        };
        for (key, value, version, create_revision, mod_revision, lease) in entries {
            snapshot.entries.insert(
                key,
                Entry {
                    value,
                    version,
                    create_revision,
                    mod_revision,
                    lease,
                },
            );
        }
        let dict =
            Dict::restore(DictConfig { history }, snapshot, now_ms()).map_err(CoreErr::from)?;
        Ok(DictRef {
            inner: Mutex::new(dict),
        })
    }

    fn revision(&self) -> PyResult<u64> {
        self.with(|d| d.revision())
    }

    fn get<'py>(&self, py: Python<'py>, key: &[u8]) -> PyResult<Option<EntryTuple<'py>>> {
        self.with(|d| d.get(key).map(|e| entry(py, e)))
    }

    fn range<'py>(
        &self,
        py: Python<'py>,
        prefix: &[u8],
    ) -> PyResult<Vec<(Bound<'py, PyBytes>, EntryTuple<'py>)>> {
        self.with(|d| {
            d.range(prefix)
                .map(|(k, e)| (PyBytes::new(py, k), entry(py, e)))
                .collect()
        })
    }

    fn __len__(&self) -> PyResult<usize> {
        self.with(|d| d.len())
    }

    #[pyo3(signature = (key, value, lease=None, skip_if_exists=false))]
    fn put<'py>(
        &self,
        py: Python<'py>,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: Option<u64>,
        skip_if_exists: bool,
    ) -> PyResult<Mutation<'py, (bool, EntryTuple<'py>)>> {
        let outcome = self.with(|d| {
            d.put(
                key,
                value,
                PutOptions {
                    lease,
                    skip_if_exists,
                },
                now_ms(),
            )
        })?;
        done(py, outcome.map_err(CoreErr::from)?, put_result)
    }

    #[pyo3(signature = (key, value, lock, fence, lease=None))]
    fn put_fenced<'py>(
        &self,
        py: Python<'py>,
        key: Vec<u8>,
        value: Vec<u8>,
        lock: &[u8],
        fence: u64,
        lease: Option<u64>,
    ) -> PyResult<Mutation<'py, (bool, EntryTuple<'py>)>> {
        let opts = PutOptions {
            lease,
            skip_if_exists: false,
        };
        let outcome = self.with(|d| d.put_fenced(key, value, lock, fence, opts, now_ms()))?;
        done(py, outcome.map_err(CoreErr::from)?, put_result)
    }

    fn delete<'py>(
        &self,
        py: Python<'py>,
        key: &[u8],
    ) -> PyResult<Mutation<'py, Option<EntryTuple<'py>>>> {
        let outcome = self.with(|d| d.delete(key))?.map_err(CoreErr::from)?;
        done(py, outcome, |py, prev| prev.map(|e| entry(py, &e)))
    }

    fn clear<'py>(&self, py: Python<'py>) -> PyResult<Mutation<'py, usize>> {
        let outcome = self.with(|d| d.clear())?;
        done(py, outcome, |_, n| n)
    }

    /// Compare-and-swap. `expect` is ("value", bytes) | ("version", int) | ("mod_revision", int).
    /// Returns `(succeeded, current entry or None)` as the value, never a conflict error.
    #[pyo3(signature = (key, value, expect_kind, expect_bytes=None, expect_number=0, lease=None))]
    #[allow(clippy::too_many_arguments)]
    fn cas<'py>(
        &self,
        py: Python<'py>,
        key: Vec<u8>,
        value: Vec<u8>,
        expect_kind: &str,
        expect_bytes: Option<Vec<u8>>,
        expect_number: u64,
        lease: Option<u64>,
    ) -> PyResult<Mutation<'py, (bool, Option<EntryTuple<'py>>)>> {
        let expect = match expect_kind {
            "value" => Expect::Value(expect_bytes.unwrap_or_default()),
            "version" => Expect::Version(expect_number),
            "mod_revision" => Expect::ModRevision(expect_number),
            _ => {
                return Err(core_error(
                    ErrorCode::InvalidArgument,
                    "expect is value, version or mod_revision",
                ))
            }
        };
        let result = self.with(|d| d.cas(key, value, expect, lease, now_ms()))?;
        match result {
            Ok(outcome) => done(py, outcome, |py, e| (true, Some(entry(py, &e)))),
            Err(DictError::CasConflict { current, revision }) => Ok((
                (false, current.map(|e| entry(py, &e))),
                revision,
                Vec::new(),
            )),
            Err(e) => Err(CoreErr::from(e).into()),
        }
    }

    fn grant<'py>(&self, py: Python<'py>, ttl_ms: u64) -> PyResult<Mutation<'py, u64>> {
        let outcome = self
            .with(|d| d.grant(ttl_ms, now_ms()))?
            .map_err(CoreErr::from)?;
        done(py, outcome, |_, info| info.id)
    }

    /// Extends a live lease; returns its TTL in milliseconds.
    fn keepalive(&self, lease: u64) -> PyResult<u64> {
        Ok(self
            .with(|d| d.keepalive(lease, now_ms()))?
            .map_err(CoreErr::from)?
            .ttl_ms)
    }

    fn revoke<'py>(&self, py: Python<'py>, lease: u64) -> PyResult<Mutation<'py, usize>> {
        let outcome = self.with(|d| d.revoke(lease))?.map_err(CoreErr::from)?;
        done(py, outcome, |_, keys| keys.len())
    }

    /// Ends every overdue lease (deleting its keys); returns the ended lease ids.
    fn expire<'py>(&self, py: Python<'py>) -> PyResult<Mutation<'py, Vec<u64>>> {
        let outcome = self.with(|d| d.expire(now_ms()))?;
        done(py, outcome, |_, ids| ids)
    }

    /// Enters an election under `lease`; the value is `(revision, leading, ahead)`.
    fn campaign<'py>(
        &self,
        py: Python<'py>,
        name: &[u8],
        candidate: Vec<u8>,
        value: Vec<u8>,
        lease: u64,
    ) -> PyResult<Mutation<'py, (u64, bool, usize)>> {
        let outcome = self
            .with(|d| d.campaign(name, candidate, value, lease, now_ms()))?
            .map_err(CoreErr::from)?;
        done(py, outcome, |_, (c, s)| {
            let (leading, ahead) = standing(s);
            (c.revision, leading, ahead)
        })
    }

    /// `(leading, ahead)` for candidacy `revision`; `election.not_leader` once it left the line.
    fn candidacy_standing(&self, name: &[u8], revision: u64) -> PyResult<(bool, usize)> {
        Ok(standing(
            self.with(|d| d.candidacy_standing(name, revision, now_ms()))?
                .map_err(CoreErr::from)?,
        ))
    }

    fn proclaim<'py>(
        &self,
        py: Python<'py>,
        name: &[u8],
        revision: u64,
        value: Vec<u8>,
    ) -> PyResult<Mutation<'py, u64>> {
        let outcome = self
            .with(|d| d.proclaim(name, revision, value, now_ms()))?
            .map_err(CoreErr::from)?;
        done(py, outcome, |_, leader| leader.mod_revision)
    }

    fn resign<'py>(
        &self,
        py: Python<'py>,
        name: &[u8],
        revision: u64,
    ) -> PyResult<Mutation<'py, Option<u64>>> {
        let outcome = self
            .with(|d| d.resign(name, revision))?
            .map_err(CoreErr::from)?;
        done(py, outcome, |_, leader| leader.map(|l| l.revision))
    }

    /// The leader: `(candidate, value, revision, mod_revision)`, or None.
    #[allow(clippy::type_complexity)]
    fn leader<'py>(
        &self,
        py: Python<'py>,
        name: &[u8],
    ) -> PyResult<Option<(Bound<'py, PyBytes>, Bound<'py, PyBytes>, u64, u64)>> {
        self.with(|d| {
            d.leader(name).map(|l| {
                (
                    PyBytes::new(py, &l.candidate),
                    PyBytes::new(py, &l.value),
                    l.revision,
                    l.mod_revision,
                )
            })
        })
    }

    /// User-key events after `after` whose key starts with `prefix`:
    /// `(revision, "put" | "delete", key, entry or None)`; `dict.compacted` when history is gone.
    fn events_since<'py>(
        &self,
        py: Python<'py>,
        after: u64,
        prefix: &[u8],
    ) -> PyResult<Vec<WatchEvent<'py>>> {
        let events = self
            .with(|d| d.events_since(after))?
            .map_err(CoreErr::from)?;
        Ok(events
            .iter()
            .filter(|e| !e.is_system() && e.key.starts_with(prefix))
            .map(|e| {
                let kind = if e.entry.is_some() { "put" } else { "delete" };
                (
                    e.revision,
                    kind,
                    PyBytes::new(py, &e.key),
                    e.entry.as_ref().map(|x| entry(py, x)),
                )
            })
            .collect())
    }

    fn next_deadline_in_ms(&self) -> PyResult<Option<u64>> {
        self.with(|d| d.next_deadline().map(|t| t.saturating_sub(now_ms())))
    }

    /// Queues a lock request; the value is `(fence, lease, acquired, ahead)`.
    fn lock<'py>(
        &self,
        py: Python<'py>,
        name: &[u8],
        owner: Vec<u8>,
        ttl_ms: u64,
    ) -> PyResult<Mutation<'py, (u64, u64, bool, usize)>> {
        let outcome = self
            .with(|d| d.lock(name, owner, ttl_ms, now_ms()))?
            .map_err(CoreErr::from)?;
        done(py, outcome, |_, (lock, s)| {
            let (acquired, ahead) = standing(s);
            (lock.fence, lock.lease, acquired, ahead)
        })
    }

    /// `(acquired, ahead)` for request `fence`; `lock.not_held` once it left the queue.
    fn lock_standing(&self, name: &[u8], fence: u64) -> PyResult<(bool, usize)> {
        Ok(standing(
            self.with(|d| d.lock_standing(name, fence, now_ms()))?
                .map_err(CoreErr::from)?,
        ))
    }

    fn unlock<'py>(
        &self,
        py: Python<'py>,
        name: &[u8],
        fence: u64,
    ) -> PyResult<Mutation<'py, Option<u64>>> {
        let outcome = self
            .with(|d| d.unlock(name, fence))?
            .map_err(CoreErr::from)?;
        done(py, outcome, |_, holder| holder.map(|l| l.fence))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<DictRef>()
}
