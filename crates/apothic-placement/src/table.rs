//! The offer table, held in columns: numbers as `Vec<f64>` (NaN = missing), the GPU count as
//! `Vec<i64>` with a validity byte, `verified` as one byte per row, and strings
//! dictionary-encoded as `u32` codes so that `eq`/`in` become a table lookup per row.
//! Each string column also keeps its rows grouped by code (an inverted index), so a selective
//! string predicate ("gpu is an H100") visits only the rows it can match.
//!
//! Rows are stored in ranking order (price, then reliability descending, then id), sorted once
//! when the table is built. A match then never sorts or selects: the first `limit` stored rows
//! that pass are the answer, so a broad filter stops after a few thousand rows and a price cap
//! becomes a binary search. Callers see the original row numbers (`order`/`position`).

use std::cmp::Ordering;
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

    pub fn code_of(&self, value: &str) -> Option<u32> {
        self.lookup.get(value).copied()
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
    /// `order[stored row]` = the row's number as given to the builder.
    pub(crate) order: Vec<u32>,
    /// `position[given row]` = where that row is stored.
    position: Vec<u32>,
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
                order: Vec::new(),
                position: Vec::new(),
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

    /// Row `row` (numbered as given to the builder) back as an `Offer`.
    pub fn offer(&self, row: usize) -> Option<Offer> {
        if row >= self.len {
            return None;
        }
        self.stored_offer(self.position[row] as usize)
    }

    pub(crate) fn stored_offer(&self, row: usize) -> Option<Offer> {
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
        let t = &mut self.table;
        let order = rank_order(t);
        fn permute<T: Copy>(col: &mut Vec<T>, order: &[u32]) {
            *col = order.iter().map(|&i| col[i as usize]).collect();
        }
        for col in &mut t.numbers {
            permute(col, &order);
        }
        permute(&mut t.gpu_count, &order);
        permute(&mut t.gpu_count_valid, &order);
        permute(&mut t.verified, &order);
        for col in &mut t.strings {
            permute(&mut col.codes, &order);
            col.index();
        }
        let mut position = vec![0u32; order.len()];
        for (stored, &given) in order.iter().enumerate() {
            position[given as usize] = stored as u32;
        }
        t.order = order;
        t.position = position;
        self.table
    }
}

/// Price ascending, reliability descending, id ascending, then the given order; a missing
/// price or reliability ranks after every present one.
pub(crate) fn rank_cmp(price: (f64, f64), reliability: (f64, f64), id: (&str, &str)) -> Ordering {
    let missing_last = |a: f64, b: f64| match (a.is_nan(), b.is_nan()) {
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
        (x, y) => x.cmp(&y),
    };
    missing_last(price.0, price.1)
        .then_with(|| match (reliability.0.is_nan(), reliability.1.is_nan()) {
            (false, false) => reliability
                .1
                .partial_cmp(&reliability.0)
                .unwrap_or(Ordering::Equal),
            (x, y) => x.cmp(&y),
        })
        .then_with(|| id.0.cmp(id.1))
}

fn rank_order(t: &OfferTable) -> Vec<u32> {
    let price = &t.numbers[Field::PricePerHourUsd.slot()];
    let rel = &t.numbers[Field::Reliability.slot()];
    let ids = &t.strings[Field::Id.slot()];
    let id = |i: usize| ids.dict[ids.codes[i] as usize].as_str();
    let mut order: Vec<u32> = (0..t.len as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        rank_cmp((price[a], price[b]), (rel[a], rel[b]), (id(a), id(b))).then(a.cmp(&b))
    });
    order
}
