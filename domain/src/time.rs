//! Wall-clock time as the domain sees it: whole milliseconds since the Unix epoch, which is the
//! precision every server message's `timestamp` carries.

use std::time::Duration;

/// An instant of wall-clock time, in milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `millis` milliseconds after the Unix epoch (negative: before it).
    pub const fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`; zero if the clock went backwards.
    pub fn since(self, earlier: Timestamp) -> Duration {
        let millis = self.0.saturating_sub(earlier.0);
        Duration::from_millis(u64::try_from(millis).unwrap_or(0))
    }
}

/// A value together with the time it was produced: every server message carries one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped<T> {
    /// When the value was produced.
    pub at: Timestamp,
    /// The value.
    pub value: T,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_time_is_the_difference_in_milliseconds() {
        let start = Timestamp::from_unix_millis(1_000);
        assert_eq!(
            Timestamp::from_unix_millis(13_345).since(start),
            Duration::from_millis(12_345)
        );
    }

    #[test]
    fn a_clock_that_went_backwards_yields_zero_elapsed_time() {
        let start = Timestamp::from_unix_millis(5_000);
        assert_eq!(
            Timestamp::from_unix_millis(4_000).since(start),
            Duration::ZERO
        );
    }
}
