//! Session errors. Each variant has one stable dotted code; messages are one line.

use apothic_types::ErrorCode;
use thiserror::Error;

/// What the peer did wrong. Every one of these ends the session (the peer can no longer be
/// trusted to agree with us about stream or window state), so they share one code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("unknown frame type 0x{kind:02x}")]
    UnknownFrameType { kind: u8 },
    #[error("frame type {kind} carries unknown flags 0x{flags:02x}")]
    UnknownFlags { kind: &'static str, flags: u8 },
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge { len: u32, max: u32 },
    #[error("{kind} frame has a {len}-byte payload, expected {expected}")]
    BadLength {
        kind: &'static str,
        len: u32,
        expected: u32,
    },
    #[error("{kind} frame must name a stream (stream id 0)")]
    MissingStream { kind: &'static str },
    #[error("{kind} frame must not name a stream (stream id {id})")]
    UnexpectedStream { kind: &'static str, id: u32 },
    #[error("peer opened stream {id}, which is not a new id of its parity")]
    BadStreamId { id: u32 },
    #[error("{kind} frame for stream {id}, which was never opened")]
    UnopenedStream { kind: &'static str, id: u32 },
    #[error("data for stream {id} after the peer closed it")]
    DataAfterClose { id: u32 },
    #[error("peer closed stream {id} twice")]
    DoubleClose { id: u32 },
    #[error("peer sent {len} bytes on stream {id} with only {window} bytes of window")]
    StreamWindowExceeded { id: u32, len: u32, window: u32 },
    #[error("peer sent {len} bytes with only {window} bytes of connection window")]
    ConnectionWindowExceeded { len: u32, window: u32 },
    #[error("window update of 0 bytes on stream {id}")]
    ZeroWindowUpdate { id: u32 },
    #[error("window update overflows the window of stream {id}")]
    WindowOverflow { id: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SessionError {
    #[error("session protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("the session is closed: {reason}")]
    Closed { reason: String },
    #[error("the peer sent nothing for {timeout_ms} ms; the session is dead")]
    Dead { timeout_ms: u64 },
    #[error("stream {id} does not exist")]
    StreamNotFound { id: u32 },
    #[error("stream {id} is closed for sending")]
    StreamClosed { id: u32 },
    #[error("stream {id} was reset (code {code})")]
    StreamReset { id: u32, code: u32 },
    #[error("the session already buffers {buffered} bytes; {len} more would pass its {limit}-byte limit")]
    BufferFull {
        buffered: usize,
        len: usize,
        limit: usize,
    },
    #[error("the session already has {limit} open streams")]
    StreamLimit { limit: usize },
    #[error("{0}")]
    InvalidArgument(String),
}

impl SessionError {
    pub fn code(&self) -> ErrorCode {
        match self {
            SessionError::Protocol(_) => ErrorCode::SessionProtocol,
            SessionError::Closed { .. } => ErrorCode::SessionClosed,
            SessionError::Dead { .. } => ErrorCode::SessionDead,
            SessionError::StreamNotFound { .. } => ErrorCode::SessionStreamNotFound,
            SessionError::StreamClosed { .. } => ErrorCode::SessionStreamClosed,
            SessionError::StreamReset { .. } => ErrorCode::SessionStreamReset,
            SessionError::BufferFull { .. } => ErrorCode::SessionBufferFull,
            SessionError::StreamLimit { .. } => ErrorCode::SessionStreamLimit,
            SessionError::InvalidArgument(_) => ErrorCode::InvalidArgument,
        }
    }
}
