mod common;

use apothic_placement::{Filter, GpuName, Offer, PlacementError};
use common::{compile, offer, spec};

fn error(json: &str) -> PlacementError {
    Filter::compile(&spec(json)).expect_err("filter must be refused")
}

fn field_of(e: &PlacementError) -> &str {
    match e {
        PlacementError::InvalidFilter { field, .. } => field,
        other => panic!("not a filter error: {other}"),
    }
}

#[test]
fn invalid_filters_name_the_field_and_carry_the_code() {
    let cases = [
        (
            r#"{"offer_filters": {"gpu_nam": {"eq": "A100"}}}"#,
            "gpu_nam",
            "unknown offer field",
        ),
        (
            r#"{"offer_filters": {"geolocation": {"gt": "US"}}}"#,
            "geolocation",
            "not valid for a string",
        ),
        (
            r#"{"offer_filters": {"verified": {"lt": true}}}"#,
            "verified",
            "not valid for a bool",
        ),
        (
            r#"{"offer_filters": {"reliability": {"gte": "high"}}}"#,
            "reliability",
            "expects a number",
        ),
        (
            r#"{"offer_filters": {"reliability": {"gte": true}}}"#,
            "reliability",
            "expects a number",
        ),
        (
            r#"{"offer_filters": {"gpu_name": {"in": "A100"}}}"#,
            "gpu_name",
            "expects a list",
        ),
        (
            r#"{"offer_filters": {"gpu_name": {"notin": 3}}}"#,
            "gpu_name",
            "expects a list",
        ),
        (
            r#"{"offer_filters": {"gpu_name": {"in": ["A100", 3]}}}"#,
            "gpu_name",
            "list of strings",
        ),
        (
            r#"{"offer_filters": {"gpu_count": {"gte": 1.5}}}"#,
            "gpu_count",
            "an integer",
        ),
        (
            r#"{"offer_filters": {"inet_down": {"approx": 5}}}"#,
            "inet_down",
            "unknown operator",
        ),
        (
            r#"{"offer_filters": {"inet_down": 5}}"#,
            "inet_down",
            "expected {op: value}",
        ),
        (
            r#"{"offer_filters": {"inet_down": {}}}"#,
            "inet_down",
            "no operator",
        ),
        (r#"{"offer_filters": [1]}"#, "offer_filters", "expected"),
        (r#"{"gpu": 3}"#, "gpu", "GPU name"),
        (r#"{"gpu_count": 0}"#, "gpu_count", "positive integer"),
        (r#"{"gpu_count": true}"#, "gpu_count", "positive integer"),
        (
            r#"{"min_vram_gb": "40"}"#,
            "min_vram_gb",
            "non-negative number",
        ),
        (
            r#"{"max_cost_per_hour_usd": -1}"#,
            "max_cost_per_hour_usd",
            "non-negative",
        ),
        (r#"{"geolocation": []}"#, "geolocation", "non-empty list"),
        (
            r#"{"geolocation": ["US", 1]}"#,
            "geolocation",
            "country codes",
        ),
        (
            r#"{"region": "us-east"}"#,
            "region",
            "unknown placement option",
        ),
    ];
    for (json, field, fragment) in cases {
        let e = error(json);
        assert_eq!(field_of(&e), field, "{json}");
        assert!(e.to_string().contains(fragment), "{json}: {e}");
        assert_eq!(e.code().as_str(), "placement.invalid_filter");
    }
}

#[test]
fn gpu_names_match_after_normalising_case_spaces_underscores_hyphens() {
    let a = GpuName::new("a100_sxm4");
    assert!(a.same(&GpuName::new("A100 SXM4")));
    assert!(a.same(&GpuName::new("A100-SXM4")));
    assert!(a.same(&GpuName::new("NVIDIA A100-SXM4")));
    assert!(!a.same(&GpuName::new("A100 PCIE")));
}

#[test]
fn a_family_matches_its_variants_but_not_a_longer_model_number() {
    let family = |f: &str, name: &str| GpuName::new(name).in_family(&GpuName::new(f));
    assert!(family("A100", "A100 SXM4"));
    assert!(family("A100", "A100 PCIE"));
    assert!(family("A100", "A100SXM4 80GB"));
    assert!(family("A100", "A100"));
    assert!(family("a100", "NVIDIA A100-SXM4-80GB"));
    assert!(family("A100", "NVIDIA A100 80GB PCIe"));
    assert!(family("RTX 4090", "NVIDIA GeForce RTX 4090"));
    assert!(family("T4", "Tesla T4"));
    assert!(family("H100", "H100 NVL"));
    assert!(!family("A10", "A100"));
    assert!(!family("A10", "A100 SXM4"));
    assert!(!family("L4", "L40S"));
    assert!(!family("H100", "H200"));
    assert!(!family("A100 SXM4", "A100 PCIE"));
}

#[test]
fn convenience_requirements_compile_into_predicates() {
    // serde_json sorts object keys, so offer_filters come out alphabetically here; from
    // Python they keep the order they were written in.
    let f = compile(
        r#"{"gpu": "A100", "gpu_count": 2, "min_vram_gb": 40, "geolocation": "us",
            "max_cost_per_hour_usd": 2.5,
            "offer_filters": {"reliability": {"gte": 0.98},
                              "gpu_name": {"in": ["A100_SXM4", "H100_SXM"]},
                              "inet_down": {"gt": 500}}}"#,
    );
    assert_eq!(
        f.describe(),
        "gpu \"A100\" and gpu_count gte 2 and vram_gb gte 40 and geolocation in [\"US\"] and \
         price_per_hour_usd lte 2.5 and gpu_name in [\"A100_SXM4\",\"H100_SXM\"] and \
         inet_down gt 500 and reliability gte 0.98"
    );
    let good = offer("1", "A100 SXM4", 2, 2.0, 0.99, "US");
    assert!(f.matches(&good));
    for (tweak, expected) in [
        (
            Offer {
                gpu_name: Some("A100 PCIE".into()),
                ..good.clone()
            },
            "gpu_name in [\"A100_SXM4\",\"H100_SXM\"] (was \"A100 PCIE\")",
        ),
        (
            Offer {
                gpu_count: Some(1),
                ..good.clone()
            },
            "gpu_count gte 2 (was 1)",
        ),
        (
            Offer {
                vram_gb: Some(24.0),
                ..good.clone()
            },
            "vram_gb gte 40 (was 24)",
        ),
        (
            Offer {
                geolocation: Some("DE".into()),
                ..good.clone()
            },
            "geolocation in [\"US\"] (was \"DE\")",
        ),
        (
            Offer {
                price_per_hour_usd: Some(3.0),
                ..good.clone()
            },
            "price_per_hour_usd lte 2.5 (was 3)",
        ),
        (
            Offer {
                reliability: None,
                ..good.clone()
            },
            "reliability gte 0.98 (was missing)",
        ),
    ] {
        assert!(!f.matches(&tweak));
        assert_eq!(f.failures(&tweak), vec![expected.to_owned()]);
    }
    let h100 = offer("2", "H100 SXM", 8, 2.0, 0.99, "US");
    assert_eq!(
        f.failures(&h100),
        vec!["gpu \"A100\" (was \"H100 SXM\")".to_owned()]
    );
}

#[test]
fn missing_values_fail_every_comparison_except_neq_and_notin() {
    let empty = Offer {
        id: Some("x".into()),
        ..Offer::default()
    };
    for (json, passes) in [
        (r#"{"offer_filters": {"reliability": {"gte": 0}}}"#, false),
        (r#"{"offer_filters": {"reliability": {"lte": 1}}}"#, false),
        (r#"{"offer_filters": {"reliability": {"eq": 1}}}"#, false),
        (r#"{"offer_filters": {"reliability": {"neq": 1}}}"#, true),
        (r#"{"offer_filters": {"reliability": {"in": [1]}}}"#, false),
        (
            r#"{"offer_filters": {"reliability": {"notin": [1]}}}"#,
            true,
        ),
        (r#"{"offer_filters": {"gpu_count": {"neq": 1}}}"#, true),
        (r#"{"offer_filters": {"gpu_count": {"gte": 0}}}"#, false),
        (r#"{"offer_filters": {"gpu_count": {"notin": [1]}}}"#, true),
        (r#"{"offer_filters": {"city": {"eq": ""}}}"#, false),
        (r#"{"offer_filters": {"city": {"neq": "Austin"}}}"#, true),
        (
            r#"{"offer_filters": {"city": {"notin": ["Austin"]}}}"#,
            true,
        ),
        (r#"{"offer_filters": {"verified": {"eq": false}}}"#, false),
        (r#"{"offer_filters": {"verified": {"neq": true}}}"#, true),
        (r#"{"gpu": "A100"}"#, false),
        (r#"{"geolocation": "US"}"#, false),
    ] {
        assert_eq!(compile(json).matches(&empty), passes, "{json}");
    }
}

#[test]
fn gpu_any_means_at_least_one_gpu_and_no_spec_matches_everything() {
    let f = compile(r#"{"gpu": "any"}"#);
    assert_eq!(f.describe(), "gpu_count gte 1");
    assert!(f.matches(&offer("1", "RTX 3090", 1, 0.3, 0.9, "DE")));
    assert!(!f.matches(&offer("1", "RTX 3090", 0, 0.3, 0.9, "DE")));
    let none = compile(r#"{"gpu": null, "gpu_count": null, "offer_filters": null}"#);
    assert_eq!(none.describe(), "any offer");
    assert!(none.matches(&Offer::default()));
}

#[test]
fn gpu_name_filters_use_exact_normalised_names_and_geolocation_ignores_case() {
    let f = compile(
        r#"{"offer_filters": {"gpu_name": {"eq": "a100-sxm4"}, "geolocation": {"in": ["us", "ca"]}}}"#,
    );
    assert!(f.matches(&offer("1", "A100 SXM4", 1, 1.0, 1.0, "US")));
    assert!(f.matches(&offer("1", "A100_SXM4", 1, 1.0, 1.0, "CA")));
    assert!(!f.matches(&offer("1", "A100 SXM4 80GB", 1, 1.0, 1.0, "US")));
    assert!(!f.matches(&offer("1", "A100 SXM4", 1, 1.0, 1.0, "DE")));
    let not = compile(
        r#"{"offer_filters": {"gpu_name": {"notin": ["RTX_4090"]}, "provider": {"neq": "vast"}}}"#,
    );
    assert!(!not.matches(&offer("1", "RTX 4090", 1, 1.0, 1.0, "US")));
    let mut local = offer("1", "A100", 1, 1.0, 1.0, "US");
    local.provider = Some("local".into());
    assert!(not.matches(&local));
}

#[test]
fn several_operators_on_one_field_all_apply() {
    let f = compile(r#"{"offer_filters": {"price_per_hour_usd": {"gte": 1, "lt": 2}}}"#);
    assert!(f.matches(&offer("1", "A100", 1, 1.0, 1.0, "US")));
    assert!(!f.matches(&offer("1", "A100", 1, 2.0, 1.0, "US")));
    assert!(!f.matches(&offer("1", "A100", 1, 0.5, 1.0, "US")));
}
