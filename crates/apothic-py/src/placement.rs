//! `OfferTableRef` and `OfferFilterRef`: handles over `apothic_placement`'s columnar offer
//! table and compiled filter. Specs and rows cross as plain dicts; matching runs with the GIL
//! released once a table is large enough for that to matter.

use apothic_placement::{
    offers_from_vast_json, Field, Filter, Offer, OfferTable, PlacementError, Value,
};
use apothic_types::ErrorCode;
use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::errors::core_error;

/// Below this many rows a match takes microseconds: detaching from the interpreter would cost
/// more than it frees.
const DETACH_ROWS: usize = 4096;

fn placement_err(e: PlacementError) -> PyErr {
    core_error(e.code(), &e)
}

/// A Python object as a spec or row value. `code` is the error reported for a type that has
/// no place in either.
fn to_value(obj: &Bound<'_, PyAny>, code: ErrorCode) -> PyResult<Value> {
    if obj.is_none() {
        Ok(Value::Null)
    } else if let Ok(f) = obj.cast::<PyFloat>() {
        Ok(Value::Float(f.value()))
    } else if let Ok(b) = obj.cast::<PyBool>() {
        // Before PyInt: bool is a subclass of int in Python.
        Ok(Value::Bool(b.is_true()))
    } else if obj.is_instance_of::<PyInt>() {
        match obj.extract::<i64>() {
            Ok(i) => Ok(Value::Int(i)),
            Err(_) => Ok(Value::Float(obj.extract::<f64>()?)),
        }
    } else if let Ok(s) = obj.cast::<PyString>() {
        Ok(Value::Str(s.to_str()?.to_owned()))
    } else if let Ok(d) = obj.cast::<PyDict>() {
        let mut pairs = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            let Ok(k) = k.cast::<PyString>() else {
                return Err(core_error(
                    code,
                    format!("mapping keys must be strings, got {}", k.repr()?),
                ));
            };
            pairs.push((k.to_str()?.to_owned(), to_value(&v, code)?));
        }
        Ok(Value::Map(pairs))
    } else if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        obj.try_iter()?
            .map(|item| to_value(&item?, code))
            .collect::<PyResult<Vec<_>>>()
            .map(Value::List)
    } else {
        Err(core_error(
            code,
            format!(
                "unsupported value {} of type {}",
                obj.repr()?,
                obj.get_type().name()?
            ),
        ))
    }
}

fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(x) => x.into_pyobject(py)?.into_any(),
        Value::Str(s) => PyString::new(py, s).into_any(),
        Value::List(items) => PyList::new(
            py,
            items
                .iter()
                .map(|i| to_py(py, i))
                .collect::<PyResult<Vec<_>>>()?,
        )?
        .into_any(),
        Value::Map(pairs) => {
            let d = PyDict::new(py);
            for (k, v) in pairs {
                d.set_item(k, to_py(py, v)?)?;
            }
            d.into_any()
        }
    })
}

/// Field names as Python strings, made once per call rather than once per row and field.
fn field_keys(py: Python<'_>) -> Vec<(Field, Bound<'_, PyString>)> {
    Field::ALL
        .iter()
        .map(|f| (*f, PyString::intern(py, f.name())))
        .collect()
}

fn offer_from_dict(
    index: usize,
    row: &Bound<'_, PyAny>,
    keys: &[(Field, Bound<'_, PyString>)],
) -> PyResult<Offer> {
    let Ok(d) = row.cast::<PyDict>() else {
        return Err(core_error(
            ErrorCode::InvalidArgument,
            format!(
                "offer {index}: expected a dict, got {}",
                row.get_type().name()?
            ),
        ));
    };
    let mut offer = Offer::default();
    for (field, key) in keys {
        if let Some(v) = d.get_item(key)? {
            let v = to_value(&v, ErrorCode::InvalidArgument)?;
            offer.set(index, *field, v).map_err(placement_err)?;
        }
    }
    Ok(offer)
}

fn offer_to_dict<'py>(py: Python<'py>, offer: &Offer) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for f in Field::ALL {
        d.set_item(f.name(), to_py(py, &offer.get(f))?)?;
    }
    Ok(d)
}

#[pyclass(frozen, module = "apothic._core")]
pub struct OfferFilterRef {
    filter: Filter,
}

#[pymethods]
impl OfferFilterRef {
    #[staticmethod]
    fn compile(spec: &Bound<'_, PyAny>) -> PyResult<Self> {
        let spec = to_value(spec, ErrorCode::PlacementInvalidFilter)?;
        let filter = Filter::compile(&spec).map_err(placement_err)?;
        Ok(OfferFilterRef { filter })
    }

    fn matches(&self, offer: &Bound<'_, PyAny>) -> PyResult<bool> {
        let keys = field_keys(offer.py());
        Ok(self.filter.matches(&offer_from_dict(0, offer, &keys)?))
    }

    /// The failed predicates of one offer, rendered with the value it had.
    fn failures(&self, offer: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
        let keys = field_keys(offer.py());
        Ok(self.filter.failures(&offer_from_dict(0, offer, &keys)?))
    }

    fn describe(&self) -> String {
        self.filter.describe()
    }
}

#[pyclass(frozen, module = "apothic._core")]
pub struct OfferTableRef {
    table: OfferTable,
}

#[pymethods]
impl OfferTableRef {
    #[staticmethod]
    fn from_offers(offers: &Bound<'_, PyAny>) -> PyResult<Self> {
        let keys = field_keys(offers.py());
        let mut b = OfferTable::builder();
        for (i, row) in offers.try_iter()?.enumerate() {
            let offer = offer_from_dict(i, &row?, &keys)?;
            b.push(&offer).map_err(placement_err)?;
        }
        Ok(OfferTableRef { table: b.finish() })
    }

    #[staticmethod]
    fn from_vast_json(py: Python<'_>, body: &[u8]) -> PyResult<Self> {
        let table = py
            .detach(|| offers_from_vast_json(body).and_then(|o| OfferTable::from_offers(&o)))
            .map_err(placement_err)?;
        Ok(OfferTableRef { table })
    }

    fn __len__(&self) -> usize {
        self.table.len()
    }

    fn offer<'py>(&self, py: Python<'py>, index: usize) -> PyResult<Bound<'py, PyDict>> {
        let offer = self.table.offer(index).ok_or_else(|| {
            PyIndexError::new_err(format!(
                "offer index {index} out of range ({} offers)",
                self.table.len()
            ))
        })?;
        offer_to_dict(py, &offer)
    }

    /// Matching rows, best first: price, then reliability (descending), then id.
    #[pyo3(name = "match", signature = (flt, limit=64))]
    fn match_offers(
        &self,
        py: Python<'_>,
        flt: &Bound<'_, OfferFilterRef>,
        limit: usize,
    ) -> Vec<usize> {
        let filter = &flt.get().filter;
        if self.table.len() < DETACH_ROWS {
            return self.table.select(filter, limit);
        }
        py.detach(|| self.table.select(filter, limit))
    }

    /// The nearest misses as (offer, failed predicates) pairs.
    #[pyo3(signature = (flt, limit=3))]
    fn explain<'py>(
        &self,
        py: Python<'py>,
        flt: &Bound<'py, OfferFilterRef>,
        limit: usize,
    ) -> PyResult<Vec<(Bound<'py, PyDict>, Vec<String>)>> {
        let filter = &flt.get().filter;
        let near = py.detach(|| self.table.explain(filter, limit));
        near.into_iter()
            .map(|(row, failed)| {
                let offer = self.table.offer(row).unwrap_or_default();
                Ok((offer_to_dict(py, &offer)?, failed))
            })
            .collect()
    }
}

/// (field, kind) for every offer field, kinds being "number", "integer", "string" or "bool".
#[pyfunction]
fn offer_fields() -> Vec<(&'static str, &'static str)> {
    Field::ALL
        .iter()
        .map(|f| (f.name(), f.kind().as_str()))
        .collect()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<OfferFilterRef>()?;
    m.add_class::<OfferTableRef>()?;
    m.add_function(wrap_pyfunction!(offer_fields, m)?)?;
    Ok(())
}
