#![allow(dead_code)]

use apothic_placement::{Filter, Offer, Value};

pub fn spec(json: &str) -> Value {
    let v: serde_json::Value = serde_json::from_str(json).expect("test JSON");
    Value::from(&v)
}

pub fn compile(json: &str) -> Filter {
    Filter::compile(&spec(json)).expect("filter compiles")
}

pub fn offer(id: &str, gpu: &str, count: i64, price: f64, reliability: f64, geo: &str) -> Offer {
    Offer {
        id: Some(id.to_owned()),
        provider: Some("vast".to_owned()),
        gpu_name: Some(gpu.to_owned()),
        gpu_count: Some(count),
        vram_gb: Some(80.0),
        cpu: Some(32.0),
        memory_gb: Some(256.0),
        disk_gb: Some(500.0),
        price_per_hour_usd: Some(price),
        reliability: Some(reliability),
        inet_down: Some(900.0),
        inet_up: Some(400.0),
        geolocation: Some(geo.to_owned()),
        city: Some("Austin".to_owned()),
        region: None,
        cuda: Some(12.4),
        verified: Some(true),
    }
}
