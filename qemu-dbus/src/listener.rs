//! The listener object QEMU calls on the peer-to-peer connection: `org.qemu.Display1.Listener`
//! and, for newer QEMU, `org.qemu.Display1.Listener.Unix.Map` and
//! `org.qemu.Display1.Listener.Unix.ScanoutDMABUF2`, all at `/org/qemu/Display1/Listener`.
//!
//! The interfaces do not spawn a task per call, so calls are handled in QEMU's order (an `Update`
//! after its `Scanout`). `UpdateDMABUF` holds its reply until the shim gives the frame's cookie
//! back; QEMU waits for that reply before it renders the next frame, and meanwhile nothing else
//! on this connection is handled (QEMU sends nothing that matters in between).

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use zbus::OwnedFd;

use crate::display::{Shared, dmabuf2_info};

/// Where QEMU looks for the listener.
pub const LISTENER_PATH: &str = "/org/qemu/Display1/Listener";
/// Shared-memory scanouts (QEMU 9.2 and later).
pub const MAP_INTERFACE: &str = "org.qemu.Display1.Listener.Unix.Map";
/// Multi-plane dmabuf scanouts (QEMU 10 and later).
pub const DMABUF2_INTERFACE: &str = "org.qemu.Display1.Listener.Unix.ScanoutDMABUF2";

/// `org.qemu.Display1.Listener`.
pub(crate) struct Listener {
    shared: Arc<Shared>,
    /// The optional interfaces announced through `Interfaces`.
    announced: Vec<String>,
}

#[zbus::interface(name = "org.qemu.Display1.Listener", spawn = false)]
impl Listener {
    fn scanout(&self, width: u32, height: u32, stride: u32, pixman_format: u32, data: &[u8]) {
        let s = &self.shared;
        s.display()
            .scanout(&s.cookies, width, height, stride, pixman_format, data);
    }

    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        x: i32,
        y: i32,
        width: i32,
        height: i32,
        stride: u32,
        pixman_format: u32,
        data: &[u8],
    ) {
        let s = &self.shared;
        s.display()
            .update(&s.cookies, x, y, width, height, stride, pixman_format, data);
    }

    #[zbus(name = "ScanoutDMABUF")]
    #[allow(clippy::too_many_arguments)]
    fn scanout_dmabuf(
        &self,
        dmabuf: OwnedFd,
        width: u32,
        height: u32,
        stride: u32,
        fourcc: u32,
        modifier: u64,
        y0_top: bool,
    ) {
        let info = gstspicedmabuf::ScanoutInfo {
            width,
            height,
            fourcc,
            modifier,
            y0_top,
            planes: vec![gstspicedmabuf::Plane {
                fd_index: 0,
                offset: 0,
                stride,
            }],
        };
        self.shared
            .display()
            .scanout_dmabuf(info, vec![dmabuf.into()]);
    }

    #[zbus(name = "UpdateDMABUF")]
    async fn update_dmabuf(&self, x: i32, y: i32, width: i32, height: i32) {
        let s = &self.shared;
        let done = s.display().update_dmabuf(&s.cookies, x, y, width, height);
        if let Some(done) = done {
            // Err: the front end stopped and dropped the waiter; reply anyway.
            let _ = done.await;
        }
    }

    fn disable(&self) {
        self.shared.display().disable();
    }

    fn mouse_set(&self, x: i32, y: i32, on: i32) {
        self.shared.display().mouse_set(x, y, on != 0);
    }

    fn cursor_define(&self, width: i32, height: i32, hot_x: i32, hot_y: i32, data: &[u8]) {
        self.shared
            .display()
            .cursor_define(width, height, hot_x, hot_y, data);
    }

    #[zbus(property)]
    fn interfaces(&self) -> Vec<String> {
        self.announced.clone()
    }
}

/// `org.qemu.Display1.Listener.Unix.Map`: QEMU's surface memfd, copied from on `UpdateMap`.
pub(crate) struct MapListener {
    shared: Arc<Shared>,
}

#[zbus::interface(name = "org.qemu.Display1.Listener.Unix.Map", spawn = false)]
impl MapListener {
    fn scanout_map(
        &self,
        handle: OwnedFd,
        offset: u32,
        width: u32,
        height: u32,
        stride: u32,
        pixman_format: u32,
    ) -> zbus::fdo::Result<()> {
        let s = &self.shared;
        s.display()
            .scanout_map(
                &s.cookies,
                handle.into(),
                offset,
                width,
                height,
                stride,
                pixman_format,
            )
            .map_err(zbus::fdo::Error::NotSupported)
    }

    fn update_map(&self, x: i32, y: i32, width: i32, height: i32) {
        let s = &self.shared;
        s.display().update_map(&s.cookies, x, y, width, height);
    }
}

/// `org.qemu.Display1.Listener.Unix.ScanoutDMABUF2`.
pub(crate) struct Dmabuf2Listener {
    shared: Arc<Shared>,
}

#[zbus::interface(name = "org.qemu.Display1.Listener.Unix.ScanoutDMABUF2", spawn = false)]
impl Dmabuf2Listener {
    #[zbus(name = "ScanoutDMABUF2")]
    #[allow(clippy::too_many_arguments)]
    fn scanout_dmabuf2(
        &self,
        dmabuf: Vec<OwnedFd>,
        x: u32,
        y: u32,
        width: u32,
        height: u32,
        offset: Vec<u32>,
        stride: Vec<u32>,
        num_planes: u32,
        fourcc: u32,
        backing_width: u32,
        backing_height: u32,
        modifier: u64,
        y0_top: bool,
    ) -> zbus::fdo::Result<()> {
        let info = dmabuf2_info(
            dmabuf.len(),
            x,
            y,
            width,
            height,
            &offset,
            &stride,
            num_planes,
            fourcc,
            backing_width,
            backing_height,
            modifier,
            y0_top,
        );
        match info {
            Ok(info) => {
                let fds = dmabuf.into_iter().take(info.planes.len()).map(Into::into);
                self.shared.display().scanout_dmabuf(info, fds.collect());
                Ok(())
            }
            Err(e) => {
                spice_shim_core::log::warn(&format!("QEMU's ScanoutDMABUF2 refused: {e}"));
                Err(zbus::fdo::Error::InvalidArgs(e))
            }
        }
    }
}

/// The client side of QEMU's peer-to-peer connection on `socket`, with the listener object
/// exported before any message is handled. `announce` lists the optional interfaces to announce
/// (they are served in any case).
pub(crate) fn connection(
    socket: UnixStream,
    shared: &Arc<Shared>,
    announce: Vec<String>,
) -> zbus::connection::Builder<'static> {
    zbus::connection::Builder::unix_stream(socket)
        .p2p()
        .serve_at(
            LISTENER_PATH,
            Listener {
                shared: shared.clone(),
                announced: announce,
            },
        )
        .serve_at(
            LISTENER_PATH,
            MapListener {
                shared: shared.clone(),
            },
        )
        .serve_at(
            LISTENER_PATH,
            Dmabuf2Listener {
                shared: shared.clone(),
            },
        )
}
