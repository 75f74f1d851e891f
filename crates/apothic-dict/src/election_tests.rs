use super::*;
use crate::types::DictConfig;
use apothic_types::ErrorCode;

fn setup() -> (Dict, LeaseId, LeaseId) {
    let mut d = Dict::new(DictConfig::default());
    let l1 = d.grant(10, 0).expect("grant").value.id;
    let l2 = d.grant(100, 0).expect("grant").value.id;
    (d, l1, l2)
}

fn campaign(d: &mut Dict, who: &[u8], value: &[u8], lease: LeaseId) -> (Candidacy, Standing) {
    d.campaign(b"E", who.to_vec(), value.to_vec(), lease, 0)
        .expect("campaign")
        .value
}

#[test]
fn first_candidate_leads_and_proclaims() {
    let (mut d, l1, l2) = setup();
    assert_eq!(d.leader(b"E"), None);
    let (a, sa) = campaign(&mut d, b"a", b"a-1", l1);
    let (b, sb) = campaign(&mut d, b"b", b"b-1", l2);
    assert_eq!(
        (sa, sb),
        (Standing::Acquired, Standing::Waiting { ahead: 1 })
    );
    let leader = d.leader(b"E").expect("leader");
    assert_eq!(
        (
            leader.candidate.as_slice(),
            leader.value.as_slice(),
            leader.revision
        ),
        (&b"a"[..], &b"a-1"[..], a.revision)
    );
    let out = d
        .proclaim(b"E", a.revision, b"a-2".to_vec(), 1)
        .expect("proclaim");
    assert_eq!(
        (
            out.value.value.as_slice(),
            out.value.revision,
            out.value.mod_revision
        ),
        (&b"a-2"[..], a.revision, out.revision)
    );
    assert_eq!(d.leader(b"E").map(|l| l.value), Some(b"a-2".to_vec()));
    // Only the leader may proclaim.
    let err = d
        .proclaim(b"E", b.revision, b"b-2".to_vec(), 1)
        .expect_err("not leader");
    assert_eq!(
        err,
        DictError::NotLeader {
            revision: b.revision
        }
    );
    assert_eq!(err.code(), ErrorCode::ElectionNotLeader);
    assert_eq!(d.candidates(b"E").len(), 2);
}

#[test]
fn resign_hands_leadership_to_the_next_in_line() {
    let (mut d, l1, l2) = setup();
    let (a, _) = campaign(&mut d, b"a", b"", l1);
    let (b, _) = campaign(&mut d, b"b", b"b-1", l2);
    let out = d.resign(b"E", a.revision).expect("resign");
    let next = out.value.expect("new leader");
    assert_eq!(
        (next.candidate, next.value, next.revision),
        (b"b".to_vec(), b"b-1".to_vec(), b.revision)
    );
    assert!(next.revision > a.revision);
    assert!(d.lease(l1).is_some(), "resign keeps the lease");
    assert!(d.proclaim(b"E", a.revision, vec![], 1).is_err());
    assert!(d.resign(b"E", a.revision).is_err());
    assert_eq!(
        d.candidacy_standing(b"E", b.revision, 1),
        Ok(Standing::Acquired)
    );
}

#[test]
fn lease_expiry_ends_leadership() {
    let (mut d, l1, l2) = setup();
    let (a, _) = campaign(&mut d, b"a", b"", l1);
    let (b, _) = campaign(&mut d, b"b", b"", l2);
    // Overdue before the sweep: the leader can no longer proclaim.
    assert!(d.proclaim(b"E", a.revision, vec![], 10).is_err());
    d.expire(10);
    assert_eq!(d.leader(b"E").map(|l| l.revision), Some(b.revision));
    assert!(d.candidacy_standing(b"E", a.revision, 10).is_err());
    let err = d
        .campaign(b"E", b"c".to_vec(), vec![], l1, 10)
        .expect_err("lease gone");
    assert_eq!(err, DictError::LeaseNotFound { lease: l1 });
}

#[test]
fn candidates_with_binary_names_and_values_round_trip() {
    let (mut d, _, l2) = setup();
    campaign(&mut d, b"\0\0\0\x09", b"\xff\0", l2);
    let leader = d.leader(b"E").expect("leader");
    assert_eq!(
        (leader.candidate, leader.value),
        (b"\0\0\0\x09".to_vec(), b"\xff\0".to_vec())
    );
    assert_eq!(d.leader(b"other"), None);
}
