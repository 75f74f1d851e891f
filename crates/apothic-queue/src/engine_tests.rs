use super::*;
use proptest::prelude::*;
use std::collections::HashSet;

fn queue(max_deliveries: u32) -> Queue {
    Queue::new(QueueConfig { max_deliveries })
}

#[test]
fn claims_in_put_order_and_ack_removes() {
    let mut q = queue(0);
    let a = q.put(b"a".to_vec(), 0, 0);
    let b = q.put(b"b".to_vec(), 0, 0);
    let (c1, _) = q.claim(0, 100);
    let c1 = c1.expect("first claim");
    assert_eq!(
        (c1.item_id, c1.delivery_count, c1.lease_expires_at),
        (a, 1, 100)
    );
    let (c2, _) = q.claim(0, 100);
    assert_eq!(c2.expect("second claim").item_id, b);
    assert!(q.claim(0, 100).0.is_none());
    assert_eq!(q.ack(c1.claim_id), Ok(b"a".to_vec()));
    assert_eq!(
        q.ack(c1.claim_id),
        Err(QueueError::LeaseLost {
            claim_id: c1.claim_id
        })
    );
    assert_eq!(q.len(), 1);
}

#[test]
fn expired_lease_redelivers_with_higher_count() {
    let mut q = queue(0);
    let id = q.put(b"x".to_vec(), 0, 0);
    let first = q.claim(0, 50).0.expect("claim");
    assert!(q.claim(49, 50).0.is_none());
    let (again, expired) = q.claim(50, 50);
    let again = again.expect("redelivered");
    assert_eq!(expired.len(), 1);
    assert_eq!((again.item_id, again.delivery_count), (id, 2));
    // The first holder lost its lease: it can neither ack nor renew.
    assert!(q.ack(first.claim_id).is_err());
    assert!(q.renew(first.claim_id, 60, 50).is_err());
}

#[test]
fn renew_keeps_the_claim() {
    let mut q = queue(0);
    q.put(b"x".to_vec(), 0, 0);
    let c = q.claim(0, 50).0.expect("claim");
    assert_eq!(q.renew(c.claim_id, 40, 50), Ok(90));
    assert!(q.expire(80).is_empty());
    assert_eq!(q.expire(90).len(), 1);
}

#[test]
fn overdue_lease_cannot_be_renewed_before_the_sweep() {
    let mut q = queue(0);
    q.put(b"x".to_vec(), 0, 0);
    let c = q.claim(0, 50).0.expect("claim");
    assert!(q.renew(c.claim_id, 50, 50).is_err());
}

#[test]
fn release_with_delay_hides_the_item() {
    let mut q = queue(0);
    q.put(b"x".to_vec(), 0, 0);
    let c = q.claim(0, 50).0.expect("claim");
    q.release(c.claim_id, 10, 100).expect("release");
    assert!(q.claim(109, 50).0.is_none());
    let c2 = q.claim(110, 50).0.expect("visible again");
    assert_eq!(c2.delivery_count, 2);
    assert_eq!(q.next_deadline(), Some(160));
}

#[test]
fn dead_letters_after_max_deliveries() {
    let mut q = queue(2);
    let id = q.put(b"x".to_vec(), 0, 0);
    q.claim(0, 10);
    q.claim(10, 10);
    let expired = q.expire(20);
    assert_eq!(
        expired,
        vec![Expired {
            claim_id: 2,
            item_id: id,
            delivery_count: 2,
            dead_lettered: true
        }]
    );
    assert!(q.is_empty());
    assert_eq!(q.take_dead_letters(), vec![(id, b"x".to_vec(), 2)]);
}

#[test]
fn remove_cancels_visible_and_claimed_items() {
    let mut q = queue(0);
    let a = q.put(b"a".to_vec(), 0, 0);
    let b = q.put(b"b".to_vec(), 0, 0);
    q.remove(a).expect("remove visible");
    let c = q.claim(0, 10).0.expect("claim");
    assert_eq!(c.item_id, b);
    q.remove(b).expect("remove claimed");
    assert!(q.ack(c.claim_id).is_err());
    assert_eq!(q.remove(b), Err(QueueError::NotFound { item_id: b }));
    assert!(q.expire(100).is_empty());
}

#[test]
fn restore_keeps_delivery_count() {
    let mut q = queue(3);
    q.restore(b"x".to_vec(), 2, 0, 0);
    let c = q.claim(0, 10).0.expect("claim");
    assert_eq!(c.delivery_count, 3);
    assert!(q.expire(10)[0].dead_lettered);
}

#[derive(Debug, Clone)]
enum Op {
    Put,
    Claim(u64),
    Ack(usize),
    Renew(usize, u64),
    Release(usize, u64),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Put),
        3 => (1u64..50).prop_map(Op::Claim),
        2 => any::<usize>().prop_map(Op::Ack),
        1 => (any::<usize>(), 1u64..50).prop_map(|(i, l)| Op::Renew(i, l)),
        1 => (any::<usize>(), 0u64..20).prop_map(|(i, d)| Op::Release(i, d)),
        2 => (0u64..40).prop_map(Op::Advance),
    ]
}

proptest! {
    /// Whatever happens, an item is never held by two live claims, an acked item never comes
    /// back, and every item put ends acked, dead-lettered or still in the queue.
    #[test]
    fn no_double_delivery_and_nothing_lost(ops in proptest::collection::vec(op(), 1..200), max in 0u32..4) {
        let mut q = queue(max);
        let mut now = 0u64;
        let mut put = HashSet::new();
        let mut acked = HashSet::new();
        let mut dead = HashSet::new();
        let mut held: Vec<Claim> = Vec::new();
        for op in ops {
            match op {
                Op::Put => { put.insert(q.put(vec![], now, 0)); }
                Op::Claim(lease) => {
                    let (claim, expired) = q.claim(now, lease);
                    for e in expired {
                        held.retain(|c| c.claim_id != e.claim_id);
                        if e.dead_lettered { dead.insert(e.item_id); }
                    }
                    if let Some(c) = claim {
                        prop_assert!(!acked.contains(&c.item_id));
                        prop_assert!(held.iter().all(|h| h.item_id != c.item_id || h.lease_expires_at <= now));
                        held.retain(|h| h.item_id != c.item_id);
                        held.push(c);
                    }
                }
                Op::Ack(i) if !held.is_empty() => {
                    let c = held.remove(i % held.len());
                    let live = c.lease_expires_at > now;
                    match q.ack(c.claim_id) {
                        Ok(_) => { prop_assert!(acked.insert(c.item_id)); }
                        Err(_) => prop_assert!(!live),
                    }
                }
                Op::Renew(i, lease) if !held.is_empty() => {
                    let idx = i % held.len();
                    if let Ok(t) = q.renew(held[idx].claim_id, now, lease) {
                        held[idx].lease_expires_at = t;
                    }
                }
                Op::Release(i, delay) if !held.is_empty() => {
                    let c = held.remove(i % held.len());
                    let _ = q.release(c.claim_id, now, delay);
                }
                Op::Advance(dt) => now += dt,
                _ => {}
            }
        }
        for e in q.expire(u64::MAX) { if e.dead_lettered { dead.insert(e.item_id); } }
        prop_assert!(acked.is_disjoint(&dead));
        prop_assert_eq!(acked.len() + dead.len() + q.len(), put.len());
    }
}
