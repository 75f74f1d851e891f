//! Property: for any table and any filter, `select` equals filtering row by row with
//! `Filter::matches` and sorting by (price, reliability desc, id), and `explain` returns
//! misses in order of how many predicates they fail.

mod common;

use apothic_placement::{Filter, Offer, OfferTable, Value};
use proptest::prelude::*;

const GPUS: [&str; 6] = [
    "A100 SXM4",
    "A100 PCIE",
    "A10",
    "H100 SXM",
    "RTX 4090",
    "NVIDIA A100-SXM4-80GB",
];
const GEOS: [&str; 4] = ["US", "DE", "SE", "CA"];

fn opt<T: Clone + std::fmt::Debug + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![1 => Just(None), 5 => s.prop_map(Some)].boxed()
}

fn offer_strategy() -> impl Strategy<Value = Offer> {
    (
        0u32..40,
        opt(prop::sample::select(GPUS.to_vec())),
        opt(0i64..9),
        opt((0u32..8).prop_map(|x| x as f64 * 10.0)),
        opt((0u32..12).prop_map(|x| x as f64 * 0.25)),
        opt((0u32..5).prop_map(|x| 0.8 + x as f64 * 0.05)),
        opt(prop::sample::select(GEOS.to_vec())),
        opt(any::<bool>()),
        opt((0u32..4).prop_map(|x| x as f64 * 500.0)),
    )
        .prop_map(
            |(id, gpu, count, vram, price, rel, geo, verified, inet)| Offer {
                id: Some(format!("id{id:02}")),
                provider: Some("vast".into()),
                gpu_name: gpu.map(str::to_owned),
                gpu_count: count,
                vram_gb: vram,
                price_per_hour_usd: price,
                reliability: rel,
                geolocation: geo.map(str::to_owned),
                verified,
                inet_down: inet,
                ..Offer::default()
            },
        )
}

fn num_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..10).prop_map(Value::Int),
        (0u32..40).prop_map(|x| Value::Float(x as f64 * 0.25))
    ]
}

fn op_strategy() -> impl Strategy<Value = (String, Value)> {
    let ops = prop::sample::select(vec!["eq", "neq", "gt", "lt", "gte", "lte"]);
    prop_oneof![
        (ops.clone(), num_value()).prop_map(|(op, v)| (
            "price_per_hour_usd".to_owned(),
            Value::Map(vec![(op.to_owned(), v)])
        )),
        (ops.clone(), num_value()).prop_map(|(op, v)| (
            "reliability".to_owned(),
            Value::Map(vec![(op.to_owned(), v)])
        )),
        (ops, (0i64..9).prop_map(Value::Int))
            .prop_map(|(op, v)| ("gpu_count".to_owned(), Value::Map(vec![(op.to_owned(), v)]))),
        (
            prop::sample::select(vec!["in", "notin"]),
            prop::collection::vec(prop::sample::select(GPUS.to_vec()), 0..3)
        )
            .prop_map(|(op, names)| (
                "gpu_name".to_owned(),
                Value::Map(vec![(
                    op.to_owned(),
                    Value::List(names.into_iter().map(|n| Value::Str(n.into())).collect())
                )])
            )),
        (
            prop::sample::select(vec!["eq", "neq"]),
            prop::sample::select(GEOS.to_vec())
        )
            .prop_map(|(op, g)| (
                "geolocation".to_owned(),
                Value::Map(vec![(op.to_owned(), Value::Str(g.to_lowercase()))])
            )),
        (prop::sample::select(vec!["eq", "neq"]), any::<bool>()).prop_map(|(op, b)| (
            "verified".to_owned(),
            Value::Map(vec![(op.to_owned(), Value::Bool(b))])
        )),
        (
            prop::sample::select(vec!["in", "notin"]),
            prop::collection::vec(0u32..40, 0..4)
        )
            .prop_map(|(op, ids)| (
                "id".to_owned(),
                Value::Map(vec![(
                    op.to_owned(),
                    Value::List(
                        ids.into_iter()
                            .map(|i| Value::Str(format!("id{i:02}")))
                            .collect()
                    )
                )])
            )),
        (
            prop::sample::select(vec!["in", "notin"]),
            prop::collection::vec(0u32..4, 0..3)
        )
            .prop_map(|(op, xs)| (
                "inet_down".to_owned(),
                Value::Map(vec![(
                    op.to_owned(),
                    Value::List(xs.into_iter().map(|x| Value::Int(x as i64 * 500)).collect())
                )])
            )),
    ]
}

fn spec_strategy() -> impl Strategy<Value = Value> {
    (
        opt(prop::sample::select(vec![
            "A100",
            "A10",
            "H100",
            "any",
            "a100_sxm4",
        ])),
        opt(1i64..5),
        opt((0u32..8).prop_map(|x| x as f64 * 10.0)),
        opt(prop::sample::select(vec!["us", "DE"])),
        opt((0u32..12).prop_map(|x| x as f64 * 0.25)),
        prop::collection::vec(op_strategy(), 0..4),
    )
        .prop_map(|(gpu, count, vram, geo, cost, filters)| {
            let mut m = vec![];
            let mut put =
                |k: &str, v: Option<Value>| m.push((k.to_owned(), v.unwrap_or(Value::Null)));
            put("gpu", gpu.map(|g| Value::Str(g.into())));
            put("gpu_count", count.map(Value::Int));
            put("min_vram_gb", vram.map(Value::Float));
            put("geolocation", geo.map(|g| Value::Str(g.into())));
            put("max_cost_per_hour_usd", cost.map(Value::Float));
            put("offer_filters", Some(Value::Map(filters)));
            Value::Map(m)
        })
}

fn key(o: &Offer) -> (f64, f64) {
    (
        o.price_per_hour_usd.unwrap_or(f64::INFINITY),
        -o.reliability.unwrap_or(f64::NEG_INFINITY),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn select_equals_row_filter_then_sort(
        offers in prop::collection::vec(offer_strategy(), 0..200),
        spec in spec_strategy(),
        limit in 0usize..20,
    ) {
        let f = Filter::compile(&spec).expect("generated specs are valid");
        let t = OfferTable::from_offers(&offers).expect("table");
        let mut expected: Vec<usize> = (0..offers.len()).filter(|i| f.matches(&offers[*i])).collect();
        expected.sort_by(|a, b| {
            let (ka, kb) = (key(&offers[*a]), key(&offers[*b]));
            ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then(offers[*a].id.cmp(&offers[*b].id)).then(a.cmp(b))
        });
        expected.truncate(limit);
        prop_assert_eq!(t.select(&f, limit), expected);

        let near = t.explain(&f, limit);
        let fails: Vec<usize> = near.iter().map(|(_, failed)| failed.len()).collect();
        prop_assert!(fails.windows(2).all(|w| w[0] <= w[1]));
        for (row, failed) in &near {
            prop_assert!(!failed.is_empty());
            prop_assert_eq!(failed, &f.failures(&offers[*row]));
        }
        let misses = offers.iter().filter(|o| !f.matches(o)).count();
        prop_assert_eq!(near.len(), misses.min(limit));
    }
}
