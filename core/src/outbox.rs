//! Per-channel outgoing queue and its writer thread.
//!
//! Messages are framed when queued (so serials follow queue order) and written by one writer
//! thread per channel, which is the only thread that blocks on the client's socket. Control
//! messages are never dropped. Stream frames are bounded per client: when a client cannot keep
//! up, new frames are refused (dropped for that client only) and the caller resumes the client at
//! the next keyframe.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use crate::conn::Conn;
use crate::encoder::AccessUnit;
use crate::proto::{FrameEncoder, HeaderKind, ServerMessage, stream_data_head};

enum Item {
    Bytes(Vec<u8>),
    Stream {
        head: Vec<u8>,
        au: Arc<AccessUnit>,
    },
    /// One byte with an fd attached (SCM_RIGHTS), sent on its own after the previous message.
    Fd(OwnedFd),
}

/// Bytes of control messages a client may leave unread before its channel is closed. A real
/// client reads its replies at once; one that sends requests and never reads would otherwise
/// grow this queue without bound.
pub const MAX_CONTROL_BYTES: usize = 1 << 20;

struct State {
    items: VecDeque<Item>,
    stream_items: usize,
    /// Bytes of the queued control messages.
    control_bytes: usize,
    closed: bool,
    enc: FrameEncoder,
}

/// Outgoing messages of one channel.
pub struct Outbox {
    state: Mutex<State>,
    cond: Condvar,
    /// Bytes of control messages the client may leave unread before the channel is closed.
    max_control_bytes: usize,
    /// Bytes written so far.
    pub written: AtomicU64,
}

impl Outbox {
    /// An empty outbox that closes the channel when more than `max_control_bytes` bytes of
    /// control messages wait unread.
    pub fn with_limit(kind: HeaderKind, max_control_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                stream_items: 0,
                control_bytes: 0,
                closed: false,
                enc: FrameEncoder::new(kind),
            }),
            cond: Condvar::new(),
            max_control_bytes,
            written: AtomicU64::new(0),
        })
    }

    /// An outbox for `conn` with its writer thread running.
    pub fn start(
        kind: HeaderKind,
        conn: &Conn,
        thread_name: &str,
    ) -> Option<(Arc<Self>, std::thread::JoinHandle<()>)> {
        Self::start_with_limit(kind, conn, thread_name, MAX_CONTROL_BYTES)
    }

    /// [`Self::start`] with another bound than [`MAX_CONTROL_BYTES`] (see [`Self::with_limit`]).
    pub fn start_with_limit(
        kind: HeaderKind,
        conn: &Conn,
        thread_name: &str,
        max_control_bytes: usize,
    ) -> Option<(Arc<Self>, std::thread::JoinHandle<()>)> {
        let outbox = Self::with_limit(kind, max_control_bytes);
        let wconn = match conn.try_clone() {
            Ok(c) => c,
            Err(e) => {
                crate::log::error(&format!("{thread_name}: cannot clone the socket: {e}"));
                return None;
            }
        };
        let o = outbox.clone();
        match std::thread::Builder::new()
            .name(thread_name.into())
            .spawn(move || o.run_writer(wconn))
        {
            Ok(writer) => Some((outbox, writer)),
            Err(e) => {
                crate::log::error(&format!("cannot start {thread_name}: {e}"));
                None
            }
        }
    }

    /// Queues a control message (never dropped). Returns false if the channel is closed.
    pub fn send<M: ServerMessage>(&self, msg: &M) -> bool {
        let mut st = self.state.lock().unwrap();
        if st.closed {
            return false;
        }
        match st.enc.encode(msg) {
            Ok(bytes) => {
                st.control_bytes += bytes.len();
                st.items.push_back(Item::Bytes(bytes));
            }
            Err(e) => {
                crate::log::error(&format!("cannot build message {}: {e}", M::MSG_TYPE));
                return true;
            }
        }
        if st.control_bytes > self.max_control_bytes {
            drop(st);
            crate::log::warn(&format!(
                "a client left more than {} bytes of replies unread; closing its channel",
                self.max_control_bytes
            ));
            self.close();
            return false;
        }
        drop(st);
        self.cond.notify_one();
        true
    }

    /// Queues a control message followed by a separate one-byte packet carrying `fd`.
    pub fn send_with_fd<M: ServerMessage>(&self, msg: &M, fd: OwnedFd) -> bool {
        let mut st = self.state.lock().unwrap();
        if st.closed {
            return false;
        }
        if let Ok(bytes) = st.enc.encode(msg) {
            st.control_bytes += bytes.len();
            st.items.push_back(Item::Bytes(bytes));
            st.items.push_back(Item::Fd(fd));
        }
        drop(st);
        self.cond.notify_one();
        true
    }

    /// Queues one access unit as STREAM_DATA, unless `max_frames` frames are already waiting.
    /// Returns false when the frame was refused (queue full or channel closed).
    pub fn send_stream(
        &self,
        stream_id: u32,
        mm_time: u32,
        au: &Arc<AccessUnit>,
        max_frames: usize,
    ) -> bool {
        let mut st = self.state.lock().unwrap();
        if st.closed || st.stream_items >= max_frames {
            return false;
        }
        let Ok(head) = stream_data_head(&mut st.enc, stream_id, mm_time, au.data.size()) else {
            return false;
        };
        st.items.push_back(Item::Stream {
            head,
            au: au.clone(),
        });
        st.stream_items += 1;
        drop(st);
        self.cond.notify_one();
        true
    }

    /// Stream frames waiting for the writer (not counting one being written).
    pub fn queued_frames(&self) -> usize {
        self.state.lock().unwrap().stream_items
    }

    /// Whether the channel was closed.
    pub fn is_closed(&self) -> bool {
        self.state.lock().unwrap().closed
    }

    /// Closes the outbox: queued items are discarded and the writer stops.
    pub fn close(&self) {
        let mut st = self.state.lock().unwrap();
        st.closed = true;
        st.items.clear();
        st.stream_items = 0;
        st.control_bytes = 0;
        drop(st);
        self.cond.notify_all();
    }

    /// Writes queued items to `conn` until closed or a write fails; then shuts the socket down
    /// so the channel's reader wakes up.
    pub fn run_writer(&self, mut conn: Conn) {
        loop {
            let item = {
                let mut st = self.state.lock().unwrap();
                loop {
                    if st.closed {
                        drop(st);
                        conn.shutdown();
                        return;
                    }
                    if let Some(item) = st.items.pop_front() {
                        match &item {
                            Item::Stream { .. } => st.stream_items -= 1,
                            Item::Bytes(b) => st.control_bytes -= b.len(),
                            Item::Fd(_) => {}
                        }
                        break item;
                    }
                    st = self.cond.wait(st).unwrap();
                }
            };
            let res = match &item {
                Item::Bytes(b) => conn.write_all_vectored(&[b]).map(|_| b.len()),
                Item::Stream { head, au } => match au.data.map_readable() {
                    Ok(map) => conn
                        .write_all_vectored(&[head, map.as_slice()])
                        .map(|_| head.len() + map.len()),
                    Err(_) => Err(io::Error::other("cannot map an access unit")),
                },
                Item::Fd(fd) => send_fd(&conn, fd).map(|_| 1),
            };
            match res {
                Ok(n) => {
                    self.written.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    self.close();
                    conn.shutdown();
                    return;
                }
            }
        }
    }
}

/// Sends the one-byte `'@'` packet carrying `fd` (GL_SCANOUT_UNIX's out-of-band fd).
fn send_fd(conn: &Conn, fd: &OwnedFd) -> io::Result<()> {
    let fds = [fd.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !anc.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("ancillary buffer too small"));
    }
    let byte = [b'@'];
    loop {
        match rustix::net::sendmsg(conn, &[IoSlice::new(&byte)], &mut anc, SendFlags::NOSIGNAL) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::MouseMotionAck;

    #[test]
    fn unread_replies_close_the_channel() {
        let o = Outbox::with_limit(HeaderKind::Mini, MAX_CONTROL_BYTES);
        let mut sent = 0usize;
        while o.send(&MouseMotionAck) {
            sent += 1;
            assert!(sent < 10 * MAX_CONTROL_BYTES, "the queue never filled");
        }
        assert!(o.is_closed());
        // Each message is a 6-byte mini header: the limit, not more, was queued.
        assert_eq!(sent, MAX_CONTROL_BYTES / 6);
    }
}
