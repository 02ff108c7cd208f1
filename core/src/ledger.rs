//! The cookie ledger: every `gl_draw` cookie goes back to the host exactly once.
//!
//! A draw is an [`Arc`]-shared entry. Every consumer of the frame (each encoder pipeline that
//! took it, each local GL client that got GL_DRAW) holds a [`DrawHandle`] clone; the cookie
//! completes when the last handle is dropped, or earlier through [`Ledger::complete_all`] at
//! shutdown. Firing is guarded by an atomic flag, so no path can complete a cookie twice.
//!
//! Completions are not delivered on the dropping thread: they go through a channel to one
//! completion thread that calls the host's callback, so the host is never called back from
//! inside its own `gl_draw_async` call, nor while a shim lock is held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

/// The host's completion callback.
pub type CompleteFn = Box<dyn FnMut(u64) + Send + 'static>;

/// Counters of the ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerStats {
    /// Draws opened.
    pub drawn: u64,
    /// Cookies handed back to the host.
    pub returned: u64,
}

struct Inner {
    tx: Mutex<Option<mpsc::Sender<u64>>>,
    open: Mutex<HashMap<u64, Weak<Entry>>>,
    next_seq: AtomicU64,
    drawn: AtomicU64,
    queued: AtomicU64,
}

struct Entry {
    seq: u64,
    cookie: u64,
    fired: AtomicBool,
    ledger: Arc<Inner>,
}

impl Entry {
    fn fire(&self) {
        if self.fired.swap(true, Ordering::AcqRel) {
            return;
        }
        self.ledger.open.lock().unwrap().remove(&self.seq);
        self.ledger.queued.fetch_add(1, Ordering::AcqRel);
        if let Some(tx) = self.ledger.tx.lock().unwrap().as_ref() {
            let _ = tx.send(self.cookie);
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.fire();
    }
}

/// One consumer's hold on a draw. Cloning adds a consumer; dropping removes one.
#[derive(Clone)]
pub struct DrawHandle(Arc<Entry>);

impl DrawHandle {
    /// The host's cookie.
    pub fn cookie(&self) -> u64 {
        self.0.cookie
    }
}

impl std::fmt::Debug for DrawHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DrawHandle(cookie {})", self.0.cookie)
    }
}

/// The ledger and its completion thread.
pub struct Ledger {
    inner: Arc<Inner>,
    returned: Arc<AtomicU64>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Ledger {
    /// A ledger whose completions call `cb(cookie)` on a dedicated thread.
    pub fn new(mut cb: CompleteFn) -> Self {
        let (tx, rx) = mpsc::channel::<u64>();
        let returned = Arc::new(AtomicU64::new(0));
        let thread = std::thread::Builder::new()
            .name("shim-complete".into())
            .spawn({
                let returned = returned.clone();
                move || {
                    for cookie in rx {
                        cb(cookie);
                        returned.fetch_add(1, Ordering::AcqRel);
                    }
                }
            })
            .expect("spawn the completion thread");
        Self {
            inner: Arc::new(Inner {
                tx: Mutex::new(Some(tx)),
                open: Mutex::default(),
                next_seq: AtomicU64::new(1),
                drawn: AtomicU64::new(0),
                queued: AtomicU64::new(0),
            }),
            returned,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Opens a draw. The returned handle is the first consumer; drop it once the draw has been
    /// handed to every consumer.
    pub fn open(&self, cookie: u64) -> DrawHandle {
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        self.inner.drawn.fetch_add(1, Ordering::AcqRel);
        let entry = Arc::new(Entry {
            seq,
            cookie,
            fired: AtomicBool::new(false),
            ledger: self.inner.clone(),
        });
        self.inner
            .open
            .lock()
            .unwrap()
            .insert(seq, Arc::downgrade(&entry));
        DrawHandle(entry)
    }

    /// Number of draws whose cookie has not been queued for the host yet.
    pub fn pending(&self) -> usize {
        self.inner.open.lock().unwrap().len()
    }

    /// Completes every open draw now, whoever still holds it (shutdown).
    pub fn complete_all(&self) {
        let open: Vec<Arc<Entry>> = self
            .inner
            .open
            .lock()
            .unwrap()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for e in open {
            e.fire();
        }
    }

    /// Completes every open draw, waits until the host's callback has run for each of them, and
    /// stops the completion thread. Draws opened afterwards complete at once but nobody is called.
    pub fn shutdown(&self) {
        self.complete_all();
        self.inner.tx.lock().unwrap().take();
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }

    /// Blocks until every queued completion has been delivered to the host.
    pub fn flush(&self) {
        while self.returned.load(Ordering::Acquire) < self.inner.queued.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Counters.
    pub fn stats(&self) -> LedgerStats {
        LedgerStats {
            drawn: self.inner.drawn.load(Ordering::Acquire),
            returned: self.returned.load(Ordering::Acquire),
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collecting() -> (Ledger, Arc<Mutex<Vec<u64>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        (
            Ledger::new(Box::new(move |c| g.lock().unwrap().push(c))),
            got,
        )
    }

    #[test]
    fn completes_when_the_last_consumer_drops() {
        let (ledger, got) = collecting();
        let h = ledger.open(7);
        let a = h.clone();
        let b = h.clone();
        drop(h);
        drop(a);
        ledger.flush();
        assert!(got.lock().unwrap().is_empty());
        drop(b);
        ledger.flush();
        assert_eq!(*got.lock().unwrap(), vec![7]);
        assert_eq!(
            ledger.stats(),
            LedgerStats {
                drawn: 1,
                returned: 1
            }
        );
    }

    #[test]
    fn complete_all_fires_once_even_if_handles_drop_later() {
        let (ledger, got) = collecting();
        let h1 = ledger.open(1);
        let h2 = ledger.open(2);
        ledger.complete_all();
        drop(h1);
        drop(h2);
        ledger.shutdown();
        let mut v = got.lock().unwrap().clone();
        v.sort();
        assert_eq!(v, vec![1, 2]);
        assert_eq!(ledger.pending(), 0);
    }

    #[test]
    fn many_threads_each_cookie_once() {
        let (ledger, got) = collecting();
        let mut threads = Vec::new();
        for i in 0..1000u64 {
            let h = ledger.open(i);
            let c = h.clone();
            threads.push(std::thread::spawn(move || drop(c)));
            if i % 3 == 0 {
                ledger.complete_all();
            }
            drop(h);
        }
        for t in threads {
            t.join().unwrap();
        }
        ledger.shutdown();
        let mut v = got.lock().unwrap().clone();
        v.sort();
        assert_eq!(v, (0..1000).collect::<Vec<_>>());
    }
}
