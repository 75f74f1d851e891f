//! The offer table, held in columns: numbers as `Vec<f64>` (NaN = missing), the GPU count as
//! `Vec<i64>` with a validity byte, `verified` as one byte per row, and strings
//! dictionary-encoded as `u32` codes so that `eq`/`in` become a table lookup per row.
//! Each string column also keeps its rows grouped by code (an inverted index), so a selective
//! string predicate ("gpu is an H100") visits only the rows it can match.

use std::collections::HashMap;

use crate::error::{PlacementError, Result};
use crate::field::{Field, Kind, NUMBER_FIELDS, STRING_FIELDS};
use crate::offer::Offer;

/// The code of a missing string; real strings start at 1.
pub(crate) const MISSING: u32 = 0;
pub(crate) const BOOL_FALSE: u8 = 0;
pub(crate) const BOOL_TRUE: u8 = 1;
pub(crate) const BOOL_MISSING: u8 = 2;

#[derive(Debug, Clone)]
pub(crate) struct StrColumn {
    pub codes: Vec<u32>,
    /// `dict[code]`; `dict[0]` stands for "missing" and is never shown.
    pub dict: Vec<String>,
    lookup: HashMap<String, u32>,
    /// Rows of code `c` are `rows[starts[c]..starts[c + 1]]`, ascending.
    starts: Vec<u32>,
    rows: Vec<u32>,
}

impl StrColumn {
    fn new() -> StrColumn {
        StrColumn {
            codes: Vec::new(),
            dict: vec![String::new()],
            lookup: HashMap::new(),
            starts: Vec::new(),
            rows: Vec::new(),
        }
    }

    fn push(&mut self, value: Option<&str>) {
        let code = match value {
            None => MISSING,
            Some(s) => match self.lookup.get(s) {
                Some(c) => *c,
                None => {
                    let c = self.dict.len() as u32;
                    self.dict.push(s.to_owned());
                    self.lookup.insert(s.to_owned(), c);
                    c
                }
            },
        };
        self.codes.push(code);
    }

    /// Counting sort of row ids by code: O(rows), done once per table.
    fn index(&mut self) {
        let mut starts = vec![0u32; self.dict.len() + 1];
        for &c in &self.codes {
            starts[c as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut next = starts.clone();
        let mut rows = vec![0u32; self.codes.len()];
        for (row, &c) in self.codes.iter().enumerate() {
            rows[next[c as usize] as usize] = row as u32;
            next[c as usize] += 1;
        }
        self.starts = starts;
        self.rows = rows;
    }

    pub fn count(&self, code: usize) -> usize {
        (self.starts[code + 1] - self.starts[code]) as usize
    }

    pub fn rows_of(&self, code: usize) -> &[u32] {
        &self.rows[self.starts[code] as usize..self.starts[code + 1] as usize]
    }

    pub fn get(&self, row: usize) -> Option<&str> {
        match self.codes[row] {
            MISSING => None,
            c => Some(self.dict[c as usize].as_str()),
        }
    }
}

/// An immutable, columnar table of offers. Row `i` is the `i`-th offer given to the builder.
#[derive(Debug, Clone)]
pub struct OfferTable {
    len: usize,
    pub(crate) numbers: Vec<Vec<f64>>,
    pub(crate) gpu_count: Vec<i64>,
    pub(crate) gpu_count_valid: Vec<u8>,
    pub(crate) verified: Vec<u8>,
    pub(crate) strings: Vec<StrColumn>,
}

impl OfferTable {
    pub fn builder() -> OfferTableBuilder {
        OfferTableBuilder {
            table: OfferTable {
                len: 0,
                numbers: vec![Vec::new(); NUMBER_FIELDS.len()],
                gpu_count: Vec::new(),
                gpu_count_valid: Vec::new(),
                verified: Vec::new(),
                strings: vec![StrColumn::new(); STRING_FIELDS.len()],
            },
        }
    }

    pub fn from_offers<'a>(offers: impl IntoIterator<Item = &'a Offer>) -> Result<OfferTable> {
        let mut b = OfferTable::builder();
        for offer in offers {
            b.push(offer)?;
        }
        Ok(b.finish())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn num(&self, field: Field) -> &[f64] {
        &self.numbers[field.slot()]
    }

    pub(crate) fn str_col(&self, field: Field) -> &StrColumn {
        &self.strings[field.slot()]
    }

    pub(crate) fn price(&self) -> &[f64] {
        self.num(Field::PricePerHourUsd)
    }

    pub(crate) fn reliability(&self) -> &[f64] {
        self.num(Field::Reliability)
    }

    pub(crate) fn id(&self, row: usize) -> &str {
        self.str_col(Field::Id).get(row).unwrap_or("")
    }

    /// Row `row` back as an `Offer`.
    pub fn offer(&self, row: usize) -> Option<Offer> {
        if row >= self.len {
            return None;
        }
        let s = |f: Field| self.str_col(f).get(row).map(str::to_owned);
        let n = |f: Field| {
            let x = self.num(f)[row];
            (!x.is_nan()).then_some(x)
        };
        Some(Offer {
            id: s(Field::Id),
            provider: s(Field::Provider),
            gpu_name: s(Field::GpuName),
            gpu_count: (self.gpu_count_valid[row] != 0).then_some(self.gpu_count[row]),
            vram_gb: n(Field::VramGb),
            cpu: n(Field::Cpu),
            memory_gb: n(Field::MemoryGb),
            disk_gb: n(Field::DiskGb),
            price_per_hour_usd: n(Field::PricePerHourUsd),
            reliability: n(Field::Reliability),
            inet_down: n(Field::InetDown),
            inet_up: n(Field::InetUp),
            geolocation: s(Field::Geolocation),
            city: s(Field::City),
            region: s(Field::Region),
            cuda: n(Field::Cuda),
            verified: match self.verified[row] {
                BOOL_FALSE => Some(false),
                BOOL_TRUE => Some(true),
                _ => None,
            },
        })
    }
}

pub struct OfferTableBuilder {
    table: OfferTable,
}

impl OfferTableBuilder {
    /// Appends one offer. The id is required: it is the last ranking key and what the
    /// scheduler rents or reuses by.
    pub fn push(&mut self, offer: &Offer) -> Result<()> {
        let t = &mut self.table;
        if offer.id.is_none() {
            return Err(PlacementError::offer(t.len, "id is required"));
        }
        if t.len >= u32::MAX as usize - 1 {
            return Err(PlacementError::offer(
                t.len,
                "too many offers for one table",
            ));
        }
        for (slot, field) in NUMBER_FIELDS.iter().enumerate() {
            t.numbers[slot].push(offer.number(*field).unwrap_or(f64::NAN));
        }
        for (slot, field) in STRING_FIELDS.iter().enumerate() {
            debug_assert_eq!(field.kind(), Kind::String);
            t.strings[slot].push(offer.string(*field));
        }
        t.gpu_count.push(offer.gpu_count.unwrap_or(0));
        t.gpu_count_valid.push(offer.gpu_count.is_some() as u8);
        t.verified.push(match offer.verified {
            Some(false) => BOOL_FALSE,
            Some(true) => BOOL_TRUE,
            None => BOOL_MISSING,
        });
        t.len += 1;
        Ok(())
    }

    pub fn finish(mut self) -> OfferTable {
        for col in &mut self.table.strings {
            col.index();
        }
        self.table
    }
}
