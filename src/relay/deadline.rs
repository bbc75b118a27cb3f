//! Timeouts started only when they are needed.
//!
//! Most socket operations of a request finish on their first poll: a write
//! into the socket's buffer, a read of bytes that are already there. Yet a
//! timeout wrapped around them reads the clock (and sets up a timer) on
//! every call, several times per request. So the work is polled once
//! first, and only if it has to wait does its timeout start, counted from
//! that moment: microseconds later than the call, for bounds of seconds.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

/// `work`'s output, or `None` if it had to wait and then did not finish
/// within `limit`. Without a limit it waits as long as it takes.
pub async fn within<F: Future>(limit: Option<Duration>, work: F) -> Option<F::Output> {
    let mut work = pin!(work);
    if let Poll::Ready(out) = poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await {
        return Some(out);
    }
    match limit {
        Some(limit) => tokio::time::timeout(limit, work).await.ok(),
        None => Some(work.await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_that_is_ready_needs_no_timer_and_waiting_work_times_out() {
        let ready = within(Some(Duration::ZERO), async { 7 }).await;
        assert_eq!(
            ready,
            Some(7),
            "finished on its first poll: no time limit applies"
        );

        let started = tokio::time::Instant::now();
        let never = within(Some(Duration::from_secs(3)), std::future::pending::<()>()).await;
        assert_eq!(never, None);
        assert_eq!(started.elapsed(), Duration::from_secs(3));

        let slow = within(
            Some(Duration::from_secs(3)),
            tokio::time::sleep(Duration::from_secs(2)),
        )
        .await;
        assert_eq!(slow, Some(()));
        let unbounded = within(None, tokio::time::sleep(Duration::from_secs(60))).await;
        assert_eq!(unbounded, Some(()));
    }
}
