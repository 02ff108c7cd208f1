//! `spicedmabufsrc socket-path=…` under the real `gst-launch-1.0`, fed by the real
//! `spice-shim feed` or by a hand-written producer sending bad input.
//!
//! The plugin comes from the `libgstspicedmabuf.so` cargo built next to this test binary
//! (see `common::plugin_library`).

mod common;
mod util;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{gst_launch, report_numbers, spice_shim_bin};
use gst::prelude::*;
use gstspicedmabuf::wire::{self, DoneStatus, Message, PlaneLayout, error_code};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use test_guest::{ChannelOrder, GuestBuffer};
use util::{ChildGuard, TempDir};

/// Upper bound for anything that involves starting GStreamer (registry scan) or encoding.
const SLOW: Duration = Duration::from_secs(60);
/// Upper bound for one answer from the element.
const ANSWER: Duration = Duration::from_secs(10);

const XR24: u32 = u32::from_le_bytes(*b"XR24");

// ---------------------------------------------------------------------------------------------
// a) spice-shim feed → spicedmabufsrc → x264enc → mp4, decoded back
// ---------------------------------------------------------------------------------------------

/// Decodes an H.264 MP4 file and reads the frame counter stamped in every frame.
fn decode_counters(path: &Path) -> Vec<Option<u32>> {
    gst::init().expect("gst::init");
    let pipeline = gst::parse::launch(
        "filesrc name=src ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! \
         video/x-raw,format=RGB ! appsink name=sink sync=false",
    )
    .expect("decode pipeline")
    .downcast::<gst::Pipeline>()
    .expect("a pipeline");
    pipeline
        .by_name("src")
        .expect("filesrc")
        .set_property("location", path.to_str().expect("utf-8 path"));
    let sink = pipeline
        .by_name("sink")
        .expect("appsink")
        .downcast::<gst_app::AppSink>()
        .expect("an appsink");
    pipeline
        .set_state(gst::State::Playing)
        .expect("decode pipeline to PLAYING");

    let mut counters = Vec::new();
    let deadline = Instant::now() + SLOW;
    loop {
        assert!(
            Instant::now() < deadline,
            "decoding {} timed out",
            path.display()
        );
        if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(200)) {
            let caps = sample.caps().expect("sample caps");
            let info = gst_video::VideoInfo::from_caps(caps).expect("video caps");
            let buffer = sample.buffer().expect("sample buffer");
            let map = buffer.map_readable().expect("readable buffer");
            let meta = buffer.meta::<gst_video::VideoMeta>();
            let (offset, stride) = match meta {
                Some(m) => (m.offset()[0], m.stride()[0]),
                None => (info.offset()[0], info.stride()[0]),
            };
            counters.push(test_guest::read_counter(
                &map[offset..],
                info.width(),
                info.height(),
                stride as u32,
                3,
                ChannelOrder::Rgb,
            ));
            continue;
        }
        if sink.is_eos() {
            break;
        }
        let bus = pipeline.bus().expect("bus");
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            let _ = pipeline.set_state(gst::State::Null);
            panic!("decoding {} failed: {msg:?}", path.display());
        }
    }
    pipeline
        .set_state(gst::State::Null)
        .expect("decode pipeline to NULL");
    counters
}

#[test]
fn feed_to_gst_launch_h264_mp4() {
    let dir = TempDir::new("mp4");
    let socket = dir.join("src.sock");
    let out = dir.join("out.mp4");
    let socket_arg = format!("socket-path={}", socket.display());
    let out_arg = format!("location={}", out.display());

    let mut gst = ChildGuard::spawn(
        "gst-launch",
        gst_launch(
            &dir,
            &[
                "-e",
                "spicedmabufsrc",
                &socket_arg,
                "num-buffers=60",
                "!",
                "videoconvert",
                "!",
                "video/x-raw,format=I420",
                "!",
                "x264enc",
                "tune=zerolatency",
                "speed-preset=ultrafast",
                "!",
                "h264parse",
                "!",
                "mp4mux",
                "!",
                "filesink",
                &out_arg,
            ],
        ),
        &dir,
    );
    // The feed starts without waiting for the socket: it retries until the element listens.
    let mut feed_cmd = Command::new(spice_shim_bin());
    feed_cmd.args([
        "feed",
        "--socket",
        socket.to_str().unwrap(),
        "--size",
        "320x240",
        "--fps",
        "60",
        "--frames",
        "200",
        "--pattern",
        "counter",
    ]);
    let mut feed = ChildGuard::spawn("feed", feed_cmd, &dir);

    gst.expect_success(SLOW);
    // The element is gone: the feed stops, counting the draws still out as unanswered.
    feed.expect_success(Duration::from_secs(30));

    let stderr = feed.stderr();
    assert!(
        stderr.contains(&format!(
            "feed: 320x240 pattern counter at 60 fps to {}",
            socket.display()
        )),
        "no startup line\n{}",
        feed.logs()
    );
    let report_line = feed
        .stdout()
        .lines()
        .find(|l| l.starts_with("feed: "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no report line\n{}", feed.logs()));
    let n = report_numbers(&report_line);
    let get = |k: &str| {
        *n.get(k)
            .unwrap_or_else(|| panic!("no {k:?} in report {report_line:?}"))
    };
    assert!(get("released") > 0, "{report_line}");
    assert_eq!(get("protocol"), 0, "{report_line}\n{}", feed.logs());
    assert_eq!(get("refused"), 0, "{report_line}");
    assert_eq!(get("element"), 0, "{report_line}\n{}", feed.logs());
    assert_eq!(
        get("released") + get("dropped") + get("refused") + get("unanswered"),
        get("draws"),
        "every draw is answered once or counted as unanswered: {report_line}"
    );
    // num-buffers=60: the element pushed 60 frames, each released once the encoder let go.
    assert!(get("released") >= 60, "{report_line}");

    let counters = decode_counters(&out);
    assert_eq!(
        counters.len(),
        60,
        "decoded frame count (counters {counters:?})"
    );
    let values: Vec<u32> = counters
        .iter()
        .enumerate()
        .map(|(i, c)| c.unwrap_or_else(|| panic!("frame {i}: no counter ({counters:?})")))
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] < w[1]),
        "counters not strictly increasing: {values:?}"
    );
    assert!(
        *values.last().unwrap() < 200,
        "counter beyond the frames drawn: {values:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// b) malformed input from a hand-written producer
// ---------------------------------------------------------------------------------------------

/// A producer connection to the element.
struct Producer {
    fd: OwnedFd,
    buf: Box<[u8; wire::MAX_PACKET]>,
}

enum Received {
    Msg(Message),
    Eof,
    Timeout,
}

impl Producer {
    /// Connects, retrying while the element is not listening yet (gst-launch still starting).
    fn connect(path: &Path, gst: &mut ChildGuard) -> Self {
        let addr = SocketAddrUnix::new(path).expect("socket address");
        let deadline = Instant::now() + SLOW;
        loop {
            let fd = rustix::net::socket_with(
                AddressFamily::UNIX,
                SocketType::SEQPACKET,
                SocketFlags::CLOEXEC,
                None,
            )
            .expect("socket");
            match rustix::net::connect(&fd, &addr) {
                Ok(()) => {
                    return Self {
                        fd,
                        buf: Box::new([0; wire::MAX_PACKET]),
                    };
                }
                Err(Errno::NOENT | Errno::CONNREFUSED | Errno::INTR) => {}
                Err(e) => panic!("connect to {}: {e}", path.display()),
            }
            gst.assert_running("before listening");
            assert!(
                Instant::now() < deadline,
                "the element did not listen on {} within {SLOW:?}\n{}",
                path.display(),
                gst.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn send_raw(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
        wire::send_packet(self.fd.as_fd(), bytes, fds).expect("send a packet");
    }

    fn send(&self, msg: &Message, fds: &[BorrowedFd<'_>]) {
        wire::send_message(self.fd.as_fd(), msg, fds).expect("send a message");
    }

    /// One message, end of stream, or nothing within `timeout`.
    fn recv(&mut self, timeout: Duration) -> Received {
        let ts = Timespec::try_from(timeout).expect("timeout");
        let mut pfd = [PollFd::new(&self.fd, PollFlags::IN)];
        match rustix::event::poll(&mut pfd, Some(&ts)) {
            Ok(0) => return Received::Timeout,
            Ok(_) => {}
            Err(e) => panic!("poll: {e}"),
        }
        match wire::recv_message(self.fd.as_fd(), &mut self.buf) {
            Ok(Some((msg, fds))) => {
                assert!(fds.is_empty(), "the element sent fds with {msg:?}");
                Received::Msg(msg)
            }
            Ok(None) => Received::Eof,
            Err(e) => panic!("the element sent a bad packet: {e}"),
        }
    }

    /// The next `n` messages; panics on end of stream or timeout.
    fn expect_messages(&mut self, n: usize, what: &str) -> Vec<Message> {
        (0..n)
            .map(|i| match self.recv(ANSWER) {
                Received::Msg(m) => m,
                Received::Eof => panic!("{what}: connection closed after {i} of {n} answers"),
                Received::Timeout => panic!("{what}: only {i} of {n} answers within {ANSWER:?}"),
            })
            .collect()
    }

    /// Expects exactly one ERROR with `code` whose text contains `needle`; returns the text.
    fn expect_error(&mut self, code: u32, needle: &str, what: &str) -> String {
        match self.expect_messages(1, what).remove(0) {
            Message::Error { code: c, text } => {
                assert_eq!(c, code, "{what}: error code (text {text:?})");
                assert!(
                    text.contains(needle),
                    "{what}: error text {text:?} does not contain {needle:?}"
                );
                text
            }
            other => panic!("{what}: expected ERROR, got {other:?}"),
        }
    }

    /// Expects the DONE of `draw_id` with `status` and, for a refused draw, an ERROR
    /// DRAW_REFUSED containing `needle`, in either order.
    fn expect_done(&mut self, draw_id: u64, status: DoneStatus, needle: Option<&str>, what: &str) {
        let mut got = Vec::new();
        let (mut done, mut error) = (false, needle.is_none());
        while !(done && error) {
            let msg = match self.recv(ANSWER) {
                Received::Msg(m) => m,
                Received::Eof => panic!("{what}: connection closed; got {got:?}"),
                Received::Timeout => panic!(
                    "{what}: expected DONE {draw_id} {status}{} within {ANSWER:?}; got {got:?}",
                    needle
                        .map(|n| format!(" and ERROR {n:?}"))
                        .unwrap_or_default()
                ),
            };
            match &msg {
                Message::Done {
                    draw_id: id,
                    status: s,
                } if *id == draw_id && !done => {
                    assert_eq!(*s, status, "{what}: status of DONE {draw_id}; got {got:?}");
                    done = true;
                }
                Message::Error { code, text } if !error => {
                    assert_eq!(*code, error_code::DRAW_REFUSED, "{what}: {text:?}");
                    assert!(
                        text.contains(needle.unwrap_or_default()),
                        "{what}: error text {text:?} does not contain {needle:?}"
                    );
                    error = true;
                }
                other => panic!("{what}: unexpected {other:?} (after {got:?})"),
            }
            got.push(msg);
        }
    }

    /// Nothing more arrives for a while (no second DONE, no stray ERROR).
    fn expect_silence(&mut self, what: &str) {
        match self.recv(Duration::from_millis(300)) {
            Received::Timeout => {}
            Received::Msg(m) => panic!("{what}: unexpected {m:?}"),
            Received::Eof => panic!("{what}: connection closed"),
        }
    }

    /// The element closes the connection (after a fatal error).
    fn expect_eof(&mut self, what: &str) {
        match self.recv(ANSWER) {
            Received::Eof => {}
            Received::Msg(m) => panic!("{what}: expected the connection to close, got {m:?}"),
            Received::Timeout => panic!("{what}: the connection stayed open"),
        }
    }
}

fn scanout_of(buf: &GuestBuffer, fourcc: u32, modifier: u64) -> Message {
    Message::Scanout {
        width: buf.width(),
        height: buf.height(),
        fourcc,
        y0_top: true,
        modifier,
        planes: vec![PlaneLayout {
            offset: buf.offset(),
            stride: buf.stride(),
        }],
    }
}

fn draw(x: u32, y: u32, w: u32, h: u32, draw_id: u64) -> Message {
    Message::Draw {
        x,
        y,
        w,
        h,
        draw_id,
    }
}

/// Sends `bytes` with `fds` attached without the checks of `wire::send_packet` (which refuses
/// to send more than the protocol allows).
fn send_unchecked(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::mem::MaybeUninit;
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    }
    let sent = rustix::net::sendmsg(
        sock,
        &[std::io::IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .expect("sendmsg");
    assert_eq!(sent, bytes.len());
}

#[test]
fn malformed_input_is_answered_and_the_element_keeps_serving() {
    let dir = TempDir::new("bad");
    let socket = dir.join("src.sock");
    // Without a last sample kept, fakesink frees each frame at once, so each valid draw gets
    // its DONE RELEASED right away.
    let mut gst = launch_to_fakesink(&dir, &socket, &["enable-last-sample=false"]);

    let small = GuestBuffer::new(64, 48).expect("memfd");

    // --- Connection 1: garbage. Too short for a header: answered, the connection goes on.
    // Longer garbage fails on the magic, which is fatal: ERROR, then the element hangs up.
    let mut p = Producer::connect(&socket, &mut gst);
    p.send_raw(b"junk!", &[]);
    p.expect_error(
        error_code::MALFORMED,
        "shorter than the 8-byte header",
        "5 garbage bytes",
    );
    let garbage: Vec<u8> = (0..100u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    p.send_raw(&garbage, &[]);
    p.expect_error(error_code::MALFORMED, "bad magic", "100 garbage bytes");
    p.expect_eof("after a bad magic");
    drop(p);
    gst.assert_running("after garbage");

    // --- Connection 2: a well-formed header with the wrong magic, then the wrong version.
    let mut p = Producer::connect(&socket, &mut gst);
    let mut bad_magic = wire::encode(&draw(0, 0, 1, 1, 1));
    bad_magic[3] = b'C';
    p.send_raw(&bad_magic, &[]);
    let text = p.expect_error(error_code::MALFORMED, "bad magic", "magic SDMC");
    assert!(text.contains("0x53444d43"), "{text}");
    p.expect_eof("after a bad magic");
    drop(p);
    let mut p = Producer::connect(&socket, &mut gst);
    let mut bad_version = wire::encode(&draw(0, 0, 1, 1, 1));
    bad_version[4] = 2;
    p.send_raw(&bad_version, &[]);
    p.expect_error(
        error_code::MALFORMED,
        "unsupported protocol version 2",
        "version 2",
    );
    p.expect_eof("after a bad version");
    drop(p);
    gst.assert_running("after a bad magic and a bad version");

    // --- Connection 3: every non-fatal mistake, one after the other, on one connection.
    let mut p = Producer::connect(&socket, &mut gst);
    p.send(&Message::hello("socket_mode test"), &[]);

    let scanout = wire::encode(&scanout_of(&small, XR24, wire::MOD_LINEAR));
    p.send_raw(&scanout[..wire::HEADER_LEN + 10], &[]);
    p.expect_error(
        error_code::MALFORMED,
        "SCANOUT: body is 10 bytes, expected at least 28",
        "truncated SCANOUT",
    );
    let draw_bytes = wire::encode(&draw(0, 0, 8, 8, 99));
    p.send_raw(&draw_bytes[..wire::HEADER_LEN + 12], &[]);
    p.expect_error(
        error_code::MALFORMED,
        "DRAW: body is 12 bytes, expected 24",
        "truncated DRAW (no DONE for it)",
    );
    let mut unknown_type = wire::encode(&draw(0, 0, 8, 8, 98));
    unknown_type[6] = 9;
    p.send_raw(&unknown_type, &[]);
    p.expect_error(error_code::MALFORMED, "unknown message type 9", "type 9");
    p.send_raw(&scanout, &[]);
    p.expect_error(
        error_code::MALFORMED,
        "1 plane declared but 0 fds attached",
        "SCANOUT without its fd",
    );
    p.send_raw(&draw_bytes, &[small.fd()]);
    p.expect_error(
        error_code::MALFORMED,
        "DRAW: 1 fd attached, expected none",
        "DRAW with an fd",
    );
    let too_long = vec![0x5a; wire::MAX_PACKET + 100];
    send_unchecked(p.fd.as_fd(), &too_long, &[]);
    p.expect_error(
        error_code::MALFORMED,
        "longer than the 4096-byte maximum",
        "packet over 4096 bytes",
    );
    let five = [small.fd(); 5];
    send_unchecked(p.fd.as_fd(), &scanout, &five);
    p.expect_error(
        error_code::MALFORMED,
        "more than 4 fds",
        "5 fds on one packet",
    );
    p.send(
        &Message::Done {
            draw_id: 1,
            status: DoneStatus::Released,
        },
        &[],
    );
    p.expect_error(
        error_code::MALFORMED,
        "unexpected message",
        "DONE from the producer",
    );

    // A DRAW before any scanout.
    p.send(&draw(0, 0, 64, 48, 1), &[]);
    p.expect_done(
        1,
        DoneStatus::Refused,
        Some("no scanout"),
        "DRAW before any scanout",
    );

    // Well-formed SCANOUTs the element cannot use; each leaves it without a scanout.
    let y8 = u32::from_le_bytes(*b"Y8  ");
    p.send(&scanout_of(&small, y8, wire::MOD_LINEAR), &[small.fd()]);
    let text = p.expect_error(
        error_code::BAD_SCANOUT,
        "unknown DRM fourcc",
        "SCANOUT with fourcc Y8",
    );
    assert!(text.contains("0x20203859"), "{text}");
    p.send(&draw(0, 0, 64, 48, 2), &[]);
    p.expect_done(
        2,
        DoneStatus::Refused,
        Some("no scanout"),
        "DRAW after a bad fourcc",
    );

    let too_big = Message::Scanout {
        width: 320,
        height: 240,
        fourcc: XR24,
        y0_top: true,
        modifier: wire::MOD_LINEAR,
        planes: vec![PlaneLayout {
            offset: 0,
            stride: 320 * 4,
        }],
    };
    p.send(&too_big, &[small.fd()]);
    let text = p.expect_error(
        error_code::BAD_SCANOUT,
        "fd is",
        "SCANOUT larger than its fd",
    );
    assert!(
        text.contains(&small.size().to_string()),
        "the text names the fd size: {text}"
    );

    p.send(
        &scanout_of(&small, XR24, 0x0100_0000_0000_0001),
        &[small.fd()],
    );
    p.expect_error(error_code::BAD_SCANOUT, "not linear", "tiled modifier");

    // A usable scanout, then a DRAW that does not fit in it.
    p.send(&scanout_of(&small, XR24, wire::MOD_LINEAR), &[small.fd()]);
    p.send(&draw(60, 0, 10, 10, 3), &[]);
    p.expect_done(
        3,
        DoneStatus::Refused,
        Some("outside"),
        "DRAW outside the scanout",
    );
    p.expect_silence("after the refused draws");
    gst.assert_running("after malformed messages");
    drop(p);

    // --- Connection 4: a second producer is served normally.
    let guest = rendered_guest();
    let buf = guest.buffer(0).expect("buffer 0");
    let mut p = Producer::connect(&socket, &mut gst);
    p.send(&scanout_of(buf, XR24, wire::MOD_LINEAR), &[buf.fd()]);
    p.send(&draw(0, 0, 64, 48, 10), &[]);
    p.expect_done(
        10,
        DoneStatus::Released,
        None,
        "valid draw of a new producer",
    );
    p.send(&draw(8, 8, 16, 16, 11), &[]);
    p.expect_done(11, DoneStatus::Released, None, "second valid draw");
    p.expect_silence("after the valid draws");
    gst.assert_running("after a valid producer");
    drop(p);
    gst.kill();
}

/// A 64x48 guest with one buffer holding frame 0 of the bars.
fn rendered_guest() -> test_guest::Guest {
    let mut guest =
        test_guest::Guest::new(64, 48, None, test_guest::Pattern::Bars, 1).expect("guest buffer");
    guest.render_into(0, 0).expect("render");
    guest
}

/// `gst-launch-1.0 spicedmabufsrc socket-path=S ! fakesink [args]`.
fn launch_to_fakesink(dir: &TempDir, socket: &Path, sink_args: &[&str]) -> ChildGuard {
    let socket_arg = format!("socket-path={}", socket.display());
    let mut args = vec!["spicedmabufsrc", &socket_arg, "!", "fakesink"];
    args.extend_from_slice(sink_args);
    ChildGuard::spawn("gst-launch", gst_launch(dir, &args), dir)
}

/// docs/socket-protocol.md §1: "A new connection starts with no scanout; nothing carries over
/// from a previous producer."
#[test]
fn new_producer_starts_without_a_scanout() {
    let dir = TempDir::new("fresh");
    let socket = dir.join("src.sock");
    let mut gst = launch_to_fakesink(&dir, &socket, &["enable-last-sample=false"]);
    let guest = rendered_guest();
    let buf = guest.buffer(0).expect("buffer 0");

    let mut p = Producer::connect(&socket, &mut gst);
    p.send(&scanout_of(buf, XR24, wire::MOD_LINEAR), &[buf.fd()]);
    p.send(&draw(0, 0, 64, 48, 1), &[]);
    p.expect_done(1, DoneStatus::Released, None, "first producer's draw");
    drop(p);

    let mut p = Producer::connect(&socket, &mut gst);
    p.send(&draw(0, 0, 64, 48, 2), &[]);
    p.expect_done(
        2,
        DoneStatus::Refused,
        Some("no scanout"),
        "second producer's DRAW before its first SCANOUT",
    );
    gst.assert_running("at the end");
}

/// A producer that leaves while the pipeline still holds its last frame (fakesink keeps the
/// last buffer by default) must not keep the element from serving the next producer: that
/// frame is only freed when a newer one reaches the sink.
#[test]
fn producer_leaving_with_a_frame_held_does_not_block_the_next() {
    let dir = TempDir::new("held");
    let socket = dir.join("src.sock");
    let mut gst = launch_to_fakesink(&dir, &socket, &[]);
    let guest = rendered_guest();
    let buf = guest.buffer(0).expect("buffer 0");

    let mut p = Producer::connect(&socket, &mut gst);
    p.send(&scanout_of(buf, XR24, wire::MOD_LINEAR), &[buf.fd()]);
    p.send(&draw(0, 0, 64, 48, 1), &[]);
    // The frame goes to fakesink, which keeps it as its last sample: no DONE yet.
    p.expect_silence("while fakesink holds the only frame");
    drop(p);

    let mut p = Producer::connect(&socket, &mut gst);
    p.send(&scanout_of(buf, XR24, wire::MOD_LINEAR), &[buf.fd()]);
    p.send(&draw(60, 0, 10, 10, 2), &[]);
    p.expect_done(
        2,
        DoneStatus::Refused,
        Some("outside"),
        "second producer served while the first one's frame is held",
    );
    p.send(&draw(0, 0, 64, 48, 3), &[]);
    p.expect_silence("while fakesink holds the frame of draw 3");
    p.send(&draw(0, 0, 64, 48, 4), &[]);
    // Frame 4 replaces frame 3 as fakesink's last sample.
    p.expect_done(
        3,
        DoneStatus::Released,
        None,
        "draw 3 once frame 4 replaced it",
    );
    gst.assert_running("at the end");
}

// ---------------------------------------------------------------------------------------------
// c) a producer that never reads its replies
// ---------------------------------------------------------------------------------------------

/// `VmRSS` of process `pid` in KiB.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Threads of process `pid` named `name` (as `/proc/PID/task/*/comm` shows it: at most 15
/// bytes).
fn threads_named(pid: u32, name: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// The element's reply writer thread, one per producer whose draws are not all released.
const REPLY_THREAD: &str = "sdmbsrc-replies";

/// Waits until no reply writer thread is left in gst-launch (every producer gone and its
/// draws released).
fn wait_for_no_reply_writer(gst: &mut ChildGuard, what: &str) {
    let pid = gst.id();
    let gone = util::poll(ANSWER, || {
        (threads_named(pid, REPLY_THREAD) == 0).then_some(())
    });
    assert!(
        gone.is_some(),
        "{what}: {} reply writer thread(s) still running in gst-launch\n{}",
        threads_named(pid, REPLY_THREAD),
        gst.logs()
    );
}

/// Before, a producer that sent malformed packets and never read the ERROR answers grew the
/// element's reply queue without bound (gst-launch went from 17 to 37 MB after 200,000
/// packets). The queue is bounded now (1024 replies, `MAX_QUEUED_REPLIES` in
/// element/src/socket.rs): past it, the producer is disconnected with one warning, and the
/// element serves the next producer.
#[test]
fn a_producer_that_never_reads_its_replies_is_disconnected() {
    /// Floods, one producer each.
    const FLOODS: usize = 8;
    /// A producer still connected after this many packets was not cut off. The bound is
    /// reached after about 1,300 (1024 queued replies, plus what fits in the socket buffers).
    const MAX_PACKETS: usize = 100_000;
    const DISCONNECTED: &str = "producer does not read its replies";

    let dir = TempDir::new("flood");
    let socket = dir.join("src.sock");
    let socket_arg = format!("socket-path={}", socket.display());
    let mut cmd = gst_launch(
        &dir,
        &[
            "spicedmabufsrc",
            &socket_arg,
            "!",
            "fakesink",
            "enable-last-sample=false",
        ],
    );
    // Warnings only: one per malformed packet and the one line per disconnection.
    cmd.env("GST_DEBUG", "*:1,spicedmabufsrc:2")
        .env("GST_DEBUG_NO_COLOR", "1");
    let mut gst = ChildGuard::spawn("gst-launch", cmd, &dir);
    let pid = gst.id();

    // Warm-up: one frame goes through, so what GStreamer allocates for a stream is counted in
    // the starting figure.
    let guest = rendered_guest();
    let buf = guest.buffer(0).expect("buffer 0");
    let mut p = Producer::connect(&socket, &mut gst);
    p.send(&scanout_of(buf, XR24, wire::MOD_LINEAR), &[buf.fd()]);
    p.send(&draw(0, 0, 64, 48, 1), &[]);
    p.expect_done(1, DoneStatus::Released, None, "warm-up draw");
    drop(p);
    wait_for_no_reply_writer(&mut gst, "after the warm-up");
    let start_kib = vm_rss_kib(pid);

    let mut total = 0;
    for flood in 1..=FLOODS {
        let mut p = Producer::connect(&socket, &mut gst);
        // If the element stopped reading, the producer's send would block: fail instead.
        rustix::net::sockopt::set_socket_timeout(
            &p.fd,
            rustix::net::sockopt::Timeout::Send,
            Some(ANSWER),
        )
        .expect("SO_SNDTIMEO");
        let mut sent = 0usize;
        let err = loop {
            // 5 bytes: shorter than the header, answered with ERROR MALFORMED, not fatal.
            match wire::send_packet(p.fd.as_fd(), b"junk!", &[]) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(
                sent < MAX_PACKETS,
                "flood {flood}: still connected after {sent} malformed packets whose replies \
                 were never read (gst-launch RSS {} KiB, {start_kib} KiB at the start)",
                vm_rss_kib(pid)
            );
        };
        let errno = err.raw_os_error();
        assert!(
            errno == Some(Errno::PIPE.raw_os_error())
                || errno == Some(Errno::CONNRESET.raw_os_error()),
            "flood {flood}: the send failed with {err} after {sent} packets, not because the \
             element hung up\n{}",
            gst.logs()
        );
        total += sent;
        // What the element sent before it hung up can still be read, then the stream ends.
        let mut errors = 0usize;
        loop {
            match p.recv(ANSWER) {
                Received::Msg(Message::Error { code, text }) => {
                    assert_eq!(code, error_code::MALFORMED, "{text}");
                    errors += 1;
                }
                Received::Msg(other) => panic!("flood {flood}: unexpected {other:?}"),
                Received::Eof => break,
                Received::Timeout => panic!("flood {flood}: the connection stayed open"),
            }
        }
        assert!(
            errors < sent,
            "flood {flood}: {errors} ERRORs for {sent} packets"
        );
        gst.assert_running(&format!("after flood {flood}"));
        // The element's writer, blocked on the full socket, was woken and ended.
        wait_for_no_reply_writer(&mut gst, &format!("after flood {flood}"));
    }

    // One warning per producer cut off.
    let lines = gst
        .stderr()
        .lines()
        .filter(|l| l.contains(DISCONNECTED))
        .count();
    assert_eq!(
        lines,
        FLOODS,
        "lines containing {DISCONNECTED:?} in gst-launch's log\n{}",
        gst.logs()
    );

    // Memory stays bounded: generous, since GStreamer and malloc keep some.
    let end_kib = vm_rss_kib(pid);
    eprintln!(
        "gst-launch RSS: {start_kib} KiB before, {end_kib} KiB after {FLOODS} floods \
         ({total} malformed packets)"
    );
    assert!(
        end_kib < 2 * start_kib + 20 * 1024,
        "gst-launch RSS grew from {start_kib} KiB to {end_kib} KiB over {total} malformed packets"
    );

    // The next producer is served normally.
    let mut p = Producer::connect(&socket, &mut gst);
    p.send(&scanout_of(buf, XR24, wire::MOD_LINEAR), &[buf.fd()]);
    p.send(&draw(0, 0, 64, 48, 2), &[]);
    p.expect_done(
        2,
        DoneStatus::Released,
        None,
        "draw of the producer after the floods",
    );
    p.send(&draw(8, 8, 16, 16, 3), &[]);
    p.expect_done(
        3,
        DoneStatus::Released,
        None,
        "second draw after the floods",
    );
    p.expect_silence("after the draws");
    gst.assert_running("at the end");
    drop(p);
    gst.kill();
}

// ---------------------------------------------------------------------------------------------
// d) scanout fds that could shrink under a reader, or are not buffers
// ---------------------------------------------------------------------------------------------
//
// A true dmabuf cannot be made on the machines these tests run on (no GPU, no udmabuf), so the
// accepted kind tested here is the memfd sealed with F_SEAL_SHRINK; the dmabuf branch of
// `scanout::check_fd_kind` (statfs magic) is not exercised.

/// Writes `bytes` at offset 0 of `fd`.
fn pwrite_all(fd: &OwnedFd, bytes: &[u8]) {
    let mut at = 0;
    while at < bytes.len() {
        at += rustix::io::pwrite(fd, &bytes[at..], at as u64).expect("pwrite");
    }
}

/// A memfd holding `pixels`, sealed with F_SEAL_SHRINK or not.
fn memfd_with(pixels: &[u8], sealed: bool) -> OwnedFd {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create(
        "socket-mode-test",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .expect("memfd_create");
    rustix::fs::ftruncate(&fd, pixels.len() as u64).expect("ftruncate");
    pwrite_all(&fd, pixels);
    if sealed {
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK).expect("F_ADD_SEALS");
    }
    fd
}

fn xr24_scanout(width: u32, height: u32) -> Message {
    Message::Scanout {
        width,
        height,
        fourcc: XR24,
        y0_top: true,
        modifier: wire::MOD_LINEAR,
        planes: vec![PlaneLayout {
            offset: 0,
            stride: width * 4,
        }],
    }
}

/// Before, a producer could hand over an unsealed memfd and truncate it while frames were in
/// flight: gst-launch died of SIGBUS (exit status 135) in the converter reading the frame.
/// Such an fd is refused now, as are fds that are not buffers at all (a directory, a pipe).
#[test]
fn scanout_fds_that_could_shrink_or_are_not_buffers_are_refused() {
    let (w, h) = (320u32, 240u32);
    let dir = TempDir::new("unsealed");
    let socket = dir.join("src.sock");
    let socket_arg = format!("socket-path={}", socket.display());
    // videoconvert reads every pixel of every frame: a truncated buffer would fault here.
    let mut gst = ChildGuard::spawn(
        "gst-launch",
        gst_launch(
            &dir,
            &[
                "spicedmabufsrc",
                &socket_arg,
                "!",
                "videoconvert",
                "!",
                "video/x-raw,format=I420",
                "!",
                "fakesink",
                "enable-last-sample=false",
            ],
        ),
        &dir,
    );
    let mut bars = GuestBuffer::new(w, h).expect("memfd");
    test_guest::render(test_guest::Pattern::Bars, 0, &mut bars);
    let pixels = bars.pixels().to_vec();

    let mut p = Producer::connect(&socket, &mut gst);
    // A valid sealed scanout first, so the refusal also takes the previous one away.
    let sealed = memfd_with(&pixels, true);
    p.send(&xr24_scanout(w, h), &[sealed.as_fd()]);
    p.send(&draw(0, 0, w, h, 1), &[]);
    p.expect_done(1, DoneStatus::Released, None, "draw on a sealed memfd");

    // An unsealed memfd, then what the attack did: draw on it, truncate it while frames are in
    // flight, draw on. The answers are read only afterwards, so nothing waits for the element.
    let unsealed = memfd_with(&pixels, false);
    p.send(&xr24_scanout(w, h), &[unsealed.as_fd()]);
    let sizes = [0u64, pixels.len() as u64, 0, 4096, 0];
    let mut ids = Vec::new();
    for (i, size) in sizes.into_iter().enumerate() {
        for j in 0..4u64 {
            let id = 10 + 4 * i as u64 + j;
            if let Err(e) = wire::send_message(p.fd.as_fd(), &draw(0, 0, w, h, id), &[]) {
                // Before, gst-launch died of SIGBUS (exit status 135) around here.
                let status = gst.wait_timeout(Duration::from_secs(2));
                panic!("DRAW {id}: {e}; gst-launch: {status:?}\n{}", gst.logs());
            }
            ids.push(id);
            std::thread::sleep(Duration::from_millis(5));
        }
        rustix::fs::ftruncate(&unsealed, size).expect("ftruncate the unsealed memfd");
    }
    // Every answer: one ERROR BAD_SCANOUT, then for each draw one DONE and one ERROR
    // DRAW_REFUSED.
    let mut done: std::collections::BTreeMap<u64, Vec<DoneStatus>> = Default::default();
    let mut scanout_errors = Vec::new();
    let mut refusals = 0;
    let deadline = Instant::now() + SLOW;
    while done.values().map(Vec::len).sum::<usize>() < ids.len() || refusals < ids.len() {
        assert!(
            Instant::now() < deadline,
            "answers missing: DONEs {done:?}, {refusals} refusals"
        );
        match p.recv(ANSWER) {
            Received::Msg(Message::Done { draw_id, status }) => {
                done.entry(draw_id).or_default().push(status)
            }
            Received::Msg(Message::Error { code, text }) if code == error_code::BAD_SCANOUT => {
                scanout_errors.push(text)
            }
            Received::Msg(Message::Error { code, text }) => {
                assert_eq!(code, error_code::DRAW_REFUSED, "{text}");
                assert!(text.contains("no scanout"), "{text}");
                refusals += 1;
            }
            Received::Msg(other) => panic!("unexpected {other:?}"),
            // Before, gst-launch died here of SIGBUS (exit status 135).
            Received::Eof | Received::Timeout => {
                let status = gst.wait_timeout(Duration::from_secs(2));
                panic!(
                    "the element stopped answering (gst-launch: {status:?}) after DONEs \
                     {done:?}\n{}",
                    gst.logs()
                );
            }
        }
    }
    gst.assert_running("after drawing on a truncated unsealed memfd");
    assert_eq!(scanout_errors.len(), 1, "{scanout_errors:?}");
    assert!(
        scanout_errors[0].contains("F_SEAL_SHRINK") && scanout_errors[0].contains("fd #0"),
        "the refusal names the missing seal: {scanout_errors:?}"
    );
    // Exactly one DONE per draw, each REFUSED: there is no usable scanout.
    let expected: std::collections::BTreeMap<u64, Vec<DoneStatus>> = ids
        .iter()
        .map(|&id| (id, vec![DoneStatus::Refused]))
        .collect();
    assert_eq!(done, expected, "DONEs per draw");
    p.expect_silence("after the refused draws");

    // A memfd that cannot be sealed at all (created without MFD_ALLOW_SEALING).
    let unsealable = rustix::fs::memfd_create("no-sealing", rustix::fs::MemfdFlags::CLOEXEC)
        .expect("memfd_create");
    rustix::fs::ftruncate(&unsealable, pixels.len() as u64).expect("ftruncate");
    p.send(&xr24_scanout(w, h), &[unsealable.as_fd()]);
    p.expect_error(
        error_code::BAD_SCANOUT,
        "F_SEAL_SHRINK",
        "SCANOUT on a memfd without sealing",
    );

    // Not buffers at all: a directory and a pipe, refused by name.
    let root = OwnedFd::from(std::fs::File::open("/").expect("open /"));
    p.send(&xr24_scanout(64, 48), &[root.as_fd()]);
    let text = p.expect_error(error_code::BAD_SCANOUT, "(a directory)", "SCANOUT on /");
    assert!(text.contains("refused"), "{text}");
    p.send(&draw(0, 0, 64, 48, 40), &[]);
    p.expect_done(
        40,
        DoneStatus::Refused,
        Some("no scanout"),
        "DRAW after a directory",
    );
    let (pipe_r, pipe_w) = rustix::pipe::pipe().expect("pipe");
    p.send(&xr24_scanout(64, 48), &[pipe_r.as_fd()]);
    p.expect_error(error_code::BAD_SCANOUT, "(a pipe)", "SCANOUT on a pipe");
    p.send(&xr24_scanout(64, 48), &[pipe_w.as_fd()]);
    p.expect_error(
        error_code::BAD_SCANOUT,
        "(a pipe)",
        "SCANOUT on a pipe's write end",
    );
    p.send(&draw(0, 0, 64, 48, 41), &[]);
    p.expect_done(
        41,
        DoneStatus::Refused,
        Some("no scanout"),
        "DRAW after a pipe",
    );

    // The sealed memfd still works afterwards, and cannot be shrunk by its producer.
    assert_eq!(
        rustix::fs::ftruncate(&sealed, 0),
        Err(Errno::PERM),
        "ftruncate of a memfd sealed with F_SEAL_SHRINK"
    );
    p.send(&xr24_scanout(w, h), &[sealed.as_fd()]);
    p.send(&draw(0, 0, w, h, 50), &[]);
    p.expect_done(
        50,
        DoneStatus::Released,
        None,
        "draw on the sealed memfd again",
    );
    p.expect_silence("at the end");
    gst.assert_running("at the end");
    drop(p);
    gst.kill();
}

/// A producer's own sealed memfd (not a `test_guest` buffer) works end to end: its frames
/// come out of x264enc and decode to the counters drawn.
#[test]
fn a_sealed_memfd_from_a_producer_is_encoded_end_to_end() {
    const FRAMES: u64 = 10;
    let (w, h) = (320u32, 240u32);
    let dir = TempDir::new("sealed");
    let socket = dir.join("src.sock");
    let out = dir.join("out.mp4");
    let socket_arg = format!("socket-path={}", socket.display());
    let out_arg = format!("location={}", out.display());
    let frames_arg = format!("num-buffers={FRAMES}");
    let mut gst = ChildGuard::spawn(
        "gst-launch",
        gst_launch(
            &dir,
            &[
                "-e",
                "spicedmabufsrc",
                &socket_arg,
                &frames_arg,
                "!",
                "videoconvert",
                "!",
                "video/x-raw,format=I420",
                "!",
                "x264enc",
                "tune=zerolatency",
                "speed-preset=ultrafast",
                "!",
                "h264parse",
                "!",
                "mp4mux",
                "!",
                "filesink",
                &out_arg,
            ],
        ),
        &dir,
    );

    let mut picture = GuestBuffer::new(w, h).expect("memfd");
    test_guest::render(test_guest::Pattern::Counter, 0, &mut picture);
    let fd = memfd_with(picture.pixels(), true);
    let mut p = Producer::connect(&socket, &mut gst);
    p.send(&xr24_scanout(w, h), &[fd.as_fd()]);
    for frame in 0..FRAMES {
        if frame > 0 {
            // The previous draw has its DONE: the buffer may be drawn into again.
            test_guest::render(test_guest::Pattern::Counter, frame, &mut picture);
            pwrite_all(&fd, picture.pixels());
        }
        p.send(&draw(0, 0, w, h, frame + 1), &[]);
        p.expect_done(
            frame + 1,
            DoneStatus::Released,
            None,
            &format!("frame {frame} on the sealed memfd"),
        );
    }
    drop(p);
    gst.expect_success(SLOW);

    let counters = decode_counters(&out);
    let expected: Vec<Option<u32>> = (0..FRAMES)
        .map(|f| Some(test_guest::counter_value(f)))
        .collect();
    assert_eq!(
        counters,
        expected,
        "counters decoded from {}",
        out.display()
    );
}
