//! One exception class crosses the boundary, carrying a stable dotted code;
//! `apothic/_bridge/errors.py` turns it into the public class for that code.

use apothic_types::ErrorCode;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    _core,
    CoreError,
    PyException,
    "An error from the Rust core: args are (code, message)."
);

pub fn core_error(code: ErrorCode, message: impl std::fmt::Display) -> PyErr {
    CoreError::new_err((code.as_str(), message.to_string()))
}

impl From<CoreErr> for PyErr {
    fn from(err: CoreErr) -> PyErr {
        match err {
            CoreErr::Queue(e) => core_error(e.code(), &e),
            CoreErr::Dict(e) => core_error(e.code(), &e),
            CoreErr::Session(e) => core_error(e.code(), &e),
        }
    }
}

/// Every domain error that can reach Python.
pub enum CoreErr {
    Queue(apothic_queue::QueueError),
    Dict(apothic_dict::DictError),
    Session(apothic_session::SessionError),
}

impl From<apothic_queue::QueueError> for CoreErr {
    fn from(e: apothic_queue::QueueError) -> Self {
        CoreErr::Queue(e)
    }
}

impl From<apothic_session::SessionError> for CoreErr {
    fn from(e: apothic_session::SessionError) -> Self {
        CoreErr::Session(e)
    }
}

#[pyfunction]
fn error_codes() -> Vec<&'static str> {
    ErrorCode::ALL.iter().map(|c| c.as_str()).collect()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CoreError", m.py().get_type::<CoreError>())?;
    m.add_function(wrap_pyfunction!(error_codes, m)?)?;
    Ok(())
}
