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

mod acquire;
mod conn;
mod effects;
mod engine;
mod error;
pub mod keys;
mod settings;
mod slots;

pub use self::conn::redis_clock;
use self::conn::{Conn, Scripts, glob_escape};
pub use self::effects::{Effects, fallback_share};
pub use self::error::ClusterError;
use self::settings::RECONNECT_MAX;
pub use self::settings::{RECHECK, Retry, Settings, redact, startup_retry};
pub use self::slots::{check_exact, exact_in_lua};
use self::slots::{pairs, reduced, slot_args, ttl_ms, us};

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

/// Cluster permit ids have this bit set in their sequence; local-fallback ones don't.
const CLUSTER_SEQ: u64 = 1 << 63;

const COMMON: &str = include_str!("lua/common.lua");

pub use crate::permits::resource::FailurePolicy;

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
