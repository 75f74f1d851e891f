use super::*;
use crate::types::EventKind;

fn event(revision: u64) -> Event {
    Event {
        revision,
        kind: EventKind::Delete,
        key: vec![],
        entry: None,
        prev: None,
    }
}

#[test]
fn keeps_the_last_events_and_reports_compaction() {
    let mut h = History::new(3, 0);
    for r in 1..=5 {
        h.push([event(r)]);
    }
    assert_eq!(h.len(), 3);
    assert_eq!(h.compacted(), 2);
    let revs = |v: Vec<Event>| v.into_iter().map(|e| e.revision).collect::<Vec<_>>();
    assert_eq!(h.since(2).map(revs), Ok(vec![3, 4, 5]));
    assert_eq!(h.since(4).map(revs), Ok(vec![5]));
    assert_eq!(h.since(5).map(revs), Ok(vec![]));
    assert_eq!(h.since(99).map(revs), Ok(vec![]));
    let err = h.since(1).expect_err("compacted");
    assert_eq!(
        err,
        DictError::Compacted {
            requested: 1,
            oldest: 2
        }
    );
    assert_eq!(err.code(), apothic_types::ErrorCode::DictCompacted);
}

#[test]
fn never_splits_a_revision() {
    let mut h = History::new(3, 0);
    h.push([event(1), event(1)]);
    h.push([event(2), event(2)]);
    // Four events do not fit: revision 1 goes as a whole.
    assert_eq!(h.len(), 2);
    assert_eq!(h.compacted(), 1);
    h.push([event(3), event(3), event(3), event(3)]);
    // A revision larger than the ring evicts everything, itself included.
    assert_eq!(h.len(), 0);
    assert_eq!(h.compacted(), 3);
    assert_eq!(h.since(3), Ok(vec![]));
    assert!(h.since(2).is_err());
}

#[test]
fn zero_capacity_keeps_nothing() {
    let mut h = History::new(0, 0);
    assert_eq!(h.since(0), Ok(vec![]));
    h.push([event(1)]);
    assert!(h.since(0).is_err());
    assert_eq!(h.since(1), Ok(vec![]));
}
