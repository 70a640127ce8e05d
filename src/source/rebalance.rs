//! What the run loop shares with librdkafka's rebalance callbacks (the batch in flight, the
//! offsets applied, the partitions revoked), and the callbacks themselves: commit before
//! partitions move, start assigned ones where a store says, report fetch problems.

use super::*;

/// How long a revocation waits for the batch being applied before it gives the partitions up with
/// that batch uncommitted (its events then reach the new owner again, and change nothing).
pub const REVOKE_GRACE: Duration = Duration::from_secs(10);

/// What the run loop shares with the rebalance callbacks: whether a batch is being applied, the
/// offsets applied so far, and the partitions revoked since the loop last looked.
#[derive(Default)]
pub struct Applied {
    pub(super) state: Mutex<AppliedState>,
    pub(super) landed: Condvar,
    /// Set with `revoked`, so the loop's per-record check costs no lock.
    pub(super) any_revoked: AtomicBool,
    /// Incremented by each revocation; see [`Fetched`].
    pub(super) generation: AtomicU64,
}

#[derive(Default)]
pub(super) struct AppliedState {
    pub(super) in_flight: bool,
    pub(super) offsets: BTreeMap<Partition, i64>,
    /// Revoked partitions, each with the generation that began after: records of it polled in
    /// an earlier generation are stale.
    pub(super) revoked: Vec<((String, i32), u64)>,
    /// Where assigned partitions were told to start (exactly-once), until a record is consumed.
    pub(super) starts: BTreeMap<(String, i32), i64>,
    /// Whether consumption is paused (backpressure): partitions assigned meanwhile start paused.
    pub(super) paused: bool,
}

impl Applied {
    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, AppliedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A batch starts being applied; `landed` ends it.
    pub fn start(&self) {
        self.state().in_flight = true;
    }

    /// The batch in flight ended: applied (its offsets given) or abandoned (`None`).
    pub fn landed(&self, offsets: Option<&BTreeMap<Partition, i64>>) {
        let mut state = self.state();
        state.in_flight = false;
        if let Some(offsets) = offsets {
            state
                .offsets
                .extend(offsets.iter().map(|(p, o)| (p.clone(), *o)));
        }
        self.landed.notify_all();
    }

    pub(super) fn started_at(&self, topic: &str, partition: i32) -> Option<i64> {
        self.state()
            .starts
            .get(&(topic.to_string(), partition))
            .copied()
    }

    /// Partitions revoked since the last call, each with the generation that began after it:
    /// what the loop holds of them, and records of them polled before that generation, must go.
    pub fn take_revoked(&self) -> Vec<((String, i32), u64)> {
        if !self.any_revoked.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut self.state().revoked)
    }

    /// Waits up to `grace` for the batch in flight, then returns the applied offsets of `revoked`
    /// and notes them as revoked. Runs on the poll thread (inside the poll), which may wait.
    pub(crate) fn revoke(
        &self,
        revoked: &TopicPartitionList,
        grace: Duration,
    ) -> TopicPartitionList {
        let deadline = Instant::now() + grace;
        let mut state = self.state();
        while state.in_flight {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    "partitions revoked while a batch is still being applied: it is given up uncommitted"
                );
                break;
            }
            state = self
                .landed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let mut commit = TopicPartitionList::new();
        for ((topic, partition), offset) in &state.offsets {
            if revoked.find_partition(topic, *partition).is_some() {
                let _ = commit.add_partition_offset(topic, *partition, Offset::Offset(offset + 1));
            }
        }
        let gone: HashSet<(String, i32)> = revoked
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        state
            .offsets
            .retain(|(t, p), _| !gone.contains(&(t.to_string(), *p)));
        state.starts.retain(|k, _| !gone.contains(k));
        let next = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        state.revoked.extend(gone.into_iter().map(|p| (p, next)));
        self.any_revoked.store(true, Ordering::Release);
        commit
    }
}

/// Where assigned partitions start when not at Kafka's committed offsets: offsets a store keeps
/// with its data (exactly-once). Called inside the rebalance, on the poll thread, which may wait.
pub trait StartPositions: Send + Sync {
    /// The next offset to read for those of `partitions` it knows better than Kafka does.
    fn positions(&self, partitions: &[(String, i32)]) -> Vec<((String, i32), i64)>;
}

/// The consumer's callbacks. Before partitions are taken away, the batch being applied may finish
/// and what was applied is committed, so the next owner starts where this instance stopped. When
/// partitions arrive, stores that keep their own offsets say where they start.
pub struct RebalanceContext {
    pub(super) applied: Arc<Applied>,
    pub(super) start: Option<Arc<dyn StartPositions>>,
    pub(super) fetch_problem: FetchProblem,
}

impl ClientContext for RebalanceContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if reason.contains("Decompression") {
            self.fetch_problem.report(reason);
        } else {
            tracing::error!(target: "rdkafka::client", "librdkafka: {error}: {reason}");
        }
    }
}

/// How long /readyz keeps failing after the last report of data that cannot be read: librdkafka
/// retries the same fetch about twice a second for as long as the partition is stuck.
pub(super) const FETCH_PROBLEM_SHOWN: Duration = Duration::from_secs(30);

/// A record batch librdkafka cannot decompress (corrupt, or a codec it lacks). Nothing past it
/// on its partition can be read, so no later offset is committed and nothing is lost; but the
/// partition is stuck until someone acts, so it is logged once (not at every retry), counted in
/// `ripple_fetch_errors_total{kind="decompression"}`, and `/readyz` fails while it lasts.
pub(super) struct FetchProblem {
    pub(super) telemetry: Telemetry,
    pub(super) state: Mutex<FetchProblemState>,
}

#[derive(Default)]
pub(super) struct FetchProblemState {
    pub(super) logged: HashSet<String>,
    pub(super) last: Option<(String, Instant)>,
}

impl FetchProblem {
    fn report(&self, reason: &str) {
        self.telemetry.emit(Event::FetchError {
            kind: "decompression",
        });
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // One entry per damaged batch seen; a run that meets thousands forgets the old ones.
        if state.logged.len() >= 1024 {
            state.logged.clear();
        }
        if state.logged.insert(reason.to_string()) {
            tracing::error!(
                "a fetched record batch cannot be decompressed: {reason}. Ripple cannot read past it: nothing after it on its partition is applied or committed until the batch is readable (a consumer built with the producer's codec, or the topic repaired); /readyz fails meanwhile"
            );
        } else {
            tracing::debug!("still cannot decompress: {reason}");
        }
        state.last = Some((reason.to_string(), Instant::now()));
    }

    pub(super) fn current(&self) -> Option<String> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &state.last {
            Some((reason, at)) if at.elapsed() < FETCH_PROBLEM_SHOWN => Some(format!(
                "a fetched record batch cannot be decompressed: {reason}"
            )),
            _ => None,
        }
    }
}

impl ConsumerContext for RebalanceContext {
    /// librdkafka's default handling, except that an assignment may carry start offsets.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Some(start) = &self.start {
                    let partitions: Vec<(String, i32)> = tpl
                        .elements()
                        .iter()
                        .map(|e| (e.topic().to_string(), e.partition()))
                        .collect();
                    for ((topic, partition), next) in start.positions(&partitions) {
                        tracing::info!(
                            topic,
                            partition,
                            next,
                            "partition starts at the offset its store keeps"
                        );
                        let _ = tpl.set_partition_offset(&topic, partition, Offset::Offset(next));
                        self.applied.state().starts.insert((topic, partition), next);
                    }
                }
                let rebalance = Rebalance::Assign(tpl);
                self.pre_rebalance(consumer, &rebalance);
                let mut result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                // librdkafka keeps a partition's pause across an unassign and a new assign: a
                // partition paused for backpressure, revoked and assigned again would stay paused
                // after the loop resumed (the resume found nothing assigned). The loop's current
                // state decides instead.
                if result.is_ok() {
                    result = if self.applied.state().paused {
                        consumer.pause(tpl)
                    } else {
                        consumer.resume(tpl)
                    };
                }
                self.post_rebalance(consumer, &rebalance);
                result
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.pre_rebalance(consumer, &Rebalance::Revoke(tpl));
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed; giving up the assignment");
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "applying the rebalance failed");
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let commit = self.applied.revoke(revoked, REVOKE_GRACE);
        tracing::info!(
            partitions = revoked.count(),
            committed = commit.count(),
            "partitions revoked: applied offsets committed"
        );
        if commit.count() > 0
            && let Err(e) = consumer.commit(&commit, CommitMode::Sync)
        {
            tracing::warn!(error = %e, "commit on revocation failed; the next owner re-applies those events (and they change nothing)");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            tracing::info!(partitions = assigned.count(), "partitions assigned");
        }
    }
}
