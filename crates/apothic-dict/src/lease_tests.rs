use super::*;
use crate::types::{DictConfig, EventKind, PutOptions};

fn leased_put(d: &mut Dict, key: &[u8], lease: LeaseId, now: u64) -> Result<(), DictError> {
    let opts = PutOptions {
        lease: Some(lease),
        ..PutOptions::default()
    };
    d.put(key.to_vec(), b"v".to_vec(), opts, now).map(|_| ())
}

#[test]
fn grant_takes_a_revision_and_names_the_lease() {
    let mut d = Dict::new(DictConfig::default());
    let out = d.grant(100, 5).expect("grant");
    assert_eq!(
        out.value,
        LeaseInfo {
            id: 1,
            ttl_ms: 100,
            expires_at: 105,
            keys: 0
        }
    );
    assert_eq!(
        out.changes,
        vec![Change::LeaseGranted {
            revision: 1,
            lease: 1,
            ttl_ms: 100
        }]
    );
    assert_eq!(d.revision(), 1);
    let err = d.grant(0, 5).expect_err("zero ttl");
    assert!(matches!(err, DictError::InvalidArgument { .. }));
}

#[test]
fn put_with_unknown_or_overdue_lease_fails() {
    let mut d = Dict::new(DictConfig::default());
    let err = leased_put(&mut d, b"k", 42, 0).expect_err("unknown");
    assert_eq!(err, DictError::LeaseNotFound { lease: 42 });
    assert_eq!(err.code(), apothic_types::ErrorCode::DictLeaseNotFound);
    let lease = d.grant(10, 0).expect("grant").value.id;
    leased_put(&mut d, b"k", lease, 9).expect("live");
    // Overdue but not yet swept: refused all the same.
    assert!(leased_put(&mut d, b"k", lease, 10).is_err());
    assert!(d.keepalive(lease, 10).is_err());
}

#[test]
fn keepalive_pushes_the_deadline() {
    let mut d = Dict::new(DictConfig::default());
    let lease = d.grant(10, 0).expect("grant").value.id;
    leased_put(&mut d, b"k", lease, 0).expect("put");
    let info = d.keepalive(lease, 8).expect("keepalive");
    assert_eq!((info.expires_at, info.keys), (18, 1));
    let out = d.expire(17);
    assert!(out.value.is_empty() && out.changes.is_empty());
    assert!(d.get(b"k").is_some());
    assert_eq!(d.expire(18).value, vec![lease]);
    assert!(d.get(b"k").is_none());
    assert!(d.lease(lease).is_none());
}

#[test]
fn revoke_deletes_exactly_the_attached_keys_at_one_revision() {
    let mut d = Dict::new(DictConfig::default());
    let l1 = d.grant(100, 0).expect("grant").value.id;
    let l2 = d.grant(100, 0).expect("grant").value.id;
    leased_put(&mut d, b"a", l1, 0).expect("put");
    leased_put(&mut d, b"b", l1, 0).expect("put");
    leased_put(&mut d, b"c", l2, 0).expect("put");
    // Re-attaching moves a key; a plain put detaches it.
    leased_put(&mut d, b"b", l2, 0).expect("move");
    leased_put(&mut d, b"d", l1, 0).expect("put");
    d.put(b"d".to_vec(), vec![], PutOptions::default(), 0)
        .expect("detach");
    assert_eq!(d.lease_keys(l1), vec![b"a".to_vec()]);
    let before = d.revision();
    let out = d.revoke(l2).expect("revoke");
    assert_eq!(out.value, vec![b"b".to_vec(), b"c".to_vec()]);
    assert_eq!(out.revision, before + 1);
    assert!(out.changes.iter().all(|c| c.revision() == before + 1));
    assert_eq!(
        out.changes.last(),
        Some(&Change::LeaseRevoked {
            revision: before + 1,
            lease: l2
        })
    );
    let events = d.events_since(before).expect("history");
    assert_eq!(events.len(), 2);
    assert!(events
        .iter()
        .all(|e| e.kind == EventKind::Delete && e.prev.is_some()));
    assert!(d.get(b"a").is_some() && d.get(b"d").is_some());
    assert_eq!(
        d.revoke(l2).expect_err("gone"),
        DictError::LeaseNotFound { lease: l2 }
    );
}

#[test]
fn expire_revokes_overdue_leases_in_deadline_order_one_revision_each() {
    let mut d = Dict::new(DictConfig::default());
    let slow = d.grant(30, 0).expect("grant").value.id;
    let fast = d.grant(10, 0).expect("grant").value.id;
    let live = d.grant(100, 0).expect("grant").value.id;
    for (key, lease) in [(&b"s"[..], slow), (b"f", fast), (b"l", live)] {
        leased_put(&mut d, key, lease, 0).expect("put");
    }
    let before = d.revision();
    let out = d.expire(50);
    assert_eq!(out.value, vec![fast, slow]);
    assert_eq!(out.revision, before + 2);
    let revisions: Vec<u64> = out.changes.iter().map(Change::revision).collect();
    assert_eq!(
        revisions,
        vec![before + 1, before + 1, before + 2, before + 2]
    );
    assert_eq!(d.len(), 1);
    assert_eq!(d.next_deadline(), Some(100));
}

#[test]
fn a_deleted_key_leaves_its_lease() {
    let mut d = Dict::new(DictConfig::default());
    let lease = d.grant(10, 0).expect("grant").value.id;
    leased_put(&mut d, b"k", lease, 0).expect("put");
    d.delete(b"k").expect("delete");
    assert_eq!(d.lease(lease).map(|l| l.keys), Some(0));
    leased_put(&mut d, b"k2", lease, 0).expect("put");
    d.clear();
    let out = d.expire(10);
    // Only the LeaseRevoked change: nothing was attached any more.
    assert_eq!(out.changes.len(), 1);
}
