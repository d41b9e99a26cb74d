//! Connections to one Redis or a Redis Cluster, the scripts they run, and the Redis clock.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) struct Scripts {
    pub(super) acquire: redis::Script,
    pub(super) settle: redis::Script,
    pub(super) feedback: redis::Script,
    pub(super) peek: redis::Script,
    pub(super) reset: redis::Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let s = |body: &str| redis::Script::new(&format!("{COMMON}\n{body}"));
        Self {
            acquire: s(include_str!("lua/acquire.lua")),
            settle: s(include_str!("lua/settle.lua")),
            feedback: s(include_str!("lua/feedback.lua")),
            peek: s(include_str!("lua/peek.lua")),
            reset: redis::Script::new(include_str!("lua/reset.lua")),
        }
    }
}

/// `s` with Redis glob characters escaped, for a SCAN MATCH pattern.
pub(super) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One Redis node (a reconnecting connection manager) or a Redis Cluster (a slot-routed
/// connection that follows the cluster's topology): the scripts run the same on both.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A clock anchored on Redis `TIME` (corrected by half the round trip): wall times written
/// by different replicas agree however far apart their hosts' clocks are. Retries until
/// Redis answers, like start-up does.
pub async fn redis_clock(settings: &Settings) -> Result<crate::clock::SystemClock, ClusterError> {
    let op_timeout = settings.op_timeout;
    let clients = settings
        .seeds()
        .iter()
        .map(|u| redis_client(u, &settings.tls).map_err(ClusterError::Url))
        .collect::<Result<Vec<_>, _>>()?;
    let mut retry = startup_retry();
    for attempt in 0usize.. {
        let Some(client) = clients.get(attempt % clients.len().max(1)) else {
            return Err(ClusterError::Reply { op: "no redis url" });
        };
        let sent = std::time::Instant::now();
        let read = tokio::time::timeout(op_timeout, async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            let sent = std::time::Instant::now();
            let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
            Ok::<_, redis::RedisError>((sent, secs, micros))
        })
        .await;
        match read {
            Ok(Ok((asked, secs, micros))) => {
                let rtt = asked.elapsed();
                let wall = SystemTime::UNIX_EPOCH
                    + Duration::from_secs(secs)
                    + Duration::from_micros(micros);
                // Redis read its clock about half a round trip after we asked.
                return Ok(crate::clock::SystemClock::anchored(asked + rtt / 2, wall));
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the redis clock yet"),
            Err(_) => tracing::warn!(waited = ?sent.elapsed(), "cannot read the redis clock yet"),
        }
        retry.wait().await;
    }
    Err(ClusterError::Down)
}
