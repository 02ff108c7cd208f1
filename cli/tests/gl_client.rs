//! Local SPICE clients on the unix socket: the scanout dmabuf fd itself is passed
//! (GL_SCANOUT_UNIX + SCM_RIGHTS), GL_DRAW waits for GL_DRAW_DONE, and the host's cookie waits
//! for it too. A minimal client (`glclient`) plays the local client; the host is the test
//! itself, drawing into memfd scanouts from `test_guest`.

mod glclient;
mod util;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use glclient::{
    Display, DisplayMsg, DrawRect, Mapping, Next, STEP, XR24, display_channel, file_identity,
    local_display_caps, main_channel,
};
use gstspicedmabuf::{Rect, ScanoutInfo};
use spice_shim_core::proto::Caps;
use spice_shim_core::proto::caps::display_cap;
use spice_shim_core::proto::consts::{channel_type, surface_flags, surface_format};
use spice_shim_core::proto::msg_type::server::display as msg;
use spice_shim_core::{Config, Shim};
use test_guest::{GuestBuffer, Image, Pattern, check_bars, read_ppm, render};
use util::{ChildGuard, TempDir};

/// Generous bound for a cookie that should come back now.
const COOKIE: Duration = Duration::from_secs(10);
/// How long "not back yet" / "nothing sent" is watched.
const HOLD: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// The host side
// ---------------------------------------------------------------------------------------------

/// Cookies as the shim hands them back: (cookie, when).
struct Cookies {
    rx: mpsc::Receiver<(u64, Instant)>,
    got: Vec<(u64, Instant)>,
}

impl Cookies {
    fn pull(&mut self, wait: Duration) -> bool {
        match self.rx.recv_timeout(wait) {
            Ok(c) => {
                self.got.push(c);
                true
            }
            Err(_) => false,
        }
    }

    fn returned(&self, cookie: u64) -> Option<Instant> {
        self.got.iter().find(|(c, _)| *c == cookie).map(|(_, t)| *t)
    }

    /// Waits for `cookie`; panics after `wait`.
    fn wait_for(&mut self, cookie: u64, wait: Duration) -> Instant {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(t) = self.returned(cookie) {
                return t;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.pull(left) {
                panic!(
                    "cookie {cookie} did not come back within {wait:?} (returned so far: {:?})",
                    self.list()
                );
            }
        }
    }

    /// Watches for `hold`, asserting `cookie` does not come back meanwhile.
    fn assert_held(&mut self, cookie: u64, hold: Duration, why: &str) {
        let deadline = Instant::now() + hold;
        loop {
            while let Ok(c) = self.rx.try_recv() {
                self.got.push(c);
            }
            assert!(
                self.returned(cookie).is_none(),
                "cookie {cookie} came back while {why}"
            );
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            self.pull(left);
        }
    }

    fn list(&self) -> Vec<u64> {
        self.got.iter().map(|(c, _)| *c).collect()
    }

    /// After shutdown: every cookie in `expected` came back exactly once, and nothing else.
    fn assert_exactly_once(&mut self, expected: impl IntoIterator<Item = u64>) {
        while self.pull(Duration::from_millis(50)) {}
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for c in self.list() {
            *counts.entry(c).or_default() += 1;
        }
        let want: BTreeMap<u64, usize> = expected.into_iter().map(|c| (c, 1)).collect();
        assert_eq!(counts, want, "cookies returned (cookie → times)");
    }
}

fn start(config: Config) -> (Shim, Cookies) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let shim = Shim::start(
        config,
        Box::new(move |cookie| {
            let _ = tx.lock().unwrap().send((cookie, Instant::now()));
        }),
    )
    .expect("the shim starts");
    (
        shim,
        Cookies {
            rx,
            got: Vec::new(),
        },
    )
}

fn local_config(socket: &Path) -> Config {
    Config {
        tcp: None,
        unix: Some(socket.to_path_buf()),
        ..Config::default()
    }
}

fn info_of(buf: &GuestBuffer) -> ScanoutInfo {
    spice_shim_cli::guest::scanout_info(buf)
}

fn scanout(shim: &Shim, buf: &GuestBuffer) {
    shim.gl_scanout(Some(info_of(buf)), vec![buf.dup_fd().expect("dup")])
        .expect("gl_scanout accepted");
}

fn full(buf: &GuestBuffer) -> Rect {
    Rect {
        x: 0,
        y: 0,
        w: buf.width(),
        h: buf.height(),
    }
}

fn as_draw(r: Rect) -> DrawRect {
    DrawRect {
        x: r.x,
        y: r.y,
        w: r.w,
        h: r.h,
    }
}

/// A frame of `pattern` freshly drawn into a new memfd.
fn buffer(w: u32, h: u32, pattern: Pattern, frame: u64) -> GuestBuffer {
    let mut b = GuestBuffer::new(w, h).expect("memfd buffer");
    render(pattern, frame, &mut b);
    b
}

// ---------------------------------------------------------------------------------------------
// The local client side
// ---------------------------------------------------------------------------------------------

/// Main channel + local display channel over the unix socket.
fn connect_local(socket: &Path) -> (glclient::Main<UnixStream>, Display<UnixStream>) {
    let main = main_channel(UnixStream::connect(socket).expect("connect main"))
        .expect("main channel links");
    assert!(
        main.channels.contains(&(channel_type::DISPLAY, 0)),
        "CHANNELS_LIST {:?} lacks display 0",
        main.channels
    );
    let disp = display_local(socket, main.session_id);
    (main, disp)
}

fn display_local(socket: &Path, session_id: u32) -> Display<UnixStream> {
    display_channel(
        UnixStream::connect(socket).expect("connect display"),
        session_id,
        local_display_caps(),
    )
    .expect("display channel links")
}

fn next(disp: &mut Display<UnixStream>, what: &str) -> DisplayMsg {
    disp.next(STEP)
        .expect("display channel read")
        .expect_msg(what)
}

/// Reads SURFACE_CREATE, MONITORS_CONFIG, MARK, GL_SCANOUT_UNIX (+ the fd), MONITORS_CONFIG for
/// the host buffer `buf`, checks every field, that the fd is `buf`'s own memfd, and that the
/// mapped fd shows exactly `buf`'s pixels. Returns the mapping.
fn expect_scanout(disp: &mut Display<UnixStream>, buf: &GuestBuffer) -> Mapping {
    let (w, h, stride) = (buf.width(), buf.height(), buf.stride());
    let msgs: Vec<DisplayMsg> = (0..5).map(|_| next(disp, "the scanout sequence")).collect();
    let types: Vec<u16> = msgs.iter().map(DisplayMsg::msg_type).collect();
    assert_eq!(
        types,
        [
            msg::SURFACE_CREATE,
            msg::MONITORS_CONFIG,
            msg::MARK,
            msg::GL_SCANOUT_UNIX,
            msg::MONITORS_CONFIG
        ],
        "messages for a new scanout: {msgs:?}"
    );
    let mut scanout = None;
    for m in msgs {
        match m {
            DisplayMsg::SurfaceCreate {
                surface_id,
                width,
                height,
                format,
                flags,
            } => {
                assert_eq!((surface_id, width, height), (0, w, h), "SURFACE_CREATE");
                assert_eq!(format, surface_format::FMT_32_XRGB);
                assert!(flags & surface_flags::PRIMARY != 0, "flags {flags:#x}");
            }
            DisplayMsg::MonitorsConfig { count, heads } => {
                assert_eq!(count, 1);
                assert_eq!(heads, vec![[0, 0, w, h, 0, 0, 0]], "MONITORS_CONFIG");
            }
            DisplayMsg::GlScanout(sc) => scanout = Some(sc),
            _ => {}
        }
    }
    let sc = scanout.expect("GL_SCANOUT_UNIX");
    assert_eq!(
        (sc.width, sc.height, sc.stride, sc.fourcc, sc.flags),
        (w, h, stride, XR24, 1),
        "GL_SCANOUT_UNIX width, height, stride, fourcc, flags (Y0TOP)"
    );
    let fd = sc.fd.expect("an fd with the scanout");
    assert_eq!(
        file_identity(&fd),
        file_identity(buf.fd()),
        "the client got the host's memfd itself"
    );
    let map = Mapping::new(&fd, (stride * h) as usize).expect("mmap the received fd");
    let pixels = map.snapshot();
    assert!(
        pixels == buf.pixels()[..pixels.len()],
        "the mapped fd differs from the host's buffer"
    );
    check_bars(&Image::from_bgrx(&pixels, w, h, stride).expect("image"), 0)
        .expect("exact bars through the received fd");
    map
}

/// The next message must be GL_DRAW with `rect`.
fn expect_draw(disp: &mut Display<UnixStream>, rect: Rect) {
    match next(disp, "GL_DRAW") {
        DisplayMsg::GlDraw(r) => assert_eq!(r, as_draw(rect)),
        other => panic!("expected GL_DRAW {rect:?}, got {other:?}"),
    }
}

/// Answers the GL_DRAW in flight and waits for `cookie`, which must not come back before the
/// answer was sent.
fn done_and_wait(disp: &mut Display<UnixStream>, cookies: &mut Cookies, cookie: u64) {
    let sent = Instant::now();
    disp.gl_draw_done().expect("GL_DRAW_DONE");
    let back = cookies.wait_for(cookie, COOKIE);
    assert!(
        back >= sent,
        "cookie {cookie} came back before GL_DRAW_DONE was sent"
    );
}

/// Nothing may arrive for `hold`.
fn expect_quiet(disp: &mut Display<UnixStream>, hold: Duration, why: &str) {
    match disp.next(hold).expect("display channel read") {
        Next::Quiet => {}
        other => panic!("{why}, but the server sent {other:?}"),
    }
}

/// The frame counter of a `Pattern::Counter` picture, read through the client's mapping.
fn counter_in(map: &Mapping, buf: &GuestBuffer) -> Option<u32> {
    counter_at(map, buf.width(), buf.height(), buf.stride())
}

fn counter_at(map: &Mapping, w: u32, h: u32, stride: u32) -> Option<u32> {
    Image::from_bgrx(&map.snapshot(), w, h, stride)
        .ok()?
        .read_counter()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn local_client_gets_the_fd_and_cookies_wait_for_it() {
    let t_start = Instant::now();
    let dir = TempDir::new("local");
    let socket = dir.join("spice.sock");
    let (shim, mut cookies) = start(local_config(&socket));
    let (w, h) = (320, 240);
    let mut a = buffer(w, h, Pattern::Counter, 1);
    scanout(&shim, &a);

    let (_main, mut disp) = connect_local(&socket);
    let map_a = expect_scanout(&mut disp, &a);
    assert_eq!(counter_in(&map_a, &a), Some(1));
    expect_quiet(&mut disp, HOLD, "no draw was made yet");

    // Draw 1: the cookie waits for GL_DRAW_DONE.
    shim.gl_draw(full(&a), 1);
    expect_draw(&mut disp, full(&a));
    cookies.assert_held(1, HOLD, "the local client had not answered GL_DRAW_DONE");
    done_and_wait(&mut disp, &mut cookies, 1);

    // The host owns the buffer again: it draws frame 2 in place; the client sees it through
    // the same mapping (same memory, no copy) once GL_DRAW announces it.
    render(Pattern::Counter, 2, &mut a);
    let sq = test_guest::moving_square(w, h, 2);
    let damage = Rect {
        x: sq.x,
        y: sq.y,
        w: sq.width,
        h: sq.height,
    };
    shim.gl_draw(damage, 2);
    expect_draw(&mut disp, damage);
    assert_eq!(counter_in(&map_a, &a), Some(2));
    cookies.assert_held(2, Duration::from_millis(100), "GL_DRAW 2 was not answered");
    done_and_wait(&mut disp, &mut cookies, 2);

    // Draws 3, 4, 5 back to back: only one GL_DRAW is in flight; the client answers each
    // GL_DRAW it gets, and the last one it gets is the newest (5).
    let rects = [
        Rect {
            x: 0,
            y: 0,
            w: 10,
            h: 10,
        },
        Rect {
            x: 10,
            y: 10,
            w: 20,
            h: 20,
        },
        Rect {
            x: 30,
            y: 30,
            w: 40,
            h: 40,
        },
    ];
    for (i, r) in rects.iter().enumerate() {
        shim.gl_draw(*r, 3 + i as u64);
    }
    expect_draw(&mut disp, rects[0]);
    expect_quiet(
        &mut disp,
        HOLD,
        "a second GL_DRAW must wait for GL_DRAW_DONE",
    );
    cookies.assert_held(3, Duration::ZERO, "GL_DRAW 3 was not answered");
    cookies.assert_held(5, Duration::ZERO, "GL_DRAW 5 was not even sent");
    let mut seen = vec![rects[0]];
    loop {
        disp.gl_draw_done().unwrap();
        if *seen.last().unwrap() == rects[2] {
            break;
        }
        match next(&mut disp, "the next GL_DRAW") {
            DisplayMsg::GlDraw(r) => {
                let r = Rect {
                    x: r.x,
                    y: r.y,
                    w: r.w,
                    h: r.h,
                };
                assert!(rects[1..].contains(&r), "unexpected GL_DRAW {r:?}");
                seen.push(r);
                expect_quiet(
                    &mut disp,
                    Duration::from_millis(100),
                    "one GL_DRAW at a time",
                );
            }
            other => panic!("expected GL_DRAW, got {other:?}"),
        }
    }
    for c in 3..=5 {
        cookies.wait_for(c, COOKIE);
    }
    eprintln!(
        "draws 3..=5 reached the client as {} GL_DRAW(s)",
        seen.len()
    );

    // Scanout replacement with no draw in flight: new memfd, new GL_SCANOUT_UNIX + fd.
    let b = buffer(w, h, Pattern::Counter, 6);
    scanout(&shim, &b);
    let map_b = expect_scanout(&mut disp, &b);
    assert_eq!(counter_in(&map_b, &b), Some(6));
    shim.gl_draw(full(&b), 6);
    expect_draw(&mut disp, full(&b));
    cookies.assert_held(6, HOLD, "GL_DRAW 6 was not answered");
    done_and_wait(&mut disp, &mut cookies, 6);

    // Scanout replacement while a draw is in flight: it waits for GL_DRAW_DONE.
    shim.gl_draw(full(&b), 7);
    expect_draw(&mut disp, full(&b));
    let c = buffer(w, h, Pattern::Counter, 8);
    scanout(&shim, &c);
    expect_quiet(
        &mut disp,
        HOLD,
        "a new scanout must wait for the GL_DRAW_DONE of the draw in flight",
    );
    cookies.assert_held(7, Duration::ZERO, "GL_DRAW 7 was not answered");
    // The old scanout is still the host's buffer b and still readable by the client.
    assert_eq!(counter_in(&map_b, &b), Some(6));
    let sent = Instant::now();
    disp.gl_draw_done().unwrap();
    let map_c = expect_scanout(&mut disp, &c);
    assert!(cookies.wait_for(7, COOKIE) >= sent);
    assert_eq!(counter_in(&map_c, &c), Some(8));
    shim.gl_draw(full(&c), 8);
    expect_draw(&mut disp, full(&c));
    cookies.assert_held(8, HOLD, "GL_DRAW 8 was not answered");
    done_and_wait(&mut disp, &mut cookies, 8);

    // One more draw left unanswered: shutdown returns its cookie.
    shim.gl_draw(full(&c), 9);
    expect_draw(&mut disp, full(&c));
    let stats = shim.shutdown();
    assert_eq!(
        (stats.ledger.drawn, stats.ledger.returned),
        (9, 9),
        "{stats}"
    );
    cookies.assert_exactly_once(1..=9);
    assert!(
        disp.chan.wait_closed(STEP).unwrap(),
        "the client is disconnected at shutdown"
    );
    eprintln!("local client test: {:?}", t_start.elapsed());
}

#[test]
fn silent_local_client_times_out() {
    let t_start = Instant::now();
    let dir = TempDir::new("silent");
    let socket = dir.join("spice.sock");
    let timeout = Duration::from_millis(500);
    let (shim, mut cookies) = start(Config {
        gl_done_timeout: timeout,
        ..local_config(&socket)
    });
    let a = buffer(320, 240, Pattern::Bars, 0);
    scanout(&shim, &a);
    let (main, mut disp) = connect_local(&socket);
    let _map = expect_scanout(&mut disp, &a);

    // The client gets GL_DRAW and never answers.
    let t0 = Instant::now();
    shim.gl_draw(full(&a), 1);
    expect_draw(&mut disp, full(&a));
    let back = cookies.wait_for(1, COOKIE).saturating_duration_since(t0);
    eprintln!("cookie 1 back after {back:?} (gl_done_timeout {timeout:?})");
    assert!(
        back >= timeout - Duration::from_millis(100),
        "cookie 1 came back after {back:?}, before the {timeout:?} timeout"
    );
    // The silent client is gone.
    assert!(
        disp.chan.wait_closed(STEP).unwrap(),
        "the silent client's socket reads EOF"
    );

    // Later draws complete at once: no consumer is left.
    for cookie in 2..=3 {
        let t = Instant::now();
        shim.gl_draw(full(&a), cookie);
        let took = cookies
            .wait_for(cookie, COOKIE)
            .saturating_duration_since(t);
        assert!(
            took < timeout - Duration::from_millis(100),
            "cookie {cookie} without clients took {took:?}"
        );
    }

    // The session still works: a new local display channel gets the scanout again and holds
    // cookies until it answers.
    let mut disp2 = display_local(&socket, main.session_id);
    let _map2 = expect_scanout(&mut disp2, &a);
    shim.gl_draw(full(&a), 4);
    expect_draw(&mut disp2, full(&a));
    cookies.assert_held(4, Duration::from_millis(100), "GL_DRAW 4 was not answered");
    let t = Instant::now();
    done_and_wait(&mut disp2, &mut cookies, 4);
    assert!(t.elapsed() < timeout, "cookie 4 waited for the timeout");

    let stats = shim.shutdown();
    assert_eq!(
        (stats.ledger.drawn, stats.ledger.returned),
        (4, 4),
        "{stats}"
    );
    cookies.assert_exactly_once(1..=4);
    eprintln!("silent client test: {:?}", t_start.elapsed());
}

#[test]
fn closing_local_client_returns_its_cookie() {
    let dir = TempDir::new("close");
    let socket = dir.join("spice.sock");
    // A timeout far beyond the test's bounds: only the disconnect can return the cookie.
    let (shim, mut cookies) = start(Config {
        gl_done_timeout: Duration::from_secs(60),
        ..local_config(&socket)
    });
    let a = buffer(320, 240, Pattern::Bars, 0);
    scanout(&shim, &a);
    let (_main, mut disp) = connect_local(&socket);
    let _map = expect_scanout(&mut disp, &a);
    shim.gl_draw(full(&a), 1);
    expect_draw(&mut disp, full(&a));
    cookies.assert_held(1, HOLD, "the client holds GL_DRAW 1");
    let t = Instant::now();
    drop(disp);
    cookies.wait_for(1, COOKIE);
    eprintln!("cookie 1 back {:?} after the client closed", t.elapsed());
    shim.gl_draw(full(&a), 2);
    cookies.wait_for(2, COOKIE);
    let stats = shim.shutdown();
    assert_eq!(
        (stats.ledger.drawn, stats.ledger.returned),
        (2, 2),
        "{stats}"
    );
    cookies.assert_exactly_once(1..=2);
}

/// GL_SCANOUT_UNIX has no offset field and spice-gtk 0.42 imports the dmabuf at offset 0, so a
/// scanout whose plane starts further into the fd must not reach a local client as is: either
/// the local path is disabled for it (fourcc 0, no fd) or what the client maps at offset 0 is
/// the picture.
#[test]
fn scanout_with_an_offset_is_not_misread() {
    let dir = TempDir::new("offset");
    let socket = dir.join("spice.sock");
    let (shim, mut cookies) = start(local_config(&socket));
    let (w, h, stride) = (320, 240, 1536);
    let mut b = GuestBuffer::with_layout(w, h, stride, 8192).expect("memfd buffer");
    render(Pattern::Bars, 0, &mut b);
    scanout(&shim, &b);
    let (_main, mut disp) = connect_local(&socket);
    let sc = loop {
        match next(&mut disp, "GL_SCANOUT_UNIX") {
            DisplayMsg::GlScanout(sc) => break sc,
            _ => continue,
        }
    };
    if let Some(fd) = &sc.fd {
        let map = Mapping::new(fd, (sc.stride * sc.height) as usize).expect("mmap");
        let img = Image::from_bgrx(&map.snapshot(), sc.width, sc.height, sc.stride).expect("image");
        check_bars(&img, 0).expect("the fd as a local client imports it (offset 0)");
    } else {
        assert_eq!(sc.fourcc, 0);
    }
    shim.gl_draw(full(&b), 1);
    if let Next::Msg(DisplayMsg::GlDraw(_)) = disp.next(STEP).expect("read") {
        disp.gl_draw_done().unwrap();
    }
    cookies.wait_for(1, COOKIE);
    let stats = shim.shutdown();
    assert_eq!((stats.ledger.drawn, stats.ledger.returned), (1, 1));
}

/// Sets every flag when dropped.
struct StopOnDrop<'a>(&'a [&'a AtomicBool]);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        for f in self.0 {
            f.store(true, Ordering::Release);
        }
    }
}

/// What the local client thread saw.
#[derive(Debug, Default)]
struct LocalReport {
    draws: u64,
    /// (frame the host had announced, counter read through the fd) where they differ.
    mismatches: Vec<(u64, Option<u32>)>,
    closed_early: bool,
    unexpected: Vec<String>,
}

#[test]
fn remote_and_local_clients_at_the_same_time() {
    let t_start = Instant::now();
    let dir = TempDir::new("both");
    let socket = dir.join("spice.sock");
    let (shim, cookies) = start(Config {
        tcp: Some("127.0.0.1:0".into()),
        gl_done_timeout: Duration::from_secs(5),
        ..local_config(&socket)
    });
    let addr = shim.tcp_addr().expect("TCP address");
    let (w, h) = (640, 480);
    let mut buf = buffer(w, h, Pattern::Counter, 0);
    scanout(&shim, &buf);
    let rect = full(&buf);
    let stride = buf.stride();

    let (_main, mut disp) = connect_local(&socket);
    let map = expect_scanout(&mut disp, &buf);

    // Frame number whose pixels are in the buffer and whose draw is announced.
    let frame = AtomicU64::new(0);
    let stop_host = AtomicBool::new(false);
    let stop_clients = AtomicBool::new(false);
    // GL_DRAW_DONE delay (ms) for the next GL_DRAW, and the frame it was applied to.
    let delay_ms = AtomicU64::new(0);
    let delayed_frame = AtomicU64::new(0);
    let remote_frames = AtomicU64::new(0);
    let latencies: Mutex<Vec<(u64, Duration)>> = Mutex::new(Vec::new());
    // When the host got each cookie back, and when the local client answered each frame.
    let back_at: Mutex<BTreeMap<u64, Instant>> = Mutex::new(BTreeMap::new());
    let done_at: Mutex<BTreeMap<u64, Instant>> = Mutex::new(BTreeMap::new());
    let mut cookies = cookies;

    let (local, host_cookies, remote_codec, screenshot) = std::thread::scope(|s| {
        // If anything below panics, stop the threads so the scope can end.
        let _stop = StopOnDrop(&[&stop_host, &stop_clients]);
        // The local client: "renders" each GL_DRAW by reading the frame counter through the
        // mapped fd, then answers GL_DRAW_DONE.
        let local = s.spawn(|| {
            let mut rep = LocalReport::default();
            while !stop_clients.load(Ordering::Acquire) {
                match disp.next(Duration::from_millis(50)).expect("local read") {
                    Next::Quiet => {}
                    Next::Closed => {
                        rep.closed_early = true;
                        break;
                    }
                    Next::Msg(DisplayMsg::GlDraw(r)) => {
                        if r != as_draw(rect) {
                            rep.unexpected.push(format!("GL_DRAW {r:?}"));
                        }
                        let d = delay_ms.swap(0, Ordering::AcqRel);
                        if d > 0 {
                            delayed_frame.store(frame.load(Ordering::Acquire), Ordering::Release);
                            std::thread::sleep(Duration::from_millis(d));
                        }
                        let want = frame.load(Ordering::Acquire);
                        let got = counter_at(&map, w, h, stride);
                        if got != Some(want as u32) {
                            rep.mismatches.push((want, got));
                        }
                        rep.draws += 1;
                        done_at.lock().unwrap().insert(want, Instant::now());
                        disp.gl_draw_done().expect("GL_DRAW_DONE");
                    }
                    Next::Msg(other) => rep.unexpected.push(format!("{other:?}")),
                }
            }
            rep
        });

        // The host: ~30 Hz, the next frame only once the previous cookie is back.
        let host = s.spawn(|| {
            let mut n = 0u64;
            let period = Duration::from_millis(33);
            while !stop_host.load(Ordering::Acquire) {
                n += 1;
                let tick = Instant::now();
                render(Pattern::Counter, n, &mut buf);
                frame.store(n, Ordering::Release);
                shim.gl_draw(rect, n);
                let back = cookies.wait_for(n, COOKIE);
                back_at.lock().unwrap().insert(n, back);
                latencies
                    .lock()
                    .unwrap()
                    .push((n, back.saturating_duration_since(tick)));
                if let Some(rest) = period.checked_sub(tick.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            (n, cookies)
        });

        // A remote client of our own (TCP, no fd passing) that stays connected and counts the
        // stream frames it gets.
        let remote = s.spawn(|| {
            let main = main_channel(TcpStream::connect(addr).expect("tcp connect"))
                .expect("remote main links");
            let caps = Caps::from_bits(&[
                display_cap::MONITORS_CONFIG,
                display_cap::GL_SCANOUT,
                display_cap::MULTI_CODEC,
                display_cap::CODEC_MJPEG,
                display_cap::CODEC_H264,
            ]);
            let mut d = display_channel(
                TcpStream::connect(addr).expect("tcp connect"),
                main.session_id,
                caps,
            )
            .expect("remote display links");
            let mut codec = None;
            while !stop_clients.load(Ordering::Acquire) {
                match d.next(Duration::from_millis(50)).expect("remote read") {
                    Next::Msg(DisplayMsg::Other(msg::STREAM_CREATE, body)) => codec = Some(body[9]),
                    Next::Msg(DisplayMsg::Other(msg::STREAM_DATA | msg::STREAM_DATA_SIZED, _)) => {
                        remote_frames.fetch_add(1, Ordering::AcqRel);
                    }
                    Next::Msg(DisplayMsg::GlScanout(_) | DisplayMsg::GlDraw(_)) => {
                        panic!("GL message sent to a TCP client")
                    }
                    Next::Msg(_) | Next::Quiet => {}
                    Next::Closed => break,
                }
            }
            codec
        });

        let wait_until = |what: &str, cond: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !cond() {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_until("the remote client's first 10 frames", &|| {
            remote_frames.load(Ordering::Acquire) >= 10
        });

        // spicy-screenshot (spice-gtk 0.42) over TCP while both other clients run.
        let ppm = dir.join("shot.ppm");
        let mut cmd = Command::new("timeout");
        cmd.args(["30", "spicy-screenshot", "-h", "127.0.0.1", "-p"])
            .arg(addr.port().to_string())
            .arg("-o")
            .arg(&ppm);
        // SIGTERM first on drop, so `timeout` passes it on to spicy-screenshot.
        let mut shot = ChildGuard::spawn("spicy-screenshot", cmd, &dir)
            .sigterm_on_drop(Duration::from_secs(3));
        let status = shot.wait_timeout(Duration::from_secs(40));
        let screenshot = match status {
            Some(st) if st.success() => read_ppm(&ppm).expect("screenshot PPM"),
            other => panic!("spicy-screenshot: {other:?}\n{}", shot.logs()),
        };

        // With the remote clients attached, delay one GL_DRAW_DONE: that cookie waits for it.
        let before = remote_frames.load(Ordering::Acquire);
        delay_ms.store(400, Ordering::Release);
        wait_until("the delayed draw", &|| {
            let f = delayed_frame.load(Ordering::Acquire);
            f != 0 && latencies.lock().unwrap().iter().any(|(n, _)| *n == f)
        });
        let f = delayed_frame.load(Ordering::Acquire);
        let lat = latencies
            .lock()
            .unwrap()
            .iter()
            .find(|(n, _)| *n == f)
            .unwrap()
            .1;
        assert!(
            lat >= Duration::from_millis(400),
            "cookie {f} came back after {lat:?}, before the delayed GL_DRAW_DONE (400 ms)"
        );
        eprintln!("cookie {f} with GL_DRAW_DONE delayed by 400 ms: back after {lat:?}");
        wait_until("more remote frames", &|| {
            remote_frames.load(Ordering::Acquire) >= before + 5
        });

        stop_host.store(true, Ordering::Release);
        let host = host.join().expect("host thread");
        stop_clients.store(true, Ordering::Release);
        let local = local.join().expect("local client thread");
        let codec = remote.join().expect("remote client thread");
        (local, host, codec, screenshot)
    });
    let (drawn, mut cookies) = host_cookies;

    let stats = shim.shutdown();
    eprintln!("{stats}");
    assert_eq!(
        (stats.ledger.drawn, stats.ledger.returned),
        (drawn, drawn),
        "{stats}"
    );
    cookies.assert_exactly_once(1..=drawn);

    let elapsed = t_start.elapsed();
    let lats = latencies.into_inner().unwrap();
    let max = lats.iter().map(|(_, d)| *d).max().unwrap_or_default();
    eprintln!(
        "{drawn} frames drawn, local client answered {} GL_DRAWs, remote client got {} stream \
         frames (codec {remote_codec:?}), slowest cookie {max:?}, test {elapsed:?}",
        local.draws,
        remote_frames.load(Ordering::Acquire)
    );
    assert!(!local.closed_early, "the local client was disconnected");
    assert!(local.unexpected.is_empty(), "{:?}", local.unexpected);
    assert!(
        local.mismatches.is_empty(),
        "the frame read through the fd was not the announced one: {:?}",
        local.mismatches
    );
    assert_eq!(
        local.draws, drawn,
        "every host draw reached the local client as GL_DRAW"
    );
    let done_at = done_at.into_inner().unwrap();
    for (n, back) in back_at.into_inner().unwrap() {
        let done = done_at.get(&n).copied();
        assert!(
            done.is_some_and(|d| back >= d),
            "cookie {n} came back before the local client answered its GL_DRAW"
        );
    }
    assert!(
        stats.encoded.iter().map(|(_, n)| n).sum::<u64>() > 0,
        "{stats}"
    );
    assert_eq!((screenshot.width, screenshot.height), (w, h));
    check_bars(&screenshot, 48).expect("spicy-screenshot shows the bars");
}
