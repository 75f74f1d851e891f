//! Placement: which offer (or which connected worker) may run a piece of work.
//!
//! Offers live in an [`OfferTable`] held in columns; a placement spec compiles once into a
//! [`Filter`]; [`OfferTable::select`] returns the best matching rows ranked by price, then
//! reliability, then id; [`OfferTable::explain`] lists the nearest misses for the
//! `placement.no_match` message. Pure Rust: the binding lives in `apothic-py`.

mod error;
mod field;
mod filter;
mod gpu;
mod offer;
mod select;
mod table;
mod value;
mod vast;

pub use error::{PlacementError, Result};
pub use field::{Field, Kind};
pub use filter::{Cmp, Filter, Predicate, OPERATORS};
pub use gpu::GpuName;
pub use offer::Offer;
pub use table::{OfferTable, OfferTableBuilder};
pub use value::Value;
pub use vast::offers_from_vast_json;
