//! The queue engine alone, in-process: put then claim+ack cycles per second.
//! Run with `cargo run --release -p apothic-queue --example throughput [N]`; prints one JSON line.

use std::time::Instant;

use apothic_queue::{Queue, QueueConfig};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let mut q = Queue::new(QueueConfig { max_deliveries: 5 });
    let payload = b"0123456789abcdef".to_vec();
    let start = Instant::now();
    for _ in 0..n {
        q.put(payload.clone(), 0, 0);
    }
    let put_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut acked = 0u64;
    for t in 0..n {
        let (claim, _) = q.claim(t, 30_000);
        let Some(claim) = claim else { break };
        if q.ack(claim.claim_id).is_ok() {
            acked += 1;
        }
    }
    let cycle_s = start.elapsed().as_secs_f64();
    assert_eq!(acked, n);
    println!(
        "{{\"n\": {n}, \"puts_per_s\": {:.0}, \"claim_ack_per_s\": {:.0}}}",
        n as f64 / put_s,
        n as f64 / cycle_s
    );
}
