//! Polling until a condition holds, with a bound: what every bench mode does
//! while it waits for a cluster to react.
//!
//! A leaf: it imports no other bench module, so any module may use it
//! without creating an import cycle.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`poll_until`] checks.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Poll `check` every [`POLL_INTERVAL`] until it holds; the elapsed time, or
/// None on timeout.
pub async fn poll_until<F, Fut>(timeout: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return Some(started.elapsed());
        }
        if started.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn poll_until_reports_success_or_gives_up_after_the_timeout() {
        let mut calls = 0;
        let took = poll_until(Duration::from_secs(5), || {
            calls += 1;
            let done = calls >= 3;
            async move { done }
        })
        .await;
        assert!(took.is_some());
        assert_eq!(calls, 3);

        let started = Instant::now();
        let never = poll_until(Duration::from_millis(50), || async { false }).await;
        assert_eq!(never, None);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
