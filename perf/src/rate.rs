//! Rate control: each sender follows an absolute schedule of send times, so the rate never drifts.
//!
//! Slot `n` of a sender is due at `start + (n + phase) / rate`, computed from the start instead of
//! from the previous send: a late wake-up is caught up by the next slots instead of being carried
//! forward. When a sender falls further behind than `max_lag` (the target cannot keep up), the
//! slots it can no longer meet are skipped and counted, so the report shows the shortfall instead of
//! hiding it in a burst (coordinated omission).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How fast to send, in messages per second over all devices.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    /// As fast as acknowledgements allow (closed loop: one outstanding request per HTTP connection,
    /// the in-flight window for MQTT QoS 1).
    Max,
    /// A fixed total rate (open loop).
    PerSecond(f64),
}

impl Rate {
    /// The rate of one of `devices` senders, `None` for [`Rate::Max`].
    pub fn per_device(self, devices: usize) -> Option<f64> {
        match self {
            Rate::Max => None,
            Rate::PerSecond(total) => Some(total / devices.max(1) as f64),
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        match s.parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 => Ok(Rate::PerSecond(r)),
            _ => Err(format!(
                "{s:?} is not a rate: give messages per second (> 0) or `max`"
            )),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Max => f.write_str("max"),
            Rate::PerSecond(r) => write!(f, "{r}/s"),
        }
    }
}

/// The next send time of a sender, and how many slots were given up to reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// When to send (may be in the past: send at once).
    pub at: Instant,
    /// Slots skipped because the sender was more than `max_lag` behind.
    pub skipped: u64,
}

/// The send schedule of one sender.
#[derive(Clone, Debug)]
pub struct Schedule {
    start: Instant,
    interval_s: f64,
    phase: f64,
    next: u64,
    max_lag: Duration,
}

impl Schedule {
    /// A schedule of `rate` sends per second from `start`, shifted by `phase` (0..1) of an interval
    /// so that many senders do not fire together. Senders later than `max_lag` skip slots.
    pub fn new(start: Instant, rate: f64, phase: f64, max_lag: Duration) -> Self {
        Self {
            start,
            interval_s: 1.0 / rate.max(f64::MIN_POSITIVE),
            phase: phase.clamp(0.0, 1.0),
            next: 0,
            max_lag,
        }
    }

    fn due(&self, n: u64) -> Instant {
        self.start + Duration::from_secs_f64((n as f64 + self.phase) * self.interval_s)
    }

    /// The next slot, given the time `now`.
    pub fn next_slot(&mut self, now: Instant) -> Slot {
        let mut skipped = 0;
        let at = self.due(self.next);
        if let Some(lag) = now.checked_duration_since(at)
            && lag > self.max_lag
        {
            // Skip every slot due before `now - max_lag`.
            let behind = (lag - self.max_lag).as_secs_f64() / self.interval_s;
            skipped = behind.floor() as u64 + 1;
            self.next += skipped;
        }
        let at = self.due(self.next);
        self.next += 1;
        Slot { at, skipped }
    }

    /// How many slots were handed out or skipped so far.
    pub fn slots(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_split_over_devices() -> Result<(), String> {
        assert_eq!("max".parse::<Rate>()?, Rate::Max);
        assert_eq!("1000".parse::<Rate>()?, Rate::PerSecond(1000.0));
        assert!("0".parse::<Rate>().is_err());
        assert!("-5".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
        assert_eq!(Rate::PerSecond(1000.0).per_device(4), Some(250.0));
        assert_eq!(Rate::Max.per_device(4), None);
        Ok(())
    }

    #[test]
    fn slots_are_computed_from_the_start_and_do_not_drift() {
        let start = Instant::now();
        let mut s = Schedule::new(start, 1000.0, 0.0, Duration::from_secs(3600));
        let mut last = None;
        for _ in 0..1_000_000 {
            // Asking late every time (as a slow wake-up would) does not shift later slots.
            let slot = s.next_slot(start);
            assert_eq!(slot.skipped, 0);
            last = Some(slot.at);
        }
        let last = last.map(|at| at.duration_since(start));
        let expected = Duration::from_millis(999_999);
        let error = last.map(|d| d.abs_diff(expected));
        assert!(error < Some(Duration::from_micros(1)), "{error:?}");
    }

    #[test]
    fn phase_spreads_senders_within_one_interval() {
        let start = Instant::now();
        let mut a = Schedule::new(start, 100.0, 0.0, Duration::from_secs(1));
        let mut b = Schedule::new(start, 100.0, 0.5, Duration::from_secs(1));
        let gap = b.next_slot(start).at.duration_since(a.next_slot(start).at);
        assert_eq!(gap, Duration::from_millis(5));
    }

    #[test]
    fn a_late_sender_catches_up_within_the_lag_and_skips_beyond_it() {
        let start = Instant::now();
        let mut s = Schedule::new(start, 1000.0, 0.0, Duration::from_millis(100));
        // 50 ms late: the overdue slots are still handed out, in order, for a catch-up.
        let now = start + Duration::from_millis(50);
        let first = s.next_slot(now);
        assert_eq!((first.at, first.skipped), (start, 0));
        // 1.1 s late: everything due before now - 100 ms is skipped, once.
        let now = start + Duration::from_millis(1100);
        let slot = s.next_slot(now);
        assert!((999..=1000).contains(&slot.skipped), "{}", slot.skipped);
        assert!(slot.at >= now - Duration::from_millis(100));
        assert!(slot.at <= now);
        assert_eq!(s.next_slot(now).skipped, 0);
        assert_eq!(s.slots(), 3 + slot.skipped);
    }
}
