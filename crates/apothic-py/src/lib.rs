//! `apothic._core`: the only PyO3 crate. Each module registers its own classes; no domain logic
//! lives here (house style C.2). Python reaches it only through `apothic._bridge`.

use pyo3::prelude::*;

mod clock;
mod dict;
mod errors;
mod journal;
mod placement;
mod queue;
mod session;

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    queue::register(m)?;
    dict::register(m)?;
    journal::register(m)?;
    placement::register(m)?;
    session::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
