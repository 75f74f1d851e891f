//! The wire format: `type u8 | flags u8 | stream id u32 | length u32 | payload`, big-endian.
//!
//! The decoder is incremental: feed it whatever the transport delivered (half a header, ten
//! frames and a bit) and pull whole frames out. It checks everything that can be checked
//! without session state (type, flags, lengths, which frames name a stream), so the session
//! only deals with well-formed frames. Once it reports an error it stays failed: the byte
//! stream has lost its framing and nothing after that point can be trusted.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;

pub const HEADER_LEN: usize = 10;
/// The largest payload either side accepts. Senders split DATA far below this (see
/// `SessionConfig::max_frame_payload`); the limit bounds what one OPEN header block may cost.
pub const MAX_PAYLOAD: u32 = 16 * 1024 * 1024;
/// Payloads up to this size are copied out of the read buffer rather than sliced from it: a
/// slice would pin the whole read chunk for as long as a slow reader holds the payload.
const COPY_BELOW: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// Opens a stream; payload: opaque header bytes.
    Open = 1,
    /// Stream data; counts against the stream's and the connection's windows.
    Data = 2,
    /// Half-close: the sender will send no more data on this stream.
    Close = 3,
    /// Aborts the stream in both directions; payload: u32 error code.
    Reset = 4,
    /// Grants send credit; payload: u32 increment. Stream 0 means the connection.
    WindowUpdate = 5,
    /// Liveness probe; payload: 8 opaque bytes echoed by the PONG.
    Ping = 6,
    Pong = 7,
    /// Orderly close; payload: u32 last peer stream id processed | u32 error code.
    GoAway = 8,
}

impl FrameType {
    pub fn from_u8(kind: u8) -> Option<FrameType> {
        Some(match kind {
            1 => FrameType::Open,
            2 => FrameType::Data,
            3 => FrameType::Close,
            4 => FrameType::Reset,
            5 => FrameType::WindowUpdate,
            6 => FrameType::Ping,
            7 => FrameType::Pong,
            8 => FrameType::GoAway,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FrameType::Open => "OPEN",
            FrameType::Data => "DATA",
            FrameType::Close => "CLOSE",
            FrameType::Reset => "RESET",
            FrameType::WindowUpdate => "WINDOW_UPDATE",
            FrameType::Ping => "PING",
            FrameType::Pong => "PONG",
            FrameType::GoAway => "GOAWAY",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameType,
    pub flags: u8,
    pub stream_id: u32,
    pub payload: Bytes,
}

impl Frame {
    pub fn new(kind: FrameType, stream_id: u32, payload: Bytes) -> Frame {
        Frame {
            kind,
            flags: 0,
            stream_id,
            payload,
        }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        put_header(out, self.kind, self.stream_id, self.payload.len());
        out.put_slice(&self.payload);
    }

    /// The u32 carried by RESET and WINDOW_UPDATE (the decoder checked the length).
    pub fn u32_payload(&self) -> u32 {
        self.payload.as_ref().get_u32()
    }
}

/// Writes a frame header. Payload lengths come from our own chunking and are far below
/// `MAX_PAYLOAD`, which fits in a u32.
pub fn put_header(out: &mut BytesMut, kind: FrameType, stream_id: u32, len: usize) {
    out.reserve(HEADER_LEN + len);
    out.put_u8(kind as u8);
    out.put_u8(0);
    out.put_u32(stream_id);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

pub fn put_u32_frame(out: &mut BytesMut, kind: FrameType, stream_id: u32, value: u32) {
    put_header(out, kind, stream_id, 4);
    out.put_u32(value);
}

pub fn put_u64_frame(out: &mut BytesMut, kind: FrameType, value: u64) {
    put_header(out, kind, 0, 8);
    out.put_u64(value);
}

pub fn put_go_away(out: &mut BytesMut, last_stream_id: u32, code: u32) {
    put_header(out, FrameType::GoAway, 0, 8);
    out.put_u32(last_stream_id);
    out.put_u32(code);
}

#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    failed: Option<ProtocolError>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    pub fn feed(&mut self, input: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(input);
        }
    }

    /// Bytes received but not yet part of a whole frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, `Ok(None)` when more input is needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let mut head = &self.buf[..HEADER_LEN];
        let (kind, flags, stream_id, len) =
            (head.get_u8(), head.get_u8(), head.get_u32(), head.get_u32());
        if let Err(err) = check_header(kind, flags, stream_id, len) {
            self.buf.clear();
            self.failed = Some(err.clone());
            return Err(err);
        }
        let total = HEADER_LEN + len as usize;
        if self.buf.len() < total {
            // Reserve once for the rest of a large frame instead of growing step by step.
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let len = len as usize;
        let payload = if len <= COPY_BELOW {
            let p = Bytes::copy_from_slice(&self.buf[..len]);
            self.buf.advance(len);
            p
        } else {
            self.buf.split_to(len).freeze()
        };
        let kind = FrameType::from_u8(kind).ok_or(ProtocolError::UnknownFrameType { kind })?;
        Ok(Some(Frame {
            kind,
            flags,
            stream_id,
            payload,
        }))
    }
}

fn check_header(kind: u8, flags: u8, stream_id: u32, len: u32) -> Result<(), ProtocolError> {
    let kind = FrameType::from_u8(kind).ok_or(ProtocolError::UnknownFrameType { kind })?;
    let name = kind.name();
    if flags != 0 {
        return Err(ProtocolError::UnknownFlags { kind: name, flags });
    }
    if len > MAX_PAYLOAD {
        return Err(ProtocolError::FrameTooLarge {
            len,
            max: MAX_PAYLOAD,
        });
    }
    let fixed = match kind {
        FrameType::Open | FrameType::Data => None,
        FrameType::Close => Some(0),
        FrameType::Reset | FrameType::WindowUpdate => Some(4),
        FrameType::Ping | FrameType::Pong | FrameType::GoAway => Some(8),
    };
    if let Some(expected) = fixed {
        if len != expected {
            return Err(ProtocolError::BadLength {
                kind: name,
                len,
                expected,
            });
        }
    }
    let names_stream = match kind {
        FrameType::Ping | FrameType::Pong | FrameType::GoAway => Some(false),
        FrameType::WindowUpdate => None, // 0 = the connection window
        _ => Some(true),
    };
    match names_stream {
        Some(true) if stream_id == 0 => Err(ProtocolError::MissingStream { kind: name }),
        Some(false) if stream_id != 0 => Err(ProtocolError::UnexpectedStream {
            kind: name,
            id: stream_id,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_big_endian() {
        let mut out = BytesMut::new();
        Frame::new(FrameType::Data, 0x0102_0304, Bytes::from_static(b"hi")).encode(&mut out);
        assert_eq!(&out[..], &[2, 0, 1, 2, 3, 4, 0, 0, 0, 2, b'h', b'i']);
    }

    #[test]
    fn partial_header_waits() {
        let mut d = Decoder::new();
        d.feed(&[2, 0, 0]);
        assert_eq!(d.next_frame(), Ok(None));
    }
}
