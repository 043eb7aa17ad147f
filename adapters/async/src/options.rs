//! The options of one call made through [`Client`](crate::Client) or
//! [`Channel`](crate::Channel): what the connection acts on (deadline,
//! request headers) and what only a reconnecting client acts on (the retry
//! policy).

use std::time::Duration;

use zrpc_core::{Code, Metadata, OpenOptions, Status};

/// Per-call options.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// Relative deadline; the call ends with `DEADLINE_EXCEEDED` on both sides
    /// when it passes. Through a [`Channel`](crate::Channel) it bounds the
    /// whole call: waits for a connection and every attempt.
    pub timeout: Option<Duration>,
    /// Request headers.
    pub metadata: Metadata,
    /// When a failed call may be sent again (a [`Channel`](crate::Channel)
    /// acts on it; a single [`Client`](crate::Client) does not). `None`:
    /// only calls the peer never processed are sent again.
    pub retry: Option<RetryPolicy>,
}

impl CallOptions {
    /// These options with a deadline `timeout` from now.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// These options with a retry policy (for calls that are safe to
    /// repeat: the method is idempotent).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// What the connection acts on.
    pub(crate) fn open_options(&self) -> OpenOptions {
        OpenOptions {
            timeout: self.timeout,
            metadata: self.metadata.clone(),
        }
    }
}

/// When a call that failed is sent again, for methods that are safe to
/// repeat (idempotent). A call the peer never processed (see
/// [`Status::is_not_processed`]) is always sent again, policy or not, and
/// does not count as an attempt; a call that was in progress when its
/// connection was lost is sent again only under a policy whose `codes` hold
/// its status code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (1: never again).
    pub max_attempts: u32,
    /// Wait before the second attempt; it doubles for each further one,
    /// with random jitter (0.5× to 1×).
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// The status codes worth another attempt.
    pub codes: Vec<Code>,
}

impl RetryPolicy {
    /// For idempotent methods: 3 attempts, 50 ms then 100 ms apart (at
    /// most 1 s), on `UNAVAILABLE` (the connection was lost).
    pub fn idempotent() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            codes: vec![Code::Unavailable],
        }
    }

    /// Whether a call that failed with `status` after `attempts` attempts
    /// may be sent once more.
    pub fn allows(&self, attempts: u32, status: &Status) -> bool {
        attempts < self.max_attempts && self.codes.contains(&status.code())
    }

    /// The wait (before jitter) ahead of attempt `attempt` (2 = the first retry).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(16);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}
