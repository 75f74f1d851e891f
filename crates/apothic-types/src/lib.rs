//! Types shared by every Apothic crate: stable error codes and object-id prefixes.
//!
//! The same dotted code travels from Rust, through HTTP (`{"error": {"code", "message"}}`),
//! to the SDK exception class and the CLI exit code; `apothic/exception.py` mirrors this table.

pub mod errors;
pub mod ids;

pub use errors::ErrorCode;
