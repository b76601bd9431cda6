//! Latency and counter accounting shared by the senders, the consumer and the reporter.
//!
//! Counters are atomics (senders touch them on every message). End-to-end latencies are recorded
//! by the single consumer task into two HDR histograms behind an uncontended mutex: one for the
//! whole run and one for the current one-second interval of the timeline. Each sender keeps its own
//! acknowledgement-latency histogram and merges it once, at the end.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency recorded, in microseconds (larger values are clamped): one minute.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Sequence numbers at or above this are not checked for duplicates (bounds the bitmap).
const MAX_TRACKED_SEQ: u64 = 1 << 32;

/// A fresh latency histogram (microseconds, three significant digits).
pub fn histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, MAX_LATENCY_US, 3) {
        Ok(h) => h,
        // Only reachable if the constant bounds above were invalid.
        Err(e) => panic!("hdrhistogram refused constant bounds: {e}"),
    }
}

/// Records the time since `since` in `h` (microseconds, at least 1).
pub fn record_since(h: &mut Histogram<u64>, since: std::time::Instant) {
    h.saturating_record(since.elapsed().as_micros().max(1) as u64);
}

/// Latency percentiles of one histogram, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Number of values recorded.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest value.
    pub max_ms: f64,
}

impl Percentiles {
    /// The percentiles of `h` (recorded in microseconds).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// A set of sequence numbers, as a bitmap (the numbers of a run are dense from 0).
#[derive(Debug, Default)]
pub struct SeqSet {
    words: Vec<u64>,
}

impl SeqSet {
    /// Adds `seq`; false if it was there already (a duplicate). Very large numbers always count as new.
    pub fn insert(&mut self, seq: u64) -> bool {
        if seq >= MAX_TRACKED_SEQ {
            return true;
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let mask = 1u64 << bit;
        let new = self.words[word] & mask == 0;
        self.words[word] |= mask;
        new
    }
}

/// What the consumer saw, guarded together.
#[derive(Debug)]
struct Received {
    total: Histogram<u64>,
    interval: Histogram<u64>,
    seen: SeqSet,
}

/// Counters and histograms of one run.
#[derive(Debug)]
pub struct Recorder {
    run: u64,
    sent: AtomicU64,
    acked: AtomicU64,
    received: AtomicU64,
    duplicates: AtomicU64,
    foreign: AtomicU64,
    skipped: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    received_latency: Mutex<Received>,
    ack_latency: Mutex<Histogram<u64>>,
}

/// A snapshot of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages handed to the transport.
    pub sent: u64,
    /// Messages the target acknowledged (HTTP 2xx, MQTT PUBACK; at MQTT QoS 0: written out).
    pub acked: u64,
    /// Messages of this run the consumer received (duplicates excluded).
    pub received: u64,
    /// Messages received more than once.
    pub duplicates: u64,
    /// Messages of other runs the consumer saw and ignored.
    pub foreign: u64,
    /// Schedule slots given up because the target could not keep up.
    pub skipped: u64,
    /// Failures of any kind.
    pub errors: u64,
}

/// What the consumer makes of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// A new message of this run; latency recorded.
    Counted,
    /// Seen before.
    Duplicate,
    /// A warm-up message (not counted).
    WarmUp,
    /// From another run, or not ours at all.
    Foreign,
}

impl Recorder {
    /// A recorder for the run `run` (the id senders put into payloads).
    pub fn new(run: u64) -> Self {
        Self {
            run,
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            received_latency: Mutex::new(Received {
                total: histogram(),
                interval: histogram(),
                seen: SeqSet::default(),
            }),
            ack_latency: Mutex::new(histogram()),
        }
    }

    /// The run id.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// One message handed to the transport.
    pub fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// One message acknowledged by the target.
    pub fn acked(&self) {
        self.acked.fetch_add(1, Ordering::Relaxed);
    }

    /// Slots a sender skipped.
    pub fn skipped(&self, n: u64) {
        if n > 0 {
            self.skipped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// One failure of the given kind (e.g. `http 503`, `mqtt disconnect`, `timeout`).
    pub fn error(&self, kind: impl Into<String>) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(kind.into()).or_insert(0) += 1;
        }
    }

    /// A payload arrived at the consumer at `now_us` (wall clock, microseconds).
    pub fn arrived(&self, payload: &[u8], now_us: u64) -> Arrival {
        let Some(stamp) = crate::payload::decode(payload) else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return Arrival::Foreign;
        };
        if stamp.run != self.run {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return Arrival::Foreign;
        }
        if stamp.seq == crate::payload::WARMUP_SEQ {
            return Arrival::WarmUp;
        }
        let latency = now_us
            .saturating_sub(stamp.sent_us)
            .clamp(1, MAX_LATENCY_US);
        let Ok(mut r) = self.received_latency.lock() else {
            return Arrival::Foreign;
        };
        if !r.seen.insert(stamp.seq) {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return Arrival::Duplicate;
        }
        r.total.saturating_record(latency);
        r.interval.saturating_record(latency);
        self.received.fetch_add(1, Ordering::Relaxed);
        Arrival::Counted
    }

    /// Merges a sender's acknowledgement latencies.
    pub fn merge_ack_latency(&self, h: &Histogram<u64>) {
        if let Ok(mut total) = self.ack_latency.lock() {
            let _ = total.add(h);
        }
    }

    /// The counters now.
    pub fn counts(&self) -> Counts {
        Counts {
            sent: self.sent.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            foreign: self.foreign.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            errors: self.errors.lock().map(|e| e.values().sum()).unwrap_or(0),
        }
    }

    /// Failures by kind.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// End-to-end latency of the interval since the last call, and resets it.
    pub fn take_interval(&self) -> Percentiles {
        match self.received_latency.lock() {
            Ok(mut r) => {
                let p = Percentiles::of(&r.interval);
                r.interval.reset();
                p
            }
            Err(_) => Percentiles::default(),
        }
    }

    /// End-to-end latency over the whole run.
    pub fn end_to_end(&self) -> Percentiles {
        self.received_latency
            .lock()
            .map(|r| Percentiles::of(&r.total))
            .unwrap_or_default()
    }

    /// Acknowledgement latency over the whole run (what senders merged).
    pub fn ack(&self) -> Percentiles {
        self.ack_latency
            .lock()
            .map(|h| Percentiles::of(&h))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{PayloadBuilder, Stamp, WARMUP_SEQ};

    fn payload(run: u64, seq: u64, sent_us: u64) -> bytes::Bytes {
        PayloadBuilder::new(64).build(Stamp { sent_us, seq, run })
    }

    #[test]
    fn latency_is_arrival_minus_send_time_and_only_this_run_counts() {
        let r = Recorder::new(9);
        for seq in 0..100u64 {
            // 1 ms .. 100 ms
            let arrival = r.arrived(&payload(9, seq, 1_000_000), 1_000_000 + (seq + 1) * 1000);
            assert_eq!(arrival, Arrival::Counted);
        }
        assert_eq!(r.arrived(&payload(9, 5, 1), 2), Arrival::Duplicate);
        assert_eq!(r.arrived(&payload(8, 500, 1), 2), Arrival::Foreign);
        assert_eq!(r.arrived(b"short", 2), Arrival::Foreign);
        assert_eq!(r.arrived(&payload(9, WARMUP_SEQ, 1), 2), Arrival::WarmUp);

        let c = r.counts();
        assert_eq!((c.received, c.duplicates, c.foreign), (100, 1, 2));
        let p = r.end_to_end();
        assert_eq!(p.count, 100);
        assert!((p.p50_ms - 50.0).abs() < 0.1, "{p:?}");
        assert!((p.p99_ms - 99.0).abs() < 0.1, "{p:?}");
        assert!((p.max_ms - 100.0).abs() < 0.1, "{p:?}");
        assert!((p.mean_ms - 50.5).abs() < 0.1, "{p:?}");
    }

    #[test]
    fn clock_skew_never_gives_zero_or_negative_latency() {
        let r = Recorder::new(1);
        r.arrived(&payload(1, 0, 5_000), 4_000);
        assert!(r.end_to_end().max_ms > 0.0);
    }

    #[test]
    fn intervals_reset_but_the_total_keeps_everything() {
        let r = Recorder::new(1);
        r.arrived(&payload(1, 0, 0), 2_000);
        assert_eq!(r.take_interval().count, 1);
        assert_eq!(r.take_interval().count, 0);
        r.arrived(&payload(1, 1, 0), 4_000);
        assert_eq!(r.take_interval().count, 1);
        assert_eq!(r.end_to_end().count, 2);
    }

    #[test]
    fn errors_are_counted_by_kind_and_ack_latency_merges() {
        let r = Recorder::new(1);
        r.error("http 503");
        r.error("http 503");
        r.error("timeout");
        assert_eq!(r.errors().get("http 503"), Some(&2));
        assert_eq!(r.counts().errors, 3);
        let mut h = histogram();
        h.saturating_record(3000);
        r.merge_ack_latency(&h);
        r.merge_ack_latency(&h);
        assert_eq!(r.ack().count, 2);
        assert!((r.ack().p50_ms - 3.0).abs() < 0.01);
    }

    #[test]
    fn seq_set_finds_duplicates() {
        let mut s = SeqSet::default();
        assert!(s.insert(0));
        assert!(s.insert(1000));
        assert!(!s.insert(1000));
        assert!(s.insert(u64::MAX - 1));
        assert!(s.insert(u64::MAX - 1));
    }
}
