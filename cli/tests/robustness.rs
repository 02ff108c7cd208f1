//! Robustness of the server: a client that stops reading does not stall the host or the other
//! clients, and malformed or unexpected input gets a clear refusal while everything else keeps
//! working. Every cookie comes back exactly once.

mod glclient;
mod util;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use glclient::{display_channel, main_channel};
use gstspicedmabuf::Rect;
use spice_shim_core::proto::caps::display_cap;
use spice_shim_core::proto::consts::{channel_type, link_err};
use spice_shim_core::proto::{Caps, LinkMess};
use spice_shim_core::{Config, Shim};
use test_guest::{Guest, GuestBuffer, Pattern};
use util::{ChildGuard, TempDir};

/// Cookies returned by the shim, counted per cookie.
#[derive(Clone, Default)]
struct Returned(Arc<Mutex<BTreeMap<u64, u32>>>);

/// A host that draws at `fps` into a ring of three memfd buffers and only reuses a buffer after
/// its cookie came back.
struct Host {
    stop: Arc<AtomicBool>,
    drawn: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Host {
    fn start(shim: Arc<Shim>, done: mpsc::Receiver<u64>, w: u32, h: u32, fps: u32) -> Host {
        let stop = Arc::new(AtomicBool::new(false));
        let drawn = Arc::new(AtomicU64::new(0));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            let drawn = drawn.clone();
            move || {
                let mut guest = Guest::new(w, h, None, Pattern::Bars, 3).unwrap();
                let mut current = None;
                let mut cookie = 1u64;
                let period = Duration::from_secs(1) / fps;
                while !stop.load(Ordering::Relaxed) {
                    while let Ok(c) = done.try_recv() {
                        guest.release(c);
                    }
                    std::thread::sleep(period);
                    let Some(idx) = guest.next_free() else {
                        continue;
                    };
                    guest.render_into(idx, cookie).unwrap();
                    if current != Some(idx) {
                        let buf = guest.buffer(idx).unwrap();
                        let info = spice_shim_cli::guest::scanout_info(buf);
                        shim.gl_scanout(Some(info), vec![buf.dup_fd().unwrap()])
                            .unwrap();
                        current = Some(idx);
                    }
                    guest.mark_busy(idx, cookie).unwrap();
                    shim.gl_draw(Rect { x: 0, y: 0, w, h }, cookie);
                    drawn.fetch_add(1, Ordering::Relaxed);
                    cookie += 1;
                }
            }
        });
        Host {
            stop,
            drawn,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a shim on a free TCP port; cookies go to the returned channel and the counter.
fn start(config: Config) -> (Arc<Shim>, SocketAddr, mpsc::Receiver<u64>, Returned) {
    let (tx, rx) = mpsc::channel();
    let returned = Returned::default();
    let r = returned.clone();
    let tx = Mutex::new(tx);
    let shim = Shim::start(
        config,
        Box::new(move |c| {
            *r.0.lock().unwrap().entry(c).or_default() += 1;
            let _ = tx.lock().unwrap().send(c);
        }),
    )
    .expect("the shim starts");
    let addr = shim.tcp_addr().expect("a TCP address");
    (Arc::new(shim), addr, rx, returned)
}

fn config() -> Config {
    Config {
        tcp: Some("127.0.0.1:0".into()),
        ..Config::default()
    }
}

fn screenshot(addr: SocketAddr, dir: &TempDir, name: &str) -> test_guest::Image {
    let out = dir.join(name);
    let mut cmd = Command::new("timeout");
    cmd.args(["40", "spicy-screenshot", "-h", "127.0.0.1", "-p"])
        .arg(addr.port().to_string())
        .arg("-o")
        .arg(&out);
    // SIGTERM first on drop, so `timeout` passes it on to spicy-screenshot.
    let mut child = ChildGuard::spawn(name, cmd, dir).sigterm_on_drop(Duration::from_secs(3));
    let status = child
        .wait_timeout(Duration::from_secs(60))
        .expect("spicy-screenshot finished");
    assert!(
        status.success(),
        "spicy-screenshot failed: {}",
        child.logs()
    );
    test_guest::read_ppm(&out).expect("a PPM")
}

fn finish(shim: Arc<Shim>, returned: &Returned) -> spice_shim_core::ShimStats {
    let shim = Arc::try_unwrap(shim)
        .ok()
        .expect("the host let go of the shim");
    let stats = shim.shutdown();
    assert_eq!(stats.ledger.drawn, stats.ledger.returned, "{stats}");
    let map = returned.0.lock().unwrap();
    assert_eq!(map.len() as u64, stats.ledger.drawn, "{stats}");
    assert!(
        map.values().all(|&n| n == 1),
        "cookies returned more than once: {:?}",
        map.iter().filter(|(_, n)| **n != 1).collect::<Vec<_>>()
    );
    stats
}

fn remote_caps() -> Caps {
    Caps::from_bits(&[
        display_cap::MONITORS_CONFIG,
        display_cap::MULTI_CODEC,
        display_cap::CODEC_MJPEG,
        display_cap::CODEC_H264,
    ])
}

#[test]
fn a_client_that_stops_reading_stalls_nobody() {
    let dir = TempDir::new("slow-client");
    // Every frame a keyframe at a high bitrate: the stalled client's socket fills quickly.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../pipelines/h264.d/90-x264.pipeline"
    ))
    .unwrap()
    .replace("key-int-max=600", "key-int-max=1")
    .replace("bitrate=8000", "bitrate=60000");
    std::fs::write(dir.join("h264.pipeline"), text).unwrap();
    let (shim, addr, done, returned) = start(Config {
        pipelines_dir: dir.path().to_path_buf(),
        codecs: vec![spice_shim_core::proto::VideoCodec::H264],
        max_queued_frames: 4,
        ..config()
    });
    let (w, h) = (1280, 720);
    let mut host = Host::start(shim.clone(), done, w, h, 30);

    // The slow client: links main and display, then never reads again.
    let main = main_channel(TcpStream::connect(addr).unwrap()).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    rustix::net::sockopt::set_socket_recv_buffer_size(&sock, 4096).unwrap();
    let slow = display_channel(sock, main.session_id, remote_caps()).unwrap();

    // Wait until frames are being dropped for it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = shim.stats();
        let dropped = stats.clients.iter().map(|c| c.dropped).sum::<u64>();
        if dropped >= 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no frame dropped for the stalled client: {stats}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Rate control: the stalled client's overflows lowered the shared encoder's bitrate below
    // the 60000 kbit/s of the pipeline file.
    let lowered = util::poll(Duration::from_secs(30), || {
        let stats = shim.stats();
        stats
            .bitrates
            .iter()
            .find(|(c, k)| *c == spice_shim_core::proto::VideoCodec::H264 && *k < 60000)
            .map(|(_, k)| *k)
    });
    assert!(
        lowered.is_some(),
        "the h264 bitrate was not lowered: {:?}",
        shim.stats().bitrates
    );
    // The host is not held back: its cookies keep coming while the client is stalled.
    // (A host stalled by the client would never draw 10 more frames: it only reuses a buffer
    // after its cookie came back.)
    let before = host.drawn.load(Ordering::Relaxed);
    let progressed = util::poll(Duration::from_secs(60), || {
        (host.drawn.load(Ordering::Relaxed) >= before + 10).then_some(())
    });
    assert!(
        progressed.is_some(),
        "the host drew only {} frames after {before} while the client was stalled",
        host.drawn.load(Ordering::Relaxed) - before
    );

    // Another client still gets the picture.
    let img = screenshot(addr, &dir, "other.ppm");
    assert_eq!((img.width, img.height), (w, h));
    test_guest::check_bars(&img, 48).unwrap();

    host.stop();
    drop(slow);
    drop(main);
    let stats = finish(shim, &returned);
    let stalled = stats
        .clients
        .iter()
        .find(|c| c.dropped > 0)
        .unwrap_or_else(|| panic!("{stats}"));
    assert!(stalled.sent > 0, "{stats}");
    assert!(
        stats.clients.iter().any(|c| c.dropped == 0 && c.sent > 0),
        "the other client lost frames: {stats}"
    );
}

/// Sends raw bytes as a link and returns the server's 4-byte error code from its reply.
fn link_error(addr: SocketAddr, bytes: &[u8]) -> u32 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    assert!(reply.len() >= 20, "no link reply: {reply:?}");
    u32::from_le_bytes(reply[16..20].try_into().unwrap())
}

fn link_mess(connection_id: u32, channel: u8) -> Vec<u8> {
    LinkMess {
        connection_id,
        channel_type: channel,
        channel_id: 0,
        common_caps: glclient::client_common_caps(),
        channel_caps: Caps::default(),
    }
    .to_bytes()
}

#[test]
fn malformed_input_is_refused_and_others_keep_working() {
    let dir = TempDir::new("malformed");
    let (shim, addr, done, returned) = start(config());
    let mut host = Host::start(shim.clone(), done, 640, 480, 30);

    // Link stage: bad magic, oversized link message, unknown session, unknown channel.
    let mut garbage = b"GET / HTTP/1.1\r\n".to_vec();
    garbage.extend_from_slice(&[0u8; 32]);
    assert_eq!(link_error(addr, &garbage), link_err::INVALID_MAGIC);
    let mut big = link_mess(0, channel_type::MAIN);
    big[12..16].copy_from_slice(&9000u32.to_le_bytes());
    assert_eq!(link_error(addr, &big), link_err::INVALID_DATA);
    assert_eq!(
        link_error(addr, &link_mess(0x1234_5678, channel_type::DISPLAY)),
        link_err::BAD_CONNECTION_ID
    );
    let main = main_channel(TcpStream::connect(addr).unwrap()).unwrap();
    assert_eq!(
        link_error(addr, &link_mess(main.session_id, channel_type::USBREDIR)),
        link_err::CHANNEL_NOT_AVAILABLE
    );
    // A peer that stops in the middle of the link.
    {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&link_mess(0, channel_type::MAIN)[..10])
            .unwrap();
    }
    // A wrong ticket (garbage ciphertext) is refused with PERMISSION_DENIED.
    {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&link_mess(0, channel_type::MAIN)).unwrap();
        let mut hdr = [0u8; 16];
        s.read_exact(&mut hdr).unwrap();
        let size = u32::from_le_bytes(hdr[12..16].try_into().unwrap()) as usize;
        let mut body = vec![0u8; size];
        s.read_exact(&mut body).unwrap();
        s.write_all(&1u32.to_le_bytes()).unwrap();
        s.write_all(&[0x55u8; 128]).unwrap();
        let mut result = [0u8; 4];
        s.read_exact(&mut result).unwrap();
        assert_eq!(u32::from_le_bytes(result), link_err::PERMISSION_DENIED);
    }

    // After the link: a short STREAM_REPORT is logged and ignored, the channel goes on...
    let mut display = display_channel(
        TcpStream::connect(addr).unwrap(),
        main.session_id,
        remote_caps(),
    )
    .unwrap();
    display.chan.send(102, &[1, 2, 3]).unwrap();
    display.chan.send(999, &[0; 8]).unwrap();
    let mut got_stream_data = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !got_stream_data && Instant::now() < deadline {
        match display.chan.next_raw(Duration::from_secs(5)).unwrap() {
            glclient::Next::Msg((123, _)) => got_stream_data = true,
            glclient::Next::Msg(_) => {}
            other => panic!("display channel ended: {other:?}"),
        }
    }
    assert!(got_stream_data, "no STREAM_DATA after malformed messages");
    // ...but a message announcing 2 GiB breaks the framing: that channel alone is closed.
    display
        .chan
        .sock
        .write_all(&[102, 0, 0xff, 0xff, 0xff, 0x7f])
        .unwrap();
    assert!(
        display.chan.wait_closed(Duration::from_secs(20)).unwrap(),
        "the server kept a channel with broken framing"
    );

    // Everything else still works.
    let img = screenshot(addr, &dir, "after.ppm");
    assert_eq!((img.width, img.height), (640, 480));
    test_guest::check_bars(&img, 48).unwrap();

    host.stop();
    drop(main);
    finish(shim, &returned);
}

/// A client without MULTI_CODEC (older spice-gtk) is not disconnected, as upstream does: it gets
/// MJPEG, one baseline JPEG per frame, and its frames' cookies come back like any other.
#[test]
fn a_client_without_multi_codec_gets_mjpeg() {
    let (shim, addr, done, returned) = start(config());
    let mut host = Host::start(shim.clone(), done, 320, 240, 30);
    let main = main_channel(TcpStream::connect(addr).unwrap()).unwrap();
    let caps = Caps::from_bits(&[display_cap::MONITORS_CONFIG, display_cap::CODEC_MJPEG]);
    let mut display =
        display_channel(TcpStream::connect(addr).unwrap(), main.session_id, caps).unwrap();
    let mut codec = None;
    let mut jpeg = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(codec.is_some() && jpeg) && Instant::now() < deadline {
        match display.chan.next_raw(Duration::from_secs(5)).unwrap() {
            glclient::Next::Msg((122, body)) => codec = Some(body[9]),
            glclient::Next::Msg((123, body)) => {
                // id, mm_time, data_size, then a JPEG: SOI marker.
                assert!(
                    u32::from_le_bytes(body[4..8].try_into().unwrap()) != 0,
                    "mm_time 0"
                );
                jpeg = body.len() > 14 && body[12..14] == [0xff, 0xd8];
            }
            glclient::Next::Msg(_) => {}
            other => panic!("display channel ended: {other:?}"),
        }
    }
    assert_eq!(codec, Some(1), "STREAM_CREATE codec (1 = MJPEG)");
    assert!(jpeg, "no JPEG frame received");
    host.stop();
    drop(display);
    drop(main);
    let stats = finish(shim, &returned);
    assert!(
        stats
            .encoded
            .iter()
            .any(|(c, n)| *c == spice_shim_core::proto::VideoCodec::Mjpeg && *n > 0),
        "{stats}"
    );
}

/// A memfd of `w`x`h` XR24 colour bars that is not sealed against shrinking, and a second
/// handle to it (the host keeps one and may truncate it later).
fn unsealed_bars(w: u32, h: u32) -> (gstspicedmabuf::ScanoutInfo, OwnedFd, OwnedFd) {
    let mut bars = GuestBuffer::new(w, h).unwrap();
    test_guest::render(Pattern::Bars, 0, &mut bars);
    let info = spice_shim_cli::guest::scanout_info(&bars);
    let fd = rustix::fs::memfd_create(
        "unsealed",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )
    .unwrap();
    let pixels = bars.pixels();
    rustix::fs::ftruncate(&fd, pixels.len() as u64).unwrap();
    let mut at = 0;
    while at < pixels.len() {
        at += rustix::io::pwrite(&fd, &pixels[at..], at as u64).unwrap();
    }
    let keep = fd.try_clone().unwrap();
    (info, fd, keep)
}

/// Waits until every cookie in `cookies` came back; panics after `wait`.
fn wait_cookies(returned: &Returned, cookies: std::ops::RangeInclusive<u64>, wait: Duration) {
    let back = util::poll(wait, || {
        let map = returned.0.lock().unwrap();
        cookies.clone().all(|c| map.contains_key(&c)).then_some(())
    });
    assert!(
        back.is_some(),
        "cookies {cookies:?} not all back within {wait:?}: {:?}",
        returned.0.lock().unwrap()
    );
}

/// A host that hands over a memfd not sealed against shrinking gets an error (a reader of a
/// truncated mapping would die of SIGBUS), its draws complete at once, and clients keep
/// getting pictures from the valid scanouts before and after. A true dmabuf, the other kind
/// accepted, cannot be made on the machines these tests run on (no GPU, no udmabuf).
#[test]
fn an_unsealed_memfd_scanout_is_refused_and_clients_keep_their_picture() {
    let dir = TempDir::new("unsealed");
    let (shim, addr, _done, returned) = start(config());
    let (w, h) = (320, 240);
    let full = Rect { x: 0, y: 0, w, h };

    // A valid (sealed) scanout, drawn once.
    let mut bars = GuestBuffer::new(w, h).unwrap();
    test_guest::render(Pattern::Bars, 0, &mut bars);
    shim.gl_scanout(
        Some(spice_shim_cli::guest::scanout_info(&bars)),
        vec![bars.dup_fd().unwrap()],
    )
    .expect("a sealed memfd is accepted");
    shim.gl_draw(full, 1);

    // A remote client stays connected throughout and gets the stream.
    let main = main_channel(TcpStream::connect(addr).unwrap()).unwrap();
    let mut display = display_channel(
        TcpStream::connect(addr).unwrap(),
        main.session_id,
        remote_caps(),
    )
    .unwrap();
    let stream_data = |display: &mut glclient::Display<TcpStream>, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no STREAM_DATA {what}");
            match display.chan.next_raw(Duration::from_secs(5)).unwrap() {
                glclient::Next::Msg((123, _)) => return,
                glclient::Next::Msg(_) | glclient::Next::Quiet => {}
                glclient::Next::Closed => panic!("display channel closed {what}"),
            }
        }
    };
    stream_data(&mut display, "before the unsealed scanout");
    // The previous valid picture.
    let img = screenshot(addr, &dir, "before.ppm");
    assert_eq!((img.width, img.height), (w, h));
    test_guest::check_bars(&img, 48).unwrap();

    // The unsealed memfd: refused with FdKind, naming the seal.
    let (info, fd, keep) = unsealed_bars(w, h);
    let err = shim
        .gl_scanout(Some(info), vec![fd])
        .expect_err("an unsealed memfd is refused");
    assert!(
        matches!(&err, gstspicedmabuf::ScanoutError::FdKind { index: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("F_SEAL_SHRINK"), "{err}");
    // Its draws complete at once, each exactly once (checked by `finish`).
    for cookie in 2..=11 {
        shim.gl_draw(full, cookie);
    }
    wait_cookies(&returned, 1..=11, Duration::from_secs(2));
    // Truncating it now hurts nobody: the shim did not keep it.
    rustix::fs::ftruncate(&keep, 0).unwrap();
    shim.gl_draw(full, 12);
    wait_cookies(&returned, 12..=12, Duration::from_secs(2));

    // Nothing new comes while there is no usable scanout: read what was queued before.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "the stream never went quiet");
        match display.chan.next_raw(Duration::from_millis(500)).unwrap() {
            glclient::Next::Quiet => break,
            glclient::Next::Msg(_) => {}
            glclient::Next::Closed => panic!("display channel closed after the refusal"),
        }
    }

    // The next valid scanout: the connected client and a new one get its picture.
    let mut bars2 = GuestBuffer::new(w, h).unwrap();
    test_guest::render(Pattern::Bars, 1, &mut bars2);
    shim.gl_scanout(
        Some(spice_shim_cli::guest::scanout_info(&bars2)),
        vec![bars2.dup_fd().unwrap()],
    )
    .expect("a sealed memfd is accepted");
    shim.gl_draw(full, 13);
    stream_data(&mut display, "after the next valid scanout");
    let img = screenshot(addr, &dir, "after.ppm");
    assert_eq!((img.width, img.height), (w, h));
    test_guest::check_bars(&img, 48).unwrap();

    drop(display);
    drop(main);
    let stats = finish(shim, &returned);
    assert_eq!(stats.ledger.drawn, 13, "{stats}");
}
