//! The cursor channel: the host's pointer shape and position, drawn by the client itself (crisp,
//! and in client mouse mode it moves at once, without waiting for video).
//!
//! [`CursorState`] keeps the current shape, position and visibility and tells every cursor
//! channel about changes; each channel keeps the client's cursor cache ([`CursorCache`]), so a
//! shape the client has seen goes out as a cache reference. A channel that joins gets INIT with
//! the current cursor at once, then a MOVE (spice-gtk in server mouse mode draws nothing until a
//! MOVE arrives).
//!
//! Lock order: `CursorState::inner` before an [`Outbox`] lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::channel::read_messages;
use crate::conn::Conn;
use crate::log;
use crate::outbox::{MAX_CONTROL_BYTES, Outbox};
use crate::proto::cursor::MAX_CURSOR_SIZE;
use crate::proto::{
    CursorCache, CursorHide, CursorInit, CursorInvalOne, CursorMove, CursorSet, CursorShape,
    HeaderKind, Point16, parse_client_cursor,
};
use crate::shim::Core;

/// Cursor messages a client may leave unread before its channel is closed: the small-message
/// bound plus four shapes of the largest size (a 512x512 SET or INIT alone is over 1 MiB), so
/// that defining the largest shapes the API accepts, or a few in a row, does not close the
/// channel of a client that reads.
const MAX_CURSOR_QUEUE_BYTES: usize =
    MAX_CONTROL_BYTES + 4 * (MAX_CURSOR_SIZE as usize * MAX_CURSOR_SIZE as usize * 4);

struct Client {
    outbox: Arc<Outbox>,
    cache: CursorCache,
}

struct Inner {
    shape: Option<Arc<CursorShape>>,
    x: i32,
    y: i32,
    visible: bool,
    clients: HashMap<u64, Client>,
}

/// The host's cursor and the channels that show it.
pub(crate) struct CursorState {
    inner: Mutex<Inner>,
}

impl CursorState {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                shape: None,
                x: 0,
                y: 0,
                visible: true,
                clients: HashMap::new(),
            }),
        }
    }

    /// A new shape: every client gets SET (or a cache reference), then a MOVE or HIDE so it
    /// shows as the host has it.
    pub fn define(&self, shape: CursorShape) {
        let mut inner = self.inner.lock().unwrap();
        let shape = Arc::new(shape);
        let (pos, visible) = (Point16::clamped(inner.x, inner.y), inner.visible);
        for c in inner.clients.values_mut() {
            let plan = c.cache.plan(&shape);
            c.outbox.send(&CursorSet {
                position: pos,
                visible,
                cursor: plan.cursor,
            });
            for id in plan.inval_ids {
                c.outbox.send(&CursorInvalOne { id });
            }
            if visible {
                c.outbox.send(&CursorMove { position: pos });
            } else {
                c.outbox.send(&CursorHide);
            }
        }
        inner.shape = Some(shape);
    }

    /// The pointer moved, or was shown or hidden.
    pub fn set_position(&self, x: i32, y: i32, visible: bool) {
        let mut inner = self.inner.lock().unwrap();
        let was_visible = inner.visible;
        inner.x = x;
        inner.y = y;
        inner.visible = visible;
        let pos = Point16::clamped(x, y);
        for c in inner.clients.values() {
            if visible {
                c.outbox.send(&CursorMove { position: pos });
            } else if was_visible {
                c.outbox.send(&CursorHide);
            }
        }
    }

    /// A channel joins: INIT with the current cursor, then MOVE if it is visible.
    fn add(&self, id: u64, outbox: Arc<Outbox>) {
        let mut inner = self.inner.lock().unwrap();
        let mut cache = CursorCache::new();
        let cursor = cache.init_cursor(inner.shape.as_deref());
        let pos = Point16::clamped(inner.x, inner.y);
        let visible = inner.visible && inner.shape.is_some();
        outbox.send(&CursorInit::new(pos, visible, cursor));
        if visible {
            outbox.send(&CursorMove { position: pos });
        }
        inner.clients.insert(id, Client { outbox, cache });
    }

    fn remove(&self, id: u64) {
        self.inner.lock().unwrap().clients.remove(&id);
    }
}

/// Serves one cursor channel until it closes.
pub fn run(core: &Arc<Core>, id: u64, mut conn: Conn, header: HeaderKind) {
    let peer = conn.peer();
    let Some((outbox, writer)) =
        Outbox::start_with_limit(header, &conn, "shim-cursor-writer", MAX_CURSOR_QUEUE_BYTES)
    else {
        return;
    };
    core.cursor().add(id, outbox.clone());
    let why = read_messages(&mut conn, header, |t, body| {
        match parse_client_cursor(t, &body) {
            Ok(msg) => log::debug(&format!("{peer}: cursor: {msg:?}")),
            Err(e) => log::warn(&format!("{peer}: cursor channel: {e}")),
        }
        true
    });
    core.cursor().remove(id);
    log::debug(&format!("{peer}: cursor channel: {why}"));
    outbox.close();
    conn.shutdown();
    let _ = writer.join();
}
