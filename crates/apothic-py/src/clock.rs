use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds on this process's monotonic clock: the time base of every lease the core holds.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}
