//! Cookies of the front end's `gl_draw` calls, and where each one goes when the shim gives it
//! back: a held `UpdateDMABUF` reply waits for its own; any other belongs to the 2D ring.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use futures_channel::oneshot;

/// Cookie numbers and the `UpdateDMABUF` replies that wait for theirs.
#[derive(Debug)]
pub(crate) struct Cookies {
    next: AtomicU64,
    waiters: Mutex<HashMap<u64, oneshot::Sender<()>>>,
}

impl Cookies {
    pub fn new() -> Self {
        Self {
            next: AtomicU64::new(1),
            waiters: Mutex::default(),
        }
    }

    /// A fresh cookie.
    pub fn next(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Something to await until `cookie` comes back. Register before `gl_draw`: the cookie may
    /// come back before `gl_draw` returns.
    pub fn wait_for(&self, cookie: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(cookie, tx);
        rx
    }

    /// Wakes whoever waits for `cookie`; false when nobody does (a 2D frame's cookie).
    pub fn wake(&self, cookie: u64) -> bool {
        match self.lock().remove(&cookie) {
            Some(tx) => {
                let _ = tx.send(());
                true
            }
            None => false,
        }
    }

    /// Wakes every waiter (the front end stops: no held reply may stay pending).
    pub fn wake_all(&self) {
        for (_, tx) in self.lock().drain() {
            let _ = tx.send(());
        }
    }

    /// Replies still held.
    pub fn waiting(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<()>>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_is_woken_once_by_its_cookie() {
        let c = Cookies::new();
        let a = c.next();
        let b = c.next();
        assert_ne!(a, b);
        let mut rx = c.wait_for(a);
        assert!(!c.wake(b));
        assert_eq!(rx.try_recv(), Ok(None));
        assert!(c.wake(a));
        assert_eq!(rx.try_recv(), Ok(Some(())));
        assert!(!c.wake(a));
    }

    #[test]
    fn wake_all_releases_every_held_reply() {
        let c = Cookies::new();
        let mut rxs: Vec<_> = (0..3).map(|_| c.wait_for(c.next())).collect();
        assert_eq!(c.waiting(), 3);
        c.wake_all();
        assert_eq!(c.waiting(), 0);
        for rx in &mut rxs {
            assert_eq!(rx.try_recv(), Ok(Some(())));
        }
    }
}
