//! Password guessing: after [`MAX_WRONG`] wrong tickets from one address within [`WINDOW`],
//! links from that address are refused without checking their ticket until [`QUIET`] has
//! passed without a wrong one. Refused attempts count as wrong ones, so a guesser that keeps
//! going stays locked out; the right password works again once it stopped for [`QUIET`].
//!
//! Pure bookkeeping: the caller passes the time, so it is tested without sleeping.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Wrong tickets that start a lockout.
pub const MAX_WRONG: usize = 10;
/// The window those wrong tickets must fall in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// A lockout ends after this long without a wrong ticket.
pub const QUIET: Duration = Duration::from_secs(30);
/// Addresses tracked at once; the least recently wrong is forgotten first.
const MAX_ADDRESSES: usize = 4096;

#[derive(Debug)]
struct Entry {
    /// Times of the wrong tickets within [`WINDOW`].
    wrong: VecDeque<Instant>,
    last_wrong: Instant,
    locked: bool,
}

/// Wrong tickets per address.
#[derive(Debug, Default)]
pub struct Throttle {
    entries: HashMap<IpAddr, Entry>,
}

impl Throttle {
    /// Whether links from `ip` are refused now (without checking their ticket).
    pub fn is_locked(&self, ip: IpAddr, now: Instant) -> bool {
        self.entries
            .get(&ip)
            .is_some_and(|e| e.locked && now.duration_since(e.last_wrong) < QUIET)
    }

    /// Records a wrong (or refused) ticket from `ip`. Returns the log line when this starts a
    /// lockout.
    pub fn wrong(&mut self, ip: IpAddr, now: Instant) -> Option<String> {
        if !self.entries.contains_key(&ip) && self.entries.len() >= MAX_ADDRESSES {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_wrong)
                .map(|(ip, _)| *ip);
            if let Some(old) = oldest {
                self.entries.remove(&old);
            }
        }
        let e = self.entries.entry(ip).or_insert_with(|| Entry {
            wrong: VecDeque::new(),
            last_wrong: now,
            locked: false,
        });
        if e.locked && now.duration_since(e.last_wrong) >= QUIET {
            e.locked = false;
            e.wrong.clear();
        }
        e.last_wrong = now;
        while e
            .wrong
            .front()
            .is_some_and(|&t| now.duration_since(t) >= WINDOW)
        {
            e.wrong.pop_front();
        }
        if e.wrong.len() < MAX_WRONG {
            e.wrong.push_back(now);
        }
        if !e.locked && e.wrong.len() >= MAX_WRONG {
            e.locked = true;
            return Some(format!(
                "{ip}: {MAX_WRONG} wrong passwords within {} s; refusing links from this address until {} s pass without a wrong one",
                WINDOW.as_secs(),
                QUIET.as_secs()
            ));
        }
        None
    }

    /// Ends lockouts that have been quiet for [`QUIET`] and forgets old entries. Returns a log
    /// line per lockout that ended.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut ended = Vec::new();
        self.entries.retain(|ip, e| {
            let quiet = now.duration_since(e.last_wrong);
            if e.locked && quiet >= QUIET {
                ended.push(format!(
                    "{ip}: no wrong password for {} s; links from this address are accepted again",
                    QUIET.as_secs()
                ));
                return false;
            }
            e.locked || quiet < WINDOW
        });
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn ten_wrong_within_a_minute_lock_the_address_out() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        for i in 0..9 {
            assert_eq!(t.wrong(ip(1), t0 + Duration::from_secs(i)), None);
            assert!(!t.is_locked(ip(1), t0 + Duration::from_secs(i)));
        }
        let line = t.wrong(ip(1), t0 + Duration::from_secs(9)).unwrap();
        assert!(line.starts_with("10.0.0.1: 10 wrong passwords"), "{line}");
        assert!(t.is_locked(ip(1), t0 + Duration::from_secs(10)));
        // Another address is not affected.
        assert!(!t.is_locked(ip(2), t0 + Duration::from_secs(10)));
        // Refused attempts count: the lockout lasts until 30 s pass without one.
        assert_eq!(t.wrong(ip(1), t0 + Duration::from_secs(30)), None);
        assert!(t.is_locked(ip(1), t0 + Duration::from_secs(59)));
        assert!(t.expire(t0 + Duration::from_secs(59)).is_empty());
        assert!(!t.is_locked(ip(1), t0 + Duration::from_secs(60)));
        let ended = t.expire(t0 + Duration::from_secs(60));
        assert_eq!(ended.len(), 1);
        assert!(ended[0].contains("accepted again"), "{ended:?}");
        assert!(!t.is_locked(ip(1), t0 + Duration::from_secs(61)));
    }

    #[test]
    fn slow_guessing_is_not_locked_out() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        // One wrong ticket every 7 s: never 10 within 60 s.
        for i in 0..30 {
            let now = t0 + Duration::from_secs(7 * i);
            assert_eq!(t.wrong(ip(3), now), None);
            assert!(!t.is_locked(ip(3), now));
        }
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            t.wrong(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(t.entries.len() <= MAX_ADDRESSES);
        assert!(t.expire(t0 + WINDOW).is_empty());
        assert!(t.entries.is_empty());
    }
}
