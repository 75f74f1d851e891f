use super::*;
use crate::types::{DictConfig, PutOptions};

fn dict_with(keys: &[(&[u8], &[u8])]) -> Dict {
    let mut d = Dict::new(DictConfig::default());
    for (k, v) in keys {
        d.put(k.to_vec(), v.to_vec(), PutOptions::default(), 0)
            .expect("put");
    }
    d
}

fn put_op(key: &[u8], value: &[u8]) -> TxnOp {
    TxnOp::Put {
        key: key.to_vec(),
        value: value.to_vec(),
        lease: None,
    }
}

#[test]
fn success_branch_is_atomic_at_one_revision() {
    let mut d = dict_with(&[(b"a", b"1"), (b"b", b"1")]);
    let compares = [
        Compare::new(
            b"a".to_vec(),
            CompareOp::Equal,
            CompareTarget::Value(b"1".to_vec()),
        ),
        Compare::new(b"b".to_vec(), CompareOp::Equal, CompareTarget::Version(1)),
        Compare::new(
            b"c".to_vec(),
            CompareOp::Equal,
            CompareTarget::CreateRevision(0),
        ),
    ];
    let success = vec![
        put_op(b"a", b"2"),
        TxnOp::Delete { key: b"b".to_vec() },
        put_op(b"c", b"3"),
    ];
    let out = d
        .txn(&compares, success, vec![put_op(b"fail", b"")], 0)
        .expect("txn");
    assert!(out.value.succeeded);
    assert_eq!(out.revision, 3);
    assert_eq!(out.changes.len(), 3);
    assert!(out.changes.iter().all(|c| c.revision() == 3));
    assert_eq!(
        d.get(b"a").map(|e| (e.version, e.mod_revision)),
        Some((2, 3))
    );
    assert!(d.get(b"b").is_none());
    assert_eq!(d.get(b"c").map(|e| e.create_revision), Some(3));
    assert!(d.get(b"fail").is_none());
    assert_eq!(d.events_since(2).expect("history").len(), 3);
}

#[test]
fn failure_branch_runs_when_any_compare_fails() {
    let mut d = dict_with(&[(b"a", b"1")]);
    let compares = [
        Compare::new(b"a".to_vec(), CompareOp::Equal, CompareTarget::Version(1)),
        Compare::new(
            b"a".to_vec(),
            CompareOp::Greater,
            CompareTarget::ModRevision(1),
        ),
    ];
    let failure = vec![TxnOp::Get { key: b"a".to_vec() }];
    let out = d
        .txn(&compares, vec![put_op(b"a", b"2")], failure, 0)
        .expect("txn");
    assert!(!out.value.succeeded);
    assert_eq!(
        out.value.results,
        vec![TxnOpResult::Get(d.get(b"a").cloned())]
    );
    // Reads only: the revision does not move.
    assert_eq!((out.revision, out.changes.len()), (1, 0));
}

#[test]
fn compare_ops_and_absent_keys() {
    let d = dict_with(&[(b"k", b"m")]);
    let holds = |key: &[u8], op, target| d.compare(&Compare::new(key.to_vec(), op, target));
    assert!(holds(
        b"k",
        CompareOp::Greater,
        CompareTarget::Value(b"a".to_vec())
    ));
    assert!(holds(
        b"k",
        CompareOp::Less,
        CompareTarget::Value(b"z".to_vec())
    ));
    assert!(holds(
        b"k",
        CompareOp::NotEqual,
        CompareTarget::Value(b"x".to_vec())
    ));
    assert!(holds(b"k", CompareOp::Equal, CompareTarget::Lease(0)));
    assert!(holds(b"k", CompareOp::Less, CompareTarget::ModRevision(2)));
    // A value compare on an absent key is false whatever the op (etcd).
    assert!(!holds(
        b"none",
        CompareOp::NotEqual,
        CompareTarget::Value(vec![])
    ));
    assert!(!holds(
        b"none",
        CompareOp::Equal,
        CompareTarget::Value(vec![])
    ));
    assert!(holds(b"none", CompareOp::Equal, CompareTarget::Version(0)));
    assert!(holds(
        b"none",
        CompareOp::Equal,
        CompareTarget::CreateRevision(0)
    ));
}

#[test]
fn gets_see_earlier_writes_of_their_branch() {
    let mut d = dict_with(&[]);
    let ops = vec![put_op(b"k", b"v"), TxnOp::Get { key: b"k".to_vec() }];
    let out = d.txn(&[], ops, vec![], 0).expect("txn");
    let TxnOpResult::Get(Some(entry)) = &out.value.results[1] else {
        panic!("no get result")
    };
    assert_eq!(entry.mod_revision, 1);
}

#[test]
fn invalid_txns_apply_nothing() {
    let mut d = dict_with(&[(b"a", b"1")]);
    let twice = vec![put_op(b"a", b"2"), TxnOp::Delete { key: b"a".to_vec() }];
    let err = d
        .txn(&[], vec![], twice, 0)
        .expect_err("duplicate in the other branch");
    assert!(matches!(err, DictError::InvalidArgument { .. }));
    let mut reserved = crate::engine::SYSTEM_PREFIX.to_vec();
    reserved.push(b'x');
    assert!(d.txn(&[], vec![put_op(&reserved, b"")], vec![], 0).is_err());
    let leased = vec![
        put_op(b"b", b""),
        TxnOp::Put {
            key: b"c".to_vec(),
            value: vec![],
            lease: Some(99),
        },
    ];
    let err = d.txn(&[], leased, vec![], 0).expect_err("unknown lease");
    assert_eq!(err, DictError::LeaseNotFound { lease: 99 });
    assert!(d.get(b"b").is_none());
    assert_eq!(d.revision(), 1);
}

#[test]
fn an_expired_lease_only_matters_in_the_chosen_branch() {
    let mut d = dict_with(&[]);
    let lease = d.grant(10, 0).expect("grant").value.id;
    let leased = vec![TxnOp::Put {
        key: b"k".to_vec(),
        value: vec![],
        lease: Some(lease),
    }];
    let never = [Compare::new(
        b"k".to_vec(),
        CompareOp::Equal,
        CompareTarget::Version(5),
    )];
    let out = d
        .txn(&never, leased.clone(), vec![put_op(b"other", b"")], 20)
        .expect("failure branch");
    assert!(!out.value.succeeded);
    assert!(d.txn(&[], leased, vec![], 20).is_err());
}
