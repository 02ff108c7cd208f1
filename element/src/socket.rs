// SPDX-License-Identifier: MPL-2.0

//! `socket-path` mode: a listener thread that accepts one producer at a time on a unix
//! SOCK_SEQPACKET socket and turns its messages (docs/socket-protocol.md) into
//! `push_scanout`/`push_draw` calls. Each draw's release sends a DONE back to the producer.
//!
//! Replies (DONE and ERROR) go through a bounded queue to a writer thread. A producer that lets
//! [`MAX_QUEUED_REPLIES`] of them pile up (it does not read its socket) is disconnected, so a
//! producer cannot grow the element's memory by sending and never reading.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use rustix::event::{PollFd, PollFlags, poll};
use rustix::net::{AddressFamily, Shutdown, SocketAddrUnix, SocketFlags, SocketType};

use crate::frame::{DrawRelease, DrawStatus};
use crate::scanout::{Plane, Rect, Scanout, ScanoutInfo};
use crate::spicedmabufsrc::SpiceDmabufSrc;
use crate::spicedmabufsrc::imp::CAT;
use crate::wire::{self, DoneStatus, Message};

const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Replies (DONE and ERROR packets) waiting for a producer that does not read them, beyond
/// what its socket buffer holds, before the element hangs up on it. A reply is at most 4 KiB
/// ([`wire::MAX_PACKET`]) and usually 20 to 150 bytes, so this caps the queue at 4 MiB and
/// typically at about 150 KiB. A producer that reads its socket never comes near it: it has at
/// most a few draws in flight.
pub(crate) const MAX_QUEUED_REPLIES: usize = 1024;

/// The reply path toward one producer: a bounded queue drained by a writer thread. Cloned into
/// every draw's release, which may run on a streaming thread, so sending never blocks.
#[derive(Clone)]
struct Replies {
    tx: mpsc::SyncSender<Vec<u8>>,
    conn: Arc<OwnedFd>,
    /// Set once the producer was disconnected for not reading its replies.
    overflowed: Arc<AtomicBool>,
    element: glib::WeakRef<SpiceDmabufSrc>,
}

impl Replies {
    /// Queues one packet. If the queue is full, the producer is disconnected (once, with one
    /// warning): its socket is shut down, which ends the reader loop (and so the producer's
    /// session, as if it had left) and wakes the writer if it is blocked on the full socket.
    fn send(&self, packet: Vec<u8>) {
        if self.overflowed.load(Ordering::Acquire) {
            return;
        }
        match self.tx.try_send(packet) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => self.overflow(),
        }
    }

    fn overflow(&self) {
        if self.overflowed.swap(true, Ordering::AcqRel) {
            return;
        }
        let text = format!(
            "producer does not read its replies ({MAX_QUEUED_REPLIES} DONE/ERROR packets queued); disconnecting it"
        );
        match self.element.upgrade() {
            Some(el) => gst::warning!(CAT, obj = el, "{text}"),
            None => gst::warning!(CAT, "{text}"),
        }
        let _ = rustix::net::shutdown(&*self.conn, Shutdown::Both);
    }

    fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }
}

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
            .name("sdmbsrc-listen".into())
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
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(MAX_QUEUED_REPLIES);
    let replies = Replies {
        tx,
        conn: conn.clone(),
        overflowed: Arc::new(AtomicBool::new(false)),
        element: element.clone(),
    };
    let writer = {
        let conn = conn.clone();
        let overflowed = replies.overflowed.clone();
        std::thread::Builder::new()
            // At most 15 bytes: the thread's name as /proc shows it.
            .name("sdmbsrc-replies".into())
            .spawn(move || {
                for packet in rx {
                    // Once the producer was cut off, what is left is dropped unsent.
                    if overflowed.load(Ordering::Acquire) {
                        continue;
                    }
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
    while !replies.overflowed() && wait_readable(&conn, stop) {
        let (len, fds) = match wire::recv_packet(conn.as_fd(), &mut buf) {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                report(
                    element,
                    &replies,
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
            Ok(msg) => handle_message(msg, fds, element, &replies),
            Err(e) => {
                report(
                    element,
                    &replies,
                    e.error_code(),
                    &format!("malformed message: {e}"),
                );
                if e.is_fatal() {
                    break;
                }
            }
        }
    }
    // The producer's buffers are no longer its scanout. Its draws in flight end as usual (each
    // release holds a sender); after an overflow their DONEs are dropped unsent.
    if let Some(el) = element.upgrade() {
        el.push_scanout(None);
    }
    // The writer ends by itself once the last pending draw of this producer is released (each
    // release holds a sender); waiting for it here could wait on frames still in the pipeline.
    drop(replies);
    drop(writer);
}

fn report(element: &glib::WeakRef<SpiceDmabufSrc>, replies: &Replies, code: u32, text: &str) {
    match element.upgrade() {
        Some(el) => gst::warning!(CAT, obj = el, "producer: {text}"),
        None => gst::warning!(CAT, "producer: {text}"),
    }
    replies.send(wire::encode(&Message::Error {
        code,
        text: text.to_string(),
    }));
}

fn handle_message(
    msg: Message,
    fds: Vec<OwnedFd>,
    element: &glib::WeakRef<SpiceDmabufSrc>,
    replies: &Replies,
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
                        replies,
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
            let tx_done = replies.clone();
            let release = DrawRelease::new(draw_id, move |id, status| {
                let status = match status {
                    DrawStatus::Released => DoneStatus::Released,
                    DrawStatus::Dropped => DoneStatus::Dropped,
                    DrawStatus::Refused => DoneStatus::Refused,
                };
                tx_done.send(wire::encode(&Message::Done {
                    draw_id: id,
                    status,
                }));
            });
            if let Err(e) = el.push_draw(Rect { x, y, w, h }, release)
                && !matches!(e, crate::DrawError::NotRunning(_))
            {
                report(
                    element,
                    replies,
                    wire::error_code::DRAW_REFUSED,
                    &e.to_string(),
                );
            }
        }
        Message::Hello { version, name } => {
            gst::info!(CAT, obj = el, "producer '{name}' speaks version {version}");
        }
        Message::Done { .. } | Message::Error { .. } => {
            report(
                element,
                replies,
                wire::error_code::MALFORMED,
                "unexpected message from the producer",
            );
        }
    }
}
