//! The offer-filter language, compiled once: `{field: {op: value}}` with the operators
//! eq, neq, gt, lt, gte, lte, in, notin (exactly Vast.ai's, so a filter can be forwarded), plus
//! the convenience requirements (gpu, gpu_count, min_vram_gb, geolocation,
//! max_cost_per_hour_usd) compiled into the same list of predicates.

use std::fmt;

use crate::error::{PlacementError, Result};
use crate::field::{known_fields, Field, Kind};
use crate::gpu::GpuName;
use crate::offer::Offer;
use crate::value::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Neq,
    Gt,
    Lt,
    Gte,
    Lte,
}

impl Cmp {
    /// NaN (a missing value) fails every comparison except `neq`, which is what the schema
    /// promises for missing values.
    #[inline(always)]
    pub(crate) fn test_f64(self, x: f64, v: f64) -> bool {
        match self {
            Cmp::Eq => x == v,
            Cmp::Neq => x != v,
            Cmp::Gt => x > v,
            Cmp::Lt => x < v,
            Cmp::Gte => x >= v,
            Cmp::Lte => x <= v,
        }
    }

    #[inline(always)]
    pub(crate) fn test_i64(self, x: i64, v: i64) -> bool {
        match self {
            Cmp::Eq => x == v,
            Cmp::Neq => x != v,
            Cmp::Gt => x > v,
            Cmp::Lt => x < v,
            Cmp::Gte => x >= v,
            Cmp::Lte => x <= v,
        }
    }
}

pub const OPERATORS: [&str; 8] = ["eq", "neq", "gt", "lt", "gte", "lte", "in", "notin"];

#[derive(Debug, Clone)]
pub(crate) enum StrMatcher {
    /// Exact values; geolocation values are upper-cased on both sides.
    Exact(Vec<String>),
    /// GPU names compared after normalisation.
    Gpu(Vec<GpuName>),
    /// A GPU family ("A100") or an exact name, matching its variants.
    GpuFamily(GpuName),
}

impl StrMatcher {
    pub(crate) fn test(&self, s: &str) -> bool {
        match self {
            StrMatcher::Exact(values) => values.iter().any(|v| v == s),
            StrMatcher::Gpu(names) => {
                let n = GpuName::new(s);
                names.iter().any(|v| v.same(&n))
            }
            StrMatcher::GpuFamily(family) => GpuName::new(s).in_family(family),
        }
    }
}

/// What one predicate tests, with the missing-value rule folded in: `negate` predicates
/// (`neq`, `notin`) pass on a missing value, the others fail.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    Num { op: Cmp, v: f64 },
    NumIn { values: Vec<f64>, negate: bool },
    Int { op: Cmp, v: i64 },
    IntIn { values: Vec<i64>, negate: bool },
    Str { matcher: StrMatcher, negate: bool },
    Bool { values: Vec<bool>, negate: bool },
}

#[derive(Debug, Clone)]
pub struct Predicate {
    pub(crate) field: Field,
    pub(crate) test: Test,
    text: String,
}

impl Predicate {
    pub fn field(&self) -> Field {
        self.field
    }

    pub fn test_offer(&self, o: &Offer) -> bool {
        match &self.test {
            Test::Num { op, v } => op.test_f64(o.number(self.field).unwrap_or(f64::NAN), *v),
            Test::NumIn { values, negate } => {
                let x = o.number(self.field).unwrap_or(f64::NAN);
                values.contains(&x) != *negate
            }
            Test::Int { op, v } => match o.gpu_count {
                Some(x) => op.test_i64(x, *v),
                None => *op == Cmp::Neq,
            },
            Test::IntIn { values, negate } => match o.gpu_count {
                Some(x) => values.contains(&x) != *negate,
                None => *negate,
            },
            Test::Str { matcher, negate } => match o.string(self.field) {
                Some(s) => matcher.test(s) != *negate,
                None => *negate,
            },
            Test::Bool { values, negate } => match o.verified {
                Some(b) => values.contains(&b) != *negate,
                None => *negate,
            },
        }
    }

    /// `gpu_name in ["A100_SXM4","H100_SXM"] (was "RTX 4090")`
    pub fn render_failure(&self, o: &Offer) -> String {
        let was = match o.get(self.field) {
            Value::Null => "missing".to_owned(),
            v => v.to_string(),
        };
        format!("{} (was {was})", self.text)
    }
}

impl fmt::Display for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A compiled filter: every predicate must pass.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub(crate) preds: Vec<Predicate>,
}

const SPEC_KEYS: [&str; 6] = [
    "gpu",
    "gpu_count",
    "min_vram_gb",
    "geolocation",
    "max_cost_per_hour_usd",
    "offer_filters",
];

impl Filter {
    /// Compiles a spec `{gpu, gpu_count, min_vram_gb, geolocation, max_cost_per_hour_usd,
    /// offer_filters}`; every key is optional and `null` means "no requirement".
    pub fn compile(spec: &Value) -> Result<Filter> {
        let Value::Map(pairs) = spec else {
            return Err(PlacementError::filter(
                "spec",
                format!("expected a mapping, got {}", spec.type_name()),
            ));
        };
        for (k, _) in pairs {
            if !SPEC_KEYS.contains(&k.as_str()) {
                return Err(PlacementError::filter(
                    k.as_str(),
                    format!("unknown placement option (known: {})", SPEC_KEYS.join(", ")),
                ));
            }
        }
        let get = |k: &str| spec.get(k).filter(|v| **v != Value::Null);
        let mut preds = Vec::new();

        let mut gpu_any = false;
        if let Some(g) = get("gpu") {
            let Value::Str(name) = g else {
                return Err(PlacementError::filter(
                    "gpu",
                    format!("expected a GPU name, got {} {g}", g.type_name()),
                ));
            };
            let family = GpuName::new(name);
            if name.trim().eq_ignore_ascii_case("any") {
                gpu_any = true;
            } else if family.joined.is_empty() {
                return Err(PlacementError::filter("gpu", "empty GPU name"));
            } else {
                preds.push(Predicate {
                    field: Field::GpuName,
                    test: Test::Str {
                        matcher: StrMatcher::GpuFamily(family),
                        negate: false,
                    },
                    text: format!("gpu {}", Value::Str(name.clone())),
                });
            }
        }
        match get("gpu_count") {
            Some(v) => {
                let n = match v {
                    Value::Int(n) if *n >= 1 => *n,
                    _ => {
                        return Err(PlacementError::filter(
                            "gpu_count",
                            format!("expected a positive integer, got {v}"),
                        ))
                    }
                };
                preds.push(int_pred(Field::GpuCount, Cmp::Gte, n));
            }
            // "any" GPU still means at least one.
            None if gpu_any => preds.push(int_pred(Field::GpuCount, Cmp::Gte, 1)),
            None => {}
        }
        if let Some(v) = get("min_vram_gb") {
            let x = non_negative("min_vram_gb", v)?;
            preds.push(num_pred(Field::VramGb, Cmp::Gte, x, v));
        }
        if let Some(v) = get("geolocation") {
            let codes: Vec<String> = match v {
                Value::Str(s) => vec![s.clone()],
                Value::List(items) if !items.is_empty() => items
                    .iter()
                    .map(|i| match i {
                        Value::Str(s) => Ok(s.clone()),
                        other => Err(PlacementError::filter(
                            "geolocation",
                            format!("expected country codes, got {} {other}", other.type_name()),
                        )),
                    })
                    .collect::<Result<_>>()?,
                _ => {
                    return Err(PlacementError::filter(
                        "geolocation",
                        format!("expected a country code or a non-empty list of them, got {v}"),
                    ))
                }
            };
            let codes: Vec<String> = codes.iter().map(|c| c.trim().to_uppercase()).collect();
            let shown = Value::List(codes.iter().cloned().map(Value::Str).collect());
            preds.push(Predicate {
                field: Field::Geolocation,
                test: Test::Str {
                    matcher: StrMatcher::Exact(codes),
                    negate: false,
                },
                text: format!("geolocation in {shown}"),
            });
        }
        if let Some(v) = get("max_cost_per_hour_usd") {
            let x = non_negative("max_cost_per_hour_usd", v)?;
            preds.push(num_pred(Field::PricePerHourUsd, Cmp::Lte, x, v));
        }
        if let Some(v) = get("offer_filters") {
            let Value::Map(fields) = v else {
                return Err(PlacementError::filter(
                    "offer_filters",
                    format!(
                        "expected {{field: {{op: value}}}}, got {} {v}",
                        v.type_name()
                    ),
                ));
            };
            for (name, ops) in fields {
                compile_field(name, ops, &mut preds)?;
            }
        }
        Ok(Filter { preds })
    }

    pub fn predicates(&self) -> &[Predicate] {
        &self.preds
    }

    /// Whether one offer (or one worker's metadata) passes every predicate.
    pub fn matches(&self, offer: &Offer) -> bool {
        self.preds.iter().all(|p| p.test_offer(offer))
    }

    /// The predicates an offer fails, rendered with the value it had.
    pub fn failures(&self, offer: &Offer) -> Vec<String> {
        self.preds
            .iter()
            .filter(|p| !p.test_offer(offer))
            .map(|p| p.render_failure(offer))
            .collect()
    }

    pub fn describe(&self) -> String {
        if self.preds.is_empty() {
            return "any offer".to_owned();
        }
        self.preds
            .iter()
            .map(|p| p.text.as_str())
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

fn int_pred(field: Field, op: Cmp, v: i64) -> Predicate {
    Predicate {
        field,
        test: Test::Int { op, v },
        text: format!("{} {} {v}", field.name(), op_name(op)),
    }
}

fn num_pred(field: Field, op: Cmp, v: f64, shown: &Value) -> Predicate {
    Predicate {
        field,
        test: Test::Num { op, v },
        text: format!("{} {} {shown}", field.name(), op_name(op)),
    }
}

fn op_name(op: Cmp) -> &'static str {
    match op {
        Cmp::Eq => "eq",
        Cmp::Neq => "neq",
        Cmp::Gt => "gt",
        Cmp::Lt => "lt",
        Cmp::Gte => "gte",
        Cmp::Lte => "lte",
    }
}

fn non_negative(key: &str, v: &Value) -> Result<f64> {
    match v.as_number() {
        Some(x) if x >= 0.0 => Ok(x),
        _ => Err(PlacementError::filter(
            key,
            format!("expected a non-negative number, got {} {v}", v.type_name()),
        )),
    }
}

fn compile_field(name: &str, ops: &Value, preds: &mut Vec<Predicate>) -> Result<()> {
    let Some(field) = Field::from_name(name) else {
        return Err(PlacementError::filter(
            name,
            format!("unknown offer field (known: {})", known_fields()),
        ));
    };
    let Value::Map(ops) = ops else {
        return Err(PlacementError::filter(
            name,
            format!("expected {{op: value}}, got {} {ops}", ops.type_name()),
        ));
    };
    if ops.is_empty() {
        return Err(PlacementError::filter(name, "no operator given"));
    }
    for (op, value) in ops {
        preds.push(compile_op(field, op, value)?);
    }
    Ok(())
}

fn compile_op(field: Field, op: &str, value: &Value) -> Result<Predicate> {
    let name = field.name();
    let kind = field.kind();
    let bad_value = |expected: &str| {
        PlacementError::filter(
            name,
            format!(
                "{op} expects {expected} for this {} field, got {} {value}",
                kind.as_str(),
                value.type_name()
            ),
        )
    };
    let cmp = match op {
        "eq" => Some(Cmp::Eq),
        "neq" => Some(Cmp::Neq),
        "gt" => Some(Cmp::Gt),
        "lt" => Some(Cmp::Lt),
        "gte" => Some(Cmp::Gte),
        "lte" => Some(Cmp::Lte),
        "in" | "notin" => None,
        _ => {
            return Err(PlacementError::filter(
                name,
                format!("unknown operator {op:?} (known: {})", OPERATORS.join(", ")),
            ))
        }
    };
    let ordered = matches!(cmp, Some(Cmp::Gt | Cmp::Lt | Cmp::Gte | Cmp::Lte));
    if ordered && matches!(kind, Kind::String | Kind::Bool) {
        return Err(PlacementError::filter(
            name,
            format!(
                "operator {op} is not valid for a {} field (use eq, neq, in or notin)",
                kind.as_str()
            ),
        ));
    }
    let negate = matches!(cmp, Some(Cmp::Neq)) || op == "notin";
    // One value for the scalar operators, a list for in/notin.
    let items: Vec<&Value> = match (cmp, value) {
        (None, Value::List(items)) => items.iter().collect(),
        (None, _) => return Err(bad_value("a list")),
        (Some(_), v) => vec![v],
    };
    let expected = match kind {
        Kind::Number => "a number",
        Kind::Integer => "an integer",
        Kind::String => "a string",
        Kind::Bool => "true or false",
    };
    let test = match kind {
        Kind::Number => {
            let mut xs = Vec::with_capacity(items.len());
            for v in &items {
                match v.as_number() {
                    Some(x) if !x.is_nan() => xs.push(x),
                    _ => {
                        return Err(bad_value(if cmp.is_none() {
                            "a list of numbers"
                        } else {
                            expected
                        }))
                    }
                }
            }
            match cmp {
                Some(op) => Test::Num { op, v: xs[0] },
                None => Test::NumIn { values: xs, negate },
            }
        }
        Kind::Integer => {
            let mut xs = Vec::with_capacity(items.len());
            for v in &items {
                match v {
                    Value::Int(i) => xs.push(*i),
                    Value::Float(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => xs.push(*x as i64),
                    _ => {
                        return Err(bad_value(if cmp.is_none() {
                            "a list of integers"
                        } else {
                            expected
                        }))
                    }
                }
            }
            match cmp {
                Some(op) => Test::Int { op, v: xs[0] },
                None => Test::IntIn { values: xs, negate },
            }
        }
        Kind::String => {
            let mut ss = Vec::with_capacity(items.len());
            for v in &items {
                match v {
                    Value::Str(s) => ss.push(s.clone()),
                    _ => {
                        return Err(bad_value(if cmp.is_none() {
                            "a list of strings"
                        } else {
                            expected
                        }))
                    }
                }
            }
            let matcher = match field {
                Field::GpuName => StrMatcher::Gpu(ss.iter().map(|s| GpuName::new(s)).collect()),
                Field::Geolocation => {
                    StrMatcher::Exact(ss.iter().map(|s| s.trim().to_uppercase()).collect())
                }
                _ => StrMatcher::Exact(ss),
            };
            Test::Str { matcher, negate }
        }
        Kind::Bool => {
            let mut bs = Vec::with_capacity(items.len());
            for v in &items {
                match v {
                    Value::Bool(b) => bs.push(*b),
                    _ => {
                        return Err(bad_value(if cmp.is_none() {
                            "a list of true/false"
                        } else {
                            expected
                        }))
                    }
                }
            }
            Test::Bool { values: bs, negate }
        }
    };
    Ok(Predicate {
        field,
        test,
        text: format!("{name} {op} {value}"),
    })
}
