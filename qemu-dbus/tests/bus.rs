//! `Frontend::run` against a stand-in QEMU on a private bus: the front end waits for
//! `org.qemu`, registers its listener on `Console_0` (the stand-in runs the peer-to-peer server
//! on the socket it gets and sends a `Scanout`), sends SPICE input back as `Keyboard`/`Mouse`
//! calls, follows `Mouse.IsAbsolute`, and returns once QEMU left the bus.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstspicedmabuf::{Rect, ScanoutInfo};
use serde_bytes::Bytes;
use spice_shim_core::InputFn;
use spice_shim_core::proto::CursorShape;
use spice_shim_core::proto::InputEvent;
use spice_shim_qemu::{Exit, Frontend, Sink, Target};

const X8R8G8B8: u32 = 0x2002_0888;
const CONSOLE_PATH: &str = "/org/qemu/Display1/Console_0";

/// What the stand-in QEMU was asked on its console.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    KeyPress(u32),
    KeyRelease(u32),
    ButtonPress(u32),
    ButtonRelease(u32),
    Position(u32, u32),
    Motion(i32, i32),
}

type Calls = Arc<Mutex<Vec<Call>>>;

struct Vm;

#[zbus::interface(name = "org.qemu.Display1.VM")]
impl Vm {
    #[zbus(property)]
    fn name(&self) -> String {
        "stand-in".into()
    }

    #[zbus(property, name = "ConsoleIDs")]
    fn console_ids(&self) -> Vec<u32> {
        vec![0]
    }
}

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
}

struct Console {
    /// The listener connections QEMU serves (kept open while QEMU runs).
    listeners: Arc<Mutex<Vec<zbus::Connection>>>,
}

#[zbus::interface(name = "org.qemu.Display1.Console")]
impl Console {
    fn register_listener(&self, listener: zbus::OwnedFd) {
        // As QEMU: reply first, then run the peer-to-peer server on the socket.
        let socket = UnixStream::from(OwnedFd::from(listener));
        let listeners = self.listeners.clone();
        std::thread::spawn(move || {
            zbus::block_on(async move {
                let conn = zbus::connection::Builder::unix_stream(socket)
                    .server(zbus::Guid::generate())
                    .p2p()
                    .build()
                    .await
                    .expect("the listener authenticates");
                let l = ListenerProxy::new(&conn).await.expect("listener proxy");
                l.scanout(32, 16, 128, X8R8G8B8, Bytes::new(&[0x40; 32 * 16 * 4]))
                    .await
                    .expect("Scanout");
                listeners.lock().unwrap().push(conn);
            })
        });
    }

    #[zbus(property)]
    fn width(&self) -> u32 {
        32
    }

    #[zbus(property)]
    fn height(&self) -> u32 {
        16
    }
}

struct Keyboard(Calls);

#[zbus::interface(name = "org.qemu.Display1.Keyboard")]
impl Keyboard {
    fn press(&self, keycode: u32) {
        self.0.lock().unwrap().push(Call::KeyPress(keycode));
    }
    fn release(&self, keycode: u32) {
        self.0.lock().unwrap().push(Call::KeyRelease(keycode));
    }
}

struct Mouse {
    calls: Calls,
    absolute: bool,
}

#[zbus::interface(name = "org.qemu.Display1.Mouse")]
impl Mouse {
    fn press(&self, button: u32) {
        self.calls.lock().unwrap().push(Call::ButtonPress(button));
    }
    fn release(&self, button: u32) {
        self.calls.lock().unwrap().push(Call::ButtonRelease(button));
    }
    fn set_abs_position(&self, x: u32, y: u32) -> zbus::fdo::Result<()> {
        if !self.absolute {
            return Err(zbus::fdo::Error::Failed("Mouse is not absolute".into()));
        }
        self.calls.lock().unwrap().push(Call::Position(x, y));
        Ok(())
    }
    fn rel_motion(&self, dx: i32, dy: i32) -> zbus::fdo::Result<()> {
        if self.absolute {
            return Err(zbus::fdo::Error::Failed("Mouse is not relative".into()));
        }
        self.calls.lock().unwrap().push(Call::Motion(dx, dy));
        Ok(())
    }
    #[zbus(property)]
    fn is_absolute(&self) -> bool {
        self.absolute
    }
}

/// The stand-in QEMU: owns `org.qemu` on the bus until dropped.
struct StandInQemu {
    conn: zbus::Connection,
    calls: Calls,
    listeners: Arc<Mutex<Vec<zbus::Connection>>>,
}

impl StandInQemu {
    fn start(address: &str) -> Self {
        let calls = Calls::default();
        let listeners = Arc::new(Mutex::new(Vec::new()));
        let conn = zbus::block_on(
            zbus::connection::Builder::address(address)
                .serve_at("/org/qemu/Display1/VM", Vm)
                .serve_at(
                    CONSOLE_PATH,
                    Console {
                        listeners: listeners.clone(),
                    },
                )
                .serve_at(CONSOLE_PATH, Keyboard(calls.clone()))
                .serve_at(
                    CONSOLE_PATH,
                    Mouse {
                        calls: calls.clone(),
                        absolute: false,
                    },
                )
                .name("org.qemu")
                .build(),
        )
        .expect("the stand-in QEMU is on the bus");
        Self {
            conn,
            calls,
            listeners,
        }
    }

    /// Switches the mouse to absolute, as QEMU does when a tablet appears.
    fn set_absolute(&self) {
        zbus::block_on(async {
            let iface = self
                .conn
                .object_server()
                .interface::<_, Mouse>(CONSOLE_PATH)
                .await
                .expect("the Mouse interface");
            iface.get_mut().await.absolute = true;
            iface
                .get()
                .await
                .is_absolute_changed(iface.signal_emitter())
                .await
                .expect("PropertiesChanged");
        });
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

/// A stand-in shim recording what the front end does to it.
#[derive(Default)]
struct Recorder {
    scanouts: Mutex<Vec<Option<ScanoutInfo>>>,
    draws: Mutex<Vec<(Rect, u64)>>,
    client_mouse: Mutex<Vec<bool>>,
    input: Mutex<Option<InputFn>>,
}

impl Sink for Recorder {
    fn gl_scanout(&self, info: Option<ScanoutInfo>, _fds: Vec<OwnedFd>) -> Result<(), String> {
        self.scanouts.lock().unwrap().push(info);
        Ok(())
    }
    fn gl_draw(&self, rect: Rect, cookie: u64) {
        self.draws.lock().unwrap().push((rect, cookie));
    }
    fn set_client_mouse_available(&self, available: bool) {
        self.client_mouse.lock().unwrap().push(available);
    }
    fn set_input_callback(&self, cb: Option<InputFn>) {
        *self.input.lock().unwrap() = cb;
    }
    fn cursor_define(&self, _shape: CursorShape) {}
    fn mouse_set(&self, _x: i32, _y: i32, _visible: bool) {}
}

impl Recorder {
    fn send(&self, ev: InputEvent) {
        let cb = self
            .input
            .lock()
            .unwrap()
            .clone()
            .expect("an input callback");
        cb(&ev);
    }
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

/// A private `dbus-daemon` (killed on drop).
struct DbusDaemon {
    address: String,
    child: std::process::Child,
    dir: PathBuf,
}

impl DbusDaemon {
    fn start() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "spice-shim-qemu-bus-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
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

#[test]
fn waits_for_qemu_registers_forwards_input_and_ends_when_qemu_leaves() {
    let bus = DbusDaemon::start();
    let fe = Arc::new(Frontend::new());
    let rec = Arc::new(Recorder::default());
    let target = Target {
        address: Some(bus.address.clone()),
        console: 0,
    };
    let (f, sink) = (fe.clone(), rec.clone());
    let run = std::thread::spawn(move || f.run(sink, &target));

    // QEMU comes later.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!run.is_finished(), "the front end waits for QEMU");
    let qemu = StandInQemu::start(&bus.address);

    // The listener is registered and QEMU's Scanout reaches the shim.
    assert!(
        wait_until(Duration::from_secs(10), || !rec
            .draws
            .lock()
            .unwrap()
            .is_empty()),
        "a frame from QEMU's Scanout"
    );
    let info = rec.scanouts.lock().unwrap()[0].clone().expect("a scanout");
    assert_eq!((info.width, info.height), (32, 16));
    assert_eq!(*rec.client_mouse.lock().unwrap(), [false], "relative mouse");

    // SPICE input → QEMU calls, in order.
    rec.send(InputEvent::KeyDown(0x1E));
    rec.send(InputEvent::KeyUp(0x9E));
    rec.send(InputEvent::KeyDown(0x48E0));
    rec.send(InputEvent::MousePress {
        button: 1,
        buttons: 1,
    });
    rec.send(InputEvent::MouseMotion {
        dx: 3,
        dy: -2,
        buttons: 1,
    });
    rec.send(InputEvent::MouseRelease {
        button: 1,
        buttons: 0,
    });
    rec.send(InputEvent::MousePress {
        button: 5,
        buttons: 0,
    });
    let expected = [
        Call::KeyPress(0x1E),
        Call::KeyRelease(0x1E),
        Call::KeyPress(0xC8),
        Call::ButtonPress(0),
        Call::Motion(3, -2),
        Call::ButtonRelease(0),
        Call::ButtonPress(4),
    ];
    assert!(
        wait_until(Duration::from_secs(5), || qemu.calls().len()
            >= expected.len()),
        "{:?}",
        qemu.calls()
    );
    assert_eq!(qemu.calls(), expected);

    // A tablet appears: client mouse mode, absolute positions.
    qemu.set_absolute();
    assert!(
        wait_until(Duration::from_secs(5), || rec
            .client_mouse
            .lock()
            .unwrap()
            .last()
            == Some(&true)),
        "client mouse mode offered"
    );
    rec.send(InputEvent::MousePosition {
        x: 20,
        y: 10,
        buttons: 0,
        display_id: 0,
    });
    assert!(
        wait_until(Duration::from_secs(5), || qemu.calls().last()
            == Some(&Call::Position(20, 10))),
        "{:?}",
        qemu.calls()
    );

    // QEMU leaves the bus (its listener connections stay open meanwhile): the front end
    // returns, and lets go of the shim's input.
    let listeners = qemu.listeners.clone();
    drop(qemu);
    let end = Instant::now() + Duration::from_secs(10);
    while !run.is_finished() {
        assert!(Instant::now() < end, "the front end ends once QEMU left");
        std::thread::sleep(Duration::from_millis(10));
    }
    let exit = run.join().unwrap().expect("no error");
    assert!(matches!(exit, Exit::QemuLeft(_)), "{exit:?}");
    assert!(
        rec.input.lock().unwrap().is_none(),
        "input callback removed"
    );
    drop(listeners);
}

#[test]
fn a_missing_console_is_an_error() {
    let bus = DbusDaemon::start();
    let _qemu = StandInQemu::start(&bus.address);
    let fe = Frontend::new();
    let err = fe
        .run(
            Arc::new(Recorder::default()),
            &Target {
                address: Some(bus.address.clone()),
                console: 3,
            },
        )
        .expect_err("no console 3");
    assert!(err.to_string().contains("no console 3"), "{err}");
}
