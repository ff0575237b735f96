//! A token bucket: how many messages a connection may send, on average and in a burst.
//! Time comes in from the caller as a duration since any fixed origin, so the rule has no
//! clock of its own.

use std::time::Duration;

/// The rate a bucket allows: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages per second, on average.
    pub per_second: u32,
    /// Messages that may arrive at once after a quiet spell.
    pub burst: u32,
}

/// A token bucket for one connection.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: RateLimit,
    /// Tokens available, in millionths, so that refills need no floating point.
    micro_tokens: u64,
    last: Duration,
}

const MICRO: u64 = 1_000_000;

impl TokenBucket {
    /// A full bucket at time `now`.
    pub fn new(limit: RateLimit, now: Duration) -> Self {
        Self {
            limit,
            micro_tokens: u64::from(limit.burst) * MICRO,
            last: now,
        }
    }

    /// Takes a token for a message arriving at `now`; `false` when the bucket is empty and the
    /// message is over the limit.
    pub fn take(&mut self, now: Duration) -> bool {
        let elapsed = now.saturating_sub(self.last);
        self.last = self.last.max(now);
        // per_second tokens a second = per_second micro-tokens a microsecond.
        let refill = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(self.limit.per_second));
        let capacity = u64::from(self.limit.burst) * MICRO;
        self.micro_tokens = self.micro_tokens.saturating_add(refill).min(capacity);
        if self.micro_tokens >= MICRO {
            self.micro_tokens -= MICRO;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 10,
        burst: 3,
    };

    #[test]
    fn a_burst_is_allowed_then_the_bucket_is_empty() {
        let mut bucket = TokenBucket::new(LIMIT, Duration::ZERO);
        assert_eq!(
            (0..4)
                .map(|_| bucket.take(Duration::ZERO))
                .collect::<Vec<_>>(),
            [true, true, true, false]
        );
    }

    #[test]
    fn tokens_come_back_at_the_average_rate() {
        let mut bucket = TokenBucket::new(LIMIT, Duration::ZERO);
        for _ in 0..3 {
            bucket.take(Duration::ZERO);
        }
        assert!(
            !bucket.take(Duration::from_millis(99)),
            "one token takes 100 ms at 10/s"
        );
        assert!(bucket.take(Duration::from_millis(100)));
        assert!(!bucket.take(Duration::from_millis(150)));
    }

    #[test]
    fn a_long_quiet_spell_refills_only_up_to_the_burst() {
        let mut bucket = TokenBucket::new(LIMIT, Duration::ZERO);
        for _ in 0..3 {
            bucket.take(Duration::ZERO);
        }
        let later = Duration::from_secs(3_600);
        let allowed = (0..10).filter(|_| bucket.take(later)).count();
        assert_eq!(allowed, 3);
    }

    #[test]
    fn a_steady_sender_at_the_limit_is_never_refused() {
        let mut bucket = TokenBucket::new(LIMIT, Duration::ZERO);
        let refused = (0..1_000)
            .filter(|i| !bucket.take(Duration::from_millis(100 * i)))
            .count();
        assert_eq!(refused, 0);
    }

    #[test]
    fn time_going_backwards_neither_refills_nor_panics() {
        let mut bucket = TokenBucket::new(LIMIT, Duration::from_secs(10));
        for _ in 0..3 {
            bucket.take(Duration::from_secs(10));
        }
        assert!(!bucket.take(Duration::from_secs(5)));
    }
}
