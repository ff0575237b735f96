//! The operating system's clocks.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aimcs_domain::Timestamp;
use aimcs_domain::ports::Clock;

/// Reads the system's wall clock and a monotonic clock started when this value was made.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose monotonic readings count from now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        // A wall clock set before 1970 reads as the epoch rather than failing a timestamp.
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_unix_millis(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wall_clock_reads_a_time_after_this_code_was_written() {
        let november_2026 = Timestamp::from_unix_millis(1_795_000_000_000);
        assert!(SystemClock::new().now() > november_2026);
    }

    #[test]
    fn the_monotonic_clock_never_goes_backwards() {
        let clock = SystemClock::new();
        let first = clock.monotonic();
        assert!(clock.monotonic() >= first);
    }
}
