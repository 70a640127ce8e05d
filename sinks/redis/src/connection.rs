//! One connection type for a single Redis and a Redis Cluster, and the one way commands are sent:
//! a list of commands in, one answer per command out. A single Redis gets them as one pipeline; a
//! cluster gets each on its own, many in flight, so the cluster client routes each to its slot's
//! node and follows MOVED and ASK redirections and failovers for it.

use futures::{StreamExt, TryStreamExt};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

/// Commands of one list in flight at once on a cluster.
const CLUSTER_IN_FLIGHT: usize = 256;

/// Public for tests and tools that read Redis on their own, on either kind of deployment.
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// A plain connection to `url` (no password), or to the cluster it is a node of.
    pub async fn open(url: &str, cluster: bool) -> Result<Self, RedisError> {
        if cluster {
            let client = cluster_builder(vec![url]).build()?;
            Ok(Connection::Cluster(client.get_async_connection().await?))
        } else {
            let client = redis::Client::open(url)?;
            Ok(Connection::Single(ConnectionManager::new(client).await?))
        }
    }

    /// Sends `cmds` and returns each one's answer, in order: a command Redis refused answers an
    /// error of its own while the others go on. The outer error is the connection's.
    pub async fn run(&self, cmds: Vec<Cmd>) -> Result<Vec<Result<Value, RedisError>>, RedisError> {
        self.send(cmds, None).await
    }

    /// [`run`](Self::run) for `EVALSHA` calls of the script `code`: a node that does not hold the
    /// script (restarted, or a replica just promoted) is sent the call again as `EVAL`, which
    /// also caches it there. Loading it beforehand cannot cover a cluster: `SCRIPT LOAD` goes to
    /// every node the client knows, and fails while any of them is down.
    pub(crate) async fn run_script(
        &self,
        cmds: Vec<Cmd>,
        code: &str,
    ) -> Result<Vec<Result<Value, RedisError>>, RedisError> {
        self.send(cmds, Some(code)).await
    }

    async fn send(
        &self,
        cmds: Vec<Cmd>,
        script: Option<&str>,
    ) -> Result<Vec<Result<Value, RedisError>>, RedisError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Connection::Single(conn) => {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                let mut conn = conn.clone();
                let answers: Vec<Value> = pipe.query_async(&mut conn).await?;
                let mut out = Vec::with_capacity(answers.len());
                for (answer, cmd) in answers.into_iter().zip(pipe.cmd_iter()) {
                    out.push(match (answer, script) {
                        (Value::ServerError(e), Some(code)) if is_no_script(&e) => {
                            as_eval(cmd, code).query_async(&mut conn).await
                        }
                        (Value::ServerError(e), _) => Err(RedisError::from(e)),
                        (a, _) => Ok(a),
                    });
                }
                Ok(out)
            }
            Connection::Cluster(conn) => {
                futures::stream::iter(cmds)
                    .map(|cmd| {
                        let mut conn = conn.clone();
                        async move {
                            let answer = cmd.query_async::<Value>(&mut conn).await;
                            let answer = match (answer, script) {
                                (Err(e), Some(code))
                                    if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
                                {
                                    as_eval(&cmd, code).query_async(&mut conn).await
                                }
                                (answer, _) => answer,
                            };
                            // A node that cannot answer fails the whole list at once: the
                            // commands still in flight to it would each wait out their timeout.
                            match answer {
                                Err(e) if crate::errors::is_outage(&e) => Err(e),
                                answer => Ok(answer),
                            }
                        }
                    })
                    .buffered(CLUSTER_IN_FLIGHT)
                    .try_collect()
                    .await
            }
        }
    }
}

fn is_no_script(e: &redis::ServerError) -> bool {
    e.code() == "NOSCRIPT"
}

/// `EVALSHA sha numkeys ...` as `EVAL code numkeys ...`.
fn as_eval(evalsha: &Cmd, code: &str) -> Cmd {
    let mut eval = redis::cmd("EVAL");
    eval.arg(code);
    for arg in evalsha.args_iter().skip(2) {
        if let redis::Arg::Simple(bytes) = arg {
            eval.arg(bytes);
        }
    }
    eval
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// What a sink connects with (one per sink, so the variants' sizes do not matter).
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Client {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

impl Client {
    /// A connection that reconnects by itself: the manager after a drop, the cluster client to
    /// whichever nodes hold the slots now.
    pub async fn connect(&self) -> Result<Connection, RedisError> {
        Ok(match self {
            Client::Single(c) => Connection::Single(ConnectionManager::new(c.clone()).await?),
            Client::Cluster(c) => Connection::Cluster(c.get_async_connection().await?),
        })
    }

    /// Connects once and pings: a direct connection says why it failed, where the manager
    /// would only retry.
    pub async fn ping(&self) -> Result<(), RedisError> {
        match self {
            Client::Single(c) => {
                let mut conn = c.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async(&mut conn).await
            }
            Client::Cluster(c) => {
                let mut conn = c.get_async_connection().await?;
                redis::cmd("PING").query_async(&mut conn).await
            }
        }
    }
}

/// One answer of [`Connection::run`] as a Rust value.
pub(crate) fn parse<T: redis::FromRedisValue>(
    answer: Result<Value, RedisError>,
) -> Result<T, RedisError> {
    answer.and_then(|v| redis::from_redis_value(v).map_err(RedisError::from))
}

/// A cluster client that gives up on a node within seconds. The client's own defaults retry a
/// dead node for minutes (16 tries, waits doubling to 655 s) and hold the whole batch meanwhile.
/// A few seconds covers a redirection or a failover's promotion; past that the batch fails as an
/// outage and the engine retries it with its own backoff, the sink marked down with the reason.
pub(crate) fn cluster_builder<T: redis::IntoConnectionInfo>(
    nodes: Vec<T>,
) -> redis::cluster::ClusterClientBuilder {
    use std::time::Duration;
    redis::cluster::ClusterClientBuilder::new(nodes)
        .retries(8)
        .retry_wait_formula(50, 2)
        .min_retry_wait(50)
        .max_retry_wait(1_000)
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(5))
        .overall_response_timeout(Some(Duration::from_secs(10)))
}
