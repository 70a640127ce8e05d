//! The handover from the poll thread to the run loop: records in chunks through a bounded
//! channel, each with the assignment generation it was polled in, without a copy.

use super::*;

/// A record as the poll thread hands it over, with the assignment generation it was polled in:
/// one polled before its partition was revoked is stale, even if the partition came back since.
pub struct Fetched<M = Polled> {
    pub message: KafkaResult<M>,
    pub generation: u64,
}

/// What the run loop reads of a consumed record: a Kafka message as polled, or, in unit tests,
/// one built by hand (`rdkafka::message::OwnedMessage`).
pub trait Consumed: Send + 'static {
    fn topic(&self) -> &str;
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
    fn key(&self) -> Option<&[u8]>;
    fn payload(&self) -> Option<&[u8]>;
}

impl Consumed for Polled {
    fn topic(&self) -> &str {
        self.message.topic()
    }
    fn partition(&self) -> i32 {
        self.message.partition()
    }
    fn offset(&self) -> i64 {
        self.message.offset()
    }
    fn key(&self) -> Option<&[u8]> {
        self.message.key()
    }
    fn payload(&self) -> Option<&[u8]> {
        self.message.payload()
    }
}

impl Consumed for rdkafka::message::OwnedMessage {
    fn topic(&self) -> &str {
        Message::topic(self)
    }
    fn partition(&self) -> i32 {
        Message::partition(self)
    }
    fn offset(&self) -> i64 {
        Message::offset(self)
    }
    fn key(&self) -> Option<&[u8]> {
        Message::key(self)
    }
    fn payload(&self) -> Option<&[u8]> {
        Message::payload(self)
    }
}

/// A record as librdkafka holds it (no copy), with the consumer it came from: the message is
/// declared first, so it is dropped before the consumer can be.
pub struct Polled {
    pub(super) message: BorrowedMessage<'static>,
    pub(super) _consumer: Arc<RippleConsumer>,
}

impl Polled {
    fn new(message: BorrowedMessage<'_>, consumer: &Arc<RippleConsumer>) -> Self {
        // SAFETY: the lifetime only says the message must not outlive its consumer; it holds its
        // own reference to librdkafka's event (the record's memory), and the `Arc` kept beside it
        // keeps the consumer alive until after the message is dropped.
        let message = unsafe {
            std::mem::transmute::<BorrowedMessage<'_>, BorrowedMessage<'static>>(message)
        };
        Self {
            message,
            _consumer: consumer.clone(),
        }
    }
}

/// Records go to the run loop in chunks of up to this many (what one poll round had ready), so a
/// handover between threads costs little per record.
pub(super) const CHUNK: usize = 64;

/// Chunks in flight between the poll thread and the run loop. Small: the loop pauses the
/// partitions for backpressure, and librdkafka's own queue holds the rest.
pub(super) const HANDOVER: usize = 4;

/// The run loop's end of the handover: one record at a time, in the order polled.
pub struct Records<M = Polled> {
    pub(super) rx: tokio::sync::mpsc::Receiver<Vec<Fetched<M>>>,
    pub(super) ready: std::collections::VecDeque<Fetched<M>>,
}

impl<M> Records<M> {
    /// The receiving end of chunks sent on `rx`'s channel (by the poll thread, or a test).
    pub fn new(rx: tokio::sync::mpsc::Receiver<Vec<Fetched<M>>>) -> Self {
        Self {
            rx,
            ready: Default::default(),
        }
    }

    /// The next record; `None` once the poll thread has stopped. Cancel-safe: a chunk received is
    /// kept before anything else can be awaited.
    pub async fn recv(&mut self) -> Option<Fetched<M>> {
        if let Some(f) = self.ready.pop_front() {
            return Some(f);
        }
        let chunk = self.rx.recv().await?;
        self.ready.extend(chunk);
        self.ready.pop_front()
    }
}

/// How long one poll waits for a record before the thread looks whether it should stop.
pub(super) const POLL_TICK: Duration = Duration::from_millis(100);

/// Polls the consumer until told to stop or the receiving side is gone. librdkafka runs the
/// rebalance callbacks in here.
pub(super) fn poll_loop(
    consumer: Arc<RippleConsumer>,
    tx: tokio::sync::mpsc::Sender<Vec<Fetched>>,
    stop: Arc<AtomicBool>,
) {
    let mut chunk = Vec::with_capacity(CHUNK);
    while !stop.load(Ordering::Acquire) && !tx.is_closed() {
        // Wait for the first record of a chunk; take the rest only as far as they are ready.
        let wait = if chunk.is_empty() {
            POLL_TICK
        } else {
            Duration::ZERO
        };
        if let Some(polled) = consumer.poll(wait) {
            // Read after the poll: a revocation served inside it has already moved the generation.
            let generation = consumer
                .context()
                .applied
                .generation
                .load(Ordering::Acquire);
            let message = polled.map(|m| Polled::new(m, &consumer));
            chunk.push(Fetched {
                message,
                generation,
            });
            if chunk.len() < CHUNK {
                continue;
            }
        }
        if !chunk.is_empty()
            && tx
                .blocking_send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
                .is_err()
        {
            break;
        }
    }
}
