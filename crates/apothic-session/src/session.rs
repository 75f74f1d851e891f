//! `Session`: the sans-IO state machine of one multiplexed connection.
//!
//! It never touches a socket or a clock. The owner feeds it received bytes (`receive`), asks
//! it for bytes to write (`outgoing`), and calls `tick(now_ms)` now and then. That keeps one
//! implementation for the tokio driver (`Mux`) and for Python's asyncio (`apothic._core`).
//!
//! Flow control follows HTTP/2: every stream has a send window and the connection has one
//! more; DATA spends both. The receiver grants a stream's credit back (WINDOW_UPDATE) only as
//! the application reports its bytes consumed, so a stream whose reader stalls stops only its
//! own sender. The connection's credit comes back as soon as DATA is taken into a stream's
//! buffer: each stream's window already bounds what it can pin, and holding connection credit
//! for stalled streams would let enough of them (64 x 256 KiB) freeze every other stream, the
//! control stream included. What all stalled readers pin together is bounded by
//! `max_streams` x `STREAM_WINDOW`.
//! The initial windows are protocol constants rather than settings, because both sides must
//! agree on them without a negotiation round trip.

use std::collections::{HashMap, VecDeque};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{ProtocolError, SessionError};
use crate::frame::{self, Decoder, Frame, FrameType, MAX_PAYLOAD};

/// Each stream's initial send window, in both directions.
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// The connection's window: the most DATA in flight on the wire (credit returns on receipt).
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
const MAX_WINDOW: u32 = i32::MAX as u32;

/// RESET and GOAWAY codes with a meaning to the session; applications may use any other u32.
pub mod codes {
    pub const NO_ERROR: u32 = 0;
    pub const PROTOCOL: u32 = 1;
    /// The peer refused a new stream (stream limit, or it is going away).
    pub const REFUSED: u32 = 3;
    /// The local side abandoned the stream (for example, its handle was dropped).
    pub const CANCEL: u32 = 8;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that connected: opens odd stream ids.
    Dialer,
    /// The side that accepted: opens even stream ids.
    Acceptor,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The largest DATA frame this side sends; larger writes are split.
    pub max_frame_payload: u32,
    /// Bytes the application may queue for sending across all streams before `send` refuses.
    pub max_buffered_bytes: usize,
    /// Open streams (either side's) beyond which new ones are refused.
    pub max_streams: usize,
    pub ping_interval_ms: u64,
    /// The peer is dead when nothing at all arrived for this long.
    pub dead_timeout_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_frame_payload: 16 * 1024,
            max_buffered_bytes: 64 * 1024 * 1024,
            max_streams: 4096,
            ping_interval_ms: 5_000,
            dead_timeout_ms: 15_000,
        }
    }
}

impl SessionConfig {
    pub fn validate(&self) -> Result<(), SessionError> {
        let bad = |m: String| Err(SessionError::InvalidArgument(m));
        if self.max_frame_payload == 0 || self.max_frame_payload > MAX_PAYLOAD {
            return bad(format!(
                "max_frame_payload must be between 1 and {MAX_PAYLOAD}, got {}",
                self.max_frame_payload
            ));
        }
        if self.max_streams == 0 {
            return bad("max_streams must be at least 1".into());
        }
        if self.ping_interval_ms == 0 || self.dead_timeout_ms <= self.ping_interval_ms {
            return bad(format!(
                "dead_timeout_ms ({}) must exceed ping_interval_ms ({}), which must be above 0",
                self.dead_timeout_ms, self.ping_interval_ms
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Opened {
        id: u32,
        headers: Bytes,
    },
    Data {
        id: u32,
        data: Bytes,
    },
    /// The peer half-closed the stream: no more data will arrive on it.
    Closed {
        id: u32,
    },
    Reset {
        id: u32,
        code: u32,
    },
    /// A stream that had data waiting on an exhausted window got credit again.
    WindowOpened {
        id: u32,
    },
    /// The peer is closing: it will accept no new streams, and it did not process ours above
    /// `last_id` (those get `Reset` with `codes::REFUSED`).
    GoAway {
        last_id: u32,
        code: u32,
    },
    Dead,
}

#[derive(Debug)]
struct Stream {
    send_window: u32,
    queue: VecDeque<Bytes>,
    queued: usize,
    close_queued: bool,
    close_sent: bool,
    remote_closed: bool,
    recv_window: u32,
    unconsumed: usize,
    /// Consumed bytes not yet granted back: credit goes out in batches, not per read.
    credit: u32,
    blocked: bool,
    scheduled: bool,
}

impl Stream {
    fn new() -> Stream {
        Stream {
            send_window: STREAM_WINDOW,
            queue: VecDeque::new(),
            queued: 0,
            close_queued: false,
            close_sent: false,
            remote_closed: false,
            recv_window: STREAM_WINDOW,
            unconsumed: 0,
            credit: 0,
            blocked: false,
            scheduled: false,
        }
    }

    fn wants_turn(&self) -> bool {
        if self.queue.is_empty() {
            self.close_queued && !self.close_sent
        } else {
            self.send_window > 0
        }
    }

    fn finished(&self) -> bool {
        self.close_sent && self.remote_closed && self.unconsumed == 0
    }
}

#[derive(Debug, Clone)]
enum State {
    Open,
    Failed(SessionError),
    Dead,
}

#[derive(Debug)]
pub struct Session {
    role: Role,
    config: SessionConfig,
    decoder: Decoder,
    streams: HashMap<u32, Stream>,
    next_local_id: u32,
    highest_remote_id: u32,
    /// Frames that jump the data queues: OPEN, RESET, WINDOW_UPDATE, PING, PONG, GOAWAY.
    control: BytesMut,
    /// Streams with something to send, served round-robin one quantum at a time.
    ready: VecDeque<u32>,
    buffered: usize,
    conn_send_window: u32,
    conn_recv_window: u32,
    conn_credit: u32,
    state: State,
    go_away_sent: bool,
    go_away_received: bool,
    received_since_tick: bool,
    last_seen_ms: Option<u64>,
    last_ping_ms: Option<u64>,
    pong_echo: Option<u64>,
    rtt_ms: Option<u64>,
    pending: Vec<Event>,
}

impl Session {
    pub fn new(role: Role, config: SessionConfig) -> Result<Session, SessionError> {
        config.validate()?;
        Ok(Session {
            role,
            config,
            decoder: Decoder::new(),
            streams: HashMap::new(),
            next_local_id: if role == Role::Dialer { 1 } else { 2 },
            highest_remote_id: 0,
            control: BytesMut::new(),
            ready: VecDeque::new(),
            buffered: 0,
            conn_send_window: CONNECTION_WINDOW,
            conn_recv_window: CONNECTION_WINDOW,
            conn_credit: 0,
            state: State::Open,
            go_away_sent: false,
            go_away_received: false,
            received_since_tick: false,
            last_seen_ms: None,
            last_ping_ms: None,
            pong_echo: None,
            rtt_ms: None,
            pending: Vec::new(),
        })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    // ---- inbound -----------------------------------------------------------------------

    /// Feeds received bytes; returns the events they complete (plus any raised by `tick`).
    pub fn receive(&mut self, input: &[u8]) -> Result<Vec<Event>, SessionError> {
        let mut events = Vec::new();
        self.receive_into(input, &mut events)?;
        Ok(events)
    }

    /// `receive` appending into the caller's vector, so a read loop can reuse one.
    pub fn receive_into(
        &mut self,
        input: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(), SessionError> {
        self.check_live()?;
        events.append(&mut self.pending);
        self.decoder.feed(input);
        loop {
            let result = match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    self.received_since_tick = true;
                    self.handle(frame, events)
                }
                Ok(None) => return Ok(()),
                Err(e) => Err(e),
            };
            if let Err(err) = result {
                let err = SessionError::Protocol(err);
                self.fail(err.clone());
                return Err(err);
            }
        }
    }

    /// Events raised outside `receive` (today only `Dead`, from `tick`).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.pending)
    }

    fn handle(&mut self, frame: Frame, events: &mut Vec<Event>) -> Result<(), ProtocolError> {
        let id = frame.stream_id;
        match frame.kind {
            FrameType::Open => {
                if self.is_local(id) || id <= self.highest_remote_id {
                    return Err(ProtocolError::BadStreamId { id });
                }
                self.highest_remote_id = id;
                if self.go_away_sent || self.streams.len() >= self.config.max_streams {
                    frame::put_u32_frame(&mut self.control, FrameType::Reset, id, codes::REFUSED);
                } else {
                    self.streams.insert(id, Stream::new());
                    events.push(Event::Opened {
                        id,
                        headers: frame.payload,
                    });
                }
            }
            FrameType::Data => self.handle_data(id, frame.payload, events)?,
            FrameType::Close => match self.streams.get_mut(&id) {
                Some(s) => {
                    if s.remote_closed {
                        return Err(ProtocolError::DoubleClose { id });
                    }
                    s.remote_closed = true;
                    events.push(Event::Closed { id });
                    self.remove_if_finished(id);
                }
                None => self.check_used("CLOSE", id)?,
            },
            FrameType::Reset => match self.streams.remove(&id) {
                Some(s) => {
                    self.buffered -= s.queued;
                    events.push(Event::Reset {
                        id,
                        code: frame.u32_payload(),
                    });
                }
                None => self.check_used("RESET", id)?,
            },
            FrameType::WindowUpdate => {
                let inc = frame.u32_payload();
                if inc == 0 {
                    return Err(ProtocolError::ZeroWindowUpdate { id });
                }
                if id == 0 {
                    self.conn_send_window = add_window(self.conn_send_window, inc, id)?;
                } else if let Some(s) = self.streams.get_mut(&id) {
                    s.send_window = add_window(s.send_window, inc, id)?;
                    if s.blocked {
                        s.blocked = false;
                        events.push(Event::WindowOpened { id });
                    }
                    self.schedule(id);
                } else {
                    self.check_used("WINDOW_UPDATE", id)?;
                }
            }
            FrameType::Ping => {
                frame::put_header(&mut self.control, FrameType::Pong, 0, 8);
                self.control.put_slice(&frame.payload);
            }
            FrameType::Pong => self.pong_echo = Some(frame.payload.as_ref().get_u64()),
            FrameType::GoAway => {
                let mut p = frame.payload.as_ref();
                let (last_id, code) = (p.get_u32(), p.get_u32());
                self.go_away_received = true;
                let mut refused: Vec<u32> = self
                    .streams
                    .keys()
                    .copied()
                    .filter(|&s| self.is_local(s) && s > last_id)
                    .collect();
                refused.sort_unstable();
                for sid in refused {
                    if let Some(s) = self.streams.remove(&sid) {
                        self.buffered -= s.queued;
                    }
                    events.push(Event::Reset {
                        id: sid,
                        code: codes::REFUSED,
                    });
                }
                events.push(Event::GoAway { last_id, code });
            }
        }
        Ok(())
    }

    fn handle_data(
        &mut self,
        id: u32,
        data: Bytes,
        events: &mut Vec<Event>,
    ) -> Result<(), ProtocolError> {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        // The connection window covers every DATA frame, even one for a stream we already
        // reset: the peer spent its credit either way.
        if len > self.conn_recv_window {
            return Err(ProtocolError::ConnectionWindowExceeded {
                len,
                window: self.conn_recv_window,
            });
        }
        self.conn_recv_window -= len;
        let Some(s) = self.streams.get_mut(&id) else {
            self.check_used("DATA", id)?;
            self.return_conn_credit(data.len());
            return Ok(());
        };
        if s.remote_closed {
            return Err(ProtocolError::DataAfterClose { id });
        }
        if len > s.recv_window {
            return Err(ProtocolError::StreamWindowExceeded {
                id,
                len,
                window: s.recv_window,
            });
        }
        s.recv_window -= len;
        s.unconsumed += data.len();
        self.return_conn_credit(data.len());
        if !data.is_empty() {
            events.push(Event::Data { id, data });
        }
        Ok(())
    }

    // ---- the application's side of each stream ----------------------------------------

    pub fn open_stream(&mut self, headers: Bytes) -> Result<u32, SessionError> {
        self.check_live()?;
        if self.go_away_sent || self.go_away_received {
            return Err(SessionError::Closed {
                reason: "it is going away and takes no new streams".into(),
            });
        }
        if self.streams.len() >= self.config.max_streams {
            return Err(SessionError::StreamLimit {
                limit: self.config.max_streams,
            });
        }
        if headers.len() > MAX_PAYLOAD as usize {
            return Err(SessionError::InvalidArgument(format!(
                "stream headers of {} bytes exceed the {MAX_PAYLOAD}-byte frame limit",
                headers.len()
            )));
        }
        let id = self.next_local_id;
        self.next_local_id = id.checked_add(2).ok_or_else(|| SessionError::Closed {
            reason: "it has used every stream id".into(),
        })?;
        frame::put_header(&mut self.control, FrameType::Open, id, headers.len());
        self.control.put_slice(&headers);
        self.streams.insert(id, Stream::new());
        Ok(id)
    }

    /// Queues data; it leaves through `outgoing` as the stream's window allows.
    pub fn send(&mut self, id: u32, data: Bytes) -> Result<(), SessionError> {
        self.check_live()?;
        let (buffered, limit) = (self.buffered, self.config.max_buffered_bytes);
        let s = self.stream_mut(id)?;
        if s.close_queued {
            return Err(SessionError::StreamClosed { id });
        }
        if data.is_empty() {
            return Ok(());
        }
        if buffered + data.len() > limit {
            return Err(SessionError::BufferFull {
                buffered,
                len: data.len(),
                limit,
            });
        }
        let len = data.len();
        s.queued += len;
        if s.send_window == 0 {
            s.blocked = true;
        }
        s.queue.push_back(data);
        self.buffered += len;
        self.schedule(id);
        Ok(())
    }

    /// Half-closes the stream once its queued data has gone out. Closing twice is harmless.
    pub fn close(&mut self, id: u32) -> Result<(), SessionError> {
        self.check_live()?;
        let s = self.stream_mut(id)?;
        s.close_queued = true;
        self.schedule(id);
        Ok(())
    }

    /// Aborts the stream both ways, dropping its queued data. A stream already gone is fine.
    pub fn reset(&mut self, id: u32, code: u32) -> Result<(), SessionError> {
        self.check_live()?;
        match self.streams.remove(&id) {
            Some(s) => {
                self.buffered -= s.queued;
                frame::put_u32_frame(&mut self.control, FrameType::Reset, id, code);
                Ok(())
            }
            None if self.was_used(id) => Ok(()),
            None => Err(SessionError::StreamNotFound { id }),
        }
    }

    /// The application has processed `n` received bytes of this stream: grant that credit
    /// back. Returns whether a WINDOW_UPDATE was queued (the owner should flush `outgoing`).
    pub fn consumed(&mut self, id: u32, n: usize) -> Result<bool, SessionError> {
        self.check_live()?;
        let Some(s) = self.streams.get_mut(&id) else {
            // A reset stream returned its credit when it went; nothing is owed.
            return if self.was_used(id) {
                Ok(false)
            } else {
                Err(SessionError::StreamNotFound { id })
            };
        };
        if n > s.unconsumed {
            return Err(SessionError::InvalidArgument(format!(
                "consumed {n} bytes of stream {id}, which has only {} unconsumed",
                s.unconsumed
            )));
        }
        s.unconsumed -= n;
        let mut queued = false;
        if !s.remote_closed {
            // n <= unconsumed <= STREAM_WINDOW, so this fits in u32.
            s.credit += u32::try_from(n).unwrap_or(u32::MAX);
            if s.credit >= STREAM_WINDOW / 4 {
                frame::put_u32_frame(&mut self.control, FrameType::WindowUpdate, id, s.credit);
                s.recv_window += s.credit;
                s.credit = 0;
                queued = true;
            }
        }
        self.remove_if_finished(id);
        Ok(queued)
    }

    /// Says this side will open no more streams and accept no new ones. Existing streams
    /// run to completion.
    pub fn go_away(&mut self, code: u32) {
        if !self.go_away_sent && matches!(self.state, State::Open) {
            frame::put_go_away(&mut self.control, self.highest_remote_id, code);
            self.go_away_sent = true;
        }
    }

    // ---- outbound ----------------------------------------------------------------------

    /// Appends frames ready to write to `out`, stopping once it holds about `max_bytes`.
    /// Control frames always go first; then each stream with data and window sends up to one
    /// frame's worth before the next stream gets a turn.
    pub fn outgoing(&mut self, out: &mut BytesMut, max_bytes: usize) {
        out.extend_from_slice(&self.control);
        self.control.clear();
        if !matches!(self.state, State::Open) {
            return;
        }
        let mut idle_turns = 0;
        while out.len() < max_bytes && idle_turns < self.ready.len() {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let (progressed, again) = self.serve(id, out);
            if again {
                self.ready.push_back(id);
            } else if let Some(s) = self.streams.get_mut(&id) {
                s.scheduled = false;
            }
            idle_turns = if progressed { 0 } else { idle_turns + 1 };
        }
    }

    /// One stream's turn: returns (sent anything, wants another turn).
    fn serve(&mut self, id: u32, out: &mut BytesMut) -> (bool, bool) {
        let quantum = self.config.max_frame_payload as usize;
        let Some(s) = self.streams.get_mut(&id) else {
            return (false, false);
        };
        let mut sent = 0usize;
        let mut progressed = false;
        while sent < quantum && s.send_window > 0 && self.conn_send_window > 0 {
            let Some(front) = s.queue.front_mut() else {
                break;
            };
            let n = front
                .len()
                .min(s.send_window as usize)
                .min(self.conn_send_window as usize)
                .min(quantum);
            frame::put_header(out, FrameType::Data, id, n);
            if n == front.len() {
                out.put_slice(front);
                s.queue.pop_front();
            } else {
                out.put_slice(&front[..n]);
                front.advance(n);
            }
            // n is bounded by both u32 windows.
            let n32 = u32::try_from(n).unwrap_or(u32::MAX);
            s.send_window -= n32;
            self.conn_send_window -= n32;
            s.queued -= n;
            self.buffered -= n;
            sent += n;
            progressed = true;
        }
        if s.queue.is_empty() {
            if s.close_queued && !s.close_sent {
                frame::put_header(out, FrameType::Close, id, 0);
                s.close_sent = true;
                progressed = true;
            }
        } else if s.send_window == 0 {
            s.blocked = true;
        }
        let again = s.wants_turn();
        if s.finished() {
            self.streams.remove(&id);
        }
        (progressed, again)
    }

    /// Whether `outgoing` would write something now (a hint: it may also find nothing).
    pub fn has_outgoing(&self) -> bool {
        !self.control.is_empty() || (!self.ready.is_empty() && matches!(self.state, State::Open))
    }

    // ---- liveness ----------------------------------------------------------------------

    /// Advances the session's clock: sends a PING each `ping_interval_ms`, and declares the
    /// peer dead when no frame at all arrived for `dead_timeout_ms`. Returns whether the
    /// session is alive. Any frame counts as a sign of life, so a busy session needs no PONG.
    pub fn tick(&mut self, now_ms: u64) -> bool {
        if !matches!(self.state, State::Open) {
            return false;
        }
        if self.received_since_tick || self.last_seen_ms.is_none() {
            self.last_seen_ms = Some(now_ms);
            self.received_since_tick = false;
        }
        if let Some(echo) = self.pong_echo.take() {
            self.rtt_ms = Some(now_ms.saturating_sub(echo));
        }
        let last_seen = self.last_seen_ms.unwrap_or(now_ms);
        if now_ms.saturating_sub(last_seen) >= self.config.dead_timeout_ms {
            self.state = State::Dead;
            self.ready.clear();
            self.pending.push(Event::Dead);
            return false;
        }
        let last_ping = *self.last_ping_ms.get_or_insert(now_ms);
        if now_ms.saturating_sub(last_ping) >= self.config.ping_interval_ms {
            frame::put_u64_frame(&mut self.control, FrameType::Ping, now_ms);
            self.last_ping_ms = Some(now_ms);
        }
        true
    }

    pub fn is_alive(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// The last measured PING round trip.
    pub fn rtt_ms(&self) -> Option<u64> {
        self.rtt_ms
    }

    // ---- introspection ----------------------------------------------------------------

    /// Bytes queued on this stream that the window has not let out yet.
    pub fn queued(&self, id: u32) -> usize {
        self.streams.get(&id).map_or(0, |s| s.queued)
    }

    /// Bytes queued across all streams.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    pub fn send_window(&self, id: u32) -> Option<u32> {
        self.streams.get(&id).map(|s| s.send_window)
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Whether a GOAWAY went either way and every stream has finished.
    pub fn is_finished(&self) -> bool {
        (self.go_away_sent || self.go_away_received) && self.streams.is_empty()
    }

    // ---- helpers -------------------------------------------------------------------------

    fn check_live(&self) -> Result<(), SessionError> {
        match &self.state {
            State::Open => Ok(()),
            State::Failed(e) => Err(SessionError::Closed {
                reason: e.to_string(),
            }),
            State::Dead => Err(SessionError::Dead {
                timeout_ms: self.config.dead_timeout_ms,
            }),
        }
    }

    fn fail(&mut self, err: SessionError) {
        // Tell the peer why, then stop sending data: it can no longer be trusted to agree
        // with us about streams or windows.
        self.control.clear();
        frame::put_go_away(&mut self.control, self.highest_remote_id, codes::PROTOCOL);
        self.go_away_sent = true;
        self.ready.clear();
        self.streams.clear();
        self.buffered = 0;
        self.state = State::Failed(err);
    }

    fn is_local(&self, id: u32) -> bool {
        (id % 2 == 1) == (self.role == Role::Dialer)
    }

    fn was_used(&self, id: u32) -> bool {
        id != 0
            && if self.is_local(id) {
                id < self.next_local_id
            } else {
                id <= self.highest_remote_id
            }
    }

    fn check_used(&self, kind: &'static str, id: u32) -> Result<(), ProtocolError> {
        // Frames for a stream that existed and is gone are races with our RESET: ignore them.
        if self.was_used(id) {
            Ok(())
        } else {
            Err(ProtocolError::UnopenedStream { kind, id })
        }
    }

    fn stream_mut(&mut self, id: u32) -> Result<&mut Stream, SessionError> {
        let used = self.was_used(id);
        self.streams.get_mut(&id).ok_or(if used {
            SessionError::StreamClosed { id }
        } else {
            SessionError::StreamNotFound { id }
        })
    }

    fn schedule(&mut self, id: u32) {
        if let Some(s) = self.streams.get_mut(&id) {
            if !s.scheduled && s.wants_turn() {
                s.scheduled = true;
                self.ready.push_back(id);
            }
        }
    }

    fn remove_if_finished(&mut self, id: u32) {
        if self.streams.get(&id).is_some_and(Stream::finished) {
            self.streams.remove(&id);
        }
    }

    /// Grants connection credit for `n` received bytes (taken into a stream's buffer, or
    /// dropped for a stream already gone). Returns whether a WINDOW_UPDATE was queued.
    fn return_conn_credit(&mut self, n: usize) -> bool {
        // n is at most one window's worth, far below u32::MAX.
        self.conn_credit += u32::try_from(n).unwrap_or(u32::MAX);
        if self.conn_credit >= CONNECTION_WINDOW / 4 {
            frame::put_u32_frame(
                &mut self.control,
                FrameType::WindowUpdate,
                0,
                self.conn_credit,
            );
            self.conn_recv_window += self.conn_credit;
            self.conn_credit = 0;
            return true;
        }
        false
    }
}

fn add_window(window: u32, inc: u32, id: u32) -> Result<u32, ProtocolError> {
    window
        .checked_add(inc)
        .filter(|&w| w <= MAX_WINDOW)
        .ok_or(ProtocolError::WindowOverflow { id })
}
