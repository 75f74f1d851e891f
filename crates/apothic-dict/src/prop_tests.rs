//! Invariants checked against simple reference models.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;

use crate::{
    Change, Compare, CompareOp, CompareTarget, Dict, DictConfig, DictError, Expect, LeaseId,
    PutOptions, PutResult, Snapshot, TxnOp,
};

const KEYS: [&[u8]; 4] = [b"a", b"a/1", b"b", b"c"];

/// The reference model of one key: (value, version, create_revision, mod_revision).
type Model = HashMap<Vec<u8>, (Vec<u8>, u64, u64, u64)>;

#[derive(Debug, Clone)]
enum KvOp {
    Put(usize, u8),
    PutSkip(usize, u8),
    Delete(usize),
    Pop(usize),
    CasVersion(usize, u8, u64),
    CasValue(usize, u8, u8),
    DeletePrefix(usize),
    Txn(usize, u64, usize, u8),
}

fn kv_op() -> impl Strategy<Value = KvOp> {
    let k = || 0..KEYS.len();
    prop_oneof![
        4 => (k(), any::<u8>()).prop_map(|(k, v)| KvOp::Put(k, v % 4)),
        1 => (k(), any::<u8>()).prop_map(|(k, v)| KvOp::PutSkip(k, v % 4)),
        2 => k().prop_map(KvOp::Delete),
        1 => k().prop_map(KvOp::Pop),
        3 => (k(), any::<u8>(), 0u64..4).prop_map(|(k, v, e)| KvOp::CasVersion(k, v % 4, e)),
        2 => (k(), any::<u8>(), any::<u8>()).prop_map(|(k, v, e)| KvOp::CasValue(k, v % 4, e % 4)),
        1 => k().prop_map(KvOp::DeletePrefix),
        2 => (k(), 0u64..4, k(), any::<u8>()).prop_map(|(a, e, b, v)| KvOp::Txn(a, e, b, v % 4)),
    ]
}

fn model_put(model: &mut Model, key: &[u8], value: Vec<u8>, revision: u64) {
    let next = match model.get(key) {
        Some((_, version, create, _)) => (value, version + 1, *create, revision),
        None => (value, 1, revision, revision),
    };
    model.insert(key.to_vec(), next);
}

fn model_version(model: &Model, key: &[u8]) -> u64 {
    model.get(key).map_or(0, |m| m.1)
}

fn same_as_model(d: &Dict, model: &Model) -> bool {
    d.len() == model.len()
        && d.range(b"").all(|(k, e)| {
            model.get(k)
                == Some(&(
                    e.value.clone(),
                    e.version,
                    e.create_revision,
                    e.mod_revision,
                ))
        })
}

proptest! {
    /// Revisions strictly increase exactly when something changed; versions and revisions
    /// follow the model; CAS on version succeeds iff the model's version matches.
    #[test]
    fn kv_follows_the_reference_model(ops in proptest::collection::vec(kv_op(), 1..120)) {
        let mut d = Dict::new(DictConfig { history: 1_000 });
        let mut model = Model::new();
        let mut revision = 0u64;
        let mut log = Vec::new();
        for op in ops {
            let (changes, new_revision) = match op {
                KvOp::Put(k, v) | KvOp::PutSkip(k, v) => {
                    let skip = matches!(op, KvOp::PutSkip(..));
                    let opts = PutOptions { skip_if_exists: skip, ..PutOptions::default() };
                    let out = d.put(KEYS[k].to_vec(), vec![v], opts, 0).expect("put");
                    let exists = model.contains_key(KEYS[k]);
                    prop_assert_eq!(matches!(out.value, PutResult::Skipped { .. }), skip && exists);
                    if !(skip && exists) { model_put(&mut model, KEYS[k], vec![v], revision + 1); }
                    (out.changes, out.revision)
                }
                KvOp::Delete(k) => {
                    let out = d.delete(KEYS[k]).expect("delete");
                    prop_assert_eq!(out.value.is_some(), model.remove(KEYS[k]).is_some());
                    (out.changes, out.revision)
                }
                KvOp::Pop(k) => match d.pop(KEYS[k]) {
                    Ok(out) => {
                        prop_assert!(model.remove(KEYS[k]).is_some());
                        (out.changes, out.revision)
                    }
                    Err(e) => {
                        prop_assert_eq!(e, DictError::KeyNotFound { key: KEYS[k].to_vec() });
                        prop_assert!(!model.contains_key(KEYS[k]));
                        (vec![], revision)
                    }
                },
                KvOp::CasVersion(k, v, expected) => {
                    let should = model_version(&model, KEYS[k]) == expected;
                    match d.cas(KEYS[k].to_vec(), vec![v], Expect::Version(expected), None, 0) {
                        Ok(out) => {
                            prop_assert!(should);
                            model_put(&mut model, KEYS[k], vec![v], revision + 1);
                            (out.changes, out.revision)
                        }
                        Err(DictError::CasConflict { current, revision: at }) => {
                            prop_assert!(!should);
                            prop_assert_eq!(at, revision);
                            prop_assert_eq!(current.map(|e| e.version).unwrap_or(0), model_version(&model, KEYS[k]));
                            (vec![], revision)
                        }
                        Err(e) => return Err(TestCaseError::fail(format!("unexpected {e}"))),
                    }
                }
                KvOp::CasValue(k, v, expected) => {
                    let should = model.get(KEYS[k]).is_some_and(|m| m.0 == vec![expected]);
                    let result = d.cas(KEYS[k].to_vec(), vec![v], Expect::Value(vec![expected]), None, 0);
                    prop_assert_eq!(result.is_ok(), should);
                    if should { model_put(&mut model, KEYS[k], vec![v], revision + 1); }
                    result.map_or((vec![], revision), |out| (out.changes, out.revision))
                }
                KvOp::DeletePrefix(k) => {
                    let out = d.delete_prefix(KEYS[k]);
                    let before = model.len();
                    model.retain(|key, _| !key.starts_with(KEYS[k]));
                    prop_assert_eq!(out.value, before - model.len());
                    (out.changes, out.revision)
                }
                KvOp::Txn(a, expected, b, v) => {
                    let should = model_version(&model, KEYS[a]) == expected;
                    let compares = [Compare::new(KEYS[a].to_vec(), CompareOp::Equal, CompareTarget::Version(expected))];
                    let success = vec![TxnOp::Put { key: KEYS[b].to_vec(), value: vec![v], lease: None }];
                    let failure = vec![TxnOp::Delete { key: KEYS[b].to_vec() }];
                    let out = d.txn(&compares, success, failure, 0).expect("txn");
                    prop_assert_eq!(out.value.succeeded, should);
                    if should { model_put(&mut model, KEYS[b], vec![v], revision + 1); } else { model.remove(KEYS[b]); }
                    (out.changes, out.revision)
                }
            };
            if changes.is_empty() {
                prop_assert_eq!(new_revision, revision);
            } else {
                prop_assert_eq!(new_revision, revision + 1);
                prop_assert!(changes.iter().all(|c| c.revision() == new_revision));
            }
            revision = new_revision;
            prop_assert_eq!(d.revision(), revision);
            prop_assert!(same_as_model(&d, &model));
            log.extend(changes.into_iter().filter_map(|c| match c { Change::Kv(e) => Some(e), _ => None }));
        }
        // The watch history is exactly the change log, in order.
        prop_assert_eq!(d.events_since(0).expect("history"), log);
    }
}

#[derive(Debug, Clone)]
enum LeaseOp {
    Grant(u64),
    Put(usize, Option<usize>),
    Delete(usize),
    Keepalive(usize),
    Revoke(usize),
    Lock(u64),
    Unlock(usize),
    Fenced(usize),
    Advance(u64),
    Expire,
}

fn lease_op() -> impl Strategy<Value = LeaseOp> {
    let k = || 0..KEYS.len();
    prop_oneof![
        2 => (1u64..40).prop_map(LeaseOp::Grant),
        4 => (k(), proptest::option::of(any::<usize>())).prop_map(|(k, l)| LeaseOp::Put(k, l)),
        1 => k().prop_map(LeaseOp::Delete),
        2 => any::<usize>().prop_map(LeaseOp::Keepalive),
        1 => any::<usize>().prop_map(LeaseOp::Revoke),
        2 => (1u64..40).prop_map(LeaseOp::Lock),
        1 => any::<usize>().prop_map(LeaseOp::Unlock),
        2 => any::<usize>().prop_map(LeaseOp::Fenced),
        3 => (0u64..20).prop_map(LeaseOp::Advance),
        2 => Just(LeaseOp::Expire),
    ]
}

/// Reference model of leases: deadline and TTL per live lease, lease per key.
#[derive(Default)]
struct LeaseModel {
    leases: BTreeMap<LeaseId, (u64, u64)>,
    keys: BTreeMap<Vec<u8>, Option<LeaseId>>,
}

impl LeaseModel {
    fn live(&self, lease: LeaseId, now: u64) -> bool {
        self.leases
            .get(&lease)
            .is_some_and(|(deadline, _)| *deadline > now)
    }

    fn end(&mut self, lease: LeaseId) -> BTreeSet<Vec<u8>> {
        self.leases.remove(&lease);
        let gone: BTreeSet<Vec<u8>> = self
            .keys
            .iter()
            .filter(|(_, l)| **l == Some(lease))
            .map(|(k, _)| k.clone())
            .collect();
        self.keys.retain(|k, _| !gone.contains(k));
        gone
    }
}

fn pick<T: Copy>(items: &[T], i: usize) -> Option<T> {
    (!items.is_empty()).then(|| items[i % items.len()])
}

proptest! {
    /// Lease expiry removes exactly the keys attached to the expired leases; fence tokens of
    /// successive lock holders strictly increase and accepted fenced writes never go back;
    /// replaying every change into a snapshot yields the engine's state, and restoring that
    /// snapshot yields it again.
    #[test]
    fn leases_locks_and_durability(ops in proptest::collection::vec(lease_op(), 1..150)) {
        let mut d = Dict::new(DictConfig { history: 16 });
        let mut m = LeaseModel::default();
        let mut persisted = Snapshot::default();
        let mut now = 0u64;
        let mut granted: Vec<LeaseId> = Vec::new();
        let mut fences: Vec<u64> = Vec::new();
        let mut last_holder = 0u64;
        let mut last_accepted = 0u64;
        for op in ops {
            let before = d.revision();
            let changes: Vec<Change> = match op {
                LeaseOp::Grant(ttl) => {
                    let out = d.grant(ttl, now).expect("grant");
                    granted.push(out.value.id);
                    m.leases.insert(out.value.id, (now + ttl, ttl));
                    out.changes
                }
                LeaseOp::Put(k, lease) => {
                    let lease = lease.and_then(|i| pick(&granted, i));
                    let opts = PutOptions { lease, ..PutOptions::default() };
                    let result = d.put(KEYS[k].to_vec(), vec![], opts, now);
                    let should = match lease { Some(l) => m.live(l, now), None => true };
                    prop_assert_eq!(result.is_ok(), should);
                    if should { m.keys.insert(KEYS[k].to_vec(), lease); }
                    result.map(|o| o.changes).unwrap_or_default()
                }
                LeaseOp::Delete(k) => {
                    m.keys.remove(KEYS[k]);
                    d.delete(KEYS[k]).expect("delete").changes
                }
                LeaseOp::Keepalive(i) => {
                    let Some(lease) = pick(&granted, i) else { continue };
                    let live = m.live(lease, now);
                    prop_assert_eq!(d.keepalive(lease, now).is_ok(), live);
                    if let (true, Some(l)) = (live, m.leases.get_mut(&lease)) { l.0 = now + l.1; }
                    vec![]
                }
                LeaseOp::Revoke(i) => {
                    let Some(lease) = pick(&granted, i) else { continue };
                    let known = m.leases.contains_key(&lease);
                    match d.revoke(lease) {
                        Ok(out) => {
                            prop_assert!(known);
                            let gone: BTreeSet<Vec<u8>> = out.value.into_iter().filter(|k| !crate::is_system_key(k)).collect();
                            prop_assert_eq!(gone, m.end(lease));
                            out.changes
                        }
                        Err(_) => { prop_assert!(!known); vec![] }
                    }
                }
                LeaseOp::Lock(ttl) => {
                    let out = d.lock(b"L", vec![], ttl, now).expect("lock");
                    let (lock, _) = &out.value;
                    prop_assert!(fences.iter().all(|f| *f < lock.fence));
                    fences.push(lock.fence);
                    granted.push(lock.lease);
                    m.leases.insert(lock.lease, (now + ttl, ttl));
                    out.changes
                }
                LeaseOp::Unlock(i) => {
                    let Some(fence) = pick(&fences, i) else { continue };
                    match d.unlock(b"L", fence) {
                        Ok(out) => { m.end(fence); out.changes }
                        Err(_) => { prop_assert!(!m.leases.contains_key(&fence)); vec![] }
                    }
                }
                LeaseOp::Fenced(i) => {
                    let Some(fence) = pick(&fences, i) else { continue };
                    let holder = d.lock_holder(b"L").map(|l| l.fence);
                    let opts = PutOptions::default();
                    match d.put_fenced(b"res".to_vec(), vec![], b"L", fence, opts, now) {
                        Ok(out) => {
                            prop_assert_eq!(holder, Some(fence));
                            prop_assert!(m.live(fence, now));
                            prop_assert!(fence >= last_accepted);
                            last_accepted = fence;
                            m.keys.insert(b"res".to_vec(), None);
                            out.changes
                        }
                        Err(DictError::FenceStale { current, .. }) => {
                            prop_assert!(current > fence);
                            vec![]
                        }
                        Err(_) => vec![],
                    }
                }
                LeaseOp::Advance(dt) => { now += dt; continue; }
                LeaseOp::Expire => {
                    let out = d.expire(now);
                    let due: Vec<LeaseId> = m.leases.iter().filter(|(_, (dl, _))| *dl <= now).map(|(l, _)| *l).collect();
                    let got: BTreeSet<LeaseId> = out.value.iter().copied().collect();
                    prop_assert_eq!(got, due.iter().copied().collect::<BTreeSet<_>>());
                    let mut gone = BTreeSet::new();
                    for lease in due { gone.extend(m.end(lease)); }
                    let deleted: BTreeSet<Vec<u8>> = out.changes.iter().filter_map(|c| match c {
                        Change::Kv(e) if e.entry.is_none() => Some(e.key.clone()),
                        _ => None,
                    }).filter(|k| !crate::is_system_key(k)).collect();
                    prop_assert_eq!(deleted, gone);
                    out.changes
                }
            };
            // Changes carry strictly increasing revisions above the previous one.
            let mut last = before;
            for c in &changes {
                prop_assert!(c.revision() >= last && c.revision() > before);
                last = c.revision();
                persisted.apply(c);
            }
            prop_assert_eq!(d.revision(), last);
            // User keys and their leases match the model.
            let actual: BTreeMap<Vec<u8>, Option<LeaseId>> = d.range(b"").map(|(k, e)| (k.to_vec(), e.lease)).collect();
            prop_assert_eq!(&actual, &m.keys);
            // Successive holders have strictly increasing fences.
            if let Some(holder) = d.lock_holder(b"L") {
                prop_assert!(holder.fence >= last_holder);
                last_holder = holder.fence;
            }
            // The holder keeps the lock exactly while it is first in line with a live lease.
            let holds = d.lock_holder(b"L").map(|h| h.fence) == Some(last_holder) && m.live(last_holder, now);
            prop_assert_eq!(d.lock_standing(b"L", last_holder, now).is_ok(), holds);
            // Durability: the persisted changes are the engine's state.
            prop_assert_eq!(&persisted, &d.export());
        }
        let restored = Dict::restore(DictConfig::default(), persisted.clone(), now).expect("restore");
        prop_assert_eq!(restored.export(), persisted);
    }
}
