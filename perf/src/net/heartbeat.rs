//! The timer of a connection's heartbeats: AMQP 1.0's empty frames (§2.4.5) when the peer
//! announced an idle timeout ([`crate::amqp::Connection::heartbeat`]), MQTT's PINGREQ within the
//! keep-alive ([`crate::mqtt::Connection::keep_alive`]). On every tick the task calls its
//! connection, which sends something only if nothing else was written since the tick before.

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};

/// Ticks at the connection's heartbeat interval, or never.
#[derive(Debug)]
pub struct Heartbeat(Option<Interval>);

impl Heartbeat {
    /// A timer ticking `every` (`None`: never).
    pub fn new(every: Option<Duration>) -> Self {
        Self(every.map(|every| {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        }))
    }

    /// Waits for the next tick (cancel safe).
    pub async fn tick(&mut self) {
        match &mut self.0 {
            Some(interval) => {
                interval.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}
