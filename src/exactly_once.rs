//! Exactly-once starts: a partition whose every owning sink keeps offsets with its data (written in
//! the same transaction as the rows) starts from those offsets when it is assigned, not from Kafka's
//! committed ones, so nothing a store already holds is delivered to it again, and a store restored
//! from an older backup gets back what it lost.

use crate::config::Config;
use crate::route::Router;
use crate::source::StartPositions;
use ripple_sink::{ConfigError, Sink, SinkError, StoredOffset};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long an assignment waits for the stores' offsets before falling back to Kafka's.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers the rebalance callback (on the poll thread) with the stores' offsets, which a task on
/// the runtime reads: the callback waits for the answer, the runtime's workers never block.
pub struct StoredStart {
    requests: tokio::sync::mpsc::UnboundedSender<Request>,
}

/// Partitions just assigned, and where to send their start offsets.
type Request = (
    Vec<(String, i32)>,
    std::sync::mpsc::SyncSender<Vec<((String, i32), i64)>>,
);

/// What the reading task holds.
struct Reader {
    sinks: Vec<Arc<dyn Sink>>,
    /// By sink id: whether it keeps offsets.
    keeps: Vec<bool>,
    router: Router,
}

impl StoredStart {
    /// `None` when no sink keeps offsets. Reading them once here also proves it can.
    pub async fn new(
        config: &Config,
        sinks: &[Arc<dyn Sink>],
    ) -> Result<Option<Self>, (String, SinkError)> {
        let mut keeps = Vec::with_capacity(sinks.len());
        for sink in sinks {
            let stored = sink
                .stored_offsets()
                .await
                .map_err(|e| (sink.name().to_string(), e))?;
            keeps.push(stored.is_some());
        }
        if !keeps.contains(&true) {
            return Ok(None);
        }
        let names: Vec<String> = sinks.iter().map(|s| s.name().to_string()).collect();
        let router = Router::new(config, &names)
            .map_err(|e: ConfigError| (String::new(), SinkError::permanent(e.to_string())))?;
        let mut reader = Reader {
            sinks: sinks.to_vec(),
            keeps,
            router,
        };
        let (requests, mut incoming) = tokio::sync::mpsc::unbounded_channel::<Request>();
        tokio::spawn(async move {
            while let Some((partitions, reply)) = incoming.recv().await {
                // The callback may have given up waiting: nothing to answer then.
                let _ = reply.send(reader.positions(&partitions).await);
            }
        });
        Ok(Some(Self { requests }))
    }
}

impl StartPositions for StoredStart {
    fn positions(&self, partitions: &[(String, i32)]) -> Vec<((String, i32), i64)> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        if self.requests.send((partitions.to_vec(), reply)).is_err() {
            return Vec::new();
        }
        // A little longer than one sink's read may take, so its own timeout speaks first.
        answer.recv_timeout(READ_TIMEOUT + Duration::from_secs(2)).unwrap_or_else(|_| {
            tracing::warn!(
                "the sinks' offsets did not arrive in time; starting from Kafka's committed offsets"
            );
            Vec::new()
        })
    }
}

impl Reader {
    /// The sinks owning `topic`, if every one of them keeps offsets.
    fn owners(&mut self, topic: &str) -> Option<Vec<usize>> {
        let assignments = self.router.sinks_for(&Arc::from(topic));
        let ids: Vec<usize> = assignments.iter().map(|a| a.sink).collect();
        (!ids.is_empty() && ids.iter().all(|&id| self.keeps[id])).then_some(ids)
    }

    async fn positions(&mut self, partitions: &[(String, i32)]) -> Vec<((String, i32), i64)> {
        let owned: Vec<(&(String, i32), Vec<usize>)> = partitions
            .iter()
            .filter_map(|p| self.owners(&p.0).map(|ids| (p, ids)))
            .collect();
        let mut stored: HashMap<usize, Vec<StoredOffset>> = HashMap::new();
        for (_, ids) in &owned {
            for &id in ids {
                if stored.contains_key(&id) {
                    continue;
                }
                let sink = &self.sinks[id];
                match tokio::time::timeout(READ_TIMEOUT, sink.stored_offsets())
                    .await
                    .ok()
                {
                    Some(Ok(Some(offsets))) => {
                        stored.insert(id, offsets);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(sink = sink.name(), error = %e, "cannot read the offsets the sink keeps; starting from Kafka's committed offsets");
                        return Vec::new();
                    }
                    _ => {
                        tracing::warn!(
                            sink = sink.name(),
                            "the sink's offsets did not arrive in time; starting from Kafka's committed offsets"
                        );
                        return Vec::new();
                    }
                }
            }
        }
        // A partition starts from the least advanced of its owners; one owner without an offset
        // for it (it holds nothing of it yet) leaves it at Kafka's.
        owned
            .into_iter()
            .filter_map(|(p, ids)| {
                let mut next = i64::MAX;
                for id in ids {
                    let offset = stored[&id]
                        .iter()
                        .find(|o| o.topic == p.0 && o.partition == p.1)?;
                    next = next.min(offset.next);
                }
                Some((p.clone(), next))
            })
            .collect()
    }
}
