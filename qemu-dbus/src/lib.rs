//! The QEMU front end of spice-shim (`spice-shim qemu`): a listener on a console of QEMU's D-Bus
//! display (`-display dbus`) that feeds what QEMU shows to the shim, and SPICE input back to
//! QEMU.
//!
//! - [`Frontend::run`] connects to QEMU's bus, waits for QEMU, registers the listener on the
//!   console and serves it until QEMU goes away or [`Stopper::stop`].
//! - QEMU's calls (see [`listener`]): 2D pixels go through a ring of sealed memfds with damage
//!   merging ([`ring`]); dmabufs go to the shim as they are, and the `UpdateDMABUF` reply waits for
//!   the frame's cookie ([`display`]).
//! - SPICE keys and mouse events become `Keyboard`/`Mouse` calls on the console ([`input`]).
//!
//! The async side (zbus) stays inside this crate: [`Frontend::run`] blocks its caller, and the
//! shim's callbacks (completion, input) only take short locks or queue.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use spice_shim_qemu::{Frontend, Target};
//! let frontend = Frontend::new();
//! let shim = Arc::new(spice_shim_core::Shim::start(
//!     spice_shim_core::Config::default(),
//!     frontend.completion_callback(),
//! )?);
//! let exit = frontend.run(shim.clone(), &Target { address: None, console: 0 })?;
//! let stats = Arc::into_inner(shim).expect("the front end let go").shutdown();
//! # Ok(()) }
//! ```

mod bus;
mod cookies;
pub mod cursor;
pub mod display;
pub mod format;
pub mod input;
pub mod listener;
pub mod memfd;
pub mod ring;

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_channel::oneshot;
use futures_util::future::{Fuse, FutureExt};
use futures_util::{StreamExt, select};
use spice_shim_core::ledger::CompleteFn;
use spice_shim_core::log;
use zbus::Connection;
use zbus::Fd;

pub use display::{FrontendStats, Sink};

use bus::{QEMU_NAME, QemuConsole};
use display::Shared;
use listener::{DMABUF2_INTERFACE, MAP_INTERFACE};

/// Where QEMU is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The bus QEMU runs on (`-display dbus,addr=ADDRESS`); `None`: the session bus.
    pub address: Option<String>,
    /// The console to show.
    pub console: u32,
}

/// Why [`Frontend::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// QEMU went away (the reason says how it was noticed).
    QemuLeft(String),
    /// [`Stopper::stop`] was called.
    Stopped,
}

/// Errors of the front end.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to D-Bus at {address}: {source}")]
    Connect {
        address: String,
        source: zbus::Error,
    },
    #[error("QEMU has no console {console} (its consoles: {available:?})")]
    NoConsole { console: u32, available: Vec<u32> },
    #[error("cannot make the listener's socket pair: {0}")]
    Socket(std::io::Error),
    #[error("QEMU refused the listener on console {console}: {source}")]
    Register { console: u32, source: zbus::Error },
    #[error("the listener connection to QEMU failed: {0}")]
    Listener(zbus::Error),
    #[error("D-Bus: {0}")]
    Dbus(#[from] zbus::Error),
    #[error("the front end already ran (one run per Frontend)")]
    AlreadyRan,
}

/// Stops a running [`Frontend::run`] (from any thread, e.g. a signal handler's).
#[derive(Clone)]
pub struct Stopper(Arc<Mutex<Option<oneshot::Sender<()>>>>);

impl Stopper {
    pub fn stop(&self) {
        if let Some(tx) = self.0.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = tx.send(());
        }
    }
}

/// The front end: create it first (the shim needs its [`Frontend::completion_callback`]), then
/// [`Frontend::run`] it with the shim.
pub struct Frontend {
    shared: Arc<Shared>,
    stopper: Stopper,
    stop: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Default for Frontend {
    fn default() -> Self {
        Self::new()
    }
}

/// The stop signal as a future that can be polled again and again.
type StopFuture = Fuse<oneshot::Receiver<()>>;

impl Frontend {
    pub fn new() -> Self {
        let (tx, rx) = oneshot::channel();
        Self {
            shared: Arc::new(Shared::new()),
            stopper: Stopper(Arc::new(Mutex::new(Some(tx)))),
            stop: Mutex::new(Some(rx)),
        }
    }

    /// The shim's completion callback (pass it to `Shim::start`). It runs on the shim's
    /// completion thread and only takes the front end's lock.
    pub fn completion_callback(&self) -> CompleteFn {
        let shared = self.shared.clone();
        Box::new(move |cookie| shared.complete(cookie))
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    pub fn stats(&self) -> FrontendStats {
        self.shared.stats()
    }

    fn take_stop(&self) -> Result<StopFuture, Error> {
        let rx = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or(Error::AlreadyRan)?;
        Ok(rx.fuse())
    }

    /// Connects to QEMU's bus, waits for QEMU, registers a listener on the console and feeds
    /// `sink` until QEMU goes away or [`Stopper::stop`]. Blocks the calling thread.
    ///
    /// When it returns, the front end has stopped calling `sink` and holds no reference to it
    /// (so `Arc::into_inner` gets the shim back for `shutdown`); held `UpdateDMABUF` replies are
    /// released.
    pub fn run(&self, sink: Arc<dyn Sink>, target: &Target) -> Result<Exit, Error> {
        let stop = self.take_stop()?;
        self.shared.attach(sink.clone());
        let result = zbus::block_on(self.run_on_bus(&sink, target, stop));
        self.finish(sink);
        result
    }

    /// Serves a listener on `socket`, one end of a socket pair whose other end QEMU (or a
    /// stand-in) runs a peer-to-peer D-Bus server on, as after `RegisterListener`. No bus, so no
    /// input goes back. Returns when the peer closes the connection or [`Stopper::stop`].
    /// `announce_extensions`: announce the Map and ScanoutDMABUF2 interfaces.
    pub fn serve_peer(
        &self,
        sink: Arc<dyn Sink>,
        socket: UnixStream,
        announce_extensions: bool,
    ) -> Result<Exit, Error> {
        let mut stop = self.take_stop()?;
        self.shared.attach(sink.clone());
        let result = zbus::block_on(async {
            let Some(p2p) = self
                .connect_listener(socket, announce_extensions, &mut stop)
                .await?
            else {
                return Ok(Exit::Stopped);
            };
            select! {
                _ = stop => Ok(Exit::Stopped),
                _ = p2p.closed().fuse() => Ok(Exit::QemuLeft("the listener connection closed".into())),
            }
        });
        self.finish(sink);
        result
    }

    /// Builds the listener connection (`None`: stopped meanwhile).
    async fn connect_listener(
        &self,
        socket: UnixStream,
        announce_extensions: bool,
        mut stop: &mut StopFuture,
    ) -> Result<Option<Connection>, Error> {
        let announce = if announce_extensions {
            vec![MAP_INTERFACE.to_owned(), DMABUF2_INTERFACE.to_owned()]
        } else {
            Vec::new()
        };
        let build = listener::connection(socket, &self.shared, announce).build();
        select! {
            c = build.fuse() => c.map(Some).map_err(Error::Listener),
            _ = stop => Ok(None),
        }
    }

    fn finish(&self, sink: Arc<dyn Sink>) {
        sink.set_input_callback(None);
        self.shared.detach();
        let s = self.shared.stats();
        log::info(&format!(
            "QEMU front end: {} 2D updates in {} frames ({} waits for a free buffer, {} surface \
             growths), {} dmabuf frames, {} calls refused",
            s.ring.updates, s.ring.frames, s.ring.waits, s.ring.grown, s.dmabuf_draws, s.refused
        ));
    }

    async fn run_on_bus(
        &self,
        sink: &Arc<dyn Sink>,
        target: &Target,
        mut stop: StopFuture,
    ) -> Result<Exit, Error> {
        let shown = bus::describe(target.address.as_deref());
        log::info(&format!(
            "QEMU D-Bus display: {shown}, console {}",
            target.console
        ));
        let conn = bus::connect(target.address.as_deref()).await?;
        let (present, mut owner_changes) = bus::watch_qemu(&conn).await?;
        if !present {
            log::info(&format!("waiting for QEMU ({QEMU_NAME}) on {shown}"));
            select! {
                _ = stop => return Ok(Exit::Stopped),
                appeared = bus::next_owner_change(&mut owner_changes, true).fuse() => {
                    if !appeared {
                        return Ok(Exit::QemuLeft(format!("the bus {shown} closed")));
                    }
                }
            }
        }

        let qemu = QemuConsole::open(&conn, target.console).await?;
        // Newer QEMU has an `Interfaces` property on its console, and only a QEMU that has one
        // may know the listener's optional interfaces (an older one would ignore them anyway).
        let newer = qemu.console.interfaces().await.is_ok();
        let (w, h) = (
            qemu.console.width().await.unwrap_or(0),
            qemu.console.height().await.unwrap_or(0),
        );
        let (ours, theirs) = UnixStream::pair().map_err(Error::Socket)?;
        qemu.console
            .register_listener(Fd::from(&theirs))
            .await
            .map_err(|source| Error::Register {
                console: target.console,
                source,
            })?;
        // QEMU has its own copy now; ours would keep the connection open after QEMU dies.
        drop(theirs);
        log::info(&format!(
            "registered listener on console {} ({w}x{h}){}{}",
            target.console,
            qemu.vm_name
                .as_deref()
                .map(|n| format!(" of VM {n:?}"))
                .unwrap_or_default(),
            if newer {
                "; shared-memory and multi-plane scanouts offered"
            } else {
                ""
            }
        ));
        let Some(p2p) = self.connect_listener(ours, newer, &mut stop).await? else {
            return Ok(Exit::Stopped);
        };

        let absolute = AtomicBool::new(qemu.mouse.is_absolute().await.unwrap_or(false));
        tell_mouse_mode(sink, absolute.load(Ordering::Relaxed));
        let inputs = input::queue(self.shared.input_dropped.clone());
        sink.set_input_callback(Some(inputs.callback.clone()));
        let forward = input::forward(
            inputs.events,
            qemu.keyboard.clone(),
            qemu.mouse.clone(),
            &absolute,
        );
        let watch_mouse = async {
            let mut changes = qemu.mouse.receive_is_absolute_changed().await;
            while let Some(change) = changes.next().await {
                if let Ok(abs) = change.get().await
                    && absolute.swap(abs, Ordering::Relaxed) != abs
                {
                    tell_mouse_mode(sink, abs);
                }
            }
            std::future::pending::<()>().await
        };

        let reason = select! {
            _ = stop => None,
            _ = p2p.closed().fuse() => Some("the listener connection closed".to_owned()),
            gone = bus::next_owner_change(&mut owner_changes, false).fuse() => Some(if gone {
                format!("{QEMU_NAME} left the bus")
            } else {
                format!("the bus {shown} closed")
            }),
            _ = forward.fuse() => None,
            _ = watch_mouse.fuse() => None,
        };
        Ok(match reason {
            Some(r) => {
                log::info(&format!("QEMU left: {r}"));
                Exit::QemuLeft(r)
            }
            None => Exit::Stopped,
        })
    }
}

fn tell_mouse_mode(sink: &Arc<dyn Sink>, absolute: bool) {
    sink.set_client_mouse_available(absolute);
    log::info(if absolute {
        "QEMU's mouse is absolute: SPICE clients may use client mouse mode"
    } else {
        "QEMU's mouse is relative: SPICE clients use server mouse mode (QEMU takes absolute \
         positions with -device usb-tablet)"
    });
}
