//! The multiplexer alone: frames/s of small DATA frames through `Mux` over an in-memory
//! duplex and over loopback TCP, and 1,000 concurrent streams on one session.
//!
//! Run with `cargo run --release -p apothic-session --example mux_bench [-- --frames N]
//! [--out PATH]`; writes JSON to bench/results/session.json and prints it.
//!
//! Every `send` of a 64-byte payload is one DATA frame on the wire (the session never merges
//! sends), and every `recv` returns one frame's payload, so frames counted at the receiver are
//! frames that crossed the multiplexer. Both ends run in this process on one tokio runtime.

use std::time::{Duration, Instant};

use apothic_session::{Mux, MuxConfig, MuxStream, Role};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

const PAYLOAD: usize = 64;
static ZEROS: [u8; PAYLOAD] = [0; PAYLOAD];

struct Args {
    frames: u64,
    streams_frames: u64,
    out: String,
}

fn args() -> Args {
    let mut a = Args {
        frames: 2_000_000,
        streams_frames: 1_000,
        out: concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../bench/results/session.json"
        )
        .into(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--frames" => a.frames = value.parse().expect("--frames takes a number"),
            "--streams-frames" => {
                a.streams_frames = value.parse().expect("--streams-frames takes a number")
            }
            "--out" => a.out = value.clone(),
            other => panic!("unknown option {other} (options: --frames, --streams-frames, --out)"),
        }
    }
    a
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let dialed = dialed.expect("connect");
    let accepted = accepted.expect("accept").0;
    dialed.set_nodelay(true).expect("nodelay");
    accepted.set_nodelay(true).expect("nodelay");
    (dialed, accepted)
}

fn muxes<T, U>(x: T, y: U) -> (Mux, Mux)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
    U: AsyncRead + AsyncWrite + Send + 'static,
{
    let config = MuxConfig::default();
    (
        Mux::new(x, Role::Dialer, config.clone()).expect("dialer"),
        Mux::new(y, Role::Acceptor, config).expect("acceptor"),
    )
}

async fn drain(t: MuxStream) -> (u64, u64) {
    let (mut frames, mut bytes) = (0u64, 0u64);
    while let Some(chunk) = t.recv().await.expect("recv") {
        frames += 1;
        bytes += chunk.len() as u64;
    }
    (frames, bytes)
}

/// `streams` streams each send `per_stream` 64-byte frames; returns (frames, seconds).
async fn run(a: &Mux, b: &Mux, streams: u64, per_stream: u64) -> (u64, f64, u64) {
    let start = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..streams {
        let s = a.open(Bytes::new()).expect("open");
        senders.push(tokio::spawn(async move {
            for _ in 0..per_stream {
                s.send(Bytes::from_static(&ZEROS)).await.expect("send");
            }
            s.close().expect("close");
            // Keep the handle until the data has left, so dropping it cannot reset anything.
            s
        }));
    }
    let mut receivers = Vec::new();
    for _ in 0..streams {
        let (t, _) = b.accept().await.expect("accept");
        receivers.push(tokio::spawn(drain(t)));
    }
    let (mut frames, mut bytes, mut completed) = (0u64, 0u64, 0u64);
    for r in receivers {
        let (f, b) = r.await.expect("receiver");
        frames += f;
        bytes += b;
        completed += u64::from(f == per_stream);
    }
    let seconds = start.elapsed().as_secs_f64();
    for s in senders {
        drop(s.await.expect("sender"));
    }
    assert_eq!(
        bytes,
        frames * PAYLOAD as u64,
        "every frame carried {PAYLOAD} bytes"
    );
    (frames, seconds, completed)
}

fn phase(name: &str, streams: u64, frames: u64, seconds: f64, completed: u64) -> String {
    let per_s = frames as f64 / seconds;
    eprintln!("{name:>28}: {streams:>5} streams, {frames:>9} frames in {seconds:.3} s = {per_s:>10.0} frames/s ({:.1} MB/s payload), {completed} streams completed",
        per_s * PAYLOAD as f64 / 1e6);
    format!(
        "\"{name}\": {{\"streams\": {streams}, \"frames\": {frames}, \"payload_bytes\": {PAYLOAD}, \"seconds\": {seconds:.4}, \"frames_per_s\": {per_s:.0}, \"payload_mb_per_s\": {:.2}, \"streams_completed\": {completed}}}",
        per_s * PAYLOAD as f64 / 1e6
    )
}

fn main() {
    let args = args();
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    let mut phases = Vec::new();
    rt.block_on(async {
        // Warm-up: allocator, page faults, thread start.
        let (x, y) = tokio::io::duplex(1 << 20);
        let (a, b) = muxes(x, y);
        run(&a, &b, 1, 100_000).await;

        let (x, y) = tokio::io::duplex(1 << 20);
        let (a, b) = muxes(x, y);
        let (f, s, c) = run(&a, &b, 1, args.frames).await;
        phases.push(phase("duplex_1_stream", 1, f, s, c));
        let (f, s, c) = run(&a, &b, 8, args.frames / 8).await;
        phases.push(phase("duplex_8_streams", 8, f, s, c));

        let (x, y) = tcp_pair().await;
        let (a, b) = muxes(x, y);
        let (f, s, c) = run(&a, &b, 1, args.frames).await;
        phases.push(phase("tcp_1_stream", 1, f, s, c));
        let (f, s, c) = run(&a, &b, 8, args.frames / 8).await;
        phases.push(phase("tcp_8_streams", 8, f, s, c));

        let (f, s, c) = run(&a, &b, 1000, args.streams_frames).await;
        phases.push(phase("tcp_1000_streams", 1000, f, s, c));
        let (x, y) = tokio::io::duplex(1 << 20);
        let (a2, b2) = muxes(x, y);
        let (f, s, c) = run(&a2, &b2, 1000, args.streams_frames).await;
        phases.push(phase("duplex_1000_streams", 1000, f, s, c));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            a.stream_count() + b.stream_count(),
            0,
            "finished streams are forgotten"
        );
    });
    let unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let json = format!(
        "{{\n  \"benchmark\": \"apothic-session mux\",\n  \"command\": \"cargo run --release -p apothic-session --example mux_bench\",\n  \"unix_time\": {unix_s},\n  \"cpus\": {},\n  \"tokio_worker_threads\": {threads},\n  \"floor_frames_per_s\": 500000,\n  \"floor_concurrent_streams\": 1000,\n  {}\n}}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        phases.join(",\n  ")
    );
    if let Some(dir) = std::path::Path::new(&args.out).parent() {
        std::fs::create_dir_all(dir).expect("results folder");
    }
    std::fs::write(&args.out, &json).expect("write results");
    print!("{json}");
}
