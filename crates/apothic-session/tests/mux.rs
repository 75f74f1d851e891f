//! The tokio driver over in-memory duplex pipes: backpressure, a slow stream among fast ones,
//! 1,000 concurrent streams, RESET, dead-peer detection, malformed input.
//! Timeouts here are generous upper bounds on a shared 2-core machine, never tight targets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apothic_session::{
    codes, Mux, MuxConfig, MuxStream, Role, SessionConfig, SessionError, STREAM_WINDOW,
};
use apothic_types::ErrorCode;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

const LONG: Duration = Duration::from_secs(30);

fn config() -> MuxConfig {
    MuxConfig::default()
}

fn pair(config: MuxConfig) -> (Mux, Mux) {
    let (x, y) = tokio::io::duplex(256 * 1024);
    (
        Mux::new(x, Role::Dialer, config.clone()).expect("dialer"),
        Mux::new(y, Role::Acceptor, config).expect("acceptor"),
    )
}

async fn read_to_end(stream: &MuxStream) -> Result<usize, SessionError> {
    let mut total = 0;
    while let Some(chunk) = stream.recv().await? {
        total += chunk.len();
    }
    Ok(total)
}

/// Sends until a send stays pending for a while; returns the bytes accepted by then.
async fn send_until_blocked(stream: &MuxStream, chunk: usize) -> usize {
    let mut accepted = 0;
    loop {
        let send = stream.send(Bytes::from(vec![0u8; chunk]));
        match timeout(Duration::from_millis(300), send).await {
            Ok(result) => {
                result.expect("send");
                accepted += chunk;
            }
            Err(_) => return accepted,
        }
        assert!(accepted < 64 * 1024 * 1024, "the sender never blocked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_both_ways() {
    let (a, b) = pair(config());
    let s = a.open(Bytes::from_static(b"hdr")).expect("open");
    s.send(Bytes::from_static(b"ping")).await.expect("send");
    let (t, headers) = timeout(LONG, b.accept())
        .await
        .expect("accept in time")
        .expect("accept");
    assert_eq!(&headers[..], b"hdr");
    assert_eq!(
        t.recv().await.expect("recv"),
        Some(Bytes::from_static(b"ping"))
    );
    t.send(Bytes::from_static(b"pong")).await.expect("send");
    t.close().expect("close");
    assert_eq!(
        s.recv().await.expect("recv"),
        Some(Bytes::from_static(b"pong"))
    );
    assert_eq!(s.recv().await.expect("eof"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_blocks_at_the_window_and_resumes_after_consumption() {
    let (a, b) = pair(MuxConfig {
        send_buffer: 0,
        ..config()
    });
    let s = a.open(Bytes::new()).expect("open");
    let (t, _) = b.accept_soon().await;
    let chunk = 4096;
    let accepted = send_until_blocked(&s, chunk).await;
    // The window lets STREAM_WINDOW bytes out; with no send buffer, one more chunk waits
    // queued before `send` blocks.
    assert!(
        accepted >= STREAM_WINDOW as usize && accepted <= STREAM_WINDOW as usize + 2 * chunk,
        "accepted {accepted}"
    );
    // Reading releases credit; the blocked sender resumes and finishes.
    let writer = tokio::spawn(async move {
        for _ in 0..100 {
            s.send(Bytes::from(vec![0u8; chunk])).await.expect("send");
        }
        s.close().expect("close");
        s
    });
    let got = timeout(LONG, read_to_end(&t))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(got, accepted + 100 * chunk);
    writer.await.expect("writer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_does_not_stall_a_hundred_others() {
    let (a, b) = pair(config());
    let a = Arc::new(a);
    // The slow stream: its reader accepts it and then never reads.
    let slow = Arc::new(a.open(Bytes::from_static(b"slow")).expect("open"));
    let slow_writer = {
        let slow = slow.clone();
        tokio::spawn(async move {
            for _ in 0..64 {
                slow.send(Bytes::from(vec![1u8; 64 * 1024]))
                    .await
                    .expect("send");
            }
        })
    };
    let per_stream = 512 * 1024; // twice a window each: they need credit to finish
    let mut fast_writers = Vec::new();
    for _ in 0..100 {
        let s = a.open(Bytes::from_static(b"fast")).expect("open");
        fast_writers.push(tokio::spawn(async move {
            for _ in 0..per_stream / 8192 {
                s.send(Bytes::from(vec![2u8; 8192])).await.expect("send");
            }
            s.close().expect("close");
            s
        }));
    }
    let mut slow_reader = None;
    let mut fast_readers = Vec::new();
    for _ in 0..101 {
        let (t, headers) = b.accept_soon().await;
        if &headers[..] == b"slow" {
            slow_reader = Some(t);
        } else {
            fast_readers.push(tokio::spawn(async move { read_to_end(&t).await }));
        }
    }
    for r in fast_readers {
        let got = timeout(LONG, r)
            .await
            .expect("fast stream finished")
            .expect("join");
        assert_eq!(got.expect("read"), per_stream);
    }
    for w in fast_writers {
        timeout(LONG, w)
            .await
            .expect("fast writer finished")
            .expect("join");
    }
    assert!(
        !slow_writer.is_finished(),
        "the slow stream's sender is held back by its window"
    );
    // Now read the slow stream: its sender completes.
    let t = slow_reader.expect("slow stream accepted");
    let reader = tokio::spawn(async move {
        let mut total = 0;
        while total < 64 * 64 * 1024 {
            total += t.recv().await.expect("recv").expect("data").len();
        }
        total
    });
    timeout(LONG, slow_writer)
        .await
        .expect("slow writer finished")
        .expect("join");
    assert_eq!(reader.await.expect("join"), 64 * 64 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_streams_on_one_session() {
    let (a, b) = pair(config());
    let n = 1000;
    let per_stream = 32 * 1024;
    let mut writers = Vec::new();
    for _ in 0..n {
        let s = a.open(Bytes::new()).expect("open");
        writers.push(tokio::spawn(async move {
            for _ in 0..per_stream / 1024 {
                s.send(Bytes::from(vec![3u8; 1024])).await.expect("send");
            }
            s.close().expect("close");
            let echoed = read_to_end(&s).await.expect("echo");
            assert_eq!(echoed, per_stream);
        }));
    }
    let server = tokio::spawn(async move {
        let mut handlers = Vec::new();
        for _ in 0..n {
            let (t, _) = b.accept_soon().await;
            handlers.push(tokio::spawn(async move {
                // Echo everything back, then close.
                while let Some(chunk) = t.recv().await.expect("recv") {
                    t.send(chunk).await.expect("echo");
                }
                t.close().expect("close");
            }));
        }
        for h in handlers {
            h.await.expect("handler");
        }
        b
    });
    for w in writers {
        timeout(LONG, w)
            .await
            .expect("stream finished")
            .expect("join");
    }
    let b = timeout(LONG, server).await.expect("server").expect("join");
    // Every finished stream is forgotten on both sides.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.stream_count(), 0);
    assert_eq!(b.stream_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_reaches_the_other_side_both_ways() {
    let (a, b) = pair(config());
    let s = a.open(Bytes::new()).expect("open");
    s.send(Bytes::from_static(b"x")).await.expect("send");
    let (t, _) = b.accept_soon().await;
    t.reset(77).expect("reset");
    let err = timeout(LONG, async {
        loop {
            match s.recv().await {
                Err(e) => return e,
                Ok(_) => continue,
            }
        }
    })
    .await
    .expect("reset arrives");
    assert_eq!(
        err,
        SessionError::StreamReset {
            id: s.id(),
            code: 77
        }
    );
    assert_eq!(err.code(), ErrorCode::SessionStreamReset);
    let err = s.send(Bytes::from_static(b"y")).await.expect_err("reset");
    assert_eq!(err.code(), ErrorCode::SessionStreamReset);
    // Dropping a stream that was never closed resets it for the peer (CANCEL).
    let s2 = a.open(Bytes::new()).expect("open");
    s2.send(Bytes::from_static(b"z")).await.expect("send");
    let (t2, _) = b.accept_soon().await;
    drop(s2);
    let err = timeout(LONG, async {
        loop {
            if let Err(e) = t2.recv().await {
                return e;
            }
        }
    })
    .await
    .expect("cancel arrives");
    assert!(
        matches!(
            err,
            SessionError::StreamReset {
                code: codes::CANCEL,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_is_declared_dead() {
    let cfg = MuxConfig {
        session: SessionConfig {
            ping_interval_ms: 50,
            dead_timeout_ms: 400,
            ..SessionConfig::default()
        },
        tick_interval: Duration::from_millis(20),
        ..config()
    };
    // The far end of the pipe is held open but nobody reads or writes it.
    let (x, _silent) = tokio::io::duplex(1024 * 1024);
    let a = Mux::new(x, Role::Dialer, cfg).expect("mux");
    let s = a.open(Bytes::new()).expect("open");
    let started = Instant::now();
    let reason = timeout(LONG, a.closed())
        .await
        .expect("declared dead in time");
    let elapsed = started.elapsed();
    assert_eq!(reason, SessionError::Dead { timeout_ms: 400 });
    assert_eq!(reason.code(), ErrorCode::SessionDead);
    assert!(elapsed >= Duration::from_millis(350), "{elapsed:?}");
    // Every stream learns it.
    let err = s.recv().await.expect_err("dead");
    assert_eq!(err.code(), ErrorCode::SessionDead);
    assert!(a.open(Bytes::new()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_idle_peer_is_not_declared_dead() {
    let cfg = MuxConfig {
        session: SessionConfig {
            ping_interval_ms: 50,
            dead_timeout_ms: 400,
            ..SessionConfig::default()
        },
        tick_interval: Duration::from_millis(20),
        ..config()
    };
    let (a, b) = pair(cfg);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!a.is_closed() && !b.is_closed());
    assert!(a.rtt_ms().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_a_protocol_error_not_a_panic() {
    let (x, mut raw) = tokio::io::duplex(64 * 1024);
    let a = Mux::new(x, Role::Acceptor, config()).expect("mux");
    // A DATA frame for a stream nobody opened.
    raw.write_all(&[2, 0, 0, 0, 0, 9, 0, 0, 0, 1, b'x'])
        .await
        .expect("write");
    let reason = timeout(LONG, a.closed()).await.expect("closed in time");
    assert_eq!(reason.code(), ErrorCode::SessionProtocol);
    assert!(reason.to_string().contains("never opened"), "{reason}");
    // It tells the peer why before it goes: a GOAWAY with the protocol-error code.
    let mut buf = [0u8; 18];
    tokio::io::AsyncReadExt::read_exact(&mut raw, &mut buf)
        .await
        .expect("goaway");
    assert_eq!(buf[0], 8, "GOAWAY");
    assert_eq!(&buf[14..18], &codes::PROTOCOL.to_be_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_away_lets_open_streams_finish() {
    let (a, b) = pair(config());
    let s = a.open(Bytes::new()).expect("open");
    let (t, _) = b.accept_soon().await;
    b.go_away(codes::NO_ERROR);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(a.open(Bytes::new()).is_err(), "no new streams after GOAWAY");
    s.send(Bytes::from_static(b"last words"))
        .await
        .expect("send");
    s.close().expect("close");
    assert_eq!(
        timeout(LONG, read_to_end(&t))
            .await
            .expect("in time")
            .expect("read"),
        10
    );
}

trait AcceptSoon {
    async fn accept_soon(&self) -> (MuxStream, Bytes);
}

impl AcceptSoon for Mux {
    async fn accept_soon(&self) -> (MuxStream, Bytes) {
        timeout(LONG, self.accept())
            .await
            .expect("accept in time")
            .expect("accept")
    }
}
