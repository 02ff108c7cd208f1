//! The display latency of one remote client: how long after a frame leaves the encoder the
//! client shows it. Sans I/O: events in (frames sent, STREAM_REPORTs, PONGs), decisions out
//! (the `multi_media_time` of each STREAM_DATA, latency changes, when to PING).
//!
//! # What spice-gtk does with the time stamps
//!
//! The client's multimedia clock is set once, by MAIN_INIT, to the server's clock minus the
//! latency `L` ([`initial_ms`]), and every frame is shown when that clock reaches the frame's
//! `multi_media_time`. The server stamps a frame with its own clock when it hands the frame to
//! the client's send queue (after encoding), so the client shows it `L` plus the main channel's
//! one-way delay later: `L` is added to what a person sees. For each frame the client computes
//! `margin = multi_media_time − its clock` on arrival; STREAM_REPORT (every 5 frames or 1 s,
//! or after 3 late frames in a row) carries the number of frames that arrived with a negative
//! margin (`num_drops`) and the margin of the last one (`last_frame_delay`). A late MJPEG frame
//! is dropped; a late H.264/VP8 frame is still decoded and shown at once. Since the clock was
//! set through the same network, the margin is `L` minus the frame's extra delay over the main
//! channel's (queueing, bandwidth, jitter), whatever the round trip.
//!
//! # The rule (automatic mode, the default)
//!
//! * Start at [`START_MS`] (the minimum, [`MIN_MS`]); stay within [`MIN_MS`, `MAX_MS`]. Clients
//!   are asked for a STREAM_REPORT on every frame ([`REPORT_WINDOW_AUTO`]).
//! * Each new stream (a client's first, or after a size or codec change) starts at
//!   [`STREAM_START_MS`] at least and comes down to the latency as below: spice-gtk builds its
//!   decoder when the stream starts, and the first frames come out of it about 100 ms late;
//!   with less slack it drops some of them (its margins on arrival do not show this).
//! * **Raise** as soon as a report shows a late frame: by how late the last frame was plus a
//!   headroom (a quarter of the round trip measured with PING/PONG, at least
//!   [`MIN_HEADROOM_MS`]), and at least by a quarter of the current latency (at least
//!   [`MIN_RAISE_MS`]). A raise takes effect with the next frame, which is stamped that much
//!   later (the client pauses once for that long; nothing is dropped or reordered). Reports on
//!   frames stamped before a change are ignored, so one burst raises once, and so are the
//!   reports on a new stream's frames until it is down to the latency, or in its first
//!   [`STREAM_GRACE`].
//! * **Not for the server's own backlog.** Late frames stamped while the client's send queue
//!   was backed up (the link slower than the stream), or up to [`QUEUED_GRACE_MS`] after, do
//!   not raise ([`Verdict::Queued`]): rate control handles that congestion, and a latency
//!   raised for it would only add to every frame once the backlog is gone.
//! * **Lower** after [`CALM_AFTER_LOWER`] without a late frame ([`CALM_AFTER_RAISE`] after a
//!   raise, [`CALM_AFTER_HIGH_RAISE`] after one above [`FAST_LOWER_ABOVE_MS`]): by an eighth of
//!   the latency (at least 1 ms; above [`FAST_LOWER_ABOVE_MS`] by half the spare margin if that
//!   is more), but never by more than the smallest margin seen meanwhile minus the headroom,
//!   so no frame becomes late by it. A lowering is
//!   applied gently: each frame is stamped at most a [`RAMP_DIVISOR`]th of the time since the
//!   previous frame (at least 1 ms) closer to the server's clock than that one, i.e. the client
//!   plays at most 10 % faster meanwhile; stamps never go backwards, so spice-gtk never resets,
//!   reorders or bunches up its queue.
//! * A client without the STREAM_REPORT capability cannot say it is late: it gets
//!   [`NO_REPORTS_MS`].
//!
//! The encoder's time is not part of `L` (frames are stamped when they leave the encoder), so
//! it does not need to be measured here.
//!
//! With a fixed latency (`--mm-latency N`, `mm-latency=N`) nothing adapts: stamps are the
//! server's clock and MAIN_INIT sets the client's clock `N` behind.

use std::time::{Duration, Instant};

use crate::proto::StreamReport;

/// Latency of the automatic mode at the start, ms: its minimum.
pub const START_MS: u32 = MIN_MS;
/// Lowest latency of the automatic mode, ms. Lower buys nothing with H.264: spice-gtk 0.42's
/// parser completes a frame only when the next one arrives, so a frame is decoded a frame
/// interval after it arrived and shown at once (measured in BENCHMARKS.md).
pub const MIN_MS: u32 = 10;
/// Highest latency of the automatic mode, ms (spice-server starts at 400).
pub const MAX_MS: u32 = 400;
/// Latency of the automatic mode for a client that does not send STREAM_REPORT, ms.
pub const NO_REPORTS_MS: u32 = 100;
/// Smallest margin kept when lowering, and smallest addition to a raise, ms.
pub const MIN_HEADROOM_MS: u32 = 2;
/// Smallest raise, ms.
pub const MIN_RAISE_MS: u32 = 5;
/// While lowering, a frame's stamp comes closer to the server's clock by at most the time
/// since the previous frame divided by this (at least 1 ms): playback at most 10 % faster.
pub const RAMP_DIVISOR: u32 = 10;
/// The first frame of each stream gets at least this latency, ms (spice-gtk's decoder start).
pub const STREAM_START_MS: u32 = 150;
/// No late frame for this long after a raise before lowering.
pub const CALM_AFTER_RAISE: Duration = Duration::from_secs(10);
/// No late frame for this long after a lowering (or the start) before lowering again.
pub const CALM_AFTER_LOWER: Duration = Duration::from_secs(2);
/// Reports on the frames of a stream's first second are not acted on.
pub const STREAM_GRACE: Duration = Duration::from_secs(1);
/// No change for this long: the latency has settled (reported once per change).
pub const SETTLED_AFTER: Duration = Duration::from_secs(5);
/// How often the round trip is measured.
pub const PING_EVERY: Duration = Duration::from_secs(1);
/// Late frames stamped up to this long after the last frame that waited behind a backlog in
/// the server's send queue do not raise the latency: that backlog (and the one in the network
/// behind it) is still draining.
pub const QUEUED_GRACE_MS: i32 = 1000;
/// No late frame for this long after a raise to above [`FAST_LOWER_ABOVE_MS`] before lowering:
/// such a latency costs every frame, and lowering keeps clear of the margins seen.
pub const CALM_AFTER_HIGH_RAISE: Duration = Duration::from_secs(4);
/// Above this latency (ms), a lowering takes half the spare margin at once if that is more
/// than an eighth: a latency raised high comes down within a few calm periods.
pub const FAST_LOWER_ABOVE_MS: u32 = STREAM_START_MS;
/// Frames per STREAM_REPORT asked of clients in the automatic mode: every frame's margin is
/// seen (32 bytes upstream per frame). spice-server asks for 5; so does the fixed mode.
pub const REPORT_WINDOW_AUTO: u32 = 1;
/// Frames per STREAM_REPORT with a fixed latency (as before, and as spice-server).
pub const REPORT_WINDOW_FIXED: u32 = 5;

/// The latency MAIN_INIT starts the client's clock with: the fixed setting, or [`START_MS`].
pub fn initial_ms(fixed: Option<u32>) -> u32 {
    fixed.unwrap_or(START_MS)
}

/// `a − b` on the wrapping 32-bit millisecond clock.
fn mm_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// What a STREAM_REPORT meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No frame was late.
    Calm,
    /// Frames were late and the latency stays (fixed, at its maximum, or already raised for
    /// them): a sign of congestion.
    Late,
    /// Frames were late: the latency was raised. `again` if the previous raise was less than
    /// [`CALM_AFTER_RAISE`] ago, i.e. frames keep coming late (congestion, not a hiccup).
    Raised { from: u32, to: u32, again: bool },
    /// Calm for long enough: the latency was lowered.
    Lowered { from: u32, to: u32 },
    /// About frames stamped before the last change or in a stream's first second.
    Ignored,
    /// Frames were late, but they were stamped while the server's send queue was backed up
    /// (or soon after, see [`Latency::queued`]): the link, not the client, made them late, and
    /// rate control already saw the backlog. The latency stays.
    Queued,
}

/// One client's display latency.
#[derive(Debug, Clone)]
pub struct Latency {
    /// `None`: automatic.
    fixed: Option<u32>,
    /// The latency MAIN_INIT set the client's clock with.
    base: u32,
    /// The latency wanted now.
    target: u32,
    /// The latency the last stamp was given with (moves to `target`, gently when lowering).
    applied: u32,
    last_stamp: Option<u32>,
    /// The stamp of the last frame queued behind a backlog ([`Self::queued`]).
    queued_stamp: Option<u32>,
    /// The server's clock at the last stamp.
    last_server: Option<u32>,
    /// Reports on frames stamped before this are about an older latency (or a new stream).
    fresh_from: Option<u32>,
    /// A change (or a new stream) waits for its first frame to set `fresh_from`.
    change_pending: bool,
    /// The calm period starts again with the first report after a change took effect.
    restart_calm: bool,
    stream_start: Option<u32>,
    stream_pending: bool,
    /// Since when no frame was late, and the smallest margin since.
    calm_since: Instant,
    min_margin: Option<i32>,
    last_raise: Option<Instant>,
    last_change: Instant,
    settled_reported: bool,
    /// Smoothed round trip, µs.
    srtt_us: Option<u64>,
    epoch: Instant,
    last_ping: Option<Instant>,
    next_ping_id: u32,
    raises: u32,
    lowerings: u32,
    highest: u32,
}

impl Latency {
    /// `fixed`: the configured latency (no adaptation), `None` for automatic.
    pub fn new(fixed: Option<u32>, now: Instant) -> Self {
        let base = initial_ms(fixed);
        Self {
            fixed,
            base,
            target: base,
            applied: base,
            last_stamp: None,
            queued_stamp: None,
            last_server: None,
            fresh_from: None,
            change_pending: false,
            restart_calm: false,
            stream_start: None,
            stream_pending: false,
            calm_since: now,
            min_margin: None,
            last_raise: None,
            last_change: now,
            settled_reported: false,
            srtt_us: None,
            epoch: now,
            last_ping: None,
            next_ping_id: 1,
            raises: 0,
            lowerings: 0,
            highest: base,
        }
    }

    /// Whether the latency adapts.
    pub fn is_auto(&self) -> bool {
        self.fixed.is_none()
    }

    /// Frames per STREAM_REPORT to ask the client for (STREAM_ACTIVATE_REPORT).
    pub fn report_window(&self) -> u32 {
        if self.is_auto() {
            REPORT_WINDOW_AUTO
        } else {
            REPORT_WINDOW_FIXED
        }
    }

    /// The latency wanted now, ms.
    pub fn target_ms(&self) -> u32 {
        self.target
    }

    /// The latency the last frame was stamped with, ms.
    pub fn applied_ms(&self) -> u32 {
        self.applied
    }

    /// The smoothed round trip, if measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.srtt_us.map(Duration::from_micros)
    }

    /// Raises and lowerings so far, and the highest latency.
    pub fn counts(&self) -> (u32, u32, u32) {
        (self.raises, self.lowerings, self.highest)
    }

    /// The client cannot send STREAM_REPORT: use [`NO_REPORTS_MS`] (automatic mode only).
    pub fn no_reports(&mut self, now: Instant) {
        if self.is_auto() && self.target != NO_REPORTS_MS {
            self.change(NO_REPORTS_MS, now);
        }
    }

    /// The next frame starts a new stream (see [`STREAM_START_MS`] and [`STREAM_GRACE`]).
    pub fn stream_started(&mut self) {
        self.stream_pending = true;
    }

    /// The `multi_media_time` of a frame sent now; `server_now` is the server's clock (ms).
    pub fn stamp(&mut self, server_now: u32) -> u32 {
        let since_last = self
            .last_server
            .map_or(0, |l| mm_diff(server_now, l).max(0) as u32);
        self.last_server = Some(server_now);
        if self.stream_pending && self.is_auto() && self.applied < STREAM_START_MS {
            // Slack for the client's decoder start, taken back gently below; reports wait
            // until it is gone.
            self.applied = STREAM_START_MS;
            self.change_pending = true;
        } else if self.applied < self.target {
            self.applied = self.target;
        } else if self.applied > self.target {
            let ramp = (since_last / RAMP_DIVISOR).max(1);
            self.applied -= (self.applied - self.target).min(ramp);
        }
        // The client's clock runs `base` behind ours: show the frame `applied` after now.
        let offset = i64::from(self.applied) - i64::from(self.base);
        let mut stamp = server_now.wrapping_add(offset as i32 as u32);
        if let Some(last) = self.last_stamp
            && mm_diff(stamp, last) < 0
        {
            stamp = last;
        }
        if stamp == 0 {
            // spice-gtk treats 0 as invalid.
            stamp = 1;
        }
        self.last_stamp = Some(stamp);
        if self.change_pending && self.applied == self.target {
            self.change_pending = false;
            self.restart_calm = true;
            self.fresh_from = Some(stamp);
        }
        if self.stream_pending {
            self.stream_pending = false;
            self.stream_start = Some(stamp);
        }
        stamp
    }

    /// The frame stamped last waits behind a backlog in the server's send queue (the link is
    /// slower than the stream): late frames up to [`QUEUED_GRACE_MS`] after it are the
    /// server's congestion, not the client's, and do not raise the latency.
    pub fn queued(&mut self) {
        self.queued_stamp = self.last_stamp;
    }

    /// Headroom kept over the smallest margin, ms.
    fn headroom(&self) -> u32 {
        let quarter_rtt = self.srtt_us.map_or(0, |us| (us / 4000) as u32);
        quarter_rtt.max(MIN_HEADROOM_MS)
    }

    fn change(&mut self, to: u32, now: Instant) {
        self.target = to;
        self.change_pending = true;
        self.calm_since = now;
        self.min_margin = None;
        self.last_change = now;
        self.settled_reported = false;
        self.highest = self.highest.max(to);
    }

    /// A STREAM_REPORT (not the decoder-failure one) arrived.
    pub fn report(&mut self, r: &StreamReport, now: Instant) -> Verdict {
        let late = r.num_drops > 0 || r.last_frame_delay < 0;
        if r.num_frames == 0 {
            return Verdict::Ignored;
        }
        if self.fixed.is_some() {
            return if late { Verdict::Late } else { Verdict::Calm };
        }
        let before =
            |mark: Option<u32>| mark.is_some_and(|m| mm_diff(r.start_frame_mm_time, m) < 0);
        if self.change_pending || before(self.fresh_from) {
            return Verdict::Ignored;
        }
        if let Some(start) = self.stream_start
            && mm_diff(r.start_frame_mm_time, start) < STREAM_GRACE.as_millis() as i32
        {
            return Verdict::Ignored;
        }
        if std::mem::take(&mut self.restart_calm) {
            self.calm_since = now;
            self.min_margin = None;
        }
        if late
            && self
                .queued_stamp
                .is_some_and(|q| mm_diff(r.end_frame_mm_time, q) <= QUEUED_GRACE_MS)
        {
            self.calm_since = now;
            self.min_margin = None;
            return Verdict::Queued;
        }
        if late {
            if self.target >= MAX_MS {
                self.calm_since = now;
                self.min_margin = None;
                return Verdict::Late;
            }
            let from = self.target;
            let deficit = u32::try_from(-i64::from(r.last_frame_delay)).unwrap_or(0);
            let step = (deficit + self.headroom()).max((from / 4).max(MIN_RAISE_MS));
            let to = from.saturating_add(step).min(MAX_MS);
            let again = self
                .last_raise
                .is_some_and(|t| now.duration_since(t) < CALM_AFTER_RAISE);
            self.change(to, now);
            self.last_raise = Some(now);
            self.raises += 1;
            return Verdict::Raised { from, to, again };
        }
        let margin = r.last_frame_delay;
        self.min_margin = Some(self.min_margin.map_or(margin, |m| m.min(margin)));
        let calm_needed = if self.last_raise.is_some_and(|t| t >= self.last_change) {
            if self.target > FAST_LOWER_ABOVE_MS {
                CALM_AFTER_HIGH_RAISE
            } else {
                CALM_AFTER_RAISE
            }
        } else {
            CALM_AFTER_LOWER
        };
        if self.target > MIN_MS && now.duration_since(self.calm_since) >= calm_needed {
            let spare = self
                .min_margin
                .map_or(0, |m| m - self.headroom() as i32)
                .max(0) as u32;
            let eighth = (self.target / 8).max(1);
            let step = if self.target > FAST_LOWER_ABOVE_MS {
                eighth.max(spare / 2)
            } else {
                eighth
            };
            let step = step.min(spare).min(self.target - MIN_MS);
            if step > 0 {
                let from = self.target;
                self.change(from - step, now);
                self.lowerings += 1;
                return Verdict::Lowered {
                    from,
                    to: from - step,
                };
            }
            // Not enough margin to lower: look again over the next period.
            self.calm_since = now;
            self.min_margin = None;
        }
        Verdict::Calm
    }

    /// `Some(latency)` once the latency has not changed for [`SETTLED_AFTER`] (once per
    /// change; automatic mode only).
    pub fn settled(&mut self, now: Instant) -> Option<u32> {
        if self.fixed.is_some()
            || self.settled_reported
            || now.duration_since(self.last_change) < SETTLED_AFTER
        {
            return None;
        }
        self.settled_reported = true;
        Some(self.target)
    }

    /// The id and timestamp of a PING to send now, if one is due (automatic mode only).
    pub fn ping_due(&mut self, now: Instant) -> Option<(u32, u64)> {
        if self.fixed.is_some()
            || self
                .last_ping
                .is_some_and(|t| now.duration_since(t) < PING_EVERY)
        {
            return None;
        }
        self.last_ping = Some(now);
        let id = self.next_ping_id;
        self.next_ping_id = self.next_ping_id.wrapping_add(1);
        Some((id, now.duration_since(self.epoch).as_micros() as u64))
    }

    /// A PONG echoed `timestamp` (from [`Self::ping_due`]). Returns the round trip.
    pub fn pong(&mut self, timestamp: u64, now: Instant) -> Option<Duration> {
        let now_us = now.duration_since(self.epoch).as_micros() as u64;
        let rtt = now_us.checked_sub(timestamp)?;
        if rtt > 60_000_000 {
            return None;
        }
        // As TCP's SRTT: 1/8 of each new sample.
        self.srtt_us = Some(self.srtt_us.map_or(rtt, |s| (s * 7 + rtt) / 8));
        Some(Duration::from_micros(rtt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn report(start: u32, end: u32, frames: u32, drops: u32, last_delay: i32) -> StreamReport {
        StreamReport {
            stream_id: 0,
            unique_id: 0,
            start_frame_mm_time: start,
            end_frame_mm_time: end,
            num_frames: frames,
            num_drops: drops,
            last_frame_delay: last_delay,
            audio_delay: u32::MAX,
        }
    }

    #[test]
    fn fixed_never_adapts() {
        let t0 = Instant::now();
        let mut l = Latency::new(Some(150), t0);
        assert_eq!(initial_ms(Some(150)), 150);
        assert_eq!(l.stamp(10_000), 10_000, "stamps are the server's clock");
        assert_eq!(
            l.report(&report(10_000, 10_100, 5, 5, -80), t0),
            Verdict::Late
        );
        assert_eq!(
            l.report(&report(10_100, 10_200, 5, 0, 140), t0),
            Verdict::Calm
        );
        let late = t0 + Duration::from_secs(60);
        assert_eq!(
            l.report(&report(20_000, 20_100, 5, 0, 149), late),
            Verdict::Calm
        );
        assert_eq!(l.target_ms(), 150);
        assert_eq!(l.stamp(30_000), 30_000);
        assert_eq!(l.ping_due(t0), None);
        assert_eq!(l.settled(late), None);
        l.no_reports(t0);
        assert_eq!(l.target_ms(), 150);
    }

    #[test]
    fn starts_low_and_raises_on_late_frames_once_per_burst() {
        let t0 = Instant::now();
        let mut l = Latency::new(None, t0);
        assert_eq!(initial_ms(None), START_MS);
        assert_eq!(l.target_ms(), START_MS);
        assert_eq!(l.stamp(10_000), 10_000);
        let t = t0 + Duration::from_secs(2);
        // 30 ms late: raised by the deficit plus headroom at once.
        assert_eq!(
            l.report(&report(12_000, 12_130, 5, 2, -30), t),
            Verdict::Raised {
                from: START_MS,
                to: START_MS + 30 + MIN_HEADROOM_MS,
                again: false
            }
        );
        let raised = START_MS + 30 + MIN_HEADROOM_MS;
        // Reports on frames stamped before the next frame are obsolete.
        assert_eq!(
            l.report(&report(12_100, 12_230, 5, 5, -40), t),
            Verdict::Ignored
        );
        // The next frame shows the whole raise: stamped 32 ms after the server's clock.
        let s = l.stamp(12_300);
        assert_eq!(s, 12_300 + 32);
        assert_eq!(
            l.report(&report(12_200, 12_400, 5, 1, 10), t),
            Verdict::Ignored
        );
        // A fresh late report raises again, by at least a quarter.
        let t = t + Duration::from_secs(1);
        assert_eq!(
            l.report(&report(s, s + 130, 5, 1, 3), t),
            Verdict::Raised {
                from: raised,
                to: raised + raised / 4,
                again: true
            }
        );
        assert_eq!(l.counts(), (2, 0, raised + raised / 4));
    }

    #[test]
    fn a_new_stream_gives_the_decoder_time_then_comes_down_gently() {
        let t0 = Instant::now();
        let mut l = Latency::new(None, t0);
        l.stream_started();
        let mut now = 10_000u32;
        let first = l.stamp(now);
        assert_eq!(first, now + STREAM_START_MS - START_MS);
        // Reports wait until the slack is gone, also those with late frames.
        let t = t0 + Duration::from_secs(3);
        assert_eq!(
            l.report(&report(first, first, 1, 1, -5), t),
            Verdict::Ignored
        );
        let mut last = first;
        let mut frames = 0;
        while l.applied_ms() > l.target_ms() {
            now += 33;
            let s = l.stamp(now);
            let step = mm_diff(s, last);
            assert!((30..33).contains(&step), "{step}");
            last = s;
            frames += 1;
        }
        // 140 ms at 3 ms a frame (a tenth of 33 ms).
        assert_eq!(frames, 47);
        assert_eq!(last, now);
        // Now reports count again.
        assert_eq!(l.report(&report(last, last, 1, 0, 8), t), Verdict::Calm);
        // At 60 fps the ramp is 1 ms a frame; a burst (no time between frames) stays in
        // order.
        l.stream_started();
        let a = l.stamp(now);
        let b = l.stamp(now);
        let c = l.stamp(now + 16);
        assert_eq!((mm_diff(b, a), mm_diff(c, b)), (0, 14));
        // With a latency above STREAM_START_MS a new stream changes nothing.
        let mut l = Latency::new(Some(200), t0);
        l.stream_started();
        assert_eq!(l.stamp(5_000), 5_000);
    }

    #[test]
    fn the_calm_period_starts_when_a_change_took_effect() {
        let t0 = Instant::now();
        let mut l = Latency::new(None, t0);
        let s = l.stamp(10_000);
        assert!(matches!(
            l.report(&report(s, s, 1, 1, -50), t0),
            Verdict::Raised { .. }
        ));
        // No frame for a long time, then calm reports: the first one starts the calm period.
        let t = t0 + 2 * CALM_AFTER_RAISE;
        let s = l.stamp(30_000);
        assert_eq!(l.report(&report(s, s, 1, 0, 60), t), Verdict::Calm);
        let s = l.stamp(30_033);
        assert_eq!(
            l.report(&report(s, s, 1, 0, 60), t + CALM_AFTER_RAISE - MS),
            Verdict::Calm
        );
        let s = l.stamp(30_066);
        assert!(matches!(
            l.report(&report(s, s, 1, 0, 60), t + CALM_AFTER_RAISE),
            Verdict::Lowered { .. }
        ));
    }

    #[test]
    fn frames_late_from_the_servers_backlog_do_not_raise() {
        let t0 = Instant::now();
        let mut l = Latency::new(None, t0);
        let mut now = 10_000u32;
        let mut t = t0;
        // Frames wait behind a backlog for a second; their reports come late.
        let mut last_queued = 0;
        for _ in 0..30 {
            last_queued = l.stamp(now);
            l.queued();
            now += 33;
            t += Duration::from_millis(33);
            let v = l.report(&report(last_queued, last_queued, 1, 1, -300), t);
            assert_eq!(v, Verdict::Queued);
        }
        // Draining: late frames within the grace stamped after the last queued one.
        let s = l.stamp(now + 500);
        assert!(mm_diff(s, last_queued) <= QUEUED_GRACE_MS);
        assert_eq!(l.report(&report(s, s, 1, 1, -100), t), Verdict::Queued);
        assert_eq!(l.target_ms(), START_MS);
        // Well after the backlog, a late frame raises as before.
        let s = l.stamp(now + 3000);
        assert!(matches!(
            l.report(&report(s, s, 1, 1, -20), t + Duration::from_secs(3)),
            Verdict::Raised { .. }
        ));
    }

    #[test]
    fn a_high_latency_comes_down_fast_when_frames_arrive_early() {
        let t0 = Instant::now();
        let mut l = Latency::new(None, t0);
        let mut now = 10_000u32;
        let mut t = t0;
        let s = l.stamp(now);
        l.report(&report(s, s, 1, 1, -1000), t + Duration::from_millis(100));
        assert_eq!(l.target_ms(), MAX_MS);
        let raised_at = t;
        let mut down_at = None;
        while t < t0 + Duration::from_secs(60) {
            now += 33;
            t += Duration::from_millis(33);
            let s = l.stamp(now);
            // Frames arrive 5 ms after they leave: the margin is the applied latency − 5.
            let margin = mm_diff(s, now) + START_MS as i32 - 5;
            l.report(&report(s, s, 1, 0, margin), t);
            if l.target_ms() <= FAST_LOWER_ABOVE_MS {
                down_at = Some(t);
                break;
            }
        }
        let took = down_at.expect("stayed high").duration_since(raised_at);
        // CALM_AFTER_HIGH_RAISE, then halving the spare margin each calm period (400 -> 204
        // -> 106 ms; below FAST_LOWER_ABOVE_MS by an eighth as before).
        assert!(took <= Duration::from_secs(10), "took {took:?}");
    }

    #[test]
    fn never_above_the_maximum() {
        let t0 = Instant::now();
        let mut l = Latency::new(None, t0);
        let mut now = 10_000u32;
        let mut t = t0;
        for _ in 0..50 {
            let s = l.stamp(now);
            now += 100;
            t += Duration::from_millis(100);
            l.report(&report(s, s + 50, 5, 5, -1000), t);
        }
        assert_eq!(l.target_ms(), MAX_MS);
        let s = l.stamp(now);
        assert_eq!(l.report(&report(s, s, 5, 5, -10), t), Verdict::Late);
        assert_eq!(l.target_ms(), MAX_MS);
    }

    #[test]
    fn lowers_slowly_when_calm_and_never_into_the_margin() {
        let t0 = Instant::now();
        let mut l = Latency::new(None, t0);
        // Raised by 82 by a 80 ms late frame.
        let s = l.stamp(10_000);
        let t = t0 + Duration::from_millis(100);
        assert_eq!(
            l.report(&report(s, s, 5, 1, -80), t),
            Verdict::Raised {
                from: START_MS,
                to: START_MS + 82,
                again: false
            }
        );
        // Calm reports with a wide margin: nothing for CALM_AFTER_RAISE.
        let mut now = 10_100u32;
        let mut t = t;
        let mut stamps = vec![];
        let mut lowered = vec![];
        while t < t0 + Duration::from_secs(80) {
            let s = l.stamp(now);
            stamps.push(s);
            // The client's clock is 20 ms behind ours (its MAIN_INIT): margin = latency.
            let margin = mm_diff(s, now) + START_MS as i32;
            if let Verdict::Lowered { from, to } = l.report(&report(s, s, 5, 0, margin), t) {
                lowered.push((t.duration_since(t0), from, to));
            }
            now += 33;
            t += Duration::from_millis(33);
        }
        assert!(!lowered.is_empty());
        assert!(lowered[0].0 >= Duration::from_millis(100) + CALM_AFTER_RAISE);
        for w in lowered.windows(2) {
            assert!(w[1].0 - w[0].0 >= CALM_AFTER_LOWER - 40 * MS);
            assert!(w[1].1 - w[1].2 <= (w[1].1 / 8).max(1));
        }
        assert_eq!(l.target_ms(), MIN_MS, "down to the minimum: {lowered:?}");
        // Stamps never went backwards, and played at most 10 % faster.
        for w in stamps.windows(2) {
            assert!(
                mm_diff(w[1], w[0]) >= 33 - 33 / RAMP_DIVISOR as i32,
                "{w:?}"
            );
        }
    }

    #[test]
    fn lowering_keeps_the_headroom() {
        let t0 = Instant::now();
        let mut l = Latency::new(None, t0);
        let mut now = 10_000u32;
        let mut t = t0;
        // Frames come 15 ms after their stamp − latency: margin = latency − 15.
        while t < t0 + Duration::from_secs(30) {
            let s = l.stamp(now);
            let margin = mm_diff(s, now) + START_MS as i32 - 15;
            let late = margin < 0;
            l.report(&report(s, s, 5, u32::from(late), margin), t);
            now += 33;
            t += Duration::from_millis(33);
        }
        assert_eq!(l.target_ms(), 15 + MIN_HEADROOM_MS);
    }

    #[test]
    fn headroom_follows_the_round_trip() {
        let t0 = Instant::now();
        let mut l = Latency::new(None, t0);
        let (_, ts) = l.ping_due(t0).unwrap();
        assert_eq!(l.ping_due(t0 + 500 * MS), None);
        assert_eq!(l.pong(ts, t0 + 40 * MS), Some(40 * MS));
        assert_eq!(l.rtt(), Some(40 * MS));
        assert_eq!(l.headroom(), 10);
        assert!(l.ping_due(t0 + PING_EVERY).is_some());
        // A timestamp from the future is ignored.
        assert_eq!(l.pong(u64::MAX, t0), None);
        let s = l.stamp(10_000);
        let t = t0 + Duration::from_secs(2);
        assert_eq!(
            l.report(&report(s, s, 5, 1, -20), t),
            Verdict::Raised {
                from: START_MS,
                to: START_MS + 20 + 10,
                again: false
            }
        );
    }

    #[test]
    fn clients_without_reports_get_the_safe_latency() {
        let t0 = Instant::now();
        let mut l = Latency::new(None, t0);
        l.no_reports(t0);
        assert_eq!(l.target_ms(), NO_REPORTS_MS);
        assert_eq!(l.stamp(10_000), 10_000 + NO_REPORTS_MS - START_MS);
    }

    #[test]
    fn settled_once_per_change() {
        let t0 = Instant::now();
        let mut l = Latency::new(None, t0);
        assert_eq!(l.settled(t0 + MS), None);
        assert_eq!(l.settled(t0 + SETTLED_AFTER), Some(START_MS));
        assert_eq!(l.settled(t0 + 2 * SETTLED_AFTER), None);
        let s = l.stamp(10_000);
        let t = t0 + Duration::from_secs(20);
        l.report(&report(s, s, 5, 1, -1), t);
        assert_eq!(l.settled(t + MS), None);
        assert_eq!(l.settled(t + SETTLED_AFTER), Some(l.target_ms()));
    }

    #[test]
    fn stamps_survive_the_clock_wrapping() {
        let t0 = Instant::now();
        let mut l = Latency::new(None, t0);
        let s = l.stamp(u32::MAX - 5);
        assert_eq!(s, u32::MAX - 5);
        let t = t0 + Duration::from_secs(2);
        assert!(matches!(
            l.report(&report(s, s, 5, 1, -20), t),
            Verdict::Raised { .. }
        ));
        let s2 = l.stamp(u32::MAX - 2);
        assert!(mm_diff(s2, s) > 0);
        assert_ne!(s2, 0);
        // Stamps never equal 0 (spice-gtk's "invalid").
        let mut l = Latency::new(Some(10), t0);
        assert_eq!(l.stamp(0), 1);
    }

    /// Closed loop against a model of spice-gtk: the client's clock is set by MAIN_INIT over
    /// a path with a one-way delay; frames take that delay plus jitter and, for a while, a
    /// congested link's extra delay. Once settled, no frame arrives late, and the latency is
    /// close to what the delays need.
    #[test]
    fn closed_loop_settles_without_late_frames() {
        let t0 = Instant::now();
        let mut l = Latency::new(None, t0);
        let one_way = 20i64; // ms
        // The client's clock at server time `s`: s − base − one_way.
        let client_clock = |s: i64| s - i64::from(START_MS) - one_way;
        let mut rng = 12345u64;
        let mut jitter = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((rng >> 33) % 6) as i64 // 0..5 ms
        };
        let mut window: Vec<(u32, i32)> = Vec::new();
        let mut late_after_settling = 0;
        let mut late_total = 0;
        l.stream_started();
        for k in 0..(60 * 30) {
            let server = 10_000 + k * 33;
            let t = t0 + Duration::from_millis(k as u64 * 33);
            let congested = (20 * 30..25 * 30).contains(&k);
            let extra = if congested { 40 } else { 0 };
            let stamp = l.stamp(server as u32);
            let arrival = server + one_way + jitter() + extra;
            let margin = (i64::from(stamp) - client_clock(arrival)) as i32;
            if margin < 0 {
                late_total += 1;
                if k > 10 * 30 && !(20 * 30..27 * 30).contains(&k) {
                    late_after_settling += 1;
                }
            }
            window.push((stamp, margin));
            if window.len() == 5 {
                let drops = window.iter().filter(|(_, m)| *m < 0).count() as u32;
                let r = report(window[0].0, window[4].0, 5, drops, window[4].1);
                l.report(&r, t);
                window.clear();
            }
        }
        assert_eq!(late_after_settling, 0, "{late_total} late in all");
        let target = l.target_ms();
        assert!(
            (5 + MIN_HEADROOM_MS..=5 + MIN_HEADROOM_MS + 10).contains(&target),
            "settled at {target} ms"
        );
        let (raises, lowerings, highest) = l.counts();
        assert!(raises >= 1 && lowerings >= 1);
        assert!(highest >= 45, "the congestion raised it to {highest}");
    }
}
