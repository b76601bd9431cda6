//! Once-a-second sampling of a run: the timeline, the live progress line, and the CPU and memory
//! readings at the start and the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::RunConfig;
use crate::procfs;
use crate::report::Sample;
use crate::stats::{Counts, Recorder};

/// The readings taken when the run ended.
#[derive(Clone, Copy)]
pub(super) struct Finished {
    pub(super) at: Instant,
    pub(super) cpu: Option<f64>,
    pub(super) gateway_cpu: Option<f64>,
    pub(super) gateway_rss: Option<u64>,
}

/// Samples counters once a second for the timeline and the progress line.
pub(super) struct Watch {
    pub(super) recorder: Arc<Recorder>,
    pub(super) bar: ProgressBar,
    pub(super) pid: Option<u32>,
    pub(super) start: Option<Instant>,
    pub(super) sent_until: Option<Instant>,
    pub(super) last: Counts,
    pub(super) last_at: Option<Instant>,
    pub(super) timeline: Vec<Sample>,
    pub(super) cpu_start: Option<f64>,
    pub(super) gateway_cpu_start: Option<f64>,
    pub(super) gateway_rss_start: Option<u64>,
    pub(super) gateway_rss_peak: Option<u64>,
    pub(super) finished: Option<Finished>,
}

impl Watch {
    pub(super) fn new(config: &RunConfig, recorder: Arc<Recorder>) -> Self {
        let bar = if config.progress {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}") {
                bar.set_style(style);
            }
            bar
        } else {
            ProgressBar::hidden()
        };
        Self {
            recorder,
            bar,
            pid: config.pid,
            start: None,
            sent_until: None,
            last: Counts::default(),
            last_at: None,
            timeline: Vec::new(),
            cpu_start: None,
            gateway_cpu_start: None,
            gateway_rss_start: None,
            gateway_rss_peak: None,
            finished: None,
        }
    }

    pub(super) fn message(&self, text: &str) {
        self.bar.set_message(text.to_owned());
        self.bar.tick();
    }

    pub(super) fn start(&mut self, start: Instant) {
        self.start = Some(start);
        self.last_at = Some(start);
        self.last = self.recorder.counts();
        self.cpu_start = procfs::cpu_seconds(None);
        self.gateway_cpu_start = self.pid.and_then(|p| procfs::cpu_seconds(Some(p)));
        self.gateway_rss_start = self.pid.and_then(procfs::rss_kib);
        self.gateway_rss_peak = self.gateway_rss_start;
    }

    pub(super) fn sent_until(&mut self, at: Instant) {
        self.sent_until = Some(at);
    }

    /// Samples once a second for `duration` (first waiting for the start instant).
    pub(super) async fn run_for(&mut self, duration: Duration) {
        let Some(start) = self.start else { return };
        tokio::time::sleep_until(start.into()).await;
        let end = Instant::now() + duration;
        let mut next = Instant::now() + Duration::from_secs(1);
        loop {
            if next >= end {
                tokio::time::sleep_until(end.into()).await;
                self.sample();
                return;
            }
            tokio::time::sleep_until(next.into()).await;
            self.sample();
            next += Duration::from_secs(1);
        }
    }

    pub(super) fn sample(&mut self) {
        let now = Instant::now();
        let (Some(start), Some(last_at)) = (self.start, self.last_at) else {
            return;
        };
        let c = self.recorder.counts();
        let dt = now.duration_since(last_at).as_secs_f64().max(1e-6);
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
        let latency = self.recorder.take_interval();
        let sample = Sample {
            t_s: now.duration_since(start).as_secs_f64(),
            sent_per_s: rate(c.sent, self.last.sent),
            acked_per_s: rate(c.acked, self.last.acked),
            received_per_s: rate(c.received, self.last.received),
            errors_per_s: rate(c.errors, self.last.errors),
            p50_ms: (latency.count > 0).then_some(latency.p50_ms),
            p99_ms: (latency.count > 0).then_some(latency.p99_ms),
        };
        if let Some(rss) = self.pid.and_then(procfs::rss_kib) {
            self.gateway_rss_peak = Some(self.gateway_rss_peak.map_or(rss, |p| p.max(rss)));
        }
        self.bar.set_message(format!(
            "sent {:>8.0}/s  acked {:>8.0}/s  received {:>8.0}/s  p99 {}  errors {}  total sent {}",
            sample.sent_per_s,
            sample.acked_per_s,
            sample.received_per_s,
            sample
                .p99_ms
                .map_or_else(|| "-".to_owned(), |p| format!("{p:.1} ms")),
            c.errors,
            c.sent,
        ));
        self.bar.tick();
        self.timeline.push(sample);
        self.last = c;
        self.last_at = Some(now);
    }

    pub(super) fn finish(&mut self) {
        self.bar.finish_and_clear();
        self.finished = Some(Finished {
            at: Instant::now(),
            cpu: procfs::cpu_seconds(None),
            gateway_cpu: self.pid.and_then(|p| procfs::cpu_seconds(Some(p))),
            gateway_rss: self.pid.and_then(procfs::rss_kib),
        });
    }
}
