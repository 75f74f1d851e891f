//! `SessionRef`: the sans-IO multiplexed session (`apothic_session::Session`) for Python.
//! Python's asyncio owns the socket and the clock; this only turns bytes into events and
//! stream operations into bytes. Calls are in-memory and short, so they hold a mutex rather
//! than hopping threads; decoding a large read releases the GIL while it runs.

use std::sync::Mutex;

use apothic_session::{Event, Role, Session, SessionError, CONNECTION_WINDOW, STREAM_WINDOW};
use apothic_types::ErrorCode;
use bytes::{Bytes, BytesMut};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{core_error, CoreErr};

/// Reads at least this large are decoded with the GIL released.
const DETACH_ABOVE: usize = 64 * 1024;

/// Mirrors `apothic._bridge.session.SessionConfig`.
#[derive(FromPyObject)]
pub struct SessionConfig {
    max_frame_payload: u32,
    max_buffered_bytes: usize,
    max_streams: usize,
    ping_interval_ms: u64,
    dead_timeout_ms: u64,
}

/// (kind, stream_id, data): data is the payload for "opened" and "data", the code for
/// "reset" and "goaway", and None otherwise. For "goaway", stream_id is the last stream id
/// the peer processed.
type EventTuple<'py> = (&'static str, u32, Bound<'py, PyAny>);

#[pyclass(frozen, module = "apothic._core")]
pub struct SessionRef {
    inner: Mutex<Session>,
}

impl SessionRef {
    fn with<T>(&self, f: impl FnOnce(&mut Session) -> T) -> PyResult<T> {
        let mut s = self.inner.lock().map_err(|_| {
            core_error(
                ErrorCode::Internal,
                "session state poisoned by an earlier panic",
            )
        })?;
        Ok(f(&mut s))
    }

    fn call<T>(&self, f: impl FnOnce(&mut Session) -> Result<T, SessionError>) -> PyResult<T> {
        Ok(self.with(f)?.map_err(CoreErr::from)?)
    }
}

fn event_tuple(py: Python<'_>, event: Event) -> PyResult<EventTuple<'_>> {
    let none = || py.None().into_bound(py);
    let int = |v: u32| v.into_pyobject(py).map(|o| o.into_any());
    Ok(match event {
        Event::Opened { id, headers } => ("opened", id, PyBytes::new(py, &headers).into_any()),
        Event::Data { id, data } => ("data", id, PyBytes::new(py, &data).into_any()),
        Event::Closed { id } => ("closed", id, none()),
        Event::Reset { id, code } => ("reset", id, int(code)?),
        Event::WindowOpened { id } => ("window_opened", id, none()),
        Event::GoAway { last_id, code } => ("goaway", last_id, int(code)?),
        Event::Dead => ("dead", 0, none()),
    })
}

#[pymethods]
impl SessionRef {
    #[new]
    fn new(dialer: bool, config: SessionConfig) -> PyResult<Self> {
        let role = if dialer { Role::Dialer } else { Role::Acceptor };
        let config = apothic_session::SessionConfig {
            max_frame_payload: config.max_frame_payload,
            max_buffered_bytes: config.max_buffered_bytes,
            max_streams: config.max_streams,
            ping_interval_ms: config.ping_interval_ms,
            dead_timeout_ms: config.dead_timeout_ms,
        };
        let session = Session::new(role, config).map_err(CoreErr::from)?;
        Ok(SessionRef {
            inner: Mutex::new(session),
        })
    }

    /// Feeds received bytes; returns the events they complete.
    fn receive<'py>(&self, py: Python<'py>, data: &[u8]) -> PyResult<Vec<EventTuple<'py>>> {
        let events = if data.len() >= DETACH_ABOVE {
            py.detach(|| self.call(|s| s.receive(data)))?
        } else {
            self.call(|s| s.receive(data))?
        };
        events.into_iter().map(|e| event_tuple(py, e)).collect()
    }

    /// Events raised outside `receive` (a "dead" from `tick`).
    fn events<'py>(&self, py: Python<'py>) -> PyResult<Vec<EventTuple<'py>>> {
        let events = self.with(Session::take_events)?;
        events.into_iter().map(|e| event_tuple(py, e)).collect()
    }

    fn open_stream(&self, headers: &[u8]) -> PyResult<u32> {
        let headers = Bytes::copy_from_slice(headers);
        self.call(|s| s.open_stream(headers))
    }

    fn send(&self, stream_id: u32, data: &[u8]) -> PyResult<()> {
        let data = Bytes::copy_from_slice(data);
        self.call(|s| s.send(stream_id, data))
    }

    fn close(&self, stream_id: u32) -> PyResult<()> {
        self.call(|s| s.close(stream_id))
    }

    fn reset(&self, stream_id: u32, code: u32) -> PyResult<()> {
        self.call(|s| s.reset(stream_id, code))
    }

    /// Grants the peer credit for `n` bytes the application has processed. Returns whether
    /// that queued a WINDOW_UPDATE (flush `outgoing`).
    fn consumed(&self, stream_id: u32, n: usize) -> PyResult<bool> {
        self.call(|s| s.consumed(stream_id, n))
    }

    /// Frames ready to write, about `max_bytes` at most (control frames always go).
    #[pyo3(signature = (max_bytes=None))]
    fn outgoing<'py>(
        &self,
        py: Python<'py>,
        max_bytes: Option<usize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = BytesMut::new();
        self.with(|s| s.outgoing(&mut out, max_bytes.unwrap_or(usize::MAX)))?;
        Ok(PyBytes::new(py, &out))
    }

    fn tick(&self, now_ms: u64) -> PyResult<bool> {
        self.with(|s| s.tick(now_ms))
    }

    #[pyo3(signature = (code=0))]
    fn go_away(&self, code: u32) -> PyResult<()> {
        self.with(|s| s.go_away(code))
    }

    fn queued(&self, stream_id: u32) -> PyResult<usize> {
        self.with(|s| s.queued(stream_id))
    }

    fn buffered(&self) -> PyResult<usize> {
        self.with(|s| s.buffered())
    }

    fn send_window(&self, stream_id: u32) -> PyResult<Option<u32>> {
        self.with(|s| s.send_window(stream_id))
    }

    fn has_outgoing(&self) -> PyResult<bool> {
        self.with(|s| s.has_outgoing())
    }

    fn is_alive(&self) -> PyResult<bool> {
        self.with(|s| s.is_alive())
    }

    fn is_finished(&self) -> PyResult<bool> {
        self.with(|s| s.is_finished())
    }

    fn stream_count(&self) -> PyResult<usize> {
        self.with(|s| s.stream_count())
    }

    fn rtt_ms(&self) -> PyResult<Option<u64>> {
        self.with(|s| s.rtt_ms())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SessionRef>()?;
    m.add("SESSION_STREAM_WINDOW", STREAM_WINDOW)?;
    m.add("SESSION_CONNECTION_WINDOW", CONNECTION_WINDOW)?;
    Ok(())
}
