use super::*;
use crate::types::PutResult;

fn dict() -> Dict {
    Dict::new(DictConfig::default())
}

fn put(d: &mut Dict, key: &[u8], value: &[u8]) -> Entry {
    match d
        .put(key.to_vec(), value.to_vec(), PutOptions::default(), 0)
        .expect("put")
        .value
    {
        PutResult::Written { entry, .. } => entry,
        PutResult::Skipped { .. } => panic!("skipped"),
    }
}

#[test]
fn versions_and_revisions_follow_etcd() {
    let mut d = dict();
    assert_eq!(d.revision(), 0);
    let a1 = put(&mut d, b"a", b"1");
    assert_eq!((a1.version, a1.create_revision, a1.mod_revision), (1, 1, 1));
    put(&mut d, b"b", b"x");
    let a2 = put(&mut d, b"a", b"2");
    assert_eq!((a2.version, a2.create_revision, a2.mod_revision), (2, 1, 3));
    assert_eq!(d.revision(), 3);
    let deleted = d.delete(b"a").expect("delete");
    assert_eq!(deleted.value, Some(a2));
    assert_eq!(deleted.revision, 4);
    // Recreation starts a new life: version 1, new create revision.
    let a3 = put(&mut d, b"a", b"3");
    assert_eq!((a3.version, a3.create_revision, a3.mod_revision), (1, 5, 5));
    assert_eq!(d.get(b"a").map(|e| e.value.as_slice()), Some(&b"3"[..]));
}

#[test]
fn put_reports_prev_and_emits_one_event() {
    let mut d = dict();
    put(&mut d, b"k", b"v1");
    let out = d
        .put(b"k".to_vec(), b"v2".to_vec(), PutOptions::default(), 0)
        .expect("put");
    let PutResult::Written { entry, prev } = out.value.clone() else {
        panic!("skipped")
    };
    assert_eq!(prev.map(|p| p.value), Some(b"v1".to_vec()));
    assert_eq!(
        out.changes,
        vec![Change::Kv(Event {
            revision: 2,
            kind: EventKind::Put,
            key: b"k".to_vec(),
            entry: Some(entry),
            prev: d.events_since(0).expect("history")[0].entry.clone(),
        })]
    );
    assert_eq!(out.revision, 2);
}

#[test]
fn skip_if_exists_leaves_the_key_and_the_revision() {
    let mut d = dict();
    let first = put(&mut d, b"k", b"v1");
    let opts = PutOptions {
        skip_if_exists: true,
        ..PutOptions::default()
    };
    let out = d.put(b"k".to_vec(), b"v2".to_vec(), opts, 0).expect("put");
    assert_eq!(out.value, PutResult::Skipped { existing: first });
    assert!(out.changes.is_empty());
    assert_eq!(out.revision, 1);
    let out = d.put(b"new".to_vec(), b"v".to_vec(), opts, 0).expect("put");
    assert!(matches!(out.value, PutResult::Written { prev: None, .. }));
}

#[test]
fn deleting_an_absent_key_changes_nothing() {
    let mut d = dict();
    put(&mut d, b"k", b"v");
    let out = d.delete(b"nope").expect("delete");
    assert_eq!((out.value, out.revision, out.changes.len()), (None, 1, 0));
}

#[test]
fn pop_returns_the_entry_or_key_not_found() {
    let mut d = dict();
    put(&mut d, b"k", b"v");
    let out = d.pop(b"k").expect("pop");
    assert_eq!(out.value.value, b"v".to_vec());
    assert_eq!(out.revision, 2);
    let err = d.pop(b"k").expect_err("gone");
    assert_eq!(err, DictError::KeyNotFound { key: b"k".to_vec() });
    assert_eq!(err.code(), apothic_types::ErrorCode::NotFound);
    assert_eq!(d.revision(), 2);
}

#[test]
fn range_is_sorted_by_key_and_bounded_by_prefix() {
    let mut d = dict();
    for key in [&b"b/2"[..], b"a", b"b/1", b"b", b"c", b"b/10"] {
        put(&mut d, key, b"");
    }
    let keys: Vec<&[u8]> = d.range(b"b/").map(|(k, _)| k).collect();
    assert_eq!(keys, vec![&b"b/1"[..], b"b/10", b"b/2"]);
    assert_eq!(d.range(b"").count(), 6);
    assert_eq!(d.range(b"zz").count(), 0);
    assert_eq!(d.len(), 6);
}

#[test]
fn clear_and_delete_prefix_are_one_revision_each() {
    let mut d = dict();
    for key in [&b"x/1"[..], b"x/2", b"y"] {
        put(&mut d, key, b"");
    }
    let out = d.delete_prefix(b"x/");
    assert_eq!((out.value, out.revision, out.changes.len()), (2, 4, 2));
    assert!(out.changes.iter().all(|c| c.revision() == 4));
    let out = d.clear();
    assert_eq!((out.value, out.revision), (1, 5));
    assert!(d.is_empty());
    let out = d.clear();
    assert_eq!((out.value, out.revision, out.changes.len()), (0, 5, 0));
}

#[test]
fn cas_on_value_version_and_mod_revision() {
    let mut d = dict();
    // Version 0 and mod revision 0 mean "absent".
    let e = d
        .cas(b"k".to_vec(), b"1".to_vec(), Expect::Version(0), None, 0)
        .expect("create");
    assert_eq!(e.value.version, 1);
    let err = d
        .cas(
            b"k".to_vec(),
            b"x".to_vec(),
            Expect::ModRevision(0),
            None,
            0,
        )
        .expect_err("exists");
    assert_eq!(
        err,
        DictError::CasConflict {
            current: Some(e.value.clone()),
            revision: 1
        }
    );
    assert_eq!(err.code(), apothic_types::ErrorCode::DictCasConflict);
    let e2 = d
        .cas(
            b"k".to_vec(),
            b"2".to_vec(),
            Expect::Value(b"1".to_vec()),
            None,
            0,
        )
        .expect("value");
    assert_eq!(e2.value.version, 2);
    assert!(d
        .cas(b"k".to_vec(), b"3".to_vec(), Expect::Version(1), None, 0)
        .is_err());
    let e3 = d
        .cas(
            b"k".to_vec(),
            b"3".to_vec(),
            Expect::ModRevision(2),
            None,
            0,
        )
        .expect("mod");
    assert_eq!((e3.value.version, e3.revision), (3, 3));
    assert!(d
        .cas(
            b"k".to_vec(),
            b"4".to_vec(),
            Expect::Value(b"2".to_vec()),
            None,
            0
        )
        .is_err());
    // A failed CAS changes nothing.
    assert_eq!(d.revision(), 3);
    let err = d
        .cas(
            b"absent".to_vec(),
            b"v".to_vec(),
            Expect::Value(vec![]),
            None,
            0,
        )
        .expect_err("absent");
    assert_eq!(
        err,
        DictError::CasConflict {
            current: None,
            revision: 3
        }
    );
}

#[test]
fn delete_if_is_guarded() {
    let mut d = dict();
    put(&mut d, b"k", b"v");
    assert!(d.delete_if(b"k", Expect::Version(2)).is_err());
    assert!(d.delete_if(b"absent", Expect::Version(0)).is_err());
    assert_eq!(d.revision(), 1);
    let out = d.delete_if(b"k", Expect::Version(1)).expect("delete");
    assert_eq!((out.value.value, out.revision), (b"v".to_vec(), 2));
    assert!(d.get(b"k").is_none());
}

#[test]
fn system_keys_are_reserved() {
    let mut d = dict();
    let mut key = SYSTEM_PREFIX.to_vec();
    key.extend_from_slice(b"lock");
    let invalid = |r: Result<_, DictError>| matches!(r, Err(DictError::InvalidArgument { .. }));
    assert!(invalid(
        d.put(key.clone(), vec![], PutOptions::default(), 0)
            .map(|_| ())
    ));
    assert!(invalid(d.delete(&key).map(|_| ())));
    assert!(invalid(
        d.cas(key.clone(), vec![], Expect::Version(0), None, 0)
            .map(|_| ())
    ));
    assert_eq!(d.revision(), 0);
    // A key merely starting with a NUL byte is an ordinary key.
    put(&mut d, b"\0other", b"v");
    assert_eq!(d.len(), 1);
}

#[test]
fn system_keys_stay_out_of_the_user_space() {
    let mut d = dict();
    put(&mut d, b"a", b"");
    d.lock(b"L", b"me".to_vec(), 100, 0).expect("lock");
    assert_eq!(d.len(), 1);
    assert_eq!(d.range(b"").count(), 1);
    assert_eq!(d.clear().value, 1);
    assert!(d.lock_holder(b"L").is_some());
    let events = d.events_since(0).expect("history");
    assert_eq!(events.iter().filter(|e| e.is_system()).count(), 1);
}

#[test]
fn restore_rebuilds_the_exported_state() {
    let mut d = dict();
    put(&mut d, b"a", b"1");
    let lease = d.grant(100, 0).expect("grant").value.id;
    let opts = PutOptions {
        lease: Some(lease),
        ..PutOptions::default()
    };
    d.put(b"b".to_vec(), b"2".to_vec(), opts, 0).expect("put");
    d.lock(b"L", b"me".to_vec(), 50, 0).expect("lock");
    let snapshot = d.export();
    let mut r = Dict::restore(DictConfig::default(), snapshot.clone(), 1_000).expect("restore");
    assert_eq!(r.export(), snapshot);
    assert_eq!(r.revision(), d.revision());
    assert_eq!(r.get(b"b"), d.get(b"b"));
    assert_eq!(r.lock_holder(b"L"), d.lock_holder(b"L"));
    // Leases restart with a full TTL from the restore time.
    assert_eq!(
        r.lease(lease).map(|l| (l.expires_at, l.keys)),
        Some((1_100, 1))
    );
    // History restarts empty at the restored revision; writes continue above it.
    assert!(r.events_since(r.revision() - 1).is_err());
    assert_eq!(r.events_since(r.revision()), Ok(vec![]));
    assert_eq!(put(&mut r, b"c", b"").mod_revision, d.revision() + 1);
    // Expiry of a restored lease deletes its keys.
    let expired = r.expire(1_100);
    assert_eq!(expired.value.len(), 2);
    assert!(r.get(b"b").is_none());
    assert!(r.lock_holder(b"L").is_none());
}

#[test]
fn restore_rejects_inconsistent_snapshots() {
    let entry = Entry {
        value: vec![],
        version: 1,
        create_revision: 1,
        mod_revision: 1,
        lease: Some(7),
    };
    let mut snapshot = Snapshot {
        revision: 1,
        ..Snapshot::default()
    };
    snapshot.entries.insert(b"k".to_vec(), entry.clone());
    let err = Dict::restore(DictConfig::default(), snapshot.clone(), 0).expect_err("unknown lease");
    assert_eq!(err.code(), apothic_types::ErrorCode::InvalidArgument);
    snapshot.entries.insert(
        b"k".to_vec(),
        Entry {
            lease: None,
            mod_revision: 2,
            ..entry
        },
    );
    assert!(Dict::restore(DictConfig::default(), snapshot, 0).is_err());
}
