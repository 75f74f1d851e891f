//! Vast.ai's `/bundles/` search response read into normalized offers. Vast's units and
//! spellings are converted here, once: MB to GB, "City, CC" to a country code and a city,
//! `dph_total` to the hourly price.

use serde_json::Value as Json;

use crate::error::{PlacementError, Result};
use crate::offer::Offer;

/// Vast gives GPU and CPU memory in MB; its CLI turns GB into MB by multiplying by 1000, so
/// dividing by 1000 gives back the GB a user would type.
const MB_PER_GB: f64 = 1000.0;

fn num(o: &Json, key: &str) -> Option<f64> {
    o.get(key).and_then(Json::as_f64)
}

fn first_num(o: &Json, keys: &[&str]) -> Option<f64> {
    keys.iter().find_map(|k| num(o, k))
}

fn text(o: &Json, key: &str) -> Option<String> {
    o.get(key)
        .and_then(Json::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// "Austin, US" -> ("US", Some("Austin")); "Texas, US" -> ("US", Some("Texas")); "US" -> ("US", None).
/// Vast does not say whether the first part is a city or a region, so it goes into `city`.
fn split_location(raw: &str) -> (Option<String>, Option<String>) {
    let mut parts: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let Some(last) = parts.pop() else {
        return (None, None);
    };
    let country = Some(last.to_uppercase());
    let city = parts.first().map(|c| (*c).to_owned());
    (country, city)
}

fn offer_from_vast(index: usize, o: &Json) -> Result<Offer> {
    if !o.is_object() {
        return Err(PlacementError::offer(
            index,
            "a Vast offer must be a JSON object",
        ));
    }
    let id = match o.get("id") {
        Some(Json::Number(n)) => n.to_string(),
        Some(Json::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(PlacementError::offer(index, "Vast offer without an id")),
    };
    let (geolocation, city) = match text(o, "geolocation") {
        Some(g) => split_location(&g),
        None => (None, None),
    };
    let verified = match o.get("verified") {
        Some(Json::Bool(b)) => Some(*b),
        _ => o
            .get("verification")
            .and_then(Json::as_str)
            .map(|v| v == "verified"),
    };
    Ok(Offer {
        id: Some(id),
        provider: Some("vast".to_owned()),
        gpu_name: text(o, "gpu_name"),
        gpu_count: o.get("num_gpus").and_then(Json::as_f64).map(|n| n as i64),
        vram_gb: num(o, "gpu_ram").map(|mb| mb / MB_PER_GB),
        cpu: first_num(o, &["cpu_cores_effective", "cpu_cores"]),
        memory_gb: num(o, "cpu_ram").map(|mb| mb / MB_PER_GB),
        disk_gb: num(o, "disk_space"),
        price_per_hour_usd: num(o, "dph_total"),
        reliability: first_num(o, &["reliability2", "reliability"]),
        inet_down: num(o, "inet_down"),
        inet_up: num(o, "inet_up"),
        geolocation,
        city,
        region: None,
        cuda: num(o, "cuda_max_good"),
        verified,
    })
}

/// Reads a Vast `/bundles/` response body (`{"offers": [...]}`) into normalized offers.
pub fn offers_from_vast_json(body: &[u8]) -> Result<Vec<Offer>> {
    let doc: Json = serde_json::from_slice(body)
        .map_err(|e| PlacementError::offer(0, format!("Vast response is not JSON: {e}")))?;
    let Some(offers) = doc.get("offers").and_then(Json::as_array) else {
        return Err(PlacementError::offer(
            0,
            "Vast response has no \"offers\" list",
        ));
    };
    offers
        .iter()
        .enumerate()
        .map(|(i, o)| offer_from_vast(i, o))
        .collect()
}
