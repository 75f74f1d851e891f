//! The sans-IO session: two `Session`s wired back to back, bytes moved by hand.

use apothic_session::{
    codes, Event, Role, Session, SessionConfig, SessionError, CONNECTION_WINDOW, STREAM_WINDOW,
};
use apothic_types::ErrorCode;
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

fn pair() -> (Session, Session) {
    (
        Session::new(Role::Dialer, SessionConfig::default()).expect("config"),
        Session::new(Role::Acceptor, SessionConfig::default()).expect("config"),
    )
}

fn drain(from: &mut Session) -> BytesMut {
    let mut out = BytesMut::new();
    from.outgoing(&mut out, usize::MAX);
    out
}

/// Moves everything `from` has to write into `to`; returns `to`'s events.
fn pump(from: &mut Session, to: &mut Session) -> Vec<Event> {
    let bytes = drain(from);
    to.receive(&bytes).expect("well-formed")
}

fn data_bytes(events: &[Event], stream: u32) -> usize {
    events
        .iter()
        .map(|e| match e {
            Event::Data { id, data } if *id == stream => data.len(),
            _ => 0,
        })
        .sum()
}

#[test]
fn open_send_close_round_trip() {
    let (mut a, mut b) = pair();
    let id = a.open_stream(Bytes::from_static(b"hello")).expect("open");
    assert_eq!(id, 1, "the dialer opens odd ids");
    a.send(id, Bytes::from_static(b"payload")).expect("send");
    a.close(id).expect("close");
    let events = pump(&mut a, &mut b);
    assert_eq!(
        events,
        vec![
            Event::Opened {
                id,
                headers: Bytes::from_static(b"hello")
            },
            Event::Data {
                id,
                data: Bytes::from_static(b"payload")
            },
            Event::Closed { id },
        ]
    );
    // The acceptor answers on the same stream and opens its own, with an even id.
    b.send(id, Bytes::from_static(b"answer"))
        .expect("send back");
    b.close(id).expect("close back");
    let theirs = b.open_stream(Bytes::new()).expect("open");
    assert_eq!(theirs, 2);
    let events = pump(&mut b, &mut a);
    assert!(events.contains(&Event::Data {
        id,
        data: Bytes::from_static(b"answer")
    }));
    assert!(events.contains(&Event::Closed { id }));
    // Both halves closed and everything consumed: the stream is gone on both sides.
    a.consumed(id, 6).expect("consume");
    b.consumed(id, 7).expect("consume");
    assert_eq!(a.stream_count(), 1);
    assert_eq!(b.stream_count(), 1);
}

#[test]
fn sender_stops_at_the_window_and_resumes_after_consumption() {
    let (mut a, mut b) = pair();
    let id = a.open_stream(Bytes::new()).expect("open");
    let total = STREAM_WINDOW as usize + 100_000;
    a.send(id, Bytes::from(vec![7u8; total])).expect("send");
    let events = pump(&mut a, &mut b);
    assert_eq!(data_bytes(&events, id), STREAM_WINDOW as usize);
    assert_eq!(a.queued(id), 100_000);
    assert_eq!(a.send_window(id), Some(0));
    assert!(
        drain(&mut a).is_empty(),
        "nothing more leaves until credit arrives"
    );

    // Consuming less than a quarter window grants nothing yet (credit goes out in batches).
    assert!(!b.consumed(id, 1000).expect("consume"));
    assert!(drain(&mut b).is_empty());
    assert!(b
        .consumed(id, STREAM_WINDOW as usize - 1000)
        .expect("consume"));
    let events = pump(&mut b, &mut a);
    assert_eq!(events, vec![Event::WindowOpened { id }]);
    let events = pump(&mut a, &mut b);
    assert_eq!(data_bytes(&events, id), 100_000);
    assert_eq!(a.queued(id), 0);
}

#[test]
fn a_stalled_stream_does_not_stop_the_others() {
    let (mut a, mut b) = pair();
    let slow = a.open_stream(Bytes::new()).expect("open");
    let fast = a.open_stream(Bytes::new()).expect("open");
    a.send(slow, Bytes::from(vec![1u8; 4 * STREAM_WINDOW as usize]))
        .expect("send");
    for _ in 0..20 {
        a.send(fast, Bytes::from(vec![2u8; 64 * 1024]))
            .expect("send");
        let events = pump(&mut a, &mut b);
        let got = data_bytes(&events, fast);
        assert_eq!(got, 64 * 1024, "the fast stream flows in every round");
        b.consumed(fast, got).expect("consume");
        pump(&mut b, &mut a);
    }
    assert_eq!(a.queued(slow), 3 * STREAM_WINDOW as usize);
}

#[test]
fn streams_take_turns() {
    let (mut a, mut b) = pair();
    let ids: Vec<u32> = (0..3)
        .map(|_| a.open_stream(Bytes::new()).expect("open"))
        .collect();
    for &id in &ids {
        a.send(id, Bytes::from(vec![0u8; 100_000])).expect("send");
    }
    // One small write: every stream got a share, in order, before any got a second turn.
    let mut out = BytesMut::new();
    a.outgoing(&mut out, 40_000);
    let events = b.receive(&out).expect("receive");
    let order: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::Data { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(order, ids);
}

#[test]
fn reset_drops_queued_data_and_reaches_the_peer() {
    let (mut a, mut b) = pair();
    let id = a.open_stream(Bytes::new()).expect("open");
    a.send(id, Bytes::from(vec![0u8; 2 * STREAM_WINDOW as usize]))
        .expect("send");
    pump(&mut a, &mut b);
    assert_eq!(a.buffered(), STREAM_WINDOW as usize);
    a.reset(id, 42).expect("reset");
    assert_eq!(a.buffered(), 0);
    let events = pump(&mut a, &mut b);
    assert_eq!(events, vec![Event::Reset { id, code: 42 }]);
    // Late frames for the reset stream are ignored, not errors; using it locally is.
    let err = a.send(id, Bytes::from_static(b"x")).expect_err("reset");
    assert_eq!(err.code(), ErrorCode::SessionStreamClosed);
    b.consumed(id, 10)
        .expect("consuming a reset stream's data is harmless");
}

#[test]
fn connection_credit_comes_back_for_data_of_reset_streams() {
    let (mut a, mut b) = pair();
    // Fill far more than the connection window through many streams, resetting each on the
    // receiving side without consuming: the sender must still get its connection credit.
    let mut delivered = 0usize;
    for _ in 0..100 {
        let id = a.open_stream(Bytes::new()).expect("open");
        a.send(id, Bytes::from(vec![0u8; STREAM_WINDOW as usize]))
            .expect("send");
        let events = pump(&mut a, &mut b);
        delivered += data_bytes(&events, id);
        b.reset(id, codes::CANCEL).expect("reset");
        pump(&mut b, &mut a);
    }
    assert_eq!(delivered, 100 * STREAM_WINDOW as usize);
    assert!(delivered > CONNECTION_WINDOW as usize);
}

#[test]
fn many_stalled_streams_cannot_freeze_the_others() {
    let (mut a, mut b) = pair();
    // 100 streams each fill their window and are never consumed: together they pin more than
    // the connection window. A stream opened after them must still flow both ways.
    for _ in 0..100 {
        let id = a.open_stream(Bytes::new()).expect("open");
        a.send(id, Bytes::from(vec![0u8; STREAM_WINDOW as usize]))
            .expect("send");
        let events = pump(&mut a, &mut b);
        assert_eq!(data_bytes(&events, id), STREAM_WINDOW as usize);
        pump(&mut b, &mut a);
    }
    const { assert!(100 * STREAM_WINDOW > CONNECTION_WINDOW) };
    let live = a.open_stream(Bytes::new()).expect("open");
    let mut got = 0usize;
    for _ in 0..8 {
        a.send(live, Bytes::from(vec![1u8; 64 * 1024]))
            .expect("send");
        let events = pump(&mut a, &mut b);
        let n = data_bytes(&events, live);
        got += n;
        b.consumed(live, n).expect("consume");
        pump(&mut b, &mut a);
    }
    assert_eq!(
        got,
        8 * 64 * 1024,
        "the live stream kept flowing past the stalled ones"
    );
}

#[test]
fn sending_beyond_the_window_is_a_protocol_error() {
    let (mut a, mut b) = pair();
    let id = a.open_stream(Bytes::new()).expect("open");
    pump(&mut a, &mut b);
    let mut wire = BytesMut::new();
    let payload = Bytes::from(vec![0u8; STREAM_WINDOW as usize + 1]);
    apothic_session::frame::Frame::new(apothic_session::frame::FrameType::Data, id, payload)
        .encode(&mut wire);
    let err = b.receive(&wire).expect_err("window exceeded");
    assert_eq!(err.code(), ErrorCode::SessionProtocol);
    assert!(err.to_string().contains("bytes of window"), "{err}");
    // The session is over, and says so; it sends a GOAWAY that explains.
    let after = b.receive(b"").expect_err("closed");
    assert_eq!(after.code(), ErrorCode::SessionClosed);
    let events = pump(&mut b, &mut a);
    assert!(matches!(
        events.last(),
        Some(Event::GoAway {
            code: codes::PROTOCOL,
            ..
        })
    ));
}

#[test]
fn protocol_violations_are_errors_with_a_code() {
    let (mut a, _) = pair();
    // A dialer receiving an OPEN for an odd (dialer-parity) id.
    let mut wire = BytesMut::new();
    apothic_session::frame::Frame::new(apothic_session::frame::FrameType::Open, 5, Bytes::new())
        .encode(&mut wire);
    let err = a.receive(&wire).expect_err("bad id");
    assert_eq!(err.code().as_str(), "session.protocol");

    let (_, mut b) = pair();
    let mut wire = BytesMut::new();
    apothic_session::frame::Frame::new(
        apothic_session::frame::FrameType::Data,
        9,
        Bytes::from_static(b"x"),
    )
    .encode(&mut wire);
    let err = b.receive(&wire).expect_err("never opened");
    assert!(err.to_string().contains("never opened"), "{err}");

    let (_, mut b) = pair();
    let err = b.receive(&[0xff; 10]).expect_err("garbage");
    assert_eq!(err.code(), ErrorCode::SessionProtocol);
}

#[test]
fn heartbeats_and_dead_peer_detection() {
    let config = SessionConfig {
        ping_interval_ms: 100,
        dead_timeout_ms: 300,
        ..SessionConfig::default()
    };
    let mut a = Session::new(Role::Dialer, config.clone()).expect("config");
    let mut b = Session::new(Role::Acceptor, config).expect("config");
    assert!(a.tick(0));
    assert!(b.tick(0));
    // Pings flow and are answered while both sides run.
    for now in (100..=1000).step_by(100) {
        assert!(a.tick(now));
        assert!(b.tick(now));
        pump(&mut a, &mut b);
        pump(&mut b, &mut a);
    }
    assert!(a.rtt_ms().is_some());
    // b goes silent. a saw b's last frames by its tick at 1100, and declares b dead once
    // the timeout has passed since then, not before.
    assert!(a.tick(1100));
    assert!(a.tick(1399));
    assert!(!a.tick(1400));
    assert!(!a.is_alive());
    assert_eq!(a.take_events(), vec![Event::Dead]);
    let err = a.open_stream(Bytes::new()).expect_err("dead");
    assert_eq!(err.code(), ErrorCode::SessionDead);
}

#[test]
fn go_away_refuses_new_streams_but_lets_old_ones_finish() {
    let (mut a, mut b) = pair();
    let early = a.open_stream(Bytes::new()).expect("open");
    pump(&mut a, &mut b);
    let late = a.open_stream(Bytes::new()).expect("open");
    b.go_away(codes::NO_ERROR);
    // b's GOAWAY crosses a's OPEN for `late`.
    let to_a = drain(&mut b);
    let to_b = drain(&mut a);
    let events = b.receive(&to_b).expect("receive");
    assert!(events.is_empty(), "b refuses the new stream: {events:?}");
    let events = a.receive(&to_a).expect("receive");
    assert_eq!(
        events,
        vec![
            Event::Reset {
                id: late,
                code: codes::REFUSED
            },
            Event::GoAway {
                last_id: early,
                code: codes::NO_ERROR
            },
        ]
    );
    assert!(matches!(
        a.open_stream(Bytes::new()),
        Err(SessionError::Closed { .. })
    ));
    a.send(early, Bytes::from_static(b"still fine"))
        .expect("send");
    a.close(early).expect("close");
    let events = pump(&mut a, &mut b);
    assert_eq!(data_bytes(&events, early), 10);
}

#[test]
fn buffer_and_stream_limits() {
    let config = SessionConfig {
        max_buffered_bytes: 1000,
        max_streams: 2,
        ..SessionConfig::default()
    };
    let mut a = Session::new(Role::Dialer, config).expect("config");
    let id = a.open_stream(Bytes::new()).expect("open");
    a.send(id, Bytes::from(vec![0u8; 900])).expect("send");
    let err = a.send(id, Bytes::from(vec![0u8; 200])).expect_err("full");
    assert_eq!(err.code(), ErrorCode::SessionBufferFull);
    a.open_stream(Bytes::new()).expect("second");
    let err = a.open_stream(Bytes::new()).expect_err("third");
    assert_eq!(err.code(), ErrorCode::SessionStreamLimit);
    assert!(Session::new(
        Role::Dialer,
        SessionConfig {
            dead_timeout_ms: 10,
            ping_interval_ms: 10,
            ..SessionConfig::default()
        }
    )
    .is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// However the transport splits the bytes, the receiver sees the same events.
    #[test]
    fn events_do_not_depend_on_how_the_bytes_are_split(
        sizes in proptest::collection::vec(0usize..50_000, 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let (mut a, mut b) = pair();
        for (i, size) in sizes.iter().enumerate() {
            let id = a.open_stream(Bytes::from(format!("s{i}"))).expect("open");
            a.send(id, Bytes::from(vec![i as u8; *size])).expect("send");
            a.close(id).expect("close");
        }
        let wire = drain(&mut a);
        let whole = Session::new(Role::Acceptor, SessionConfig::default())
            .expect("config")
            .receive(&wire)
            .expect("whole");
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        points.extend([0, wire.len()]);
        points.sort_unstable();
        let mut pieces = Vec::new();
        for w in points.windows(2) {
            pieces.extend(b.receive(&wire[w[0]..w[1]]).expect("piece"));
        }
        // Data may arrive in more chunks when split; compare per-stream bytes and markers.
        let summary = |events: &[Event]| {
            let mut s: Vec<(u32, String, Vec<u8>)> = Vec::new();
            for e in events {
                match e {
                    Event::Opened { id, headers } => s.push((*id, format!("open {headers:?}"), vec![])),
                    Event::Data { id, data } => {
                        if let Some(last) = s.iter_mut().rev().find(|x| x.0 == *id && x.1.starts_with("open")) {
                            last.2.extend_from_slice(data);
                        }
                    }
                    Event::Closed { id } => s.push((*id, "closed".into(), vec![])),
                    other => s.push((0, format!("{other:?}"), vec![])),
                }
            }
            s
        };
        prop_assert_eq!(summary(&pieces), summary(&whole));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_session(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (_, mut b) = pair();
        let _ = b.receive(&bytes);
        let _ = b.tick(0);
        let mut out = BytesMut::new();
        b.outgoing(&mut out, usize::MAX);
    }
}
