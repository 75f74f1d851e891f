//! Matching and ranking over the columnar table. A compiled `Filter` is bound to a table
//! (string values become per-code lookup tables), then either
//! - the most selective string predicate drives: only the rows under its codes in the
//!   table's inverted index are visited, the rest of the predicates tested row by row; or
//! - every predicate is ANDed into a byte mask chunk by chunk (tight loops the compiler
//!   vectorizes), skipping the remaining predicates once a chunk has no survivor.
//!
//! Survivors go through a bounded max-heap of `limit` entries whose worst price rejects most
//! rows with one comparison, so ranking never sorts the matches.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::filter::{Cmp, Filter, Predicate, Test};
use crate::table::{OfferTable, BOOL_FALSE, BOOL_TRUE};

const CHUNK: usize = 2048;
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
                // Each distinct value is tested once, whatever the number of rows.
                let mut lut: Vec<u8> = col
                    .dict
                    .iter()
                    .map(|s| (matcher.test(s) != *negate) as u8)
                    .collect();
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

    fn test_row(&self, row: usize) -> bool {
        let mut m = [1u8];
        self.apply(row, &mut m);
        m[0] != 0
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
            .map(|(i, _)| {
                let col = t.str_col(filter.preds[i].field);
                let Kernel::Lut { lut, .. } = &kernels[i] else {
                    unreachable!("the driver is a string kernel")
                };
                let lists = (0..lut.len())
                    .filter(|&c| lut[c] != 0)
                    .map(|c| col.rows_of(c))
                    .collect();
                (i, lists)
            });
        Plan {
            kernels,
            driver,
            impossible,
        }
    }
}

/// Ranking: price ascending, then reliability descending, then id ascending; a missing price
/// or reliability ranks after every present one.
struct Ranked<'t> {
    price: f64,
    reliability: f64,
    id: &'t str,
    row: usize,
}

fn cmp_missing_last(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
        (x, y) => x.cmp(&y),
    }
}

impl Ord for Ranked<'_> {
    fn cmp(&self, o: &Self) -> Ordering {
        cmp_missing_last(self.price, o.price)
            .then_with(
                || match (self.reliability.is_nan(), o.reliability.is_nan()) {
                    (false, false) => o
                        .reliability
                        .partial_cmp(&self.reliability)
                        .unwrap_or(Ordering::Equal),
                    (x, y) => x.cmp(&y),
                },
            )
            .then_with(|| self.id.cmp(o.id))
            .then_with(|| self.row.cmp(&o.row))
    }
}

impl PartialOrd for Ranked<'_> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for Ranked<'_> {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for Ranked<'_> {}

/// The best `limit` rows seen so far; the heap's top is the worst of them.
struct TopK<'t> {
    t: &'t OfferTable,
    price: &'t [f64],
    reliability: &'t [f64],
    limit: usize,
    heap: BinaryHeap<Ranked<'t>>,
    /// Worst kept price once full; NaN until then, which lets every row through the quick check.
    bar: f64,
}

impl<'t> TopK<'t> {
    fn new(t: &'t OfferTable, limit: usize) -> TopK<'t> {
        TopK {
            t,
            price: t.price(),
            reliability: t.reliability(),
            limit,
            heap: BinaryHeap::with_capacity(limit + 1),
            bar: f64::NAN,
        }
    }

    #[inline]
    fn offer(&mut self, row: usize) {
        let price = self.price[row];
        // `price > NaN` is false, so rows are only skipped against a real bar.
        if price > self.bar {
            return;
        }
        let r = Ranked {
            price,
            reliability: self.reliability[row],
            id: self.t.id(row),
            row,
        };
        if self.heap.len() < self.limit {
            self.heap.push(r);
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if r < *worst {
                *worst = r;
            }
        }
        if self.heap.len() == self.limit {
            self.bar = self.heap.peek().map_or(f64::NAN, |w| w.price);
        }
    }

    fn into_rows(self) -> Vec<usize> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|r| r.row)
            .collect()
    }
}

impl OfferTable {
    /// Rows passing `filter`, best `limit` first (price, then reliability desc, then id).
    pub fn select(&self, filter: &Filter, limit: usize) -> Vec<usize> {
        if limit == 0 || self.is_empty() {
            return Vec::new();
        }
        let plan = Plan::new(filter, self);
        if plan.impossible {
            return Vec::new();
        }
        let mut top = TopK::new(self, limit);
        match &plan.driver {
            Some((skip, lists)) => {
                for rows in lists {
                    for &row in *rows {
                        let row = row as usize;
                        let pass = plan
                            .kernels
                            .iter()
                            .enumerate()
                            .all(|(i, k)| i == *skip || k.test_row(row));
                        if pass {
                            top.offer(row);
                        }
                    }
                }
            }
            None => {
                let mut mask = [0u8; CHUNK];
                let mut start = 0;
                while start < self.len() {
                    let n = CHUNK.min(self.len() - start);
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
                                top.offer(start + i);
                            }
                        }
                    }
                    start += n;
                }
            }
        }
        top.into_rows()
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
        // Fewest failures first, then the usual ranking: one pass per failure count.
        let mut out = Vec::new();
        let most = failed.iter().copied().max().unwrap_or(0);
        for count in 1..=most {
            if out.len() >= limit {
                break;
            }
            let mut top = TopK::new(self, limit - out.len());
            for (row, &f) in failed.iter().enumerate() {
                if f == count {
                    top.offer(row);
                }
            }
            out.extend(top.into_rows());
        }
        out.into_iter()
            .filter_map(|row| {
                let offer = self.offer(row)?;
                Some((row, filter.failures(&offer)))
            })
            .collect()
    }
}
