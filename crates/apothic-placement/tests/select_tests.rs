mod common;

use apothic_placement::{offers_from_vast_json, Offer, OfferTable, PlacementError};
use common::{compile, offer};

fn ids(t: &OfferTable, rows: &[usize]) -> Vec<String> {
    rows.iter()
        .map(|r| t.offer(*r).and_then(|o| o.id).unwrap_or_default())
        .collect()
}

#[test]
fn ranks_by_price_then_reliability_desc_then_id() {
    let offers = vec![
        offer("d", "A100", 1, 2.0, 0.9, "US"),
        offer("c", "A100", 1, 1.0, 0.9, "US"),
        offer("b", "A100", 1, 1.0, 0.99, "US"),
        offer("a", "A100", 1, 1.0, 0.9, "US"),
        offer("e", "A100", 1, 0.5, 0.5, "US"),
        Offer {
            price_per_hour_usd: None,
            ..offer("f", "A100", 1, 0.0, 1.0, "US")
        },
        Offer {
            reliability: None,
            ..offer("g", "A100", 1, 1.0, 0.0, "US")
        },
    ];
    let t = OfferTable::from_offers(&offers).expect("table");
    let all = compile("{}");
    assert_eq!(
        ids(&t, &t.select(&all, 64)),
        ["e", "b", "a", "c", "g", "d", "f"]
    );
    assert_eq!(ids(&t, &t.select(&all, 3)), ["e", "b", "a"]);
    assert!(t.select(&all, 0).is_empty());
}

fn market(n: usize) -> Vec<Offer> {
    let gpus = [
        "RTX 4090",
        "RTX 3090",
        "A100 SXM4",
        "A100 PCIE",
        "H100 SXM",
        "L40S",
    ];
    let geos = ["US", "DE", "NL", "CA", "SE"];
    (0..n)
        .map(|i| {
            let mut o = offer(
                &format!("o{i:06}"),
                gpus[(i * 7) % gpus.len()],
                [1, 2, 4, 8][(i * 3) % 4],
                ((i * 37) % 500) as f64 / 100.0,
                ((i * 13) % 100) as f64 / 100.0,
                geos[(i * 11) % geos.len()],
            );
            o.inet_down = Some(((i * 97) % 3000) as f64);
            o
        })
        .collect()
}

#[test]
fn index_and_scan_paths_agree_with_the_row_filter() {
    // 10 000 rows. Broad string predicates ("H100": a sixth of the rows) take the chunked
    // scan; the id predicates (a few rows) take the inverted index; "B200" matches no code.
    // Every path must equal filtering row by row and sorting.
    let offers = market(10_000);
    let t = OfferTable::from_offers(&offers).expect("table");
    for json in [
        r#"{"gpu": "H100"}"#,
        r#"{"gpu": "A100", "geolocation": "SE", "max_cost_per_hour_usd": 3}"#,
        r#"{"offer_filters": {"gpu_name": {"in": ["l40s"]}, "inet_down": {"gt": 2500}}}"#,
        r#"{"offer_filters": {"id": {"eq": "o000042"}}}"#,
        r#"{"offer_filters": {"id": {"in": ["o000042", "o000043", "nope"]}}}"#,
        r#"{"max_cost_per_hour_usd": 4.5, "offer_filters": {"reliability": {"gte": 0.2}}}"#,
        r#"{"gpu_count": 8, "offer_filters": {"geolocation": {"notin": ["US", "de"]}}}"#,
        r#"{"offer_filters": {"gpu_name": {"eq": "B200"}}}"#,
    ] {
        let f = compile(json);
        let mut expected: Vec<&Offer> = offers.iter().filter(|o| f.matches(o)).collect();
        expected.sort_by(|a, b| {
            let p = |o: &Offer| o.price_per_hour_usd.unwrap_or(f64::INFINITY);
            let r = |o: &Offer| o.reliability.unwrap_or(f64::NEG_INFINITY);
            p(a).total_cmp(&p(b))
                .then(r(b).total_cmp(&r(a)))
                .then(a.id.cmp(&b.id))
        });
        let expected: Vec<String> = expected
            .iter()
            .take(64)
            .map(|o| o.id.clone().unwrap_or_default())
            .collect();
        assert_eq!(ids(&t, &t.select(&f, 64)), expected, "{json}");
    }
}

#[test]
fn the_index_path_filters_in_batches_and_keeps_the_ranking() {
    // "SE" and "NO" are one row in 20 each, so their index drives; together they hold 3 000
    // rows: several batches, two windows, two posting lists merged.
    let offers: Vec<Offer> = (0..30_000)
        .map(|i| {
            let geo = match i % 20 {
                0 => "SE",
                10 => "NO",
                _ => "US",
            };
            let k = i / 20;
            offer(
                &format!("r{i:05}"),
                ["A100", "H100 SXM"][k % 2],
                1 + (k % 5) as i64,
                ((i * 7919) % 1000) as f64 / 100.0,
                0.9,
                geo,
            )
        })
        .collect();
    let t = OfferTable::from_offers(&offers).expect("table");
    for (json, limit) in [
        (r#"{"geolocation": "SE", "gpu_count": 5}"#, 64),
        (r#"{"geolocation": ["NO", "SE"], "gpu_count": 5}"#, 400),
        (r#"{"geolocation": ["NO", "SE"]}"#, 3000),
        (r#"{"geolocation": "SE", "gpu": "H100"}"#, 1000),
        (
            r#"{"geolocation": "SE", "offer_filters": {"price_per_hour_usd": {"gt": 3, "lte": 8}}}"#,
            5000,
        ),
    ] {
        let f = compile(json);
        let mut expected: Vec<&Offer> = offers.iter().filter(|o| f.matches(o)).collect();
        expected.sort_by(|a, b| {
            let p = |o: &Offer| o.price_per_hour_usd.unwrap_or(f64::INFINITY);
            p(a).total_cmp(&p(b)).then(a.id.cmp(&b.id))
        });
        assert!(expected.len() > 100, "{json}");
        let expected: Vec<String> = expected
            .iter()
            .take(limit)
            .map(|o| o.id.clone().unwrap_or_default())
            .collect();
        assert_eq!(ids(&t, &t.select(&f, limit)), expected, "{json}");
    }
}

#[test]
fn explain_lists_the_nearest_misses_with_what_each_failed() {
    let offers = vec![
        offer("cheap-4090", "RTX 4090", 1, 0.4, 0.99, "US"),
        offer("a100-de", "A100 SXM4", 2, 1.5, 0.99, "DE"),
        offer("a100-us-1gpu", "A100 PCIE", 1, 1.2, 0.99, "US"),
        offer("h100-de", "H100 SXM", 1, 2.5, 0.99, "DE"),
    ];
    let t = OfferTable::from_offers(&offers).expect("table");
    let f = compile(r#"{"gpu": "A100", "gpu_count": 2, "geolocation": "US"}"#);
    assert!(t.select(&f, 64).is_empty());
    let near = t.explain(&f, 3);
    let got: Vec<(String, Vec<String>)> = near
        .iter()
        .map(|(row, failed)| (ids(&t, &[*row])[0].clone(), failed.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "a100-us-1gpu".to_owned(),
                vec!["gpu_count gte 2 (was 1)".to_owned()]
            ),
            (
                "a100-de".to_owned(),
                vec!["geolocation in [\"US\"] (was \"DE\")".to_owned()]
            ),
            (
                "cheap-4090".to_owned(),
                vec![
                    "gpu \"A100\" (was \"RTX 4090\")".to_owned(),
                    "gpu_count gte 2 (was 1)".to_owned()
                ]
            ),
        ]
    );
}

#[test]
fn a_table_needs_ids_and_gives_rows_back() {
    let err = OfferTable::from_offers(&[Offer::default()]).expect_err("no id");
    assert!(matches!(err, PlacementError::InvalidOffer { index: 0, .. }));
    assert_eq!(err.code().as_str(), "invalid_argument");
    let o = offer("x", "L40S", 4, 1.0, 0.5, "SE");
    let t = OfferTable::from_offers(std::slice::from_ref(&o)).expect("table");
    assert_eq!(t.offer(0), Some(o));
    assert_eq!(t.offer(1), None);
}

#[test]
fn vast_search_json_is_normalised_at_ingest() {
    let body = br#"{"offers": [
        {"id": 5123, "gpu_name": "A100 SXM4", "num_gpus": 2, "gpu_ram": 81920, "cpu_ram": 257000,
         "cpu_cores": 64, "cpu_cores_effective": 32.0, "disk_space": 400.5, "dph_total": 2.31,
         "reliability": 0.9, "reliability2": 0.995, "inet_down": 3400.2, "inet_up": 900,
         "geolocation": "Austin, US", "cuda_max_good": 12.4, "verified": true, "score": 7},
        {"id": 77, "gpu_name": "RTX 4090", "num_gpus": 1, "gpu_ram": 24564, "dph_total": 0.35,
         "reliability": 0.97, "geolocation": "Sweden, SE", "verification": "unverified"},
        {"id": 78, "gpu_name": "RTX 3090", "num_gpus": 1, "geolocation": null, "dph_total": 0.2}
    ]}"#;
    let offers = offers_from_vast_json(body).expect("parses");
    let a = &offers[0];
    assert_eq!(a.id.as_deref(), Some("5123"));
    assert_eq!(a.provider.as_deref(), Some("vast"));
    assert_eq!(a.gpu_count, Some(2));
    assert_eq!(a.vram_gb, Some(81.92));
    assert_eq!(a.memory_gb, Some(257.0));
    assert_eq!(a.cpu, Some(32.0));
    assert_eq!(a.disk_gb, Some(400.5));
    assert_eq!(a.price_per_hour_usd, Some(2.31));
    assert_eq!(a.reliability, Some(0.995));
    assert_eq!(a.inet_down, Some(3400.2));
    assert_eq!(a.geolocation.as_deref(), Some("US"));
    assert_eq!(a.city.as_deref(), Some("Austin"));
    assert_eq!(a.cuda, Some(12.4));
    assert_eq!(a.verified, Some(true));
    let b = &offers[1];
    assert_eq!(
        (b.geolocation.as_deref(), b.city.as_deref()),
        (Some("SE"), Some("Sweden"))
    );
    assert_eq!(
        (b.reliability, b.cpu, b.verified),
        (Some(0.97), None, Some(false))
    );
    assert_eq!(offers[2].geolocation, None);

    let t = OfferTable::from_offers(&offers).expect("table");
    let f = compile(r#"{"gpu": "RTX 4090", "min_vram_gb": 24, "geolocation": "se"}"#);
    assert_eq!(ids(&t, &t.select(&f, 64)), ["77"]);

    for bad in [
        &b"not json"[..],
        br#"{"offers": 3}"#,
        br#"{"offers": [{"gpu_name": "x"}]}"#,
    ] {
        let e = offers_from_vast_json(bad).expect_err("refused");
        assert_eq!(e.code().as_str(), "invalid_argument");
    }
}
