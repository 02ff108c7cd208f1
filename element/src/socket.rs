// SPDX-License-Identifier: MPL-2.0

//! `socket-path` mode: a listener thread that accepts one producer at a time on a unix
//! SOCK_SEQPACKET socket and turns its messages (docs/socket-protocol.md) into
//! `push_scanout`/`push_draw` calls. Each draw's release sends a DONE back to the producer.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use rustix::event::{PollFd, PollFlags, poll};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::frame::{DrawRelease, DrawStatus};
use crate::scanout::{Plane, Rect, Scanout, ScanoutInfo};
use crate::spicedmabufsrc::SpiceDmabufSrc;
use crate::spicedmabufsrc::imp::CAT;
use crate::wire::{self, DoneStatus, Message};

const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The listener thread; stops and removes the socket file when dropped.
pub(crate) struct SocketListener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl SocketListener {
    pub(crate) fn start(path: &str, element: &SpiceDmabufSrc) -> io::Result<Self> {
        let path = PathBuf::from(path);
        // A stale socket file from an earlier run would make bind fail.
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                let _ = std::fs::remove_file(&path);
            }
        }
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::net::bind(&fd, &SocketAddrUnix::new(&path)?)?;
        rustix::net::listen(&fd, 4)?;
        let stop = Arc::new(AtomicBool::new(false));
        let weak = element.downgrade();
        let thread = std::thread::Builder::new()
            .name("spicedmabufsrc-listen".into())
            .spawn({
                let stop = stop.clone();
                move || accept_loop(fd, weak, stop)
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
            path,
        })
    }
}

impl Drop for SocketListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Waits until `fd` is readable or the stop flag is set. Returns false when stopping.
fn wait_readable(fd: &OwnedFd, stop: &AtomicBool) -> bool {
    let timeout = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: POLL_INTERVAL.as_nanos() as _,
    };
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(n) if n > 0 => return true,
            Ok(_) | Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return true,
        }
    }
}

fn accept_loop(listen: OwnedFd, element: glib::WeakRef<SpiceDmabufSrc>, stop: Arc<AtomicBool>) {
    while wait_readable(&listen, &stop) {
        let conn = match rustix::net::accept_with(&listen, SocketFlags::CLOEXEC) {
            Ok(c) => c,
            Err(e) => {
                gst::warning!(CAT, "accept failed: {e}");
                continue;
            }
        };
        let Some(el) = element.upgrade() else { return };
        gst::info!(CAT, obj = el, "producer connected");
        drop(el);
        serve_producer(conn, &element, &stop);
        if let Some(el) = element.upgrade() {
            gst::info!(CAT, obj = el, "producer gone; listening for the next one");
        }
    }
}

fn serve_producer(conn: OwnedFd, element: &glib::WeakRef<SpiceDmabufSrc>, stop: &AtomicBool) {
    let conn = Arc::new(conn);
    // DONE and ERROR packets go through a writer thread so a release (which may run on a
    // streaming thread) never blocks on the producer's socket.
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let writer = {
        let conn = conn.clone();
        std::thread::Builder::new()
            .name("spicedmabufsrc-done".into())
            .spawn(move || {
                for packet in rx {
                    // The producer may be gone; its draws still end exactly once here.
                    let _ = wire::send_packet(conn.as_fd(), &packet, &[]);
                }
            })
    };
    let writer = match writer {
        Ok(w) => w,
        Err(e) => {
            gst::error!(CAT, "cannot start the DONE writer: {e}");
            return;
        }
    };

    let mut buf = [0u8; wire::MAX_PACKET];
    while wait_readable(&conn, stop) {
        let (len, fds) = match wire::recv_packet(conn.as_fd(), &mut buf) {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                report(
                    element,
                    &tx,
                    e.error_code(),
                    &format!("receive failed: {e}"),
                );
                if e.is_fatal() {
                    break;
                }
                continue;
            }
        };
        let nfds = fds.len();
        match wire::decode(&buf[..len], nfds) {
            Ok(msg) => handle_message(msg, fds, element, &tx),
            Err(e) => {
                report(
                    element,
                    &tx,
                    e.error_code(),
                    &format!("malformed message: {e}"),
                );
                if e.is_fatal() {
                    break;
                }
            }
        }
    }
    // The producer's buffers are no longer its scanout.
    if let Some(el) = element.upgrade() {
        el.push_scanout(None);
    }
    // The writer ends by itself once the last pending draw of this producer is released (each
    // release holds a sender); waiting for it here could wait on frames still in the pipeline.
    drop(tx);
    drop(writer);
}

fn report(
    element: &glib::WeakRef<SpiceDmabufSrc>,
    tx: &mpsc::Sender<Vec<u8>>,
    code: u32,
    text: &str,
) {
    match element.upgrade() {
        Some(el) => gst::warning!(CAT, obj = el, "producer: {text}"),
        None => gst::warning!(CAT, "producer: {text}"),
    }
    let _ = tx.send(wire::encode(&Message::Error {
        code,
        text: text.to_string(),
    }));
}

fn handle_message(
    msg: Message,
    fds: Vec<OwnedFd>,
    element: &glib::WeakRef<SpiceDmabufSrc>,
    tx: &mpsc::Sender<Vec<u8>>,
) {
    let Some(el) = element.upgrade() else { return };
    match msg {
        Message::Scanout {
            width,
            height,
            fourcc,
            y0_top,
            modifier,
            planes,
        } => {
            if planes.is_empty() {
                el.push_scanout(None);
                return;
            }
            let info = ScanoutInfo {
                width,
                height,
                fourcc,
                modifier,
                y0_top,
                planes: planes
                    .iter()
                    .enumerate()
                    .map(|(i, p)| Plane {
                        fd_index: i,
                        offset: p.offset,
                        stride: p.stride,
                    })
                    .collect(),
            };
            match Scanout::new(info, fds) {
                Ok(s) => el.push_scanout(Some(Arc::new(s))),
                Err(e) => {
                    // The previous scanout is no longer what the producer shows.
                    el.push_scanout(None);
                    report(
                        element,
                        tx,
                        wire::error_code::BAD_SCANOUT,
                        &format!("scanout refused: {e}"),
                    );
                }
            }
        }
        Message::Draw {
            x,
            y,
            w,
            h,
            draw_id,
        } => {
            let tx_done = tx.clone();
            let release = DrawRelease::new(draw_id, move |id, status| {
                let status = match status {
                    DrawStatus::Released => DoneStatus::Released,
                    DrawStatus::Dropped => DoneStatus::Dropped,
                    DrawStatus::Refused => DoneStatus::Refused,
                };
                let _ = tx_done.send(wire::encode(&Message::Done {
                    draw_id: id,
                    status,
                }));
            });
            if let Err(e) = el.push_draw(Rect { x, y, w, h }, release)
                && !matches!(e, crate::DrawError::NotRunning(_))
            {
                report(element, tx, wire::error_code::DRAW_REFUSED, &e.to_string());
            }
        }
        Message::Hello { version, name } => {
            gst::info!(CAT, obj = el, "producer '{name}' speaks version {version}");
        }
        Message::Done { .. } | Message::Error { .. } => {
            report(
                element,
                tx,
                wire::error_code::MALFORMED,
                "unexpected message from the producer",
            );
        }
    }
}
