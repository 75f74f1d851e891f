//! Multi-key transactions: compares, then one branch of operations, atomically at one revision.

use std::cmp::Ordering;
use std::collections::HashSet;

use crate::engine::{check_user_key, Dict};
use crate::types::{
    Compare, CompareOp, CompareTarget, DictError, Outcome, TxnOp, TxnOpResult, TxnResult,
};

impl Dict {
    /// etcd's `Txn(If compares Then success Else failure)`. The compares are a conjunction;
    /// the chosen branch's writes all take one revision (none if the branch only reads or
    /// deletes absent keys). Both branches are checked first (no reserved key, no key written
    /// twice in a branch) and the chosen branch's leases must be live at `now`; on any error
    /// nothing is applied.
    pub fn txn(
        &mut self,
        compares: &[Compare],
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
        now: u64,
    ) -> Result<Outcome<TxnResult>, DictError> {
        for compare in compares {
            check_user_key(&compare.key)?;
        }
        check_branch(&success)?;
        check_branch(&failure)?;
        let succeeded = compares.iter().all(|c| self.compare(c));
        let ops = if succeeded { success } else { failure };
        for op in &ops {
            if let TxnOp::Put {
                lease: Some(lease), ..
            } = op
            {
                self.check_lease(*lease, now)?;
            }
        }
        let mut batch = self.batch();
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(match op {
                TxnOp::Get { key } => TxnOpResult::Get(self.user.get(&key).cloned()),
                TxnOp::Put { key, value, lease } => {
                    let (entry, prev) = self.write(&mut batch, key, value, lease);
                    TxnOpResult::Put { entry, prev }
                }
                TxnOp::Delete { key } => TxnOpResult::Delete(self.remove(&mut batch, &key)),
            });
        }
        Ok(self.commit(batch, TxnResult { succeeded, results }))
    }

    /// Evaluates one compare against the current user key space.
    pub(crate) fn compare(&self, compare: &Compare) -> bool {
        let entry = self.user.get(&compare.key);
        let ordering = match (&compare.target, entry) {
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(v), Some(e)) => e.value.as_slice().cmp(v.as_slice()),
            (CompareTarget::Version(v), e) => e.map_or(0, |e| e.version).cmp(v),
            (CompareTarget::CreateRevision(r), e) => e.map_or(0, |e| e.create_revision).cmp(r),
            (CompareTarget::ModRevision(r), e) => e.map_or(0, |e| e.mod_revision).cmp(r),
            (CompareTarget::Lease(l), e) => e.and_then(|e| e.lease).unwrap_or(0).cmp(l),
        };
        match compare.op {
            CompareOp::Equal => ordering == Ordering::Equal,
            CompareOp::NotEqual => ordering != Ordering::Equal,
            CompareOp::Greater => ordering == Ordering::Greater,
            CompareOp::Less => ordering == Ordering::Less,
        }
    }
}

fn check_branch(ops: &[TxnOp]) -> Result<(), DictError> {
    let mut written = HashSet::new();
    for op in ops {
        let (key, writes) = match op {
            TxnOp::Get { key } => (key, false),
            TxnOp::Put { key, .. } | TxnOp::Delete { key } => (key, true),
        };
        check_user_key(key)?;
        if writes && !written.insert(key.as_slice()) {
            return Err(DictError::InvalidArgument {
                reason: "a txn branch writes the same key twice",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "txn_tests.rs"]
mod tests;
