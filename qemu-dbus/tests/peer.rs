//! The listener against a stand-in QEMU: each test plays QEMU's side of the peer-to-peer
//! connection that `RegisterListener` sets up (a zbus server on one end of a socket pair that
//! serves nothing and calls the listener's methods), and checks what reaches the shim: a real
//! `Shim` (frames drawn, cookies back, pictures through `spicy-screenshot`), or a recorder that
//! keeps cookies out for as long as a test wants.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstspicedmabuf::fourcc::{DRM_FORMAT_MOD_LINEAR, fourcc_code};
use gstspicedmabuf::{Rect, ScanoutInfo};
use serde_bytes::Bytes;
use spice_shim_core::proto::CursorShape;
use spice_shim_core::proto::VideoCodec;
use spice_shim_core::{Config, InputFn, Shim};
use spice_shim_qemu::{Error, Exit, Frontend, Sink};
use test_guest::{GuestBuffer, Image, Pattern};

const X8R8G8B8: u32 = 0x2002_0888;

// ---------------------------------------------------------------------------------------------
// QEMU's side
// ---------------------------------------------------------------------------------------------

#[zbus::proxy(
    interface = "org.qemu.Display1.Listener",
    default_service = "org.qemu.Display1.Listener",
    default_path = "/org/qemu/Display1/Listener"
)]
trait Listener {
    fn scanout(
        &self,
        width: u32,
        height: u32,
        stride: u32,
        pixman_format: u32,
        data: &Bytes,
    ) -> zbus::Result<()>;

    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        x: i32,
        y: i32,
        width: i32,
        height: i32,
        stride: u32,
        pixman_format: u32,
        data: &Bytes,
    ) -> zbus::Result<()>;

    /// `Update` without waiting for the reply, as QEMU sends it.
    #[zbus(name = "Update", no_reply)]
    #[allow(clippy::too_many_arguments)]
    fn update_no_reply(
        &self,
        x: i32,
        y: i32,
        width: i32,
        height: i32,
        stride: u32,
        pixman_format: u32,
        data: &Bytes,
    ) -> zbus::Result<()>;

    #[zbus(name = "ScanoutDMABUF")]
    #[allow(clippy::too_many_arguments)]
    fn scanout_dmabuf(
        &self,
        dmabuf: zbus::Fd<'_>,
        width: u32,
        height: u32,
        stride: u32,
        fourcc: u32,
        modifier: u64,
        y0_top: bool,
    ) -> zbus::Result<()>;

    #[zbus(name = "UpdateDMABUF")]
    fn update_dmabuf(&self, x: i32, y: i32, width: i32, height: i32) -> zbus::Result<()>;

    fn disable(&self) -> zbus::Result<()>;

    fn mouse_set(&self, x: i32, y: i32, on: i32) -> zbus::Result<()>;

    fn cursor_define(
        &self,
        width: i32,
        height: i32,
        hot_x: i32,
        hot_y: i32,
        data: &Bytes,
    ) -> zbus::Result<()>;

    #[zbus(property)]
    fn interfaces(&self) -> zbus::Result<Vec<String>>;
}

#[zbus::proxy(
    interface = "org.qemu.Display1.Listener.Unix.Map",
    default_service = "org.qemu.Display1.Listener",
    default_path = "/org/qemu/Display1/Listener"
)]
trait ListenerMap {
    fn scanout_map(
        &self,
        handle: zbus::Fd<'_>,
        offset: u32,
        width: u32,
        height: u32,
        stride: u32,
        pixman_format: u32,
    ) -> zbus::Result<()>;

    fn update_map(&self, x: i32, y: i32, width: i32, height: i32) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.qemu.Display1.Listener.Unix.ScanoutDMABUF2",
    default_service = "org.qemu.Display1.Listener",
    default_path = "/org/qemu/Display1/Listener"
)]
trait ListenerDmabuf2 {
    #[zbus(name = "ScanoutDMABUF2")]
    #[allow(clippy::too_many_arguments)]
    fn scanout_dmabuf2(
        &self,
        dmabuf: &[zbus::Fd<'_>],
        x: u32,
        y: u32,
        width: u32,
        height: u32,
        offset: &[u32],
        stride: &[u32],
        num_planes: u32,
        fourcc: u32,
        backing_width: u32,
        backing_height: u32,
        modifier: u64,
        y0_top: bool,
    ) -> zbus::Result<()>;
}

/// QEMU's end of a registered listener, and the front end serving the other end.
struct StandIn {
    conn: zbus::Connection,
    listener: ListenerProxy<'static>,
    map: ListenerMapProxy<'static>,
    dmabuf2: ListenerDmabuf2Proxy<'static>,
    frontend: Arc<Frontend>,
    served: Option<JoinHandle<Result<Exit, Error>>>,
}

impl StandIn {
    /// Starts `frontend.serve_peer(sink, …)` on one end of a socket pair and connects to it
    /// from the other end as QEMU does (authenticating server).
    fn start(frontend: Arc<Frontend>, sink: Arc<dyn Sink>, announce: bool) -> Self {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let fe = frontend.clone();
        let served = std::thread::spawn(move || fe.serve_peer(sink, ours, announce));
        zbus::block_on(async move {
            let conn = zbus::connection::Builder::unix_stream(theirs)
                .server(zbus::Guid::generate())
                .p2p()
                .build()
                .await
                .expect("the listener authenticates");
            let listener = ListenerProxy::new(&conn).await.expect("listener proxy");
            let map = ListenerMapProxy::new(&conn).await.expect("map proxy");
            let dmabuf2 = ListenerDmabuf2Proxy::new(&conn)
                .await
                .expect("dmabuf2 proxy");
            Self {
                conn,
                listener,
                map,
                dmabuf2,
                frontend,
                served: Some(served),
            }
        })
    }

    /// QEMU goes away (its end of the connection closes, whoever still holds a proxy): the
    /// front end must notice and return.
    fn leave(mut self) -> Exit {
        let served = self.served.take().expect("still served");
        let _ = zbus::block_on(self.conn.clone().close());
        drop(self);
        wait_thread(served, Duration::from_secs(10))
            .expect("serve_peer returns once QEMU closed the connection")
            .expect("serve_peer succeeds")
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(served) = self.served.take() {
            self.frontend.stopper().stop();
            let _ = served.join();
        }
    }
}

fn wait_thread<T>(t: JoinHandle<T>, timeout: Duration) -> Option<T> {
    let end = Instant::now() + timeout;
    while !t.is_finished() {
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(t.join().expect("no panic"))
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `w`x`h` pixels of one colour (`0xRRGGBB`), x8r8g8b8.
fn solid(w: u32, h: u32, rgb: u32) -> Vec<u8> {
    rgb.to_le_bytes().repeat((w * h) as usize)
}

// ---------------------------------------------------------------------------------------------
// The shim's side
// ---------------------------------------------------------------------------------------------

/// A cursor shape as the stand-in shim got it: width, height, hot spot, pixels.
type RecordedCursor = (u16, u16, u16, u16, Vec<u32>);

/// A stand-in shim that records calls and keeps cookies until the test completes them.
#[derive(Default)]
struct Recorder {
    scanouts: Mutex<Vec<Option<ScanoutInfo>>>,
    draws: Mutex<Vec<(Rect, u64)>>,
    /// Cursor shapes: width, height, hot spot, pixels.
    cursors: Mutex<Vec<RecordedCursor>>,
    mouse: Mutex<Vec<(i32, i32, bool)>>,
}

impl Sink for Recorder {
    fn gl_scanout(&self, info: Option<ScanoutInfo>, _fds: Vec<OwnedFd>) -> Result<(), String> {
        self.scanouts.lock().unwrap().push(info);
        Ok(())
    }
    fn gl_draw(&self, rect: Rect, cookie: u64) {
        self.draws.lock().unwrap().push((rect, cookie));
    }
    fn set_client_mouse_available(&self, _available: bool) {}
    fn set_input_callback(&self, _cb: Option<InputFn>) {}
    fn cursor_define(&self, shape: CursorShape) {
        self.cursors.lock().unwrap().push((
            shape.width(),
            shape.height(),
            shape.hot_x(),
            shape.hot_y(),
            shape.pixels().to_vec(),
        ));
    }
    fn mouse_set(&self, x: i32, y: i32, visible: bool) {
        self.mouse.lock().unwrap().push((x, y, visible));
    }
}

/// A real shim serving MJPEG on a free port, fed by `frontend`.
fn start_shim(frontend: &Frontend) -> Arc<Shim> {
    let config = Config {
        tcp: Some("127.0.0.1:0".into()),
        codecs: vec![VideoCodec::Mjpeg],
        ..Config::default()
    };
    Arc::new(Shim::start(config, frontend.completion_callback()).expect("the shim starts"))
}

/// Shuts the shim down once the front end let go of it; every cookie must have come back.
fn shutdown(shim: Arc<Shim>) -> spice_shim_core::ShimStats {
    let shim = Arc::into_inner(shim).expect("the front end holds no reference to the shim");
    let stats = shim.shutdown();
    assert_eq!(stats.ledger.drawn, stats.ledger.returned, "cookies balance");
    stats
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spice-shim-qemu-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The picture a SPICE client gets (`spicy-screenshot`).
fn screenshot(shim: &Shim, dir: &Path) -> Image {
    let out = dir.join("shot.ppm");
    let port = shim.tcp_addr().expect("a TCP listener").port();
    let mut child = match Command::new("spicy-screenshot")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-o"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot run spicy-screenshot ({e}); scripts/install-deps.sh installs it"),
    };
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "spicy-screenshot failed: {status:?}"
    );
    test_guest::read_ppm(&out).expect("a PPM picture")
}

fn b(v: &[u8]) -> &Bytes {
    Bytes::new(v)
}

fn close(a: [u8; 3], b: [u8; 3], tolerance: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= tolerance)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn interfaces_are_announced_only_when_asked() {
    for announce in [false, true] {
        let fe = Arc::new(Frontend::new());
        let q = StandIn::start(fe, Arc::new(Recorder::default()), announce);
        let ifaces = zbus::block_on(q.listener.interfaces()).expect("Interfaces property");
        if announce {
            assert_eq!(
                ifaces,
                [
                    "org.qemu.Display1.Listener.Unix.Map",
                    "org.qemu.Display1.Listener.Unix.ScanoutDMABUF2"
                ]
            );
        } else {
            assert!(ifaces.is_empty(), "{ifaces:?}");
        }
        assert!(matches!(q.leave(), Exit::QemuLeft(_)));
    }
}

/// QEMU 7.2 in VGA text mode: a 640x480 `Scanout`, then 720-wide `Update`s. The surface grows
/// to 720x480, the text reaches the client unclipped, and every cookie comes back.
#[test]
fn text_mode_updates_grow_the_surface_and_reach_a_client() {
    let fe = Arc::new(Frontend::new());
    let shim = start_shim(&fe);
    let q = StandIn::start(fe.clone(), shim.clone(), false);
    zbus::block_on(async {
        q.listener
            .scanout(640, 480, 2560, X8R8G8B8, b(&solid(640, 480, 0x000080)))
            .await
            .unwrap();
        // 25 rows of text, 720 wide, stride 2880 (the update's own width).
        for row in 0..25 {
            q.listener
                .update(
                    0,
                    row * 16,
                    720,
                    16,
                    2880,
                    X8R8G8B8,
                    b(&solid(720, 16, 0xC0C0C0)),
                )
                .await
                .unwrap();
        }
        // The right edge, beyond 640: red.
        q.listener
            .update(660, 100, 60, 40, 240, X8R8G8B8, b(&solid(60, 40, 0xFF0000)))
            .await
            .unwrap();
    });
    let stats = fe.stats();
    assert_eq!(stats.ring.updates, 27);
    assert_eq!(stats.ring.grown, 1);
    assert!(stats.ring.frames >= 1);

    let dir = scratch_dir("text");
    {
        let img = screenshot(&shim, &dir);
        assert_eq!((img.width, img.height), (720, 480), "the grown surface");
        let red = img.pixel(690, 120);
        assert!(close(red, [255, 0, 0], 60), "right edge {red:?}");
        let grey = img.pixel(100, 200);
        assert!(close(grey, [192, 192, 192], 40), "text area {grey:?}");
        let below = img.pixel(100, 450);
        assert!(close(below, [0, 0, 128], 40), "below the text {below:?}");
    }
    assert!(matches!(q.leave(), Exit::QemuLeft(_)));
    let stats = shutdown(shim);
    assert!(stats.ledger.drawn >= 1);
}

/// `UpdateDMABUF`'s reply comes only after the frame's cookie came back.
#[test]
fn update_dmabuf_reply_waits_for_the_cookie() {
    let fe = Arc::new(Frontend::new());
    let rec = Arc::new(Recorder::default());
    let q = StandIn::start(fe.clone(), rec.clone(), false);
    let buf = GuestBuffer::new(64, 32).unwrap();
    zbus::block_on(q.listener.scanout_dmabuf(
        zbus::Fd::from(buf.fd()),
        64,
        32,
        buf.stride(),
        fourcc_code(b"XR24"),
        DRM_FORMAT_MOD_LINEAR,
        true,
    ))
    .unwrap();
    let info = rec.scanouts.lock().unwrap()[0].clone().expect("a scanout");
    assert_eq!(
        (info.width, info.height, info.planes[0].stride),
        (64, 32, 256)
    );

    let (tx, rx) = mpsc::channel();
    let listener = q.listener.clone();
    let caller = std::thread::spawn(move || {
        // Beyond the scanout: clipped to it.
        let r = zbus::block_on(listener.update_dmabuf(10, 4, 100, 8));
        tx.send(r.is_ok()).unwrap();
    });
    assert!(wait_until(Duration::from_secs(5), || !rec
        .draws
        .lock()
        .unwrap()
        .is_empty()));
    let (rect, cookie) = rec.draws.lock().unwrap()[0];
    assert_eq!(
        rect,
        Rect {
            x: 10,
            y: 4,
            w: 54,
            h: 8
        }
    );
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(300)),
        Err(mpsc::RecvTimeoutError::Timeout),
        "the reply waits while the cookie is out"
    );
    assert_eq!(fe.stats().held_replies, 1);
    let mut complete = fe.completion_callback();
    complete(cookie);
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(true));
    caller.join().unwrap();
    assert_eq!(fe.stats().dmabuf_draws, 1);
    assert!(matches!(q.leave(), Exit::QemuLeft(_)));
}

/// QEMU dies while a reply is held: the front end notices, returns and lets go of the reply.
#[test]
fn qemu_leaving_with_a_held_reply_ends_the_listener() {
    let fe = Arc::new(Frontend::new());
    let rec = Arc::new(Recorder::default());
    let q = StandIn::start(fe.clone(), rec.clone(), false);
    let buf = GuestBuffer::new(16, 16).unwrap();
    zbus::block_on(q.listener.scanout_dmabuf(
        zbus::Fd::from(buf.fd()),
        16,
        16,
        buf.stride(),
        fourcc_code(b"XR24"),
        DRM_FORMAT_MOD_LINEAR,
        true,
    ))
    .unwrap();
    let listener = q.listener.clone();
    let _caller = std::thread::spawn(move || zbus::block_on(listener.update_dmabuf(0, 0, 16, 16)));
    assert!(wait_until(Duration::from_secs(5), || fe
        .stats()
        .held_replies
        == 1));
    assert!(matches!(q.leave(), Exit::QemuLeft(_)));
    assert_eq!(fe.stats().held_replies, 0);
}

/// Dmabuf frames through a real shim: every `UpdateDMABUF` is answered, the client sees the
/// buffer, and the cookies balance.
#[test]
fn dmabuf_frames_reach_a_client() {
    let fe = Arc::new(Frontend::new());
    let shim = start_shim(&fe);
    let q = StandIn::start(fe.clone(), shim.clone(), false);
    let mut buf = GuestBuffer::new(320, 240).unwrap();
    test_guest::render(Pattern::Bars, 0, &mut buf);
    zbus::block_on(q.listener.scanout_dmabuf(
        zbus::Fd::from(buf.fd()),
        320,
        240,
        buf.stride(),
        fourcc_code(b"XR24"),
        DRM_FORMAT_MOD_LINEAR,
        true,
    ))
    .unwrap();
    // QEMU's render loop: the next frame only after the previous reply.
    let listener = q.listener.clone();
    let frames = std::thread::spawn(move || {
        let mut n = 0u64;
        let end = Instant::now() + Duration::from_secs(4);
        while Instant::now() < end {
            zbus::block_on(listener.update_dmabuf(0, 0, 320, 240)).unwrap();
            n += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    });
    let dir = scratch_dir("dmabuf");
    {
        let img = screenshot(&shim, &dir);
        assert_eq!((img.width, img.height), (320, 240));
        test_guest::check_bars(&img, 60).expect("the bars reach the client");
    }
    let n = frames.join().unwrap();
    assert_eq!(fe.stats().dmabuf_draws, n);
    assert!(matches!(q.leave(), Exit::QemuLeft(_)));
    let stats = shutdown(shim);
    assert_eq!(stats.ledger.drawn, n);
}

/// Newer QEMU's shared surface: `ScanoutMap` then `UpdateMap` after QEMU drew into the memfd.
#[test]
fn scanout_map_pixels_reach_a_client() {
    let fe = Arc::new(Frontend::new());
    let shim = start_shim(&fe);
    let q = StandIn::start(fe.clone(), shim.clone(), true);
    // QEMU's surface: an unsealed memfd, 320x240, green.
    let (w, h, stride) = (320u32, 240u32, 1280u32);
    let fd = rustix::fs::memfd_create("qemu-surface", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::io::pwrite(&fd, &solid(w, h, 0x00FF00), 0).unwrap();
    zbus::block_on(
        q.map
            .scanout_map(zbus::Fd::from(fd.as_fd()), 0, w, h, stride, X8R8G8B8),
    )
    .unwrap();
    // QEMU draws a blue box and says where.
    for y in 40..120u32 {
        let off = u64::from(y * stride + 100 * 4);
        rustix::io::pwrite(&fd, &solid(120, 1, 0x0000FF), off).unwrap();
    }
    zbus::block_on(q.map.update_map(100, 40, 120, 80)).unwrap();
    // A map too small for its surface is refused (QEMU falls back to Scanout).
    let small = rustix::fs::memfd_create("small", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    assert!(
        zbus::block_on(
            q.map
                .scanout_map(zbus::Fd::from(small.as_fd()), 0, w, h, stride, X8R8G8B8)
        )
        .is_err()
    );
    let stats = fe.stats();
    assert_eq!(stats.ring.updates, 2);
    assert_eq!(stats.refused, 1);

    let dir = scratch_dir("map");
    {
        let img = screenshot(&shim, &dir);
        assert_eq!((img.width, img.height), (w, h));
        let blue = img.pixel(160, 80);
        assert!(close(blue, [0, 0, 255], 60), "the updated box {blue:?}");
        let green = img.pixel(20, 200);
        assert!(close(green, [0, 255, 0], 60), "the rest {green:?}");
    }
    assert!(matches!(q.leave(), Exit::QemuLeft(_)));
    shutdown(shim);
}

/// `ScanoutDMABUF2`: the planes and the sub-rectangle reach the shim.
#[test]
fn scanout_dmabuf2_describes_the_buffer() {
    let fe = Arc::new(Frontend::new());
    let rec = Arc::new(Recorder::default());
    let q = StandIn::start(fe.clone(), rec.clone(), true);
    let buf = GuestBuffer::new(128, 64).unwrap();
    let fds = [zbus::Fd::from(buf.fd())];
    zbus::block_on(q.dmabuf2.scanout_dmabuf2(
        &fds,
        16,
        8,
        64,
        32,
        &[0],
        &[512],
        1,
        fourcc_code(b"XR24"),
        128,
        64,
        DRM_FORMAT_MOD_LINEAR,
        true,
    ))
    .unwrap();
    let info = rec.scanouts.lock().unwrap()[0].clone().expect("a scanout");
    assert_eq!((info.width, info.height), (64, 32));
    assert_eq!(info.planes[0].offset, 8 * 512 + 16 * 4);
    assert_eq!(info.planes[0].stride, 512);
    // Planes without fds: refused with an error reply.
    assert!(
        zbus::block_on(q.dmabuf2.scanout_dmabuf2(
            &[],
            0,
            0,
            64,
            32,
            &[0],
            &[512],
            1,
            fourcc_code(b"XR24"),
            128,
            64,
            0,
            true,
        ))
        .is_err()
    );
    // Then a draw on it is held and answered as for ScanoutDMABUF.
    let listener = q.listener.clone();
    let caller = std::thread::spawn(move || zbus::block_on(listener.update_dmabuf(0, 0, 64, 32)));
    assert!(wait_until(Duration::from_secs(5), || !rec
        .draws
        .lock()
        .unwrap()
        .is_empty()));
    let cookie = rec.draws.lock().unwrap()[0].1;
    (fe.completion_callback())(cookie);
    caller.join().unwrap().unwrap();
    assert!(matches!(q.leave(), Exit::QemuLeft(_)));
}

/// Malformed or absurd calls are answered and ignored; the listener goes on.
#[test]
fn bad_calls_are_ignored() {
    let fe = Arc::new(Frontend::new());
    let rec = Arc::new(Recorder::default());
    let q = StandIn::start(fe.clone(), rec.clone(), false);
    zbus::block_on(async {
        let l = &q.listener;
        // Update before Scanout, short data, absurd sizes, unknown format, negative origin.
        l.update(0, 0, 4, 4, 16, X8R8G8B8, b(&[0; 64]))
            .await
            .unwrap();
        l.scanout(100_000, 100_000, 400_000, X8R8G8B8, b(&[0; 16]))
            .await
            .unwrap();
        l.scanout(8, 8, 32, 0x0123_4567, b(&[0; 256]))
            .await
            .unwrap();
        l.scanout(8, 8, 32, X8R8G8B8, b(&[0; 100])).await.unwrap();
        l.scanout(8, 8, 32, X8R8G8B8, b(&solid(8, 8, 0x123456)))
            .await
            .unwrap();
        l.update(0, 0, 4, 4, 16, X8R8G8B8, b(&[0; 10]))
            .await
            .unwrap();
        l.update(-5, 0, 4, 4, 16, X8R8G8B8, b(&[0; 64]))
            .await
            .unwrap();
        l.update(0, 0, i32::MAX, 1, u32::MAX, X8R8G8B8, b(&[0; 64]))
            .await
            .unwrap();
        l.update(20_000, 0, 1, 1, 4, X8R8G8B8, b(&[0; 4]))
            .await
            .unwrap();
        l.update_dmabuf(0, 0, 8, 8).await.unwrap();
        l.cursor_define(100_000, 1, 0, 0, b(&[0; 4])).await.unwrap();
        let px: Vec<u8> = [0x80FF_4020u32, 0, 0xFF00_00FF, 1]
            .iter()
            .flat_map(|p| p.to_ne_bytes())
            .collect();
        l.cursor_define(2, 2, 1, 1, b(&px)).await.unwrap();
        l.mouse_set(5, 5, 1).await.unwrap();
        l.mouse_set(6, 7, 0).await.unwrap();
        // Still serving.
        l.update(0, 0, 2, 2, 8, X8R8G8B8, b(&solid(2, 2, 0xFFFFFF)))
            .await
            .unwrap();
    });
    let stats = fe.stats();
    assert_eq!(stats.refused, 9, "{stats:?}");
    assert_eq!(stats.ring.updates, 2);
    // The valid cursor and the pointer moves reach the shim; the absurd shape does not.
    assert_eq!(
        *rec.cursors.lock().unwrap(),
        [(2, 2, 1, 1, vec![0x80FF_4020, 0, 0xFF00_00FF, 1])]
    );
    assert_eq!(*rec.mouse.lock().unwrap(), [(5, 5, true), (6, 7, false)]);
    // Two frames; the recorder keeps the first one's cookie, so the second needs another buffer.
    assert_eq!(rec.draws.lock().unwrap().len(), 2);
    assert_eq!(rec.scanouts.lock().unwrap().len(), 2);
    // A disabled console disables the scanout.
    zbus::block_on(q.listener.disable()).unwrap();
    assert_eq!(rec.scanouts.lock().unwrap().last(), Some(&None));
    assert!(matches!(q.leave(), Exit::QemuLeft(_)));
}

/// A guest that redraws flat out against a pipeline that takes 33 ms a frame: updates are
/// merged, frames follow the pipeline, and the front end's memory stays flat.
#[test]
fn a_flood_of_updates_is_merged_not_queued() {
    /// Completes each cookie 33 ms after its draw (one at a time, as a 30 fps encoder).
    struct SlowPipeline {
        tx: Mutex<mpsc::Sender<u64>>,
        draws: Mutex<u64>,
    }
    impl Sink for SlowPipeline {
        fn gl_scanout(&self, _: Option<ScanoutInfo>, _: Vec<OwnedFd>) -> Result<(), String> {
            Ok(())
        }
        fn gl_draw(&self, _rect: Rect, cookie: u64) {
            *self.draws.lock().unwrap() += 1;
            self.tx.lock().unwrap().send(cookie).unwrap();
        }
        fn set_client_mouse_available(&self, _: bool) {}
        fn set_input_callback(&self, _: Option<InputFn>) {}
        fn cursor_define(&self, _: CursorShape) {}
        fn mouse_set(&self, _: i32, _: i32, _: bool) {}
    }

    let fe = Arc::new(Frontend::new());
    let (tx, rx) = mpsc::channel::<u64>();
    let mut complete = fe.completion_callback();
    let pipeline = std::thread::spawn(move || {
        for cookie in rx {
            std::thread::sleep(Duration::from_millis(33));
            complete(cookie);
        }
    });
    let sink = Arc::new(SlowPipeline {
        tx: Mutex::new(tx),
        draws: Mutex::new(0),
    });
    let q = StandIn::start(fe.clone(), sink.clone(), false);
    let (w, h) = (1280u32, 720u32);
    let tile = solid(256, 128, 0x336699);
    let rss_start = rss_kib();
    let sent = zbus::block_on(async {
        q.listener
            .scanout(w, h, w * 4, X8R8G8B8, b(&solid(w, h, 0)))
            .await
            .unwrap();
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < Duration::from_secs(3) {
            let x = (sent * 256 % u64::from(w - 256)) as i32;
            let y = (sent * 128 % u64::from(h - 128)) as i32;
            q.listener
                .update_no_reply(x, y, 256, 128, 1024, X8R8G8B8, b(&tile))
                .await
                .unwrap();
            sent += 1;
        }
        // A round trip: every update before it has been handled.
        q.listener.mouse_set(0, 0, 0).await.unwrap();
        sent
    });
    let rss_end = rss_kib();
    let stats = fe.stats();
    let secs = 3.0;
    eprintln!(
        "flood: {sent} updates sent ({:.0}/s), {} taken, {} frames drawn ({:.0}/s), {} waits; \
         RSS {rss_start} → {rss_end} KiB",
        sent as f64 / secs,
        stats.ring.updates - 1,
        stats.ring.frames,
        stats.ring.frames as f64 / secs,
        stats.ring.waits
    );
    assert_eq!(stats.ring.updates, sent + 1, "every update was taken");
    assert!(sent > 100, "the stand-in floods ({sent} updates)");
    // At most ~30 frames a second (the pipeline takes one cookie at a time here) plus the
    // three buffers, whatever the number of updates: the rest was merged.
    assert!(
        stats.ring.frames <= 3 * 31 + 3,
        "{} frames",
        stats.ring.frames
    );
    assert!(stats.ring.frames < sent, "updates are merged");
    assert!(stats.ring.waits > 0, "updates waited for a free buffer");
    // Memory stays flat: one picture and three buffers, whatever the flood (the process's RSS
    // above also counts the tests running alongside, so it is only printed).
    assert_eq!(stats.ring.buffers_made, 3);
    assert!(matches!(q.leave(), Exit::QemuLeft(_)));
    drop(sink);
    pipeline.join().unwrap();
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The stopper ends a front end that waits for QEMU on a bus nobody serves.
#[test]
fn stop_ends_a_front_end_waiting_for_qemu() {
    let bus = DbusDaemon::start();
    let fe = Arc::new(Frontend::new());
    let rec: Arc<dyn Sink> = Arc::new(Recorder::default());
    let target = spice_shim_qemu::Target {
        address: Some(bus.address.clone()),
        console: 0,
    };
    let f = fe.clone();
    let t = std::thread::spawn(move || f.run(rec, &target));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!t.is_finished(), "waits for QEMU");
    fe.stopper().stop();
    let exit = wait_thread(t, Duration::from_secs(5))
        .expect("stops")
        .expect("no error");
    assert_eq!(exit, Exit::Stopped);
}

/// A private `dbus-daemon` (killed on drop).
struct DbusDaemon {
    address: String,
    child: std::process::Child,
    dir: PathBuf,
}

impl DbusDaemon {
    fn start() -> Self {
        let dir = scratch_dir("bus");
        let address = format!("unix:path={}", dir.join("bus").display());
        let child = match Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--address", &address])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("cannot run dbus-daemon ({e}); scripts/install-deps.sh installs it"),
        };
        assert!(
            wait_until(Duration::from_secs(5), || dir.join("bus").exists()),
            "dbus-daemon listens"
        );
        Self {
            address,
            child,
            dir,
        }
    }
}

impl Drop for DbusDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
