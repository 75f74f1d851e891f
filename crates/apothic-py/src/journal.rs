//! `JournalSyncRef`: appends to the control plane's journal, durably (O_DSYNC), on a thread of its own,
//! and says so on a socket the event loop watches.
//!
//! A Python thread doing the same had to take the GIL back to report each sync, which under
//! load cost more than the 0.35 ms sync itself; syncing on the loop blocked every request
//! meanwhile. This thread never touches Python: it writes one byte per finished append to a
//! socket, and the loop (`add_reader`) collects the outcomes in order with `take`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use apothic_types::ErrorCode;
use pyo3::prelude::*;

use crate::errors::core_error;

struct Append {
    /// The segment file and which opening of it: Python starts a new one when it seals or
    /// empties the journal, and then this thread opens the file again.
    path: PathBuf,
    generation: u64,
    offset: u64,
    data: Vec<u8>,
}

/// Outcomes of finished appends, oldest first: None when durable, else the error.
type Outcomes = Arc<Mutex<VecDeque<Option<String>>>>;

#[pyclass(frozen, module = "apothic._core")]
pub struct JournalSyncRef {
    jobs: Mutex<Option<Sender<Append>>>,
    done: Outcomes,
    wakeup: UnixStream,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn append(open: &mut Option<(u64, File)>, job: &Append) -> std::io::Result<()> {
    if open.as_ref().map(|(generation, _)| *generation) != Some(job.generation) {
        *open = None;
        // O_DSYNC: each write returns once durable, as a write then fdatasync would, but
        // cheaper (see the Python side, store/journal.py).
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DSYNC)
            .open(&job.path)?;
        *open = Some((job.generation, file));
    }
    let Some((_, file)) = open.as_ref() else {
        unreachable!("opened just above")
    };
    file.write_all_at(&job.data, job.offset)
}

#[pymethods]
impl JournalSyncRef {
    #[new]
    fn new() -> PyResult<Self> {
        let (wakeup, mut notify) = UnixStream::pair()
            .map_err(|e| core_error(ErrorCode::Internal, format!("journal sync socket: {e}")))?;
        wakeup
            .set_nonblocking(true)
            .map_err(|e| core_error(ErrorCode::Internal, format!("journal sync socket: {e}")))?;
        let (jobs, inbox) = channel::<Append>();
        let done: Outcomes = Arc::default();
        let outcomes = Arc::clone(&done);
        let thread = std::thread::Builder::new()
            .name("journal-sync".into())
            .spawn(move || {
                let mut open: Option<(u64, File)> = None;
                for job in inbox {
                    let outcome = append(&mut open, &job).err().map(|e| e.to_string());
                    if let Ok(mut d) = outcomes.lock() {
                        d.push_back(outcome);
                    }
                    if notify.write_all(&[1]).is_err() {
                        return; // the loop's end is gone: nobody is waiting
                    }
                }
            })
            .map_err(|e| core_error(ErrorCode::Internal, format!("journal sync thread: {e}")))?;
        Ok(Self {
            jobs: Mutex::new(Some(jobs)),
            done,
            wakeup,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The descriptor that becomes readable when appends finish (one byte each).
    fn fileno(&self) -> RawFd {
        self.wakeup.as_raw_fd()
    }

    /// Queues `data` to be written at `offset` of the file at `path` and synced; a new
    /// `generation` makes the thread open the file again.
    fn append(&self, path: PathBuf, generation: u64, offset: u64, data: &[u8]) -> PyResult<()> {
        let guard = self.jobs.lock().map_err(|_| closed())?;
        let jobs = guard.as_ref().ok_or_else(closed)?;
        jobs.send(Append {
            path,
            generation,
            offset,
            data: data.to_vec(),
        })
        .map_err(|_| closed())
    }

    /// The outcomes of the appends finished since the last call, oldest first: None for durable,
    /// else the error. Drains the wakeup bytes too.
    fn take(&self) -> PyResult<Vec<Option<String>>> {
        let mut sink = [0u8; 4096];
        let mut wakeup = &self.wakeup;
        while matches!(std::io::Read::read(&mut wakeup, &mut sink), Ok(n) if n > 0) {}
        let mut done = self.done.lock().map_err(|_| closed())?;
        Ok(done.drain(..).collect())
    }

    /// Finishes the appends queued so far, then stops the thread.
    fn close(&self, py: Python<'_>) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            py.detach(|| {
                let _ = thread.join();
            });
        }
    }
}

fn closed() -> PyErr {
    core_error(ErrorCode::Internal, "the journal sync thread has stopped")
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<JournalSyncRef>()
}
