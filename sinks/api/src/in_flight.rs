//! Requests to a store kept in flight up to a bound and answered in the order sent: the store
//! works on one while the sink builds the next. For writes whose order does not matter to the
//! outcome (each guarded by its own version), so a later request may land before an earlier one.

use crate::{Rejection, SinkError};
use futures::FutureExt;
use futures::stream::{FuturesOrdered, StreamExt};
use std::future::Future;

/// Up to `limit` requests in flight, each answering with the changes its store refused.
pub struct InFlight<F: Future> {
    requests: FuturesOrdered<F>,
    limit: usize,
    refused: Vec<Rejection>,
}

impl<F> InFlight<F>
where
    F: Future<Output = Result<Vec<Rejection>, SinkError>>,
{
    pub fn new(limit: usize) -> Self {
        Self {
            requests: FuturesOrdered::new(),
            limit: limit.max(1),
            refused: Vec::new(),
        }
    }

    /// Sends `request`, first waiting for the oldest when `limit` are in flight. The requests are
    /// polled here until none is ready: a future left unpolled would not be sent before the next
    /// wait, and the store would sit idle while the next request is built.
    pub async fn send(&mut self, request: F) -> Result<(), SinkError> {
        if self.requests.len() >= self.limit
            && let Some(answer) = self.requests.next().await
        {
            self.refused.extend(answer?);
        }
        self.requests.push_back(request);
        // Pending means every request that could move was polled, the new one included.
        while let Some(Some(answer)) = self.requests.next().now_or_never() {
            self.refused.extend(answer?);
        }
        Ok(())
    }

    /// Waits for every request; the changes refused by all of them, in the order sent, or the
    /// first outage.
    pub async fn finish(mut self) -> Result<Vec<Rejection>, SinkError> {
        while let Some(answer) = self.requests.next().await {
            self.refused.extend(answer?);
        }
        Ok(self.refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A request counts itself as started when first polled and waits for `gate`.
    async fn request(
        started: Arc<AtomicUsize>,
        gate: Arc<tokio::sync::Notify>,
        refuse: Option<usize>,
    ) -> Result<Vec<Rejection>, SinkError> {
        started.fetch_add(1, Ordering::SeqCst);
        gate.notified().await;
        Ok(refuse
            .map(|i| Rejection::new(i, "no"))
            .into_iter()
            .collect())
    }

    #[tokio::test]
    async fn each_request_starts_when_sent_and_at_most_limit_wait() {
        let started = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut in_flight = InFlight::new(2);
        in_flight
            .send(request(started.clone(), gate.clone(), Some(0)))
            .boxed()
            .await
            .unwrap();
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "sent before the next is built"
        );
        in_flight
            .send(request(started.clone(), gate.clone(), None))
            .boxed()
            .await
            .unwrap();
        assert_eq!(started.load(Ordering::SeqCst), 2);
        // A third must wait for the oldest: it is not started while two are in flight.
        let third = request(started.clone(), gate.clone(), Some(2));
        let mut send = Box::pin(in_flight.send(third));
        assert!((&mut send).now_or_never().is_none());
        assert_eq!(started.load(Ordering::SeqCst), 2, "the bound held");
        gate.notify_waiters();
        send.await.unwrap();
        assert_eq!(started.load(Ordering::SeqCst), 3);
        gate.notify_waiters();
        let refused = in_flight.finish().await.unwrap();
        assert_eq!(refused.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 2]);
    }
}
