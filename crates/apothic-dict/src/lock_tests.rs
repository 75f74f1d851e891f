use super::*;
use crate::types::{DictConfig, PutOptions};
use apothic_types::ErrorCode;

fn dict() -> Dict {
    Dict::new(DictConfig::default())
}

fn lock(d: &mut Dict, owner: &[u8], ttl: u64, now: u64) -> (Lock, Standing) {
    d.lock(b"L", owner.to_vec(), ttl, now).expect("lock").value
}

fn fenced(d: &mut Dict, fence: u64, now: u64) -> Result<(), DictError> {
    d.put_fenced(
        b"res".to_vec(),
        fence.to_be_bytes().to_vec(),
        b"L",
        fence,
        PutOptions::default(),
        now,
    )
    .map(|_| ())
}

#[test]
fn first_request_holds_and_later_ones_wait_in_fifo_order() {
    let mut d = dict();
    let (a, sa) = lock(&mut d, b"a", 100, 0);
    let (b, sb) = lock(&mut d, b"b", 100, 0);
    let (c, sc) = lock(&mut d, b"c", 100, 0);
    assert_eq!(
        (sa, sb, sc),
        (
            Standing::Acquired,
            Standing::Waiting { ahead: 1 },
            Standing::Waiting { ahead: 2 }
        )
    );
    assert!(a.fence < b.fence && b.fence < c.fence);
    assert_eq!(a.fence, a.lease);
    assert_eq!(d.lock_holder(b"L"), Some(a.clone()));
    assert_eq!(d.lock_queue_len(b"L"), 3);
    let out = d.unlock(b"L", a.fence).expect("unlock");
    assert_eq!(out.value, Some(b.clone()));
    assert_eq!(d.lock_standing(b"L", b.fence, 0), Ok(Standing::Acquired));
    assert_eq!(
        d.lock_standing(b"L", c.fence, 0),
        Ok(Standing::Waiting { ahead: 1 })
    );
    let err = d.lock_standing(b"L", a.fence, 0).expect_err("released");
    assert_eq!(err.code(), ErrorCode::LockNotHeld);
    assert!(d.lease(a.lease).is_none());
}

#[test]
fn locks_with_different_names_are_independent() {
    let mut d = dict();
    let (_, s1) = d.lock(b"a", vec![], 10, 0).expect("lock").value;
    // "a" is a prefix of "ab" and of "a\0..."; the queues must not mix.
    let (_, s2) = d.lock(b"ab", vec![], 10, 0).expect("lock").value;
    let (_, s3) = d.lock(b"a\0\0\0\0", vec![], 10, 0).expect("lock").value;
    assert_eq!(
        (s1, s2, s3),
        (Standing::Acquired, Standing::Acquired, Standing::Acquired)
    );
    assert_eq!(d.lock_queue_len(b"a"), 1);
}

#[test]
fn holder_expiry_hands_the_lock_to_the_next_waiter() {
    let mut d = dict();
    let (a, _) = lock(&mut d, b"a", 10, 0);
    let (b, _) = lock(&mut d, b"b", 100, 0);
    d.keepalive(a.lease, 5).expect("keepalive");
    assert!(d.expire(14).value.is_empty());
    assert_eq!(d.expire(15).value, vec![a.lease]);
    assert_eq!(d.lock_holder(b"L").map(|l| l.fence), Some(b.fence));
    assert_eq!(d.lock_standing(b"L", b.fence, 15), Ok(Standing::Acquired));
}

#[test]
fn a_waiter_whose_lease_ends_never_gets_the_lock() {
    let mut d = dict();
    let (a, _) = lock(&mut d, b"a", 100, 0);
    let (b, _) = lock(&mut d, b"b", 10, 0);
    let (c, _) = lock(&mut d, b"c", 100, 0);
    // Overdue, not yet swept: already refused.
    assert_eq!(
        d.lock_standing(b"L", b.fence, 10),
        Err(DictError::LockNotHeld { fence: b.fence })
    );
    d.expire(10);
    d.unlock(b"L", a.fence).expect("unlock");
    assert_eq!(d.lock_holder(b"L").map(|l| l.fence), Some(c.fence));
    assert!(d.lock_standing(b"L", b.fence, 10).is_err());
}

#[test]
fn fenced_writes_refuse_stale_and_unheld_fences() {
    let mut d = dict();
    let (a, _) = lock(&mut d, b"a", 10, 0);
    let (b, _) = lock(&mut d, b"b", 100, 0);
    fenced(&mut d, a.fence, 0).expect("holder writes");
    // The waiter does not hold the lock yet.
    assert_eq!(
        fenced(&mut d, b.fence, 0),
        Err(DictError::LockNotHeld { fence: b.fence })
    );
    // The holder paused past its lease: refused before and after the sweep.
    assert_eq!(
        fenced(&mut d, a.fence, 10),
        Err(DictError::LockNotHeld { fence: a.fence })
    );
    d.expire(10);
    let err = fenced(&mut d, a.fence, 11).expect_err("stale");
    assert_eq!(
        err,
        DictError::FenceStale {
            fence: a.fence,
            current: b.fence
        }
    );
    assert_eq!(err.code(), ErrorCode::DictFenceStale);
    fenced(&mut d, b.fence, 11).expect("new holder writes");
    d.unlock(b"L", b.fence).expect("unlock");
    assert_eq!(
        fenced(&mut d, b.fence, 11),
        Err(DictError::LockNotHeld { fence: b.fence })
    );
    assert_eq!(
        d.get(b"res").map(|e| e.value.clone()),
        Some(b.fence.to_be_bytes().to_vec())
    );
}

#[test]
fn a_refused_fenced_write_changes_nothing() {
    let mut d = dict();
    let (a, _) = lock(&mut d, b"a", 10, 0);
    let revision = d.revision();
    assert!(fenced(&mut d, a.fence + 1, 0).is_err());
    assert_eq!(d.revision(), revision);
    assert!(d.get(b"res").is_none());
}

#[test]
fn fences_increase_after_the_queue_empties() {
    let mut d = dict();
    let (a, _) = lock(&mut d, b"a", 10, 0);
    d.unlock(b"L", a.fence).expect("unlock");
    d.put(b"x".to_vec(), vec![], PutOptions::default(), 0)
        .expect("put");
    let (b, s) = lock(&mut d, b"b", 10, 0);
    assert_eq!(s, Standing::Acquired);
    assert!(b.fence > a.fence);
}

#[test]
fn unlock_can_withdraw_a_waiter_and_rejects_unknown_fences() {
    let mut d = dict();
    let (a, _) = lock(&mut d, b"a", 100, 0);
    let (b, _) = lock(&mut d, b"b", 100, 0);
    let out = d.unlock(b"L", b.fence).expect("withdraw");
    assert_eq!(out.value, Some(a.clone()));
    assert_eq!(d.lock_queue_len(b"L"), 1);
    assert_eq!(
        d.unlock(b"L", b.fence).expect_err("gone"),
        DictError::LockNotHeld { fence: b.fence }
    );
    assert!(d.lock(b"L", vec![], 0, 0).is_err());
}
