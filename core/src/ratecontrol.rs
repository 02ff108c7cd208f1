//! Per-client bitrate control, independent of the encoder type.
//!
//! Each remote client has a target bitrate: the kbit/s of the stream it is sent (the encoder
//! scales what it writes to its bitrate property by its nominal / measured frame rate, see
//! [`crate::encoder::Encoder::set_bitrate_kbps`]). Congestion is either the client's send
//! queue backing up (the socket lets the kernel hold only a little unsent data, so a link
//! slower than the stream shows up there within a frame or two) or its STREAM_REPORT showing
//! late frames.
//!
//! - **Cut.** When the send queue backs up, the target goes to ~85 % of what the link
//!   delivered over the last second (the bytes the client's TCP acknowledged, `TCP_INFO`; on
//!   other sockets the bytes the writer sent), in one step; a late report without such a
//!   measurement cuts 15 %. At most one cut per second, never to more than the target.
//! - **Return.** After two calm seconds the target climbs back: multiplicatively (×1.25 per
//!   second) up to 90 % of the rate the link delivered at the last congestion, then by probes
//!   of +10 % every 3 s (the interval doubled each time a probe ends in congestion, up to 6 s,
//!   and halved again by each probe that holds). Two probes above that rate without congestion
//!   mean the link got faster: the estimate is forgotten and the target climbs ×1.5 per second
//!   up to the pipeline's configured bitrate.
//!
//! A shared encoder runs at the smallest target among its clients, set through the `bitrate`
//! (kbit/s) or `target-bitrate` (bit/s) property of the element named `enc`, so hardware
//! encoders in CBR/VBR mode get the same control as x264enc.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Lowest target, kbit/s.
pub const MIN_KBPS: u32 = 300;
/// Shortest time between two cuts.
const DECREASE_EVERY: Duration = Duration::from_secs(1);
/// Calm time after a cut before the target climbs again.
const CALM_BEFORE_INCREASE: Duration = Duration::from_secs(2);
/// Time between two steps of a climb.
const INCREASE_EVERY: Duration = Duration::from_secs(1);
/// First interval between probes above the link estimate; doubled by each failed probe.
const PROBE_EVERY: Duration = Duration::from_secs(3);
/// Longest interval between probes.
const PROBE_EVERY_MAX: Duration = Duration::from_secs(6);
/// Share of the delivered rate a cut goes to, percent.
const CUT_TO_PERCENT: u64 = 85;
/// Share of the link estimate a fast climb stops at, percent.
const CLIMB_TO_PERCENT: u64 = 90;
/// Probes above the link estimate without congestion before it is forgotten.
const PROBES_TO_FORGET: u32 = 2;

/// One client's bitrate target.
#[derive(Debug, Clone)]
pub struct RateController {
    max_kbps: u32,
    target_kbps: u32,
    last_decrease: Option<Instant>,
    /// Last congestion (or the start).
    calm_since: Instant,
    /// Last change of the target.
    last_change: Instant,
    /// What the link delivered at the last congestion, kbit/s (`None`: unknown or outgrown).
    link_kbps: Option<u32>,
    /// Probes above `link_kbps` so far without congestion.
    probes_above: u32,
    /// Probe steps since the last congestion.
    probes_held: u32,
    probe_every: Duration,
}

impl RateController {
    /// Starts at `max_kbps` (the pipeline's configured bitrate).
    pub fn new(max_kbps: u32, now: Instant) -> Self {
        let max_kbps = max_kbps.max(MIN_KBPS);
        Self {
            max_kbps,
            target_kbps: max_kbps,
            last_decrease: None,
            calm_since: now,
            last_change: now,
            link_kbps: None,
            probes_above: 0,
            probes_held: 0,
            probe_every: PROBE_EVERY,
        }
    }

    /// The current target, kbit/s.
    pub fn target_kbps(&self) -> u32 {
        self.target_kbps
    }

    /// The link's rate as last measured under congestion, kbit/s.
    pub fn link_kbps(&self) -> Option<u32> {
        self.link_kbps
    }

    /// Frames backed up or came late. `delivered_kbps` is what the link carried meanwhile (the
    /// writer's throughput while its queue was backed up), if known. Returns the new target if
    /// it changed.
    pub fn congestion(&mut self, now: Instant, delivered_kbps: Option<u32>) -> Option<u32> {
        self.calm_since = now;
        if self
            .last_decrease
            .is_some_and(|t| now.duration_since(t) < DECREASE_EVERY)
        {
            return None;
        }
        let old = self.target_kbps;
        // A probe (the target at or above the estimate) that ended in congestion: wait
        // longer before the next one.
        if let Some(link) = self.link_kbps
            && u64::from(old) * 100 >= u64::from(link) * CLIMB_TO_PERCENT
        {
            self.probe_every = (self.probe_every * 2).min(PROBE_EVERY_MAX);
        }
        self.probes_above = 0;
        self.probes_held = 0;
        let new = match delivered_kbps.filter(|&d| d > 0) {
            Some(d) => {
                self.link_kbps = Some(d);
                percent(d, CUT_TO_PERCENT).min(old)
            }
            None => {
                self.link_kbps = Some(self.link_kbps.map_or(old, |l| l.min(old)));
                percent(old, CUT_TO_PERCENT)
            }
        };
        let new = new.max(MIN_KBPS);
        self.last_decrease = Some(now);
        self.set(new, now)
    }

    /// Things went well (a clean report, a frame sent without a backlog). Returns the new
    /// target if it changed.
    pub fn calm(&mut self, now: Instant) -> Option<u32> {
        if now.duration_since(self.calm_since) < CALM_BEFORE_INCREASE
            || self.target_kbps >= self.max_kbps
        {
            return None;
        }
        let since_change = now.duration_since(self.last_change);
        let t = self.target_kbps;
        let new = match self.link_kbps {
            None => {
                if since_change < INCREASE_EVERY {
                    return None;
                }
                t.saturating_add(t / 2)
            }
            Some(link) if t < percent(link, CLIMB_TO_PERCENT) => {
                if since_change < INCREASE_EVERY {
                    return None;
                }
                t.saturating_add(t / 4).min(percent(link, CLIMB_TO_PERCENT))
            }
            Some(link) => {
                // A probe: +10 %. Each one that held without congestion halves the interval
                // before the next (down to PROBE_EVERY, long enough for a small overfill to
                // show up in the send queue).
                let wait = if self.probes_held == 0 {
                    self.probe_every
                } else {
                    (self.probe_every / 2).max(PROBE_EVERY)
                };
                if since_change < wait {
                    return None;
                }
                self.probe_every = wait;
                self.probes_held += 1;
                let step_pct = 10;
                if t > link {
                    self.probes_above += 1;
                    if self.probes_above >= PROBES_TO_FORGET {
                        self.link_kbps = None;
                        self.probe_every = PROBE_EVERY;
                    }
                }
                t.saturating_add(percent(t, step_pct).max(1))
            }
        };
        self.set(new.min(self.max_kbps), now)
    }

    fn set(&mut self, new: u32, now: Instant) -> Option<u32> {
        (new != self.target_kbps).then(|| {
            self.target_kbps = new;
            self.last_change = now;
            new
        })
    }
}

fn percent(kbps: u32, pct: u64) -> u32 {
    (u64::from(kbps) * pct / 100) as u32
}

/// Throughput of a byte counter (the bytes a client's writer has sent), from samples taken
/// as frames come: kbit/s over the last [`Throughput::WINDOW`] or so.
#[derive(Debug, Default)]
pub struct Throughput {
    samples: VecDeque<(Instant, u64)>,
}

impl Throughput {
    /// The span the rate is measured over (at least half of it must be covered).
    pub const WINDOW: Duration = Duration::from_millis(1000);

    /// Records the counter's value at `now`.
    pub fn sample(&mut self, now: Instant, bytes: u64) {
        while self
            .samples
            .get(1)
            .is_some_and(|&(t, _)| now.duration_since(t) >= Self::WINDOW)
        {
            self.samples.pop_front();
        }
        self.samples.push_back((now, bytes));
    }

    /// kbit/s between the oldest kept sample and the newest, if they span enough time.
    pub fn kbps(&self) -> Option<u32> {
        let (&(t0, b0), &(t1, b1)) = (self.samples.front()?, self.samples.back()?);
        let span = t1.duration_since(t0);
        if span < Self::WINDOW / 2 {
            return None;
        }
        let bits = b1.saturating_sub(b0) as f64 * 8.0;
        Some((bits / span.as_secs_f64() / 1000.0).round() as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn cuts_to_what_the_link_delivered_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut rc = RateController::new(8000, t0);
        assert_eq!(rc.congestion(t0, Some(4000)), Some(3400));
        assert_eq!(rc.congestion(t0 + secs(0.5), Some(1000)), None);
        // Still backed up a second later at the same delivered rate: no further cut below it.
        assert_eq!(rc.congestion(t0 + secs(1.1), Some(4000)), None);
        assert_eq!(rc.congestion(t0 + secs(2.2), Some(1000)), Some(850));
        for i in 3..40 {
            rc.congestion(t0 + secs(f64::from(i)), Some(100));
        }
        assert_eq!(rc.target_kbps(), MIN_KBPS);
    }

    #[test]
    fn a_late_report_without_a_measurement_cuts_fifteen_percent() {
        let t0 = Instant::now();
        let mut rc = RateController::new(8000, t0);
        assert_eq!(rc.congestion(t0, None), Some(6800));
        assert_eq!(rc.link_kbps(), Some(8000));
        assert_eq!(rc.congestion(t0 + secs(1.0), None), Some(5780));
    }

    #[test]
    fn climbs_fast_to_the_link_then_probes_above_it() {
        let t0 = Instant::now();
        let mut rc = RateController::new(8000, t0);
        rc.congestion(t0, Some(1000));
        assert_eq!(rc.target_kbps(), 850);
        // Two calm seconds first.
        assert_eq!(rc.calm(t0 + secs(1.9)), None);
        assert_eq!(rc.calm(t0 + secs(2.0)), Some(900));
        // Then probes every 3 s, +10 %.
        assert_eq!(rc.calm(t0 + secs(4.5)), None);
        assert_eq!(rc.calm(t0 + secs(5.0)), Some(990));
        assert_eq!(rc.calm(t0 + secs(8.0)), Some(1089));
        assert_eq!(rc.calm(t0 + secs(11.0)), Some(1197));
        assert_eq!(rc.link_kbps(), Some(1000));
        // Two probes above the estimate held: it is forgotten, the climb is ×1.5 a second.
        assert_eq!(rc.calm(t0 + secs(14.0)), Some(1316));
        assert_eq!(rc.link_kbps(), None);
        assert_eq!(rc.calm(t0 + secs(15.0)), Some(1974));
        let mut t = t0 + secs(15.0);
        for _ in 0..4 {
            t += secs(1.0);
            rc.calm(t);
        }
        assert_eq!(rc.target_kbps(), 8000);
        assert_eq!(rc.calm(t + secs(3.0)), None);
    }

    #[test]
    fn recovers_from_a_deep_cut_within_twenty_seconds() {
        let t0 = Instant::now();
        let mut rc = RateController::new(8000, t0);
        rc.congestion(t0, Some(700));
        let mut t = t0;
        let mut back = None;
        for i in 1..=400 {
            t = t0 + secs(f64::from(i) * 0.1);
            rc.calm(t);
            if rc.target_kbps() >= 7200 {
                back = Some(t);
                break;
            }
        }
        let back = back.expect("never recovered");
        assert!(
            back.duration_since(t0) <= secs(20.0),
            "took {:?}",
            back - t0
        );
        let _ = t;
    }

    #[test]
    fn failed_probes_wait_longer_each_time() {
        let t0 = Instant::now();
        let mut rc = RateController::new(8000, t0);
        rc.congestion(t0, Some(4000));
        rc.calm(t0 + secs(2.0));
        assert_eq!(rc.target_kbps(), 3600);
        // The probe to 3960 overfills the link.
        assert_eq!(rc.calm(t0 + secs(4.0)), None);
        assert_eq!(rc.calm(t0 + secs(5.0)), Some(3960));
        assert_eq!(rc.congestion(t0 + secs(6.0), Some(3900)), Some(3315));
        rc.calm(t0 + secs(8.0));
        assert_eq!(rc.target_kbps(), 3510);
        // Now 6 s between probes.
        assert_eq!(rc.calm(t0 + secs(13.0)), None);
        assert_eq!(rc.calm(t0 + secs(14.0)), Some(3861));
        // Failing again and again: at most PROBE_EVERY_MAX between probes.
        let mut t = t0 + secs(11.0);
        for _ in 0..4 {
            t += secs(1.0);
            rc.congestion(t, Some(3900));
            t += secs(2.0);
            rc.calm(t);
            let before = rc.target_kbps();
            while rc.target_kbps() == before {
                t += secs(0.5);
                rc.calm(t);
            }
        }
        assert_eq!(rc.probe_every, PROBE_EVERY_MAX);
        // The link gets faster: even so, back to the ceiling within 22 s.
        t += secs(1.0);
        rc.congestion(t, Some(3900));
        let lifted = t;
        while rc.target_kbps() < 7200 {
            t += secs(0.1);
            rc.calm(t);
            assert!(t - lifted <= secs(22.0), "at {} kbit/s", rc.target_kbps());
        }
    }

    #[test]
    fn measures_throughput_over_the_window() {
        let t0 = Instant::now();
        let mut tp = Throughput::default();
        tp.sample(t0, 0);
        assert_eq!(tp.kbps(), None);
        // 500 kB/s = 4000 kbit/s, sampled at 30 Hz for 3 s.
        for i in 1..=90u32 {
            tp.sample(t0 + secs(f64::from(i) / 30.0), u64::from(i) * 500_000 / 30);
        }
        assert_eq!(tp.kbps(), Some(4000));
        assert!(tp.samples.len() <= 32);
    }
}
