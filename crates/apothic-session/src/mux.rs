//! `Mux`: a tokio driver that runs a [`Session`] over any `AsyncRead + AsyncWrite`.
//!
//! Three tasks share the session behind one short-held mutex: a reader (bytes in, events
//! dispatched to stream handles), a writer (batches `outgoing` into one write per wake-up)
//! and a ticker (heartbeats, dead-peer detection). Stream handles park on wakers rather than
//! channels, so a frame costs no allocation beyond its payload. Backpressure is the session's
//! flow control: `send` waits while the stream holds more than `send_buffer` bytes that its
//! window has not let out, and the receiver grants window only as `recv` hands data over.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::error::SessionError;
use crate::session::{codes, Event, Role, Session, SessionConfig};

#[derive(Debug, Clone)]
pub struct MuxConfig {
    pub session: SessionConfig,
    /// Bytes one stream may hold beyond what its window lets out before `send` waits.
    pub send_buffer: usize,
    /// How often the driver calls `Session::tick`.
    pub tick_interval: Duration,
    pub read_buffer: usize,
    /// About how many bytes the writer gathers into one write.
    pub write_batch: usize,
}

impl Default for MuxConfig {
    fn default() -> Self {
        MuxConfig {
            session: SessionConfig::default(),
            send_buffer: 64 * 1024,
            tick_interval: Duration::from_millis(500),
            read_buffer: 64 * 1024,
            write_batch: 256 * 1024,
        }
    }
}

#[derive(Default)]
struct Slot {
    inbox: VecDeque<Bytes>,
    eof: bool,
    reset: Option<u32>,
    local_closed: bool,
    recv_waker: Option<Waker>,
    send_waker: Option<Waker>,
}

struct Inner {
    session: Session,
    slots: HashMap<u32, Slot>,
    incoming: VecDeque<(u32, Bytes)>,
    accept_waker: Option<Waker>,
    closed: Option<SessionError>,
    close_wakers: Vec<Waker>,
    /// Streams whose `send` is parked, rechecked after each write.
    send_blocked: Vec<u32>,
    peer_going_away: bool,
}

impl Inner {
    fn dispatch(&mut self, event: Event, wake: &mut Vec<Waker>) {
        match event {
            Event::Opened { id, headers } => {
                self.slots.insert(id, Slot::default());
                self.incoming.push_back((id, headers));
                wake.extend(self.accept_waker.take());
            }
            Event::Data { id, data } => match self.slots.get_mut(&id) {
                Some(slot) => {
                    slot.inbox.push_back(data);
                    wake.extend(slot.recv_waker.take());
                }
                // Nobody holds this stream any more: discard, and give the credit back.
                None => {
                    let _ = self.session.consumed(id, data.len());
                }
            },
            Event::Closed { id } => {
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.eof = true;
                    wake.extend(slot.recv_waker.take());
                }
            }
            Event::Reset { id, code } => {
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.reset = Some(code);
                    wake.extend(slot.recv_waker.take());
                    wake.extend(slot.send_waker.take());
                }
            }
            Event::GoAway { .. } => {
                self.peer_going_away = true;
                wake.extend(self.accept_waker.take());
            }
            Event::WindowOpened { .. } | Event::Dead => {}
        }
    }

    /// Records why the session ended (the first reason wins) and collects every waker.
    fn close(&mut self, err: SessionError, wake: &mut Vec<Waker>) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(err);
        for slot in self.slots.values_mut() {
            wake.extend(slot.recv_waker.take());
            wake.extend(slot.send_waker.take());
        }
        wake.extend(self.accept_waker.take());
        wake.append(&mut self.close_wakers);
    }

    fn wake_senders(&mut self, send_buffer: usize, wake: &mut Vec<Waker>) {
        let limit = self.session.config().max_buffered_bytes;
        let (session, slots) = (&self.session, &mut self.slots);
        self.send_blocked.retain(|id| {
            let ready = session.queued(*id) <= send_buffer && session.buffered() < limit;
            match slots.get_mut(id) {
                Some(slot) if !ready && slot.reset.is_none() => true,
                Some(slot) => {
                    wake.extend(slot.send_waker.take());
                    false
                }
                None => false,
            }
        });
    }
}

struct Shared {
    inner: Mutex<Inner>,
    writer: Notify,
    start: Instant,
    send_buffer: usize,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug, but the state stays consistent enough to
        // report errors and shut down, which beats poisoning every later call.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the session. `abort_writer` is false only when a GOAWAY still has to go out.
    fn shut(&self, err: SessionError, abort_writer: bool) {
        let mut wake = Vec::new();
        self.lock().close(err, &mut wake);
        for w in wake {
            w.wake();
        }
        self.writer.notify_one();
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for (i, task) in tasks.iter().enumerate() {
            // tasks[0] is the writer.
            if i > 0 || abort_writer {
                task.abort();
            }
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// One multiplexed connection. Dropping it ends the session and every stream on it.
pub struct Mux {
    shared: Arc<Shared>,
}

impl Mux {
    /// Starts the driver's tasks on the current tokio runtime.
    pub fn new<T>(io: T, role: Role, config: MuxConfig) -> Result<Mux, SessionError>
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let session = Session::new(role, config.session.clone())?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                session,
                slots: HashMap::new(),
                incoming: VecDeque::new(),
                accept_waker: None,
                closed: None,
                close_wakers: Vec::new(),
                send_blocked: Vec::new(),
                peer_going_away: false,
            }),
            writer: Notify::new(),
            start: Instant::now(),
            send_buffer: config.send_buffer,
            tasks: Mutex::new(Vec::new()),
        });
        let (rd, wr) = tokio::io::split(io);
        let writer = tokio::spawn(write_loop(shared.clone(), wr, config.write_batch));
        let reader = tokio::spawn(read_loop(shared.clone(), rd, config.read_buffer));
        let ticker = tokio::spawn(tick_loop(shared.clone(), config.tick_interval));
        shared
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([
                writer.abort_handle(),
                reader.abort_handle(),
                ticker.abort_handle(),
            ]);
        Ok(Mux { shared })
    }

    pub fn open(&self, headers: Bytes) -> Result<MuxStream, SessionError> {
        let mut inner = self.shared.lock();
        if let Some(err) = &inner.closed {
            return Err(err.clone());
        }
        let id = inner.session.open_stream(headers)?;
        inner.slots.insert(id, Slot::default());
        drop(inner);
        self.shared.writer.notify_one();
        Ok(MuxStream {
            id,
            shared: self.shared.clone(),
        })
    }

    /// The next stream the peer opened, with its headers.
    pub async fn accept(&self) -> Result<(MuxStream, Bytes), SessionError> {
        poll_fn(|cx| {
            let mut inner = self.shared.lock();
            if let Some((id, headers)) = inner.incoming.pop_front() {
                let stream = MuxStream {
                    id,
                    shared: self.shared.clone(),
                };
                return Poll::Ready(Ok((stream, headers)));
            }
            if let Some(err) = &inner.closed {
                return Poll::Ready(Err(err.clone()));
            }
            if inner.peer_going_away {
                return Poll::Ready(Err(SessionError::Closed {
                    reason: "the peer is going away and opens no new streams".into(),
                }));
            }
            inner.accept_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Orderly close: no new streams either way; existing ones run to completion.
    pub fn go_away(&self, code: u32) {
        self.shared.lock().session.go_away(code);
        self.shared.writer.notify_one();
    }

    /// Waits until the session ends and says why.
    pub async fn closed(&self) -> SessionError {
        poll_fn(|cx| {
            let mut inner = self.shared.lock();
            if let Some(err) = &inner.closed {
                return Poll::Ready(err.clone());
            }
            if !inner.close_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                inner.close_wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    pub fn stream_count(&self) -> usize {
        self.shared.lock().session.stream_count()
    }

    pub fn rtt_ms(&self) -> Option<u64> {
        self.shared.lock().session.rtt_ms()
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        self.shared.shut(
            SessionError::Closed {
                reason: "its Mux was dropped".into(),
            },
            true,
        );
    }
}

/// One stream. One task may `recv` while another `send`s (share it through an `Arc`).
/// Dropping it before `close` resets the stream; after `close`, whatever else the peer sends
/// is discarded.
pub struct MuxStream {
    id: u32,
    shared: Arc<Shared>,
}

impl MuxStream {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Queues `data`, waiting first while the stream holds more than `send_buffer` bytes
    /// that its window has not let out (or the whole session is at its buffer limit).
    pub async fn send(&self, data: Bytes) -> Result<(), SessionError> {
        let mut data = Some(data);
        let send_buffer = self.shared.send_buffer;
        poll_fn(|cx| {
            let mut guard = self.shared.lock();
            let inner = &mut *guard;
            if let Some(err) = &inner.closed {
                return Poll::Ready(Err(err.clone()));
            }
            let Some(slot) = inner.slots.get_mut(&self.id) else {
                return Poll::Ready(Err(SessionError::StreamNotFound { id: self.id }));
            };
            if let Some(code) = slot.reset {
                return Poll::Ready(Err(SessionError::StreamReset { id: self.id, code }));
            }
            let len = data.as_ref().map_or(0, Bytes::len);
            let limit = inner.session.config().max_buffered_bytes;
            let buffered = inner.session.buffered();
            if inner.session.queued(self.id) > send_buffer
                || (buffered > 0 && buffered + len > limit)
            {
                slot.send_waker = Some(cx.waker().clone());
                if !inner.send_blocked.contains(&self.id) {
                    inner.send_blocked.push(self.id);
                }
                return Poll::Pending;
            }
            let Some(data) = data.take() else {
                return Poll::Ready(Ok(()));
            };
            let result = inner.session.send(self.id, data);
            drop(guard);
            self.shared.writer.notify_one();
            Poll::Ready(result)
        })
        .await
    }

    /// The next chunk of data; `None` once the peer has closed its side.
    pub async fn recv(&self) -> Result<Option<Bytes>, SessionError> {
        poll_fn(|cx| {
            let mut guard = self.shared.lock();
            let inner = &mut *guard;
            let Some(slot) = inner.slots.get_mut(&self.id) else {
                return Poll::Ready(Err(SessionError::StreamNotFound { id: self.id }));
            };
            if let Some(data) = slot.inbox.pop_front() {
                let flush = inner.session.consumed(self.id, data.len()).unwrap_or(false);
                drop(guard);
                if flush {
                    self.shared.writer.notify_one();
                }
                return Poll::Ready(Ok(Some(data)));
            }
            if let Some(code) = slot.reset {
                return Poll::Ready(Err(SessionError::StreamReset { id: self.id, code }));
            }
            if slot.eof {
                return Poll::Ready(Ok(None));
            }
            if let Some(err) = &inner.closed {
                return Poll::Ready(Err(err.clone()));
            }
            slot.recv_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Half-closes: the peer sees the end of data after everything already sent.
    pub fn close(&self) -> Result<(), SessionError> {
        let mut inner = self.shared.lock();
        if let Some(slot) = inner.slots.get_mut(&self.id) {
            slot.local_closed = true;
        }
        inner.session.close(self.id)?;
        drop(inner);
        self.shared.writer.notify_one();
        Ok(())
    }

    pub fn reset(&self, code: u32) -> Result<(), SessionError> {
        let mut inner = self.shared.lock();
        if let Some(slot) = inner.slots.get_mut(&self.id) {
            slot.reset = Some(code);
            slot.inbox.clear();
        }
        inner.session.reset(self.id, code)?;
        drop(inner);
        self.shared.writer.notify_one();
        Ok(())
    }
}

impl Drop for MuxStream {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        let Some(slot) = inner.slots.remove(&self.id) else {
            return;
        };
        if inner.closed.is_some() {
            return;
        }
        let unread: usize = slot.inbox.iter().map(Bytes::len).sum();
        if unread > 0 {
            let _ = inner.session.consumed(self.id, unread);
        }
        if !slot.local_closed && slot.reset.is_none() {
            let _ = inner.session.reset(self.id, codes::CANCEL);
        }
        drop(inner);
        self.shared.writer.notify_one();
    }
}

async fn read_loop<R: AsyncRead + Unpin>(shared: Arc<Shared>, mut rd: R, buf_size: usize) {
    let mut buf = vec![0u8; buf_size.max(1024)];
    let mut events = Vec::new();
    let mut wake = Vec::new();
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) => {
                let reason = "the peer closed the connection".into();
                return shared.shut(SessionError::Closed { reason }, true);
            }
            Ok(n) => n,
            Err(e) => {
                let reason = format!("reading failed: {e}");
                return shared.shut(SessionError::Closed { reason }, true);
            }
        };
        let (failed, flush) = {
            let mut inner = shared.lock();
            if inner.closed.is_some() {
                return;
            }
            let result = inner.session.receive_into(&buf[..n], &mut events);
            for event in events.drain(..) {
                inner.dispatch(event, &mut wake);
            }
            (result.err(), inner.session.has_outgoing())
        };
        for w in wake.drain(..) {
            w.wake();
        }
        if let Some(err) = failed {
            // Keep the writer alive long enough to send the GOAWAY that explains why.
            return shared.shut(err, false);
        }
        if flush {
            shared.writer.notify_one();
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(shared: Arc<Shared>, mut wr: W, batch: usize) {
    let mut buf = BytesMut::with_capacity(batch + 64 * 1024);
    let mut wake = Vec::new();
    loop {
        let done = {
            let mut inner = shared.lock();
            inner.session.outgoing(&mut buf, batch);
            inner.wake_senders(shared.send_buffer, &mut wake);
            inner.closed.is_some()
        };
        for w in wake.drain(..) {
            w.wake();
        }
        if buf.is_empty() {
            if done {
                let _ = wr.shutdown().await;
                return;
            }
            shared.writer.notified().await;
            continue;
        }
        if let Err(e) = wr.write_all(&buf).await {
            let reason = format!("writing failed: {e}");
            return shared.shut(SessionError::Closed { reason }, false);
        }
        buf.clear();
    }
}

async fn tick_loop(shared: Arc<Shared>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = shared.now_ms();
        let (alive, timeout_ms) = {
            let mut inner = shared.lock();
            if inner.closed.is_some() {
                return;
            }
            let alive = inner.session.tick(now);
            (alive, inner.session.config().dead_timeout_ms)
        };
        if !alive {
            return shared.shut(SessionError::Dead { timeout_ms }, true);
        }
        shared.writer.notify_one();
    }
}
