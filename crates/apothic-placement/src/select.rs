//! Matching over the columnar table. Rows are stored in ranking order, so a match walks
//! them in that order and stops at the `limit`-th survivor: nothing is sorted or selected
//! per query. A compiled `Filter` is bound to a table (string values become per-code lookup
//! tables); price bounds narrow the walk to a range found by binary search; then either
//! - the most selective string predicate drives: only the rows under its codes in the
//!   table's inverted index are visited (merged in stored order), the rest tested row by row; or
//! - every predicate is ANDed into a byte mask chunk by chunk (tight loops the compiler
//!   vectorizes), skipping the remaining predicates once a chunk has no survivor. Chunks start
//!   small and grow, so a broad filter touches only the first few hundred rows.

use std::ops::Range;

use crate::field::Field;

use crate::filter::{Cmp, Filter, Predicate, StrMatcher, Test};
use crate::table::{OfferTable, BOOL_FALSE, BOOL_TRUE};

const FIRST_CHUNK: usize = 256;
const CHUNK: usize = 4096;
/// Candidate rows from the index are filtered this many at a time.
const BATCH: usize = 512;
/// The index path pays per visited row what the scan pays per chunk byte several times over,
/// so it wins only when the driving predicate keeps a small share of the rows.
const INDEX_SHARE: usize = 8;

enum Kernel<'t> {
    Num {
        col: &'t [f64],
        op: Cmp,
        v: f64,
    },
    NumIn {
        col: &'t [f64],
        values: &'t [f64],
        negate: bool,
    },
    Int {
        col: &'t [i64],
        valid: &'t [u8],
        op: Cmp,
        v: i64,
    },
    IntIn {
        col: &'t [i64],
        valid: &'t [u8],
        values: &'t [i64],
        negate: bool,
    },
    /// Strings and bools: one byte per code (for bools: false, true, missing).
    Lut {
        codes: Codes<'t>,
        lut: Vec<u8>,
    },
}

enum Codes<'t> {
    U32(&'t [u32]),
    U8(&'t [u8]),
}

#[inline(always)]
fn and_each<T: Copy>(mask: &mut [u8], col: &[T], f: impl Fn(T) -> bool) {
    for (m, &x) in mask.iter_mut().zip(col) {
        *m &= f(x) as u8;
    }
}

#[inline(always)]
fn and_each_valid<T: Copy>(mask: &mut [u8], col: &[T], valid: &[u8], f: impl Fn(T) -> bool) {
    for ((m, &x), &ok) in mask.iter_mut().zip(col).zip(valid) {
        *m &= ok & (f(x) as u8);
    }
}

fn and_cmp_f64(mask: &mut [u8], col: &[f64], op: Cmp, v: f64) {
    match op {
        Cmp::Eq => and_each(mask, col, |x| x == v),
        Cmp::Neq => and_each(mask, col, |x| x != v),
        Cmp::Gt => and_each(mask, col, |x| x > v),
        Cmp::Lt => and_each(mask, col, |x| x < v),
        Cmp::Gte => and_each(mask, col, |x| x >= v),
        Cmp::Lte => and_each(mask, col, |x| x <= v),
    }
}

fn and_cmp_i64(mask: &mut [u8], col: &[i64], valid: &[u8], op: Cmp, v: i64) {
    match op {
        // A missing count passes `neq` only.
        Cmp::Neq => {
            for ((m, &x), &ok) in mask.iter_mut().zip(col).zip(valid) {
                *m &= (ok == 0 || x != v) as u8;
            }
        }
        Cmp::Eq => and_each_valid(mask, col, valid, |x| x == v),
        Cmp::Gt => and_each_valid(mask, col, valid, |x| x > v),
        Cmp::Lt => and_each_valid(mask, col, valid, |x| x < v),
        Cmp::Gte => and_each_valid(mask, col, valid, |x| x >= v),
        Cmp::Lte => and_each_valid(mask, col, valid, |x| x <= v),
    }
}

impl<'t> Kernel<'t> {
    fn bind(p: &'t Predicate, t: &'t OfferTable) -> Kernel<'t> {
        match &p.test {
            Test::Num { op, v } => Kernel::Num {
                col: t.num(p.field),
                op: *op,
                v: *v,
            },
            Test::NumIn { values, negate } => Kernel::NumIn {
                col: t.num(p.field),
                values,
                negate: *negate,
            },
            Test::Int { op, v } => Kernel::Int {
                col: &t.gpu_count,
                valid: &t.gpu_count_valid,
                op: *op,
                v: *v,
            },
            Test::IntIn { values, negate } => Kernel::IntIn {
                col: &t.gpu_count,
                valid: &t.gpu_count_valid,
                values,
                negate: *negate,
            },
            Test::Str { matcher, negate } => {
                let col = t.str_col(p.field);
                let mut lut: Vec<u8> = match matcher {
                    // Exact values are looked up, not compared against every distinct value:
                    // an id column has as many distinct values as rows.
                    StrMatcher::Exact(values) => {
                        let mut lut = vec![*negate as u8; col.dict.len()];
                        for code in values.iter().filter_map(|v| col.code_of(v)) {
                            lut[code as usize] = !*negate as u8;
                        }
                        lut
                    }
                    // Otherwise each distinct value is tested once, whatever the number of rows.
                    _ => col
                        .dict
                        .iter()
                        .map(|s| (matcher.test(s) != *negate) as u8)
                        .collect(),
                };
                lut[0] = *negate as u8;
                Kernel::Lut {
                    codes: Codes::U32(&col.codes),
                    lut,
                }
            }
            Test::Bool { values, negate } => {
                let pass = |b: bool| (values.contains(&b) != *negate) as u8;
                let mut lut = vec![0u8; 3];
                lut[BOOL_FALSE as usize] = pass(false);
                lut[BOOL_TRUE as usize] = pass(true);
                lut[2] = *negate as u8;
                Kernel::Lut {
                    codes: Codes::U8(&t.verified),
                    lut,
                }
            }
        }
    }

    /// ANDs this predicate into `mask`, which covers rows `start..start + mask.len()`.
    fn apply(&self, start: usize, mask: &mut [u8]) {
        let r = start..start + mask.len();
        match self {
            Kernel::Num { col, op, v } => and_cmp_f64(mask, &col[r], *op, *v),
            Kernel::NumIn {
                col,
                values,
                negate,
            } => and_each(mask, &col[r], |x| values.contains(&x) != *negate),
            Kernel::Int { col, valid, op, v } => {
                and_cmp_i64(mask, &col[r.clone()], &valid[r], *op, *v)
            }
            Kernel::IntIn {
                col,
                valid,
                values,
                negate,
            } => {
                for ((m, &x), &ok) in mask.iter_mut().zip(&col[r.clone()]).zip(&valid[r]) {
                    let pass = if ok == 0 {
                        *negate
                    } else {
                        values.contains(&x) != *negate
                    };
                    *m &= pass as u8;
                }
            }
            Kernel::Lut { codes, lut } => match codes {
                Codes::U32(c) => and_each(mask, &c[r], |code| lut[code as usize] != 0),
                Codes::U8(c) => and_each(mask, &c[r], |code| lut[code as usize] != 0),
            },
        }
    }

    /// ANDs this predicate into `mask` for the listed rows (gathered: the index path).
    fn apply_rows(&self, rows: &[u32], mask: &mut [u8]) {
        let pairs = mask.iter_mut().zip(rows.iter().map(|&r| r as usize));
        match self {
            Kernel::Num { col, op, v } => {
                let v = *v;
                match op {
                    Cmp::Eq => pairs.for_each(|(m, r)| *m &= (col[r] == v) as u8),
                    Cmp::Neq => pairs.for_each(|(m, r)| *m &= (col[r] != v) as u8),
                    Cmp::Gt => pairs.for_each(|(m, r)| *m &= (col[r] > v) as u8),
                    Cmp::Lt => pairs.for_each(|(m, r)| *m &= (col[r] < v) as u8),
                    Cmp::Gte => pairs.for_each(|(m, r)| *m &= (col[r] >= v) as u8),
                    Cmp::Lte => pairs.for_each(|(m, r)| *m &= (col[r] <= v) as u8),
                }
            }
            Kernel::Lut { codes, lut } => match codes {
                Codes::U32(c) => pairs.for_each(|(m, r)| *m &= lut[c[r] as usize]),
                Codes::U8(c) => pairs.for_each(|(m, r)| *m &= lut[c[r] as usize]),
            },
            // The rarer kernels reuse the contiguous path one row at a time.
            _ => pairs.for_each(|(m, r)| {
                let mut one = [*m];
                self.apply(r, &mut one);
                *m = one[0];
            }),
        }
    }
}

/// A bound filter: kernels plus, when one is selective enough, the string predicate whose
/// index drives the match.
struct Plan<'t> {
    kernels: Vec<Kernel<'t>>,
    driver: Option<(usize, Vec<&'t [u32]>)>,
    impossible: bool,
}

impl<'t> Plan<'t> {
    fn new(filter: &'t Filter, t: &'t OfferTable) -> Plan<'t> {
        let kernels: Vec<Kernel<'t>> = filter.preds.iter().map(|p| Kernel::bind(p, t)).collect();
        let mut best: Option<(usize, usize)> = None;
        for (i, (k, p)) in kernels.iter().zip(&filter.preds).enumerate() {
            let Kernel::Lut {
                codes: Codes::U32(_),
                lut,
            } = k
            else {
                continue;
            };
            let col = t.str_col(p.field);
            let count: usize = (0..lut.len())
                .filter(|&c| lut[c] != 0)
                .map(|c| col.count(c))
                .sum();
            if best.is_none_or(|(_, n)| count < n) {
                best = Some((i, count));
            }
        }
        let impossible = best.is_some_and(|(_, n)| n == 0);
        let driver = best
            .filter(|(_, n)| n * INDEX_SHARE < t.len())
            .and_then(|(i, _)| {
                let col = t.str_col(filter.preds[i].field);
                let Kernel::Lut { lut, .. } = &kernels[i] else {
                    return None;
                };
                let lists = (0..lut.len())
                    .filter(|&c| lut[c] != 0 && col.count(c) > 0)
                    .map(|c| col.rows_of(c))
                    .collect();
                Some((i, lists))
            });
        Plan {
            kernels,
            driver,
            impossible,
        }
    }

    /// Filters a batch of candidate rows (ascending) from the driver's index, appending the
    /// survivors to `out` in order, up to `limit`.
    fn filter_batch(&self, skip: usize, rows: &[u32], limit: usize, out: &mut Vec<usize>) {
        let mut mask = [1u8; BATCH];
        let m = &mut mask[..rows.len()];
        for (i, k) in self.kernels.iter().enumerate() {
            if i != skip {
                k.apply_rows(rows, m);
            }
        }
        for (&row, &b) in rows.iter().zip(m.iter()) {
            if b != 0 && out.len() < limit {
                out.push(row as usize);
            }
        }
    }
}

/// The stored rows whose price can pass the filter's price predicates: prices are stored
/// ascending (missing last), so each bound is a binary search.
fn price_range(filter: &Filter, t: &OfferTable) -> Range<usize> {
    let price = t.num(Field::PricePerHourUsd);
    let (mut lo, mut hi) = (0, price.len());
    for p in filter
        .preds
        .iter()
        .filter(|p| p.field == Field::PricePerHourUsd)
    {
        let Test::Num { op, v } = p.test else {
            continue;
        };
        let below = price.partition_point(|&x| x < v);
        let upto = price.partition_point(|&x| x <= v);
        match op {
            Cmp::Lte => hi = hi.min(upto),
            Cmp::Lt => hi = hi.min(below),
            Cmp::Gte => lo = lo.max(below),
            Cmp::Gt => lo = lo.max(upto),
            Cmp::Eq => {
                lo = lo.max(below);
                hi = hi.min(upto);
            }
            Cmp::Neq => {}
        }
    }
    lo..hi.max(lo)
}

impl OfferTable {
    /// Rows passing `filter`, best `limit` first (price, then reliability desc, then id),
    /// numbered as they were given to the builder.
    pub fn select(&self, filter: &Filter, limit: usize) -> Vec<usize> {
        if limit == 0 || self.is_empty() {
            return Vec::new();
        }
        let plan = Plan::new(filter, self);
        let range = price_range(filter, self);
        if plan.impossible || range.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<usize> = Vec::with_capacity(limit.min(1024));
        match &plan.driver {
            Some((skip, lists)) => {
                // Each code's rows are ascending. Windows of stored rows are taken from every
                // list at once and sorted, which keeps the stored (ranking) order; a window is
                // sized to hold a few batches of candidates.
                let total: usize = lists.iter().map(|l| l.len()).sum();
                let window = (4 * BATCH * self.len() / total.max(1)).max(BATCH);
                let mut cursors: Vec<usize> = lists
                    .iter()
                    .map(|rows| rows.partition_point(|&r| (r as usize) < range.start))
                    .collect();
                let mut batch: Vec<u32> = Vec::new();
                let mut from = range.start;
                while from < range.end && out.len() < limit {
                    let to = (from + window).min(range.end);
                    batch.clear();
                    for (rows, at) in lists.iter().zip(cursors.iter_mut()) {
                        let stop = *at + rows[*at..].partition_point(|&r| (r as usize) < to);
                        batch.extend_from_slice(&rows[*at..stop]);
                        *at = stop;
                    }
                    if lists.len() > 1 {
                        batch.sort_unstable();
                    }
                    for part in batch.chunks(BATCH) {
                        plan.filter_batch(*skip, part, limit, &mut out);
                        if out.len() == limit {
                            break;
                        }
                    }
                    from = to;
                }
            }
            None => {
                let mut mask = [0u8; CHUNK];
                let mut chunk = FIRST_CHUNK;
                let mut start = range.start;
                'scan: while start < range.end {
                    let n = chunk.min(range.end - start);
                    let m = &mut mask[..n];
                    m.fill(1);
                    let mut alive = true;
                    for k in &plan.kernels {
                        k.apply(start, m);
                        if !m.iter().any(|&b| b != 0) {
                            alive = false;
                            break;
                        }
                    }
                    if alive {
                        for (i, &b) in m.iter().enumerate() {
                            if b != 0 {
                                out.push(start + i);
                                if out.len() == limit {
                                    break 'scan;
                                }
                            }
                        }
                    }
                    start += n;
                    chunk = (chunk * 2).min(CHUNK);
                }
            }
        }
        out.into_iter().map(|r| self.order[r] as usize).collect()
    }

    /// The nearest misses: rows failing the fewest predicates (at least one), ties broken by
    /// the ranking, each with its failed predicates rendered with the value it had.
    pub fn explain(&self, filter: &Filter, limit: usize) -> Vec<(usize, Vec<String>)> {
        if limit == 0 || self.is_empty() || filter.preds.is_empty() {
            return Vec::new();
        }
        let kernels: Vec<Kernel> = filter.preds.iter().map(|p| Kernel::bind(p, self)).collect();
        let mut failed = vec![0u8; self.len()];
        let mut mask = [0u8; CHUNK];
        let mut start = 0;
        while start < self.len() {
            let n = CHUNK.min(self.len() - start);
            for k in &kernels {
                let m = &mut mask[..n];
                m.fill(1);
                k.apply(start, m);
                for (f, &b) in failed[start..start + n].iter_mut().zip(m.iter()) {
                    *f = f.saturating_add(1 - b);
                }
            }
            start += n;
        }
        // Fewest failures first; within a count, stored order is the ranking.
        let mut rows = Vec::with_capacity(limit);
        let most = failed.iter().copied().max().unwrap_or(0);
        for count in 1..=most {
            if rows.len() == limit {
                break;
            }
            for (row, _) in failed.iter().enumerate().filter(|(_, &f)| f == count) {
                if rows.len() == limit {
                    break;
                }
                rows.push(row);
            }
        }
        rows.into_iter()
            .filter_map(|row| {
                let offer = self.stored_offer(row)?;
                Some((self.order[row] as usize, filter.failures(&offer)))
            })
            .collect()
    }
}
