//! How every member of the bus (daemons, clients, the provisioner and scheduler) keeps its
//! broker connection: when to retry after losing it, and how often to PING it. One policy for
//! all, so that a fleet reconnecting after a broker restart spreads its attempts the same way
//! whichever process it is.

use std::time::Duration;

/// How often a connection PINGs its broker. A connection the network silently dropped (a
/// partition, a pulled cable: no FIN or RST ever arrives) is noticed after three unanswered
/// PINGs, and once the network heals the next PING meets the broker's reset at once, so a node
/// is back within this interval instead of async-nats' default minute. 10,000 nodes cost the
/// broker 1,000 small messages a second.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);

/// How long to wait before connection attempt `attempt` (counted from 1, as async-nats does):
/// nothing before the first, so a node is on the bus as soon as it starts; then jittered
/// exponential backoff (`jitter` in 0.5..1.5, the caller's randomness), from 100 ms up to 10 s,
/// between failed ones.
pub fn reconnect_delay(attempt: usize, jitter: f64) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    let failures = u32::try_from(attempt - 2).unwrap_or(u32::MAX).min(7);
    Duration::from_millis(100)
        .saturating_mul(1 << failures)
        .min(Duration::from_secs(10))
        .mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_attempt_is_immediate_and_failures_back_off() {
        let ms = Duration::from_millis;
        assert_eq!(reconnect_delay(0, 1.0), Duration::ZERO);
        assert_eq!(reconnect_delay(1, 1.4), Duration::ZERO);
        assert_eq!(reconnect_delay(2, 1.0), ms(100));
        assert_eq!(reconnect_delay(3, 1.0), ms(200));
        assert_eq!(reconnect_delay(5, 0.5), ms(400));
        assert_eq!(reconnect_delay(50, 1.0), ms(10_000));
        assert_eq!(reconnect_delay(usize::MAX, 1.5), ms(15_000));
    }
}
