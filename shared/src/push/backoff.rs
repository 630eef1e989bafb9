//! Retry delays for an unreachable or refusing mirror: doubling from
//! [`MIN_BACKOFF`] up to [`MAX_BACKOFF`], reset by a success.

use std::time::Duration;

/// First retry delay after a failed push.
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between retries: a mirror that comes back is pushed to
/// within this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The delay before the next retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: MIN_BACKOFF }
    }
}

impl Backoff {
    /// The delay to wait now; the one after it is twice as long (capped).
    pub fn next_delay(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        now
    }

    /// Back to [`MIN_BACKOFF`] after a success.
    pub fn reset(&mut self) {
        self.next = MIN_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert_eq!(delays[0], MIN_BACKOFF);
        assert_eq!(delays[1], MIN_BACKOFF * 2);
        assert!(delays.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*delays.last().unwrap_or(&Duration::ZERO), MAX_BACKOFF);
        b.reset();
        assert_eq!(b.next_delay(), MIN_BACKOFF);
    }
}
