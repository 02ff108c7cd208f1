//! Per-client bitrate control (AIMD), independent of the encoder type.
//!
//! Each remote client has a target bitrate. Congestion (its send queue overflowed, or its
//! STREAM_REPORT shows dropped or late frames) cuts the target by a quarter, at most once per
//! second; a client without congestion for three seconds earns 10 % more, up to the pipeline's
//! configured bitrate. A shared encoder runs at the smallest target among its clients, set
//! through the `bitrate` (kbit/s) or `target-bitrate` (bit/s) property of the element named
//! `enc`, so hardware encoders in CBR/VBR mode get the same control as x264enc.

use std::time::{Duration, Instant};

/// Lowest target, kbit/s.
pub const MIN_KBPS: u32 = 300;
const DECREASE_EVERY: Duration = Duration::from_secs(1);
const INCREASE_AFTER: Duration = Duration::from_secs(3);

/// One client's bitrate target.
#[derive(Debug, Clone)]
pub struct RateController {
    max_kbps: u32,
    target_kbps: u32,
    last_decrease: Option<Instant>,
    calm_since: Instant,
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
        }
    }

    /// The current target, kbit/s.
    pub fn target_kbps(&self) -> u32 {
        self.target_kbps
    }

    /// Frames were dropped or late. Returns the new target if it changed.
    pub fn congestion(&mut self, now: Instant) -> Option<u32> {
        self.calm_since = now;
        if self
            .last_decrease
            .is_some_and(|t| now.duration_since(t) < DECREASE_EVERY)
        {
            return None;
        }
        let new = (self.target_kbps / 4 * 3).max(MIN_KBPS);
        self.last_decrease = Some(now);
        self.set(new)
    }

    /// Things went well (a clean report, a frame sent). Returns the new target if it changed.
    pub fn calm(&mut self, now: Instant) -> Option<u32> {
        if now.duration_since(self.calm_since) < INCREASE_AFTER {
            return None;
        }
        self.calm_since = now;
        let new = (self.target_kbps + self.target_kbps / 10).min(self.max_kbps);
        self.set(new)
    }

    fn set(&mut self, new: u32) -> Option<u32> {
        (new != self.target_kbps).then(|| {
            self.target_kbps = new;
            new
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decreases_on_congestion_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut rc = RateController::new(8000, t0);
        assert_eq!(rc.congestion(t0), Some(6000));
        assert_eq!(rc.congestion(t0 + Duration::from_millis(500)), None);
        assert_eq!(rc.congestion(t0 + Duration::from_millis(1100)), Some(4500));
        for i in 2..40 {
            rc.congestion(t0 + Duration::from_secs(i));
        }
        assert_eq!(rc.target_kbps(), MIN_KBPS);
    }

    #[test]
    fn recovers_slowly_up_to_the_configured_rate() {
        let t0 = Instant::now();
        let mut rc = RateController::new(8000, t0);
        rc.congestion(t0);
        assert_eq!(rc.calm(t0 + Duration::from_secs(2)), None);
        assert_eq!(rc.calm(t0 + Duration::from_secs(3)), Some(6600));
        let mut t = t0 + Duration::from_secs(3);
        for _ in 0..20 {
            t += Duration::from_secs(3);
            rc.calm(t);
        }
        assert_eq!(rc.target_kbps(), 8000);
        assert_eq!(rc.calm(t + Duration::from_secs(3)), None);
    }
}
