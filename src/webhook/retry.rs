//! When to try a webhook delivery again: which answers are retried
//! (server errors, 429, redirects, transport failures), how long to wait
//! (exponential backoff with jitter, or the receiver's `Retry-After`
//! within bounds). Pure, so the policy is tested without a receiver.

use std::time::Duration;

/// The shortest wait a receiver's `Retry-After` can ask for.
pub const RETRY_AFTER_FLOOR: Duration = Duration::from_secs(1);

/// What to do after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The receiver took it (2xx).
    Delivered,
    /// Try again, no sooner than `after` if the receiver said so.
    Retry {
        /// The `Retry-After` delay, if given.
        after: Option<Duration>,
    },
    /// A permanent refusal (4xx other than 429).
    GiveUp,
    /// Never sent: the alert could not be signed here (not the receiver's doing).
    Unsigned,
}

/// One attempt's result as the classifier sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt<'a> {
    /// An HTTP status and the `Retry-After` header, if any.
    Answered {
        /// The HTTP status.
        status: u16,
        /// The `Retry-After` header.
        retry_after: Option<&'a str>,
    },
    /// Connection refused, reset, timed out.
    Transport,
}

/// Pure retry policy; `now` (Unix seconds) reads an HTTP-date `Retry-After`.
pub fn classify(attempt: Attempt<'_>, now: i64) -> Verdict {
    match attempt {
        Attempt::Answered { status, .. } if (200..300).contains(&status) => Verdict::Delivered,
        Attempt::Answered {
            status,
            retry_after,
        } if status == 429 || status >= 500 => Verdict::Retry {
            after: retry_after.and_then(|v| parse_retry_after(v, now)),
        },
        // A redirect is not followed: the receiver did not take the alert.
        Attempt::Answered { status, .. } if (300..400).contains(&status) => {
            Verdict::Retry { after: None }
        }
        Attempt::Answered { .. } => Verdict::GiveUp,
        Attempt::Transport => Verdict::Retry { after: None },
    }
}

/// `Retry-After` as seconds (the HTTP-date form is read too).
fn parse_retry_after(v: &str, now: i64) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs.min(3600)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    let secs = (when.timestamp() - now).clamp(0, 3600);
    Some(Duration::from_secs(secs as u64))
}

/// Delay before attempt `n + 1` (n ≥ 1): exponential, capped, with "equal
/// jitter" (`jitter` in [0, 1) picks a point in the upper half).
pub fn backoff(n: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = initial
        .saturating_mul(1u32 << (n.saturating_sub(1)).min(20))
        .min(max);
    exp.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifier_retries_server_errors_429_and_redirects_only() {
        let answered = |status| Attempt::Answered {
            status,
            retry_after: None,
        };
        let now = 1_767_225_600; // 2026-01-01T00:00:00Z
        let classify = |a| classify(a, now);
        assert_eq!(classify(answered(200)), Verdict::Delivered);
        assert_eq!(classify(answered(204)), Verdict::Delivered);
        assert_eq!(classify(answered(500)), Verdict::Retry { after: None });
        assert_eq!(classify(answered(503)), Verdict::Retry { after: None });
        assert_eq!(
            classify(answered(307)),
            Verdict::Retry { after: None },
            "a redirect is a failed attempt, never followed"
        );
        assert_eq!(classify(answered(400)), Verdict::GiveUp);
        assert_eq!(classify(answered(404)), Verdict::GiveUp);
        assert_eq!(classify(Attempt::Transport), Verdict::Retry { after: None });
        assert_eq!(
            classify(Attempt::Answered {
                status: 503,
                retry_after: Some("Thu, 01 Jan 2026 00:00:30 GMT")
            }),
            Verdict::Retry {
                after: Some(Duration::from_secs(30))
            },
            "an HTTP-date is read against the given now, not the clock"
        );
        assert_eq!(
            classify(Attempt::Answered {
                status: 429,
                retry_after: Some("7")
            }),
            Verdict::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered_in_the_upper_half() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(backoff(1, i, m, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(2, i, m, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(3, i, m, 0.0), Duration::from_millis(200));
        assert_eq!(backoff(30, i, m, 1.0), Duration::from_secs(1));
        assert!(backoff(2, i, m, 0.5) >= Duration::from_millis(100));
    }
}
