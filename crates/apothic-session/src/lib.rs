//! The multiplexed worker session: many independent streams over one connection.
//!
//! - [`frame`]: the binary frame codec (`type u8 | flags u8 | stream id u32 | length u32 |
//!   payload`), decoded incrementally.
//! - [`Session`]: the sans-IO state machine: stream ids, open/data/close/reset, per-stream and
//!   connection flow control, round-robin fairness, heartbeats, GOAWAY. Python drives it
//!   through `apothic._core.SessionRef`.
//! - [`Mux`] (feature `mux`): a tokio driver running a `Session` over any
//!   `AsyncRead + AsyncWrite`, with async stream handles and backpressure.

pub mod error;
pub mod frame;
#[cfg(feature = "mux")]
pub mod mux;
pub mod session;

pub use error::{ProtocolError, SessionError};
#[cfg(feature = "mux")]
pub use mux::{Mux, MuxConfig, MuxStream};
pub use session::{codes, Event, Role, Session, SessionConfig, CONNECTION_WINDOW, STREAM_WINDOW};
