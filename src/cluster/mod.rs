//! The cluster engine: several permitd replicas share every limit through one Redis.
//!
//! Each decision is one Lua script (loaded once, called by SHA) over keys that share one
//! hash tag ([`keys`]), so check-and-take is atomic on one shard, and time is Redis `TIME`,
//! so replica clocks never matter. Definitions stay in each replica's [`Registry`] (loaded
//! from the shared store, refreshed on a pub/sub message when any replica changes one);
//! bucket state, leases, cooldowns and learned limits live only in Redis.
//!
//! Waiting: a denied caller with time left joins its replica's local queue for the bucket
//! (a FIFO turnstile: one caller per bucket and replica retries at a time) and sleeps until
//! a release or a feedback anywhere in the cluster publishes on the events channel, or the
//! script's own ready time passes (capped at [`RECHECK`], the safety net for a lost message).
//!
//! Failure: an operation that fails or outlasts `op_timeout` is never "over limit". With
//! [`FailurePolicy::FailClosed`] the caller gets `UNAVAILABLE`; with
//! [`FailurePolicy::LocalFallback`] this replica grants from a local registry holding
//! `1 / fallback_share` of every limit until Redis is back. While the events subscription is
//! down the engine counts Redis as down (health says NOT_SERVING when failing closed) and
//! answers without trying it; the subscription reconnects by itself.

mod engine;
pub mod keys;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use redis::aio::ConnectionManager;
use tokio::sync::{Notify, watch};
use tokio_stream::StreamExt;

use self::keys::BucketKeys;
use crate::clock::{Clock, Nanos, nanos};
use crate::feedback::apply::Target;
use crate::permits::bucket::{Basis, Fit, Refilled};
use crate::permits::id::PermitId;
use crate::permits::limit::Rate;
use crate::permits::resource::Scope;
use crate::permits::{
    AcquireOutcome, AcquireRequest, Denial, DenialReason, DimensionView, GrantInfo, PermitError,
    QuotaView, Registry, ResourceDef, Settlement, never, resolve_actual, resolve_cost,
};
use crate::store::{RedisTls, cluster_builder, redis_client};
use crate::watch::{BucketKey, Hub};

/// Longest a queued caller sleeps before it re-checks without being woken.
pub const RECHECK: Duration = Duration::from_secs(1);
/// Longest pause between reconnection attempts (a replica is back within this of Redis).
const RECONNECT_MAX: Duration = Duration::from_millis(250);
/// Doubling pauses between attempts to reach Redis, from `first` up to `max`: start-up
/// waits and reconnections share it.
#[derive(Debug)]
pub struct Retry {
    first: Duration,
    delay: Duration,
    max: Duration,
}

impl Retry {
    /// Pauses of `first`, doubling up to `max`.
    #[must_use]
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            delay: first,
            max,
        }
    }

    /// The pause before the next attempt (what `wait` will sleep).
    #[must_use]
    pub fn next(&self) -> Duration {
        self.delay
    }

    /// Sleep the current pause, then double it.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(self.max);
    }

    /// Back to the first pause (after a success).
    pub fn reset(&mut self) {
        self.delay = self.first;
    }
}

/// Start-up waits for Redis: 100 ms doubling to 500 ms, so a replica serves within half a
/// second of its Redis coming up.
#[must_use]
pub fn startup_retry() -> Retry {
    Retry::new(Duration::from_millis(100), Duration::from_millis(500))
}

/// Cluster permit ids have this bit set in their sequence; local-fallback ones don't.
const CLUSTER_SEQ: u64 = 1 << 63;

const COMMON: &str = include_str!("lua/common.lua");

pub use crate::permits::resource::FailurePolicy;

/// The `[redis]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `redis://[user:pass@]host:port[/db]` (`rediss://` for TLS), or several
    /// comma-separated seed nodes of a Redis Cluster.
    pub url: String,
    /// Prefix of every key and channel, so deployments can share a Redis.
    pub prefix: String,
    /// Longest one Redis operation may take before it counts as failed.
    pub op_timeout: Duration,
    /// What happens while Redis is unreachable.
    pub policy: FailurePolicy,
    /// With local fallback, each replica grants `1 / fallback_share` of every limit.
    pub fallback_share: u32,
    /// How often every definition is read again from Redis (a lost change message must
    /// not leave replicas apart for long).
    pub resync_every: Duration,
    /// Certificates for `rediss://` URLs (a private CA, a client certificate).
    pub tls: RedisTls,
}

impl Settings {
    /// The seed URLs: one for a single Redis, several (comma separated) for a Redis Cluster.
    #[must_use]
    pub fn seeds(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            url: String::new(),
            prefix: "permitd:".to_owned(),
            op_timeout: Duration::from_millis(250),
            policy: FailurePolicy::FailClosed,
            fallback_share: 1,
            resync_every: Duration::from_secs(30),
            tls: RedisTls::default(),
        }
    }
}

/// A Redis failure, typed; mapped to `UNAVAILABLE` (or the fallback) at the edge.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The URL does not parse.
    #[error("redis url: {0}")]
    Url(#[source] redis::RedisError),
    /// A command failed.
    #[error("redis {op}: {source}")]
    Redis {
        /// What was being done.
        op: &'static str,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// A command outlasted the operation timeout.
    #[error("redis {op}: no answer within {timeout:?}")]
    Timeout {
        /// What was being done.
        op: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// A script answered something it never answers.
    #[error("redis {op}: unexpected reply")]
    Reply {
        /// What was being done.
        op: &'static str,
    },
    /// Redis is known to be down (the events subscription is not connected).
    #[error("redis is unreachable")]
    Down,
}

impl ClusterError {
    /// Whether the failure says something about the connection (as opposed to a script
    /// answering something unexpected): the engine then checks whether Redis is down.
    #[must_use]
    pub fn is_connection(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Down => true,
            Self::Redis { source, .. } => {
                source.is_io_error() || source.is_timeout() || source.is_connection_dropped()
            }
            Self::Url(_) | Self::Reply { .. } => false,
        }
    }
}

impl From<ClusterError> for PermitError {
    fn from(e: ClusterError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

struct Scripts {
    acquire: redis::Script,
    settle: redis::Script,
    feedback: redis::Script,
    peek: redis::Script,
    reset: redis::Script,
}

impl Scripts {
    fn new() -> Self {
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
fn glob_escape(s: &str) -> String {
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
enum Conn {
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

/// The shared engine. Cheap to share (`Arc`).
pub struct Cluster {
    /// One client per seed node: the events subscription connects to the first that
    /// answers (Redis Cluster forwards every PUBLISH to every node).
    clients: Vec<redis::Client>,
    /// Set when the seeds name a Redis Cluster.
    cluster_client: Option<redis::cluster::ClusterClient>,
    /// Commands and scripts; a cluster connection is made once the cluster answers.
    conn: std::sync::OnceLock<Conn>,
    settings: Settings,
    scripts: Scripts,
    registry: Registry,
    fallback: Registry,
    hub: Hub,
    clock: Arc<dyn Clock>,
    up: watch::Sender<bool>,
    /// Per resource: woken when capacity may have returned anywhere.
    wake: DashMap<String, Arc<Notify>>,
    /// Per home bucket: this replica's queue (FIFO; one retrying caller at a time).
    turnstiles: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    channel: String,
    /// Signalled when a command timed out or failed on the connection: the listener then
    /// checks that Redis still answers (a hung Redis keeps its sockets open, so the events
    /// subscription alone would not notice).
    suspect: Notify,
    /// Called with a resource name when another replica changed its definition.
    on_resource: std::sync::Mutex<Option<ResourceHook>>,
}

type ResourceHook = Box<dyn Fn(&str) + Send + Sync>;

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("prefix", &self.settings.prefix)
            .field("policy", &self.settings.policy)
            .field("up", &*self.up.borrow())
            .finish_non_exhaustive()
    }
}

/// What one acquire script said.
enum Try {
    Granted {
        expires_us: u64,
        remaining: Vec<(usize, u64)>,
    },
    Denied {
        reason: DenialReason,
        wait: Duration,
        remaining: Vec<(usize, u64)>,
    },
    Never,
    /// A new partition past the cap.
    Full {
        limit: usize,
        live: usize,
    },
}

/// Limit slots of a definition as the scripts take them (see `read_slots` in common.lua).
fn slot_args(def: &ResourceDef, per_partition_home: bool, out: &mut Vec<String>) {
    let slots: Vec<_> = def.limits.iter().collect();
    out.push(slots.len().to_string());
    for l in slots {
        // Per-partition limits live in the home bucket (KEYS[1]), resource-wide ones of a
        // per-partition resource in the shared one (KEYS[4]); a resource that is not per
        // partition has only its shared bucket, which is its home.
        let which = if per_partition_home && l.scope == Scope::Resource {
            "4"
        } else {
            "1"
        };
        let (a, p, period_us) = reduced(l.rate);
        out.push(which.to_owned());
        out.push(format!(
            "{}{}/{}/{}/{}",
            if l.scope == Scope::Resource { 's' } else { 'p' },
            l.dimension,
            l.rate.amount,
            period_us,
            l.rate.burst
        ));
        out.push(a.to_string());
        out.push(p.to_string());
        out.push(l.rate.burst.to_string());
        out.push(l.dimension.to_string());
        out.push(period_us.to_string());
    }
}

/// Whether `rate` stays exact in the scripts' doubles: `burst * p` below 2^52, so that a
/// slot's "ahead" (at most twice that) stays below 2^53 (common.lua).
#[must_use]
pub fn exact_in_lua(rate: Rate) -> bool {
    let (_, p, _) = reduced(rate);
    u128::from(rate.burst) * u128::from(p) < 1 << 52
}

/// The definition's limits the Redis engine cannot hold exactly, as the error naming the
/// first one (`limits[i]`).
///
/// # Errors
/// A limit whose `burst * period` (reduced) reaches 2^52.
pub fn check_exact(def: &ResourceDef) -> Result<(), PermitError> {
    for (i, l) in def.limits.iter().enumerate() {
        if !exact_in_lua(l.rate) {
            return Err(PermitError::Invalid {
                field: format!("limits[{i}]"),
                message: format!(
                    "burst {} over a period of {} µs is beyond the Redis engine's exact \
                     integer range (burst x period / gcd(amount, period) must stay below \
                     2^52): use a shorter period or a smaller burst",
                    l.rate.burst,
                    l.rate.period_ns / 1000
                ),
            });
        }
    }
    Ok(())
}

/// A rate as `a` units per `p` µs, reduced by their gcd, and its period in µs.
fn reduced(rate: Rate) -> (u64, u64, u64) {
    let period_us = (rate.period_ns / 1000).max(1);
    let g = gcd(rate.amount.max(1), period_us);
    (rate.amount.max(1) / g, period_us / g, period_us)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// How long an idle bucket's keys live: longer than a full refill, a lease and the longest
/// cooldown, so expiry never forgets state that still matters.
fn ttl_ms(def: &ResourceDef) -> u64 {
    let refill = def
        .limits
        .iter()
        .map(|l| {
            let (a, p, _) = reduced(l.rate);
            l.rate.burst.saturating_mul(p) / a / 1000
        })
        .max()
        .unwrap_or(0);
    let lease = u64::try_from(def.lease.as_millis()).unwrap_or(u64::MAX);
    let cool = u64::try_from(def.backoff.max_retry_after.as_millis()).unwrap_or(u64::MAX);
    refill.max(lease).max(cool).saturating_add(60_000)
}

fn pairs(v: &[i64]) -> Vec<(usize, u64)> {
    let mut out: Vec<(usize, u64)> = Vec::new();
    for c in v.chunks_exact(2) {
        let (Ok(d), Ok(a)) = (usize::try_from(c[0]), u64::try_from(c[1])) else {
            continue;
        };
        match out.iter_mut().find(|(x, _)| *x == d) {
            Some((_, r)) => *r = (*r).min(a),
            None => out.push((d, a)),
        }
    }
    out
}

fn us(v: i64) -> Duration {
    Duration::from_micros(u64::try_from(v).unwrap_or(0))
}

impl Cluster {
    /// Connect lazily (no I/O here: start-up with Redis down waits in the background) and
    /// start the events listener.
    pub fn start(
        settings: Settings,
        registry: Registry,
        fallback: Registry,
        hub: Hub,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, ClusterError> {
        let seeds = settings.seeds();
        let clients = seeds
            .iter()
            .map(|u| redis_client(u, &settings.tls).map_err(ClusterError::Url))
            .collect::<Result<Vec<_>, _>>()?;
        let conn = std::sync::OnceLock::new();
        let cluster_client = if seeds.len() > 1 {
            Some(
                cluster_builder(&seeds, &settings.tls)
                    .connection_timeout(settings.op_timeout)
                    .response_timeout(settings.op_timeout)
                    .retries(1)
                    .build()
                    .map_err(ClusterError::Url)?,
            )
        } else {
            let Some(client) = clients.first() else {
                return Err(ClusterError::Reply { op: "no redis url" });
            };
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_response_timeout(Some(settings.op_timeout))
                .set_connection_timeout(Some(settings.op_timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(200));
            let manager = ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(
                |source| ClusterError::Redis {
                    op: "connect",
                    source,
                },
            )?;
            let _ = conn.set(Conn::Single(manager));
            None
        };
        let channel = keys::events_channel(&settings.prefix);
        let (up, _) = watch::channel(false);
        let me = Arc::new(Self {
            clients,
            cluster_client,
            conn,
            settings,
            scripts: Scripts::new(),
            registry,
            fallback,
            hub,
            clock,
            up,
            wake: DashMap::new(),
            turnstiles: DashMap::new(),
            channel,
            suspect: Notify::new(),
            on_resource: std::sync::Mutex::new(None),
        });
        tokio::spawn(Arc::clone(&me).listen());
        Ok(me)
    }

    /// The settings.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether Redis is reachable; changes are announced on the receiver.
    #[must_use]
    pub fn up(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    /// Register what to do when any replica changes a resource definition.
    pub fn on_resource_change(&self, f: impl Fn(&str) + Send + Sync + 'static) {
        if let Ok(mut g) = self.on_resource.lock() {
            *g = Some(Box::new(f));
        }
    }

    /// Clear a resource's state in Redis (an admin's ResetResource): every key of its hash
    /// tag is deleted by one script on the node that holds the tag, so its buckets start
    /// afresh on every replica. Returns the keys deleted.
    ///
    /// # Errors
    /// Unknown resource, or Redis failed.
    pub async fn reset(&self, name: &str) -> Result<usize, PermitError> {
        let def = self
            .registry
            .get(name)
            .ok_or_else(|| PermitError::UnknownResource(name.to_owned()))?;
        let keys = self.keys(&def, "");
        let tag = keys
            .shared
            .strip_suffix(":shared")
            .unwrap_or(&keys.shared)
            .to_owned();
        let pattern = format!("{}:*", glob_escape(&tag));
        let n: i64 = self
            .script(&self.scripts.reset, "reset", &keys, &[pattern])
            .await?;
        self.fallback.reset(name).ok();
        self.resource_changed(name).await;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Tell every replica that `name`'s definition changed (after it was stored).
    pub async fn resource_changed(&self, name: &str) {
        let msg = format!("d\t{name}\t");
        let _ = self.with_timeout("publish", self.publish(&msg)).await;
    }

    async fn publish(&self, msg: &str) -> Result<(), ClusterError> {
        let mut conn = self.conn()?;
        redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(msg)
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|source| ClusterError::Redis {
                op: "publish",
                source,
            })
    }

    fn conn(&self) -> Result<Conn, ClusterError> {
        self.conn.get().cloned().ok_or(ClusterError::Down)
    }

    /// The command connection, made on first contact when the seeds name a Redis Cluster
    /// (its client needs a live node to learn the slot map).
    async fn connect(&self) -> Result<Conn, redis::RedisError> {
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
        }
        let Some(client) = &self.cluster_client else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "no connection configured",
            )));
        };
        let c = Conn::Cluster(client.get_async_connection().await?);
        Ok(self.conn.get_or_init(|| c).clone())
    }

    fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    async fn with_timeout<T>(
        &self,
        op: &'static str,
        f: impl Future<Output = Result<T, ClusterError>>,
    ) -> Result<T, ClusterError> {
        match tokio::time::timeout(self.settings.op_timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(ClusterError::Timeout {
                op,
                timeout: self.settings.op_timeout,
            }),
        }
    }

    /// The events subscription: wake-ups, Watch fan-out, definition changes. Its state is
    /// the engine's view of whether Redis is up.
    async fn listen(self: Arc<Self>) {
        let mut retry = Retry::new(Duration::from_millis(50), RECONNECT_MAX);
        let mut attempt = 0usize;
        loop {
            // Another seed on each attempt, so a dead node does not keep us off the rest.
            let client = &self.clients[attempt % self.clients.len()];
            attempt = attempt.wrapping_add(1);
            let connected = tokio::time::timeout(self.settings.op_timeout * 4, async {
                let mut ps = client.get_async_pubsub().await?;
                ps.subscribe(&self.channel).await?;
                let mut conn = self.connect().await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await?;
                Ok::<_, redis::RedisError>(ps)
            })
            .await;
            if let Ok(Ok(ps)) = connected {
                retry.reset();
                self.up.send_replace(true);
                tracing::info!("redis connected");
                // Whatever changed while we were away: every waiter looks again.
                self.wake_all();
                let mut stream = ps.into_on_message();
                loop {
                    tokio::select! {
                        msg = stream.next() => match msg {
                            Some(msg) => self.on_event(msg.get_payload_bytes()),
                            None => break,
                        },
                        () = self.suspect.notified() => {
                            if !self.answers().await {
                                break;
                            }
                        }
                    }
                }
                self.up.send_replace(false);
                tracing::warn!("redis connection lost; reconnecting");
                self.wake_all();
            }
            retry.wait().await;
        }
    }

    /// Whether Redis answers a PING within the operation timeout.
    async fn answers(&self) -> bool {
        let Ok(mut conn) = self.conn() else {
            return false;
        };
        matches!(
            tokio::time::timeout(
                self.settings.op_timeout,
                redis::cmd("PING").query_async::<String>(&mut conn)
            )
            .await,
            Ok(Ok(_))
        )
    }

    fn wake_all(&self) {
        for n in &self.wake {
            n.notify_waiters();
        }
    }

    fn on_event(&self, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else {
            return;
        };
        let mut parts = text.splitn(3, '\t');
        let (Some(kind), Some(resource), Some(partition)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        match kind {
            // A release, refund or feedback: capacity may be back.
            "w" => {
                if let Some(n) = self.wake.get(resource) {
                    n.notify_waiters();
                }
            }
            "d" => {
                if let Ok(g) = self.on_resource.lock()
                    && let Some(f) = g.as_ref()
                {
                    f(resource);
                }
                if let Some(n) = self.wake.get(resource) {
                    n.notify_waiters();
                }
                return;
            }
            _ => {}
        }
        // Watch subscribers on this replica see changes made anywhere.
        self.hub.changed(&Arc::new(BucketKey {
            resource: resource.into(),
            partition: partition.into(),
        }));
    }

    fn notify(&self, resource: &str) -> Arc<Notify> {
        if let Some(n) = self.wake.get(resource) {
            return Arc::clone(&n);
        }
        Arc::clone(&self.wake.entry(resource.to_owned()).or_default())
    }

    fn keys(&self, def: &ResourceDef, partition: &str) -> BucketKeys {
        BucketKeys::new(
            &self.settings.prefix,
            &def.name,
            partition,
            def.per_partition,
        )
    }

    fn event(kind: char, resource: &str, partition: &str) -> String {
        format!("{kind}\t{resource}\t{partition}")
    }

    /// Run one script over a decision's keys, within the operation timeout.
    async fn script<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        op: &'static str,
        keys: &BucketKeys,
        args: &[String],
    ) -> Result<T, ClusterError> {
        let mut inv = script.prepare_invoke();
        for k in keys.as_array() {
            inv.key(k);
        }
        for a in args {
            inv.arg(a);
        }
        let mut conn = self.conn()?;
        let r = self
            .with_timeout(op, async {
                inv.invoke_async(&mut conn)
                    .await
                    .map_err(|source| ClusterError::Redis { op, source })
            })
            .await;
        if let Err(e) = &r
            && e.is_connection()
        {
            self.suspect.notify_one();
        }
        r
    }

    async fn try_acquire(
        &self,
        def: &ResourceDef,
        keys: &BucketKeys,
        partition: &str,
        cost: &[u64],
        lease: Duration,
        member: &str,
    ) -> Result<Try, ClusterError> {
        let mut args = Vec::with_capacity(16);
        slot_args(def, def.per_partition, &mut args);
        args.push(cost.len().to_string());
        args.extend(cost.iter().map(u64::to_string));
        args.push(if def.concurrency > 0 {
            def.concurrency.to_string()
        } else {
            "0".to_owned()
        });
        args.push(
            u64::try_from(lease.as_micros())
                .unwrap_or(u64::MAX)
                .to_string(),
        );
        args.push(member.to_owned());
        args.push(ttl_ms(def).to_string());
        args.push(self.channel.clone());
        args.push(Self::event('g', &def.name, partition));
        let cap = if def.per_partition {
            self.registry
                .caps()
                .partitions(crate::auth::tenant::split(&def.name).0)
        } else {
            0
        };
        args.push(cap.to_string());
        let v: Vec<i64> = self
            .script(&self.scripts.acquire, "acquire", keys, &args)
            .await?;
        let (Some(&code), Some(&second)) = (v.first(), v.get(1)) else {
            return Err(ClusterError::Reply { op: "acquire" });
        };
        let remaining = pairs(v.get(3..).unwrap_or(&[]));
        Ok(match code {
            0 => Try::Granted {
                expires_us: u64::try_from(second).unwrap_or(0),
                remaining,
            },
            1..=3 => Try::Denied {
                reason: match code {
                    1 => DenialReason::RateLimited,
                    2 => DenialReason::ConcurrencyLimited,
                    _ => DenialReason::Cooldown,
                },
                wait: us(second),
                remaining,
            },
            4 => Try::Never,
            5 => Try::Full {
                limit: cap,
                live: usize::try_from(second).unwrap_or(0),
            },
            _ => return Err(ClusterError::Reply { op: "acquire" }),
        })
    }

    /// Grant, queue or deny a permit against the shared state.
    pub async fn acquire(&self, req: AcquireRequest<'_>) -> Result<AcquireOutcome, PermitError> {
        let def = self.registry.definition(req.resource)?;
        let cost = resolve_cost(&def, req.cost)?;
        if def
            .limits
            .iter()
            .any(|l| cost.get(l.dimension).is_some_and(|&c| c > l.rate.burst))
        {
            return Err(never(&def, &cost));
        }
        if !self.is_up() {
            return self.unreachable(&def, req, ClusterError::Down).await;
        }
        let start = tokio::time::Instant::now();
        let deadline = start + req.max_wait;
        let keys = self.keys(&def, req.partition);
        let lease = req.lease.unwrap_or(def.lease);
        let notify = self.notify(req.resource);
        // The head of this replica's queue holds the turnstile's lock (and so one reference:
        // the map's aside, each reference is one queued caller, which GetQuota counts).
        let mut turn: Option<tokio::sync::OwnedMutexGuard<()>> = None;
        // This caller's place under the waiter caps once it queues.
        let mut waiting = None;
        loop {
            // Armed before the script runs, so a release published meanwhile is not missed.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (seq, tag) = (
                fastrand::u64(..) | CLUSTER_SEQ,
                crate::permits::id::random_tag(),
            );
            let member = format!("{seq:x}.{tag:x}");
            let tried = self
                .try_acquire(&def, &keys, req.partition, &cost, lease, &member)
                .await;
            let tried = match tried {
                Ok(t) => t,
                Err(e) => {
                    drop(turn);
                    self.forget_turnstile(&keys.home);
                    return self.unreachable(&def, req, e).await;
                }
            };
            let now = tokio::time::Instant::now();
            let waited = now.duration_since(start);
            match tried {
                Try::Granted {
                    expires_us,
                    remaining,
                } => {
                    drop(turn);
                    self.forget_turnstile(&keys.home);
                    self.registry.count(
                        req.resource,
                        Ok((waited > Duration::ZERO).then_some(waited)),
                    );
                    let permit_id = PermitId {
                        resource: req.resource,
                        partition: req.partition,
                        seq,
                        tag,
                    }
                    .encode();
                    return Ok(AcquireOutcome {
                        def,
                        result: Ok(GrantInfo {
                            permit_id,
                            lease_expires_at: SystemTime::UNIX_EPOCH
                                + Duration::from_micros(expires_us),
                        }),
                        waited,
                        remaining,
                    });
                }
                Try::Never => {
                    drop(turn);
                    self.forget_turnstile(&keys.home);
                    return Err(never(&def, &cost));
                }
                Try::Full { limit, live } => {
                    drop(turn);
                    self.forget_turnstile(&keys.home);
                    return Err(PermitError::Exhausted {
                        cap: "max_partitions_per_resource",
                        limit,
                        what: format!(
                            "{live} live partitions of resource {:?} (cluster-wide)",
                            crate::auth::tenant::split(req.resource).1
                        ),
                    });
                }
                Try::Denied {
                    reason,
                    wait,
                    remaining,
                } => {
                    let deny = |reason| {
                        self.registry.count(req.resource, Err(reason));
                        Ok(AcquireOutcome {
                            def: Arc::clone(&def),
                            result: Err(Denial {
                                reason,
                                retry_after: wait,
                            }),
                            waited,
                            remaining: remaining.clone(),
                        })
                    };
                    if now >= deadline {
                        let timed_out = turn.is_some();
                        drop(turn);
                        self.forget_turnstile(&keys.home);
                        return deny(if timed_out {
                            DenialReason::QueueTimeout
                        } else {
                            reason
                        });
                    }
                    if turn.is_none() {
                        let t = self.turnstile(&keys.home);
                        let max_queue = usize::try_from(def.max_queue).unwrap_or(usize::MAX);
                        // Held by this map and this caller: the rest are queued callers.
                        if Arc::strong_count(&t).saturating_sub(2) >= max_queue {
                            return deny(DenialReason::QueueFull);
                        }
                        if waiting.is_none() {
                            match self.registry.waiter_slot(req.resource) {
                                Ok(w) => waiting = Some(w),
                                Err(e) => {
                                    drop(t);
                                    self.forget_turnstile(&keys.home);
                                    return Err(e);
                                }
                            }
                        }
                        match tokio::time::timeout_at(deadline, t.lock_owned()).await {
                            Ok(g) => {
                                turn = Some(g);
                                // At the head of this replica's queue: try again at once.
                                continue;
                            }
                            Err(_) => {
                                self.forget_turnstile(&keys.home);
                                return deny(DenialReason::QueueTimeout);
                            }
                        }
                    }
                    let nap = wait.clamp(Duration::from_millis(1), RECHECK);
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until((now + nap).min(deadline)) => {}
                    }
                }
            }
        }
    }

    fn turnstile(&self, home: &str) -> Arc<tokio::sync::Mutex<()>> {
        if let Some(t) = self.turnstiles.get(home) {
            return Arc::clone(&t);
        }
        Arc::clone(&self.turnstiles.entry(home.to_owned()).or_default())
    }

    /// Drop a bucket's queue once nobody is in it (memory stays bounded by live queues).
    fn forget_turnstile(&self, home: &str) {
        self.turnstiles
            .remove_if(home, |_, t| Arc::strong_count(t) == 1);
    }

    /// Redis failed: fail closed, or grant from this replica's share.
    async fn unreachable(
        &self,
        def: &ResourceDef,
        req: AcquireRequest<'_>,
        e: ClusterError,
    ) -> Result<AcquireOutcome, PermitError> {
        match self.policy(def) {
            // Only a connection failure means Redis is away: an error Redis itself answered
            // (OOM, WRONGTYPE, a script error) while it is up must not hand out local grants
            // on top of the shared ones.
            FailurePolicy::LocalFallback if e.is_connection() => {
                tracing::debug!(error = %e, "redis unreachable: local fallback");
                self.fallback.acquire(req).await
            }
            FailurePolicy::LocalFallback => {
                tracing::warn!(error = %e, "redis answered an error: no local fallback");
                Err(e.into())
            }
            FailurePolicy::FailClosed => Err(e.into()),
        }
    }

    /// The resource's own failure policy, else the server's.
    fn policy(&self, def: &ResourceDef) -> FailurePolicy {
        def.failure_policy.unwrap_or(self.settings.policy)
    }

    /// Reclaim the local-fallback registry's expired leases and idle buckets (what it
    /// granted during an outage).
    pub fn sweep_fallback(&self) -> (usize, usize) {
        self.fallback.sweep()
    }

    /// Release a permit (`NotFound` for an unknown, released or expired one).
    pub async fn release(
        &self,
        id: &PermitId<'_>,
        settlement: Settlement<'_>,
    ) -> Result<(), PermitError> {
        if id.seq & CLUSTER_SEQ == 0 {
            return self.fallback.release_id(id, settlement).map(|_| ());
        }
        let def = self
            .registry
            .get(id.resource)
            .ok_or(PermitError::UnknownPermit)?;
        let (mode, amounts): (&str, Vec<i64>) = match settlement {
            Settlement::Keep => ("keep", Vec::new()),
            Settlement::Refund => ("refund", Vec::new()),
            Settlement::Actual(m) => {
                let a = resolve_actual(&def, m)?;
                (
                    "actual",
                    a.iter()
                        .map(|c| c.map_or(-1, |c| i64::try_from(c).unwrap_or(i64::MAX)))
                        .collect(),
                )
            }
        };
        let member = format!("{:x}.{:x}", id.seq, id.tag);
        let done = self
            .settle(&def, id.partition, mode, &member, &amounts)
            .await?;
        if done {
            Ok(())
        } else {
            Err(PermitError::UnknownPermit)
        }
    }

    /// Charge a call made without a permit.
    pub async fn charge(
        &self,
        resource: &str,
        partition: &str,
        actual: &HashMap<String, u64>,
    ) -> Result<(), PermitError> {
        let def = self.registry.definition(resource)?;
        let a = resolve_actual(&def, actual)?;
        if a.iter().all(Option::is_none) {
            return Ok(());
        }
        let amounts: Vec<i64> = a
            .iter()
            .map(|c| i64::try_from(c.unwrap_or(0)).unwrap_or(i64::MAX))
            .collect();
        if !self.is_up() && self.policy(&def) == FailurePolicy::LocalFallback {
            return self.fallback.charge(resource, partition, actual);
        }
        self.settle(&def, partition, "charge", "", &amounts)
            .await
            .map(|_| ())
    }

    async fn settle(
        &self,
        def: &ResourceDef,
        partition: &str,
        mode: &str,
        member: &str,
        amounts: &[i64],
    ) -> Result<bool, PermitError> {
        if !self.is_up() {
            return Err(ClusterError::Down.into());
        }
        let keys = self.keys(def, partition);
        let mut args = Vec::new();
        slot_args(def, def.per_partition, &mut args);
        args.push(mode.to_owned());
        args.push(member.to_owned());
        args.push(def.dimensions.len().to_string());
        for d in 0..def.dimensions.len() {
            args.push(amounts.get(d).copied().unwrap_or(-1).to_string());
        }
        args.push(ttl_ms(def).to_string());
        args.push(self.channel.clone());
        args.push(Self::event('w', &def.name, partition));
        let n: i64 = self
            .script(&self.scripts.settle, "settle", &keys, &args)
            .await?;
        Ok(n == 1)
    }

    /// Apply header feedback: `f` decides (the same code as the embedded engine's) against
    /// a recorder, and one script applies what it decided. Returns `f`'s result and the
    /// cooldown in force afterwards (monotonic, as the embedded engine reports it).
    pub async fn feedback<R>(
        &self,
        resource: &str,
        partition: &str,
        f: impl FnOnce(&ResourceDef, &mut dyn Target, Nanos) -> R,
    ) -> Result<(R, Option<Nanos>), PermitError> {
        let def = self.registry.definition(resource)?;
        if !self.is_up() && self.policy(&def) == FailurePolicy::LocalFallback {
            let mut until = None;
            let r = self
                .fallback
                .update_bucket(resource, partition, |d, b, now| {
                    // The same decision, applied straight to the local bucket.
                    let r = f(d, b, now);
                    until = (b.cooldown_until() > now).then_some(b.cooldown_until());
                    r
                })?;
            return Ok((r, until));
        }
        if !self.is_up() {
            return Err(ClusterError::Down.into());
        }
        let now = self.clock.now();
        let mut fx = Effects::new(now);
        let r = f(&def, &mut fx, now);
        let keys = self.keys(&def, partition);
        let mut args: Vec<String> = Vec::new();
        let rel = |at: Nanos| (at.saturating_sub(now) / 1000).to_string();
        args.push(fx.cooldown.map_or_else(|| "0".to_owned(), rel));
        args.push(if fx.is_429 { "1" } else { "0" }.to_owned());
        args.push(fx.learned.len().to_string());
        for (d, rate, stated) in &fx.learned {
            let (a, p, period_us) = reduced(*rate);
            args.push(d.to_string());
            // One learned limit per stated window; one per dimension (window 0) for a
            // window permitd inferred, overwritten as the evidence moves.
            args.push(if *stated { period_us } else { 0 }.to_string());
            args.push(format!("{a},{p},{}", rate.burst));
        }
        slot_args(&def, def.per_partition, &mut args);
        args.push(fx.blocks.len().to_string());
        for (d, until) in &fx.blocks {
            args.push(d.to_string());
            args.push(rel(*until));
        }
        args.push(fx.corrections.len().to_string());
        for (d, window, remaining) in &fx.corrections {
            args.push(d.to_string());
            args.push(window.map_or(0, |w| w / 1000).to_string());
            args.push(remaining.to_string());
        }
        args.push(ttl_ms(&def).to_string());
        args.push(self.channel.clone());
        args.push(Self::event('w', &def.name, partition));
        let v: Vec<i64> = self
            .script(&self.scripts.feedback, "feedback", &keys, &args)
            .await?;
        let cool = v.first().copied().unwrap_or(0);
        let until = (cool > 0).then(|| now.saturating_add(nanos(us(cool))));
        Ok((r, until))
    }

    /// One bucket's state, read from Redis.
    pub async fn quota(&self, resource: &str, partition: &str) -> Result<QuotaView, PermitError> {
        let def = self
            .registry
            .get(resource)
            .ok_or_else(|| PermitError::UnknownResource(resource.to_owned()))?;
        if !self.is_up() {
            return Err(ClusterError::Down.into());
        }
        let keys = self.keys(&def, partition);
        let mut args = Vec::new();
        slot_args(&def, def.per_partition, &mut args);
        let v: Vec<i64> = self
            .script(&self.scripts.peek, "peek", &keys, &args)
            .await?;
        if v.len() < 5 {
            return Err(ClusterError::Reply { op: "peek" }.into());
        }
        let at = SystemTime::UNIX_EPOCH + us(v[0]);
        let mut dimensions = Vec::new();
        for s in v[5..].chunks_exact(5) {
            let (Ok(dimension), Ok(limit), Ok(remaining)) = (
                usize::try_from(s[0]),
                u64::try_from(s[1]),
                u64::try_from(s[2]),
            ) else {
                continue;
            };
            let learned = s[3] == 1;
            let period = us(s[4]);
            // Time to refill what is missing, at the limit's rate.
            let missing = limit.saturating_sub(remaining);
            let refill = if limit == 0 {
                Duration::ZERO
            } else {
                period.mul_f64(f64::from(u32::try_from(missing).unwrap_or(u32::MAX)))
                    / u32::try_from(limit).unwrap_or(u32::MAX).max(1)
            };
            dimensions.push(DimensionView {
                dimension,
                limit,
                period,
                remaining,
                reset_at: at + refill,
                learned,
                source: if learned {
                    crate::permits::resource::Origin::Learned
                } else {
                    crate::permits::resource::Origin::Config
                },
                reason: if learned {
                    "learned from the upstream's headers".to_owned()
                } else {
                    "configured".to_owned()
                },
                #[allow(clippy::cast_precision_loss)]
                rate_per_second: if period.is_zero() {
                    0.0
                } else {
                    limit as f64 / period.as_secs_f64()
                },
            });
        }
        let cooldown = us(v[1]);
        Ok(QuotaView {
            def: Arc::clone(&def),
            dimensions,
            in_flight: u32::try_from(v[2]).unwrap_or(u32::MAX),
            concurrency: def.concurrency,
            queue_depth: self.turnstiles.get(&keys.home).map_or(0, |t| {
                u32::try_from(Arc::strong_count(&t).saturating_sub(1)).unwrap_or(u32::MAX)
            }),
            granted_total: u64::try_from(v[3]).unwrap_or(0),
            denied_total: 0,
            cooldown_until: (cooldown > Duration::ZERO).then(|| at + cooldown),
            upstream_429_total: u64::try_from(v[4]).unwrap_or(0),
            at,
            probing: false,
            // The cluster does not record why a pause was set (only until when).
            cooldown_reason: String::new(),
        })
    }
}

/// What a report decided, recorded for the feedback script.
#[derive(Debug)]
pub struct Effects {
    now: Nanos,
    cooldown: Option<Nanos>,
    is_429: bool,
    /// (dimension, rate, whether the upstream stated the window).
    learned: Vec<(usize, Rate, bool)>,
    blocks: Vec<(usize, Nanos)>,
    corrections: Vec<(usize, Option<Nanos>, u64)>,
}

impl Effects {
    fn new(now: Nanos) -> Self {
        Self {
            now,
            cooldown: None,
            is_429: false,
            learned: Vec::new(),
            blocks: Vec::new(),
            corrections: Vec::new(),
        }
    }
}

impl Target for Effects {
    fn count_429(&mut self) {
        self.is_429 = true;
    }
    fn cool_down(&mut self, until: Nanos) {
        self.cooldown = Some(self.cooldown.map_or(until, |c| c.max(until)));
    }
    fn learn(&mut self, dimension: usize, rate: Rate, basis: Basis, _now: Nanos) -> bool {
        // A rate the scripts cannot hold exactly is not kept (a configured one is refused
        // at PutResource): the configured limits still bind.
        if !exact_in_lua(rate) {
            tracing::debug!(
                ?rate,
                "learned rate too fine for the scripts' integers; not kept"
            );
            return false;
        }
        self.learned
            .push((dimension, rate, basis == Basis::StatedWindow));
        true
    }
    // Slow start, the adaptive rate and guesses giving way to learned limits are the
    // embedded engine's for now: the cluster keeps learned limits beside the configured
    // ones, windows fitted per report (issue 15 makes both engines one contract).
    fn fit(&self, _dimension: usize) -> Option<Fit> {
        None
    }
    fn set_fit(&mut self, _dimension: usize, _fit: Fit) {}
    fn drop_guess(&mut self, _dimension: usize) -> bool {
        false
    }
    fn confirm(&mut self) {}
    fn refilled(&self, _dimension: usize) -> Refilled {
        // A window's end is a window's end here: no probing before it.
        Refilled::AtReset
    }
    fn arm_refill_probe(&mut self, _dimension: usize, _probe_at: Nanos, _reset_at: Nanos) {}
    fn observe_refill(&mut self, _dimension: usize, _status: u32, _seq: Option<u64>, _now: Nanos) {}
    fn succeeded_blind(&mut self, _cap: Option<f64>, _adapts: bool, _now: Nanos) {}
    fn limited_blind(
        &mut self,
        _seq: Option<u64>,
        _cap: Option<f64>,
        _now: Nanos,
        _resume_at: Nanos,
    ) -> bool {
        false
    }
    fn correct_down(
        &mut self,
        dimension: usize,
        window_ns: Option<Nanos>,
        remaining: u64,
        _earliest: Nanos,
        _now: Nanos,
    ) -> bool {
        // Applied in Redis as of the report (the engine does not know the grant, #15).
        self.corrections.push((dimension, window_ns, remaining));
        true
    }
    fn block_dimension(&mut self, dimension: usize, until: Nanos) {
        self.blocks.push((dimension, until));
    }
    fn cooldown_until(&self) -> Nanos {
        self.cooldown.filter(|&c| c > self.now).unwrap_or(0)
    }
}

/// A definition for the local-fallback registry: every limit (and the concurrency) divided
/// by the number of replicas sharing it, at least 1.
#[must_use]
pub fn fallback_share(def: &ResourceDef, share: u32) -> ResourceDef {
    let n = u64::from(share.max(1));
    let mut d = def.clone();
    for l in &mut d.limits {
        l.rate.amount = (l.rate.amount / n).max(1);
        l.rate.burst = (l.rate.burst / n).max(1);
    }
    if d.concurrency > 0 {
        d.concurrency = (d.concurrency / share.max(1)).max(1);
    }
    d
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

/// The URL without its password, for logs.
#[must_use]
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}://***@{}", &u[..s], &u[at + 1..]),
            _ => u.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_reduce_exactly() {
        let r = Rate {
            amount: 20,
            period_ns: 100_000_000,
            burst: 20,
        };
        // 20 per 100 000 µs = 1 per 5 000 µs.
        assert_eq!(reduced(r), (1, 5000, 100_000));
        let r = Rate {
            amount: 3,
            period_ns: 1_000_000_000,
            burst: 3,
        };
        assert_eq!(reduced(r), (3, 1_000_000, 1_000_000));
    }

    #[test]
    fn fallback_divides_and_keeps_at_least_one() {
        let def = ResourceDef {
            name: "r".into(),
            dimensions: vec!["requests".into()],
            declared_dimensions: vec![],
            limits: vec![crate::permits::resource::LimitDef {
                dimension: 0,
                rate: Rate {
                    amount: 10,
                    period_ns: 1_000_000_000,
                    burst: 10,
                },
                scope: Scope::Resource,
                scope_explicit: false,
                origin: crate::permits::resource::Origin::Config,
            }],
            concurrency: 4,
            lease: Duration::from_secs(1),
            per_partition: false,
            backoff: crate::permits::resource::BackoffDef::default(),
            max_queue: 10,
            learn_from_headers: false,
            failure_policy: None,
            limits_known: true,
            probe_concurrency: 0,
            accept_feedback_without_permit: false,
        };
        let def = fallback_share(&def, 3);
        assert_eq!(def.limits[0].rate.amount, 3);
        assert_eq!(def.concurrency, 1);
        let def = fallback_share(&def, 100);
        assert_eq!(def.limits[0].rate.amount, 1);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact("redis://u:secret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        assert_eq!(
            redact("redis://:a@h:1,redis://:b@i:2"),
            "redis://***@h:1,redis://***@i:2"
        );
    }
}
