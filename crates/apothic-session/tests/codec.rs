//! The frame codec: round trips, arbitrary splits of the byte stream, malformed input.

use apothic_session::frame::{Decoder, Frame, FrameType, HEADER_LEN, MAX_PAYLOAD};
use apothic_session::ProtocolError;
use apothic_types::ErrorCode;
use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

fn decode_all(decoder: &mut Decoder) -> Result<Vec<Frame>, ProtocolError> {
    let mut frames = Vec::new();
    while let Some(f) = decoder.next_frame()? {
        frames.push(f);
    }
    Ok(frames)
}

fn raw(kind: u8, flags: u8, id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(id);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.to_vec()
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let id = 1u32..=u32::MAX;
    prop_oneof![
        (id.clone(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(i, p)| Frame::new(
            FrameType::Open,
            i,
            p.into()
        )),
        // Large enough to cross the copy/slice threshold inside the decoder.
        (
            id.clone(),
            proptest::collection::vec(any::<u8>(), 0..40_000)
        )
            .prop_map(|(i, p)| Frame::new(FrameType::Data, i, p.into())),
        id.clone()
            .prop_map(|i| Frame::new(FrameType::Close, i, Bytes::new())),
        (id.clone(), any::<u32>()).prop_map(|(i, c)| Frame::new(
            FrameType::Reset,
            i,
            c.to_be_bytes().to_vec().into()
        )),
        (0u32..100, 1u32..=u32::MAX).prop_map(|(i, c)| Frame::new(
            FrameType::WindowUpdate,
            i,
            c.to_be_bytes().to_vec().into()
        )),
        any::<u64>().prop_map(|v| Frame::new(FrameType::Ping, 0, v.to_be_bytes().to_vec().into())),
        any::<u64>().prop_map(|v| Frame::new(FrameType::Pong, 0, v.to_be_bytes().to_vec().into())),
        any::<u64>().prop_map(|v| Frame::new(
            FrameType::GoAway,
            0,
            v.to_be_bytes().to_vec().into()
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn frames_survive_any_split_of_the_stream(
        frames in proptest::collection::vec(arb_frame(), 1..20),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..30),
    ) {
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        for pair in points.windows(2) {
            decoder.feed(&wire[pair[0]..pair[1]]);
            got.extend(decode_all(&mut decoder).expect("well-formed input"));
        }
        prop_assert_eq!(got, frames);
        prop_assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
        let mut decoder = Decoder::new();
        for c in chunks {
            decoder.feed(&c);
            if decode_all(&mut decoder).is_err() {
                // Once failed, the decoder stays failed.
                decoder.feed(&[0; 32]);
                prop_assert!(decoder.next_frame().is_err());
                break;
            }
        }
    }
}

#[test]
fn each_malformed_header_is_a_protocol_error() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (raw(0x09, 0, 1, b""), "unknown frame type 0x09"),
        (raw(2, 0x80, 1, b"x"), "unknown flags 0x80"),
        (raw(2, 0, 0, b"x"), "must name a stream"),
        (raw(6, 0, 3, &[0; 8]), "must not name a stream"),
        (
            raw(3, 0, 1, b"x"),
            "CLOSE frame has a 1-byte payload, expected 0",
        ),
        (
            raw(4, 0, 1, b"ab"),
            "RESET frame has a 2-byte payload, expected 4",
        ),
        (
            raw(6, 0, 0, &[0; 4]),
            "PING frame has a 4-byte payload, expected 8",
        ),
    ];
    for (bytes, message) in cases {
        let mut d = Decoder::new();
        d.feed(&bytes);
        let err = d.next_frame().expect_err(message);
        assert!(err.to_string().contains(message), "{err} vs {message}");
        let session_err = apothic_session::SessionError::from(err);
        assert_eq!(session_err.code(), ErrorCode::SessionProtocol);
        assert_eq!(session_err.code().as_str(), "session.protocol");
    }
}

#[test]
fn an_oversized_length_fails_at_the_header_without_waiting_for_the_payload() {
    let mut header = BytesMut::new();
    header.put_u8(2);
    header.put_u8(0);
    header.put_u32(1);
    header.put_u32(MAX_PAYLOAD + 1);
    let mut d = Decoder::new();
    d.feed(&header);
    assert_eq!(header.len(), HEADER_LEN);
    assert!(matches!(
        d.next_frame(),
        Err(ProtocolError::FrameTooLarge { .. })
    ));
}
