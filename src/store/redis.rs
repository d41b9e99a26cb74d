//! [`RedisStore`]: resources and records in a Redis shared by several permitd replicas.
//!
//! Layout ([`keys`]): resources in one hash, `<prefix>resources`; each record in its own
//! string key, `<prefix>{rec:<tree>}:r:<key>`, indexed by a per-tree sorted set,
//! `<prefix>{rec:<tree>}:index`, whose members (all scored 0) are the record keys, so a
//! `ZRANGE .. BYLEX` page lists them in byte order like a sled range. The prefix namespaces
//! one deployment, so several can share a Redis. Values are framed by [`codec`] exactly as
//! on sled; damage reads as absent and is counted once ([`CorruptTracker`]).
//!
//! One server or a Redis Cluster: [`RedisStore::open`] takes one URL, or a comma-separated
//! list of seed nodes for a cluster. Both run the same commands and the same Lua scripts
//! (by SHA, [`Script`]); every command and script touches keys of one slot only, so the
//! cluster client routes it whole to one node. No `WATCH`/`MULTI`: a cluster connection
//! spans several nodes and cannot hold a `WATCH`.
//!
//! Atomicity, by Lua scripts (a script runs alone on its node):
//! - a resource put or delete is one script that reads the old field and writes or
//!   deletes it: "replaced" / "existed" cannot race another writer (the hash is one key);
//! - [`RecordStore::update`] is optimistic: `GET record`, run the closure, then a
//!   compare-and-set script that writes `SET record + ZADD index` (or `DEL + ZREM`) only if
//!   the record still holds the bytes the `GET` saw. A refusal means another client wrote
//!   the key after the `GET`; the loop reads again and reruns the closure (the trait
//!   allows several runs). Record and index share a cluster hash tag, so the script's
//!   keys stay on one slot. Unlike `WATCH`, a write of the very bytes already there does
//!   not force a rerun: the closure's input is unchanged, so its decision stands.
//! - a scan reads an index page, then the records with `MGET`; an index member whose
//!   record vanished in between (deleted meanwhile) is skipped and the page topped up from
//!   the index, so a short page still means the end was reached.
//!
//! Durability is Redis's, not ours: [`RecordStore::flush`] does nothing, and a resource
//! write is acknowledged once Redis applied it in memory. Whether it survives a Redis
//! crash is Redis's `appendonly` / `appendfsync` setting; replication is asynchronous, so
//! a failover can lose writes Redis acknowledged. That loss window is an operator's choice
//! of Redis settings, measured and documented outside this module.
//!
//! Calls are synchronous over a small pool of blocking connections (on a cluster, each
//! pooled connection is a cluster connection: one socket per node, slot map included),
//! each with connect, read and write timeouts of the `op_timeout` given to
//! [`RedisStore::open`]. A connection that saw any error is dropped, never reused (it may
//! hold a half-read reply), and an I/O error also empties the pool: its siblings talk to
//! the same servers and are most likely dead too. Writes are never retried here: after an
//! I/O error their outcome is unknown, and rerunning an update's closure against a value
//! it may itself have written would report the wrong outcome (a claim that won would read
//! as lost). The error says whether retrying can help; the caller decides. (The cluster
//! client itself follows `MOVED`/`ASK` redirections and reconnects to a node after a
//! connection error, which the single-node client does not.)
//!
//! No Redis type leaves this file: errors are boxed into [`StoreError`] sources.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use std::sync::LazyLock;

use ::redis::cluster::ClusterClient;
use ::redis::{Client, ConnectionLike, ErrorKind, RedisError, RedisResult, RetryMethod, Script};

use super::corrupt::CorruptTracker;
use super::keys::RecordTree;
use super::records::{RecordStore, Scanned, Write};
use super::{OpenHint, ResourceStore, StoreError, codec, keys};

/// Idle connections kept for reuse; more are opened under load and closed when returned.
const MAX_IDLE: usize = 16;

/// Resource put: `KEYS[1]` the hash, `ARGV[1]` the field, `ARGV[2]` the framed value.
/// Returns the field's old value (nil when absent), read atomically with the write.
static RESOURCE_PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local old = redis.call('HGET', KEYS[1], ARGV[1])
         redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
         return old",
    )
});

/// Resource delete: `KEYS[1]` the hash, `ARGV[1]` the field. Returns the deleted value
/// (nil when there was none).
static RESOURCE_DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local old = redis.call('HGET', KEYS[1], ARGV[1])
         if old then redis.call('HDEL', KEYS[1], ARGV[1]) end
         return old",
    )
});

/// Record compare-and-set: `KEYS[1]` the record, `KEYS[2]` its tree's index (same hash
/// tag); `ARGV[1]` the expected raw value, `ARGV[2]` the new raw value, each [`tagged`]
/// (empty = absent / delete); `ARGV[3]` the index member (the record key). Writes and
/// returns 1 only when the record holds exactly the expected bytes, else returns 0.
static RECORD_CAS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local cur = redis.call('GET', KEYS[1])
         if cur then cur = '=' .. cur else cur = '' end
         if cur ~= ARGV[1] then return 0 end
         if ARGV[2] == '' then
           redis.call('DEL', KEYS[1])
           redis.call('ZREM', KEYS[2], ARGV[3])
         else
           redis.call('SET', KEYS[1], string.sub(ARGV[2], 2))
           redis.call('ZADD', KEYS[2], 0, ARGV[3])
         end
         return 1",
    )
});

/// A value as [`RECORD_CAS`] takes it: `None` (absent, or delete) as the empty string,
/// bytes behind a `=`, so an empty value stays distinct from none.
fn tagged(value: Option<&[u8]>) -> Vec<u8> {
    match value {
        None => Vec::new(),
        Some(bytes) => [&b"="[..], bytes].concat(),
    }
}

/// TLS material for `rediss://` URLs, as PEM bytes read at start-up (the config reads the
/// files, so a bad path fails there, naming its field). The default trusts the system's
/// root certificates and presents no client certificate. Plain `redis://` URLs ignore it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// Root certificates to trust instead of the system's (a private CA).
    pub root_cert: Option<Vec<u8>>,
    /// Client certificate chain and private key, for servers that require mutual TLS.
    pub client_cert_key: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Whether each part is set, never its bytes: the key is a secret.
        f.debug_struct("RedisTls")
            .field("root_cert", &self.root_cert.is_some())
            .field("client_cert_key", &self.client_cert_key.is_some())
            .finish()
    }
}

impl RedisTls {
    /// The certificates as the redis crate takes them; `None` when nothing is set (the
    /// crate then uses the system roots by itself).
    fn certificates(&self) -> Option<::redis::TlsCertificates> {
        if self.root_cert.is_none() && self.client_cert_key.is_none() {
            return None;
        }
        Some(::redis::TlsCertificates {
            client_tls: self
                .client_cert_key
                .as_ref()
                .map(|(cert, key)| ::redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.root_cert.clone(),
        })
    }
}

/// Installs ring as rustls' process-wide crypto provider, once, before the first TLS
/// client is built (rustls panics when it has to guess between several). A provider
/// already installed by someone else is kept.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client for one URL: a `rediss://` URL gets `tls` (custom roots, client certificate),
/// any other URL is opened as it is. Shared with the cluster engine, so every connection
/// permitd makes trusts the same certificates.
pub(crate) fn redis_client(url: &str, tls: &RedisTls) -> RedisResult<Client> {
    if !url.trim_start().starts_with("rediss://") {
        return Client::open(url);
    }
    install_crypto_provider();
    match tls.certificates() {
        Some(certs) => Client::build_with_tls(url, certs),
        None => Client::open(url),
    }
}

/// A Redis Cluster client builder for `seeds`, with `tls` when they are `rediss://` URLs
/// (as [`redis_client`]).
pub(crate) fn cluster_builder(
    seeds: &[&str],
    tls: &RedisTls,
) -> ::redis::cluster::ClusterClientBuilder {
    let builder = ClusterClient::builder(seeds.iter().copied());
    if !seeds.iter().any(|u| u.starts_with("rediss://")) {
        return builder;
    }
    install_crypto_provider();
    match tls.certificates() {
        Some(certs) => builder.certs(certs),
        None => builder,
    }
}

/// Opens connections to one server or to a cluster.
enum Opener {
    /// One server (a single URL). Boxed, as is the cluster client: with its TLS
    /// parameters it is large, and the store holds one opener for its whole life.
    Single(Box<Client>),
    /// A Redis Cluster, from its seed nodes (a comma-separated URL list).
    Cluster(Box<ClusterClient>),
}

/// A pooled connection: a [`::redis::Connection`] or a cluster connection, both driven
/// through the same trait so every operation has one code path.
type Conn = Box<dyn ConnectionLike + Send>;

/// Resources and records in Redis, namespaced by a key prefix.
pub struct RedisStore {
    /// Opens new connections.
    opener: Opener,
    /// The URL (or seed list) with any password masked, for messages.
    shown_url: String,
    /// Prepended to every key ([`keys::redis_resources_key`] and friends).
    prefix: String,
    /// Connect, read and write timeout of every call.
    op_timeout: Duration,
    /// Connections free for the next call.
    idle: Mutex<Vec<Conn>>,
    /// Damaged entries seen since open.
    corrupt: CorruptTracker,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shown_url)
            .field("cluster", &matches!(self.opener, Opener::Cluster(_)))
            .field("prefix", &self.prefix)
            .field("op_timeout", &self.op_timeout)
            .field("corrupt_values", &self.corrupt.count())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` (e.g. `redis://127.0.0.1:6379/`), namespacing every
    /// key under `prefix` (e.g. `"pd:"`). Every call then connects, reads and writes with
    /// a timeout of `op_timeout`.
    ///
    /// A `url` holding a comma is a Redis Cluster: the comma-separated URLs are its seed
    /// nodes (e.g. `redis://a:7000/,redis://b:7000/`; a single seed needs a trailing
    /// comma), and the store opens a cluster client that follows the slot map.
    ///
    /// Opens one connection before returning, so a wrong address fails at startup rather
    /// than on the first request.
    ///
    /// # Errors
    /// [`StoreError::Open`] naming the URL (password masked): [`OpenHint::InvalidSettings`]
    /// for a malformed URL, a zero timeout, a prefix holding `{` or `}` (it could form a
    /// cluster hash tag, see [`keys::valid_redis_prefix`]) or refused credentials;
    /// [`OpenHint::Unreachable`] when the server does not answer.
    pub fn open(url: &str, prefix: &str, op_timeout: Duration) -> Result<Self, StoreError> {
        Self::open_tls(url, prefix, op_timeout, &RedisTls::default())
    }

    /// [`RedisStore::open`] with TLS material for `rediss://` URLs (a private CA, a client
    /// certificate); plain `redis://` URLs ignore it.
    ///
    /// # Errors
    /// As [`RedisStore::open`]; a certificate the server's does not chain to (or a PEM
    /// that does not parse) fails the first connection.
    pub fn open_tls(
        url: &str,
        prefix: &str,
        op_timeout: Duration,
        tls: &RedisTls,
    ) -> Result<Self, StoreError> {
        let shown_url = redact_url(url);
        let open_error = |hint, source| StoreError::Open {
            path: PathBuf::from(&shown_url),
            hint,
            source,
        };
        if !keys::valid_redis_prefix(prefix) {
            return Err(open_error(
                OpenHint::InvalidSettings,
                format!("key prefix {prefix:?} holds a brace").into(),
            ));
        }
        if op_timeout.is_zero() {
            return Err(open_error(
                OpenHint::InvalidSettings,
                "the operation timeout is zero".into(),
            ));
        }
        let opener = if url.contains(',') {
            let seeds: Vec<&str> = url
                .split(',')
                .map(str::trim)
                .filter(|seed| !seed.is_empty())
                .collect();
            cluster_builder(&seeds, tls)
                .connection_timeout(op_timeout)
                .response_timeout(op_timeout)
                .build()
                .map(|client| Opener::Cluster(Box::new(client)))
        } else {
            redis_client(url, tls).map(|client| Opener::Single(Box::new(client)))
        };
        let opener = opener.map_err(|e| open_error(OpenHint::InvalidSettings, e.into()))?;
        let store = RedisStore {
            opener,
            shown_url: shown_url.clone(),
            prefix: prefix.to_owned(),
            op_timeout,
            idle: Mutex::new(Vec::new()),
            corrupt: CorruptTracker::default(),
        };
        let conn = store
            .connect()
            .map_err(|e| open_error(connect_hint(&e), e.into()))?;
        store.release(conn);
        tracing::debug!(url = %shown_url, prefix, "redis store opened");
        Ok(store)
    }

    /// A new connection with the store's timeouts.
    fn connect(&self) -> RedisResult<Conn> {
        match &self.opener {
            Opener::Single(client) => {
                let conn = client.get_connection_with_timeout(self.op_timeout)?;
                conn.set_read_timeout(Some(self.op_timeout))?;
                conn.set_write_timeout(Some(self.op_timeout))?;
                Ok(Box::new(conn))
            }
            Opener::Cluster(client) => {
                // Connect and read timeouts come from the builder; the write timeout
                // applies to the node connections open now and those opened later.
                let conn = client.get_connection()?;
                conn.set_write_timeout(Some(self.op_timeout))?;
                Ok(Box::new(conn))
            }
        }
    }

    /// The idle pool, whether or not a previous holder panicked (it only pushes and pops).
    fn idle(&self) -> MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a healthy connection back for reuse, unless the pool is full.
    fn release(&self, conn: Conn) {
        if !conn.is_open() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Runs `f` on a pooled (or new) connection; on success the connection goes back to
    /// the pool, on any error it is dropped (see the module docs).
    fn with_conn<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut dyn ConnectionLike) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        let pooled = self.idle().pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.connect().map_err(|e| backend("connect", e))?,
        };
        match f(&mut *conn) {
            Ok(value) => {
                self.release(conn);
                Ok(value)
            }
            Err(e) => {
                if e.is_io_error() {
                    self.idle().clear();
                }
                Err(backend(op, e))
            }
        }
    }

    /// The hash of every resource.
    fn resources_key(&self) -> Vec<u8> {
        keys::redis_resources_key(&self.prefix)
    }

    /// Runs resource script `script` (a put or a delete of field `key`, plus `value` when
    /// given) and returns the value the write replaced, read atomically with it.
    fn resource_swap(
        &self,
        op: &'static str,
        script: &Script,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let hash = self.resources_key();
        self.with_conn(op, |c| {
            let mut call = script.key(&hash);
            call.arg(key);
            if let Some(value) = value {
                call.arg(value);
            }
            call.invoke(c)
        })
    }

    /// Test hook: stores `raw` under `key` in a record tree (and its index) without
    /// framing it.
    #[cfg(test)]
    pub(crate) fn insert_raw_record(
        &self,
        tree: RecordTree,
        key: &[u8],
        raw: &[u8],
    ) -> Result<(), StoreError> {
        let record = keys::redis_record_key(&self.prefix, tree, key);
        let index = keys::redis_record_index(&self.prefix, tree);
        // Two commands, not a pipeline: a cluster connection takes no pipelines, and a
        // test hook has no concurrent writer to race.
        self.with_conn("insert", |c| {
            ::redis::cmd("SET").arg(&record).arg(raw).exec(c)?;
            ::redis::cmd("ZADD").arg(&index).arg(0).arg(key).exec(c)
        })
    }

    /// Test hook: stores `raw` under `key` in the resources hash without framing it, to
    /// simulate damage.
    #[cfg(test)]
    pub(crate) fn insert_raw_resource(&self, key: &[u8], raw: &[u8]) -> Result<(), StoreError> {
        let hash = self.resources_key();
        self.with_conn("insert", |c| {
            ::redis::cmd("HSET").arg(&hash).arg(key).arg(raw).exec(c)
        })
    }
}

impl ResourceStore for RedisStore {
    fn put_resource(&self, name: &str, value: &[u8]) -> Result<bool, StoreError> {
        let key = keys::resource_key(name);
        let framed = codec::encode(value);
        let old = self.resource_swap("put_resource", &RESOURCE_PUT, key, Some(&framed))?;
        Ok(self
            .corrupt
            .was_live(keys::RESOURCES_TREE, key, old.as_deref()))
    }

    fn delete_resource(&self, name: &str) -> Result<bool, StoreError> {
        let key = keys::resource_key(name);
        let old = self.resource_swap("delete_resource", &RESOURCE_DELETE, key, None)?;
        Ok(self
            .corrupt
            .was_live(keys::RESOURCES_TREE, key, old.as_deref()))
    }

    fn list_resources(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let hash = self.resources_key();
        // A BTreeMap of the raw keys: byte order, which is name order (keys::resource_key).
        let all: BTreeMap<Vec<u8>, Vec<u8>> = self.with_conn("list_resources", |c| {
            ::redis::cmd("HGETALL").arg(&hash).query(c)
        })?;
        Ok(all
            .iter()
            .filter_map(|(key, raw)| self.corrupt.decode_resource(key, raw))
            .collect())
    }

    fn corrupt_values(&self) -> u64 {
        self.corrupt.count()
    }
}

impl RecordStore for RedisStore {
    fn shared(&self) -> bool {
        true
    }

    fn is_damaged(&self, tree: RecordTree, key: &[u8]) -> bool {
        self.corrupt.is_known(tree.name(), key)
    }

    fn get(&self, tree: RecordTree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let record = keys::redis_record_key(&self.prefix, tree, key);
        let raw: Option<Vec<u8>> =
            self.with_conn("get", |c| ::redis::cmd("GET").arg(&record).query(c))?;
        Ok(raw.and_then(|raw| {
            self.corrupt
                .decode_value(tree.name(), key, &raw)
                .map(<[u8]>::to_vec)
        }))
    }

    fn update(
        &self,
        tree: RecordTree,
        key: &[u8],
        f: &mut dyn FnMut(Option<&[u8]>) -> Write,
    ) -> Result<bool, StoreError> {
        let record = keys::redis_record_key(&self.prefix, tree, key);
        let index = keys::redis_record_index(&self.prefix, tree);
        self.with_conn("update", |c| {
            loop {
                let current: Option<Vec<u8>> = ::redis::cmd("GET").arg(&record).query(c)?;
                let payload = current
                    .as_deref()
                    .and_then(|raw| self.corrupt.decode_value(tree.name(), key, raw));
                let new = match f(payload) {
                    // Mirrors sled: deleting an absent key changes nothing; deleting a
                    // damaged one does (the bytes were there).
                    Write::Keep => return Ok(false),
                    Write::Delete if current.is_none() => return Ok(false),
                    Write::Delete => None,
                    Write::Put(payload) => Some(codec::encode(&payload)),
                };
                // 0 when the record changed since the GET: read again.
                let swapped: i64 = RECORD_CAS
                    .key(&record)
                    .key(&index)
                    .arg(tagged(current.as_deref()))
                    .arg(tagged(new.as_deref()))
                    .arg(key)
                    .invoke(c)?;
                if swapped == 1 {
                    self.corrupt.forget(tree.name(), key);
                    return Ok(true);
                }
            }
        })
    }

    fn scan(
        &self,
        tree: RecordTree,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Scanned>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let index = keys::redis_record_index(&self.prefix, tree);
        let mut found: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        self.with_conn("scan", |c| {
            let mut cursor = after.map(<[u8]>::to_vec);
            while found.len() < limit {
                let want = limit.saturating_sub(found.len());
                let min = match &cursor {
                    Some(key) => [&b"("[..], key].concat(),
                    None => b"-".to_vec(),
                };
                let members: Vec<Vec<u8>> = ::redis::cmd("ZRANGE")
                    .arg(&index)
                    .arg(min)
                    .arg("+")
                    .arg("BYLEX")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(i64::try_from(want).unwrap_or(i64::MAX))
                    .query(c)?;
                let Some(last) = members.last() else {
                    break;
                };
                cursor = Some(last.clone());
                let records: Vec<Vec<u8>> = members
                    .iter()
                    .map(|m| keys::redis_record_key(&self.prefix, tree, m))
                    .collect();
                let values: Vec<Option<Vec<u8>>> = ::redis::cmd("MGET").arg(&records).query(c)?;
                let page_full = members.len() == want;
                // A member without a record was deleted after the ZRANGE: skip it.
                found.extend(
                    members
                        .into_iter()
                        .zip(values)
                        .filter_map(|(key, raw)| Some((key, raw?))),
                );
                if !page_full {
                    break;
                }
            }
            Ok(())
        })?;
        // Decode (and possibly log) after the connection went back to the pool.
        Ok(found
            .into_iter()
            .map(|(key, raw)| {
                let value = self
                    .corrupt
                    .decode_value(tree.name(), &key, &raw)
                    .map(<[u8]>::to_vec);
                Scanned { key, value }
            })
            .collect())
    }

    /// Nothing to do: durability is Redis's `appendonly` / `appendfsync` (module docs).
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn corrupt_values(&self) -> u64 {
        self.corrupt.count()
    }
}

/// A Redis error during an operation, with its transience decided here.
fn backend(op: &'static str, e: RedisError) -> StoreError {
    StoreError::Backend {
        op,
        transient: is_transient(&e),
        source: e.into(),
    }
}

/// Connection trouble and timeouts may pass, as may a server loading its data, a cluster
/// without quorum or a write that hit a replica mid-failover (`LOADING`, `TRYAGAIN`,
/// `MASTERDOWN`, `CLUSTERDOWN`, `READONLY`); a wrong command, type or permission will not.
fn is_transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.retry_method(),
            RetryMethod::WaitAndRetry | RetryMethod::RefreshSlotsAndRetry
        )
}

/// The operator hint for a failed first connection.
fn connect_hint(e: &RedisError) -> OpenHint {
    match e.kind() {
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig => {
            OpenHint::InvalidSettings
        }
        _ if is_transient(e) => OpenHint::Unreachable,
        _ => OpenHint::Other,
    }
}

/// `url` (or each URL of a comma-separated seed list) with the password (the whole
/// user-info part) masked, fit for logs and errors.
fn redact_url(url: &str) -> String {
    if url.contains(',') {
        return url.split(',').map(redact_one).collect::<Vec<_>>().join(",");
    }
    redact_one(url)
}

/// One URL with the user-info part masked.
fn redact_one(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{path}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves user and password never reach messages, and other URLs are left alone.
    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://user:s3cret@db:6379/0"),
            "redis://***@db:6379/0"
        );
        assert_eq!(redact_url("redis://:p@ss@db/"), "redis://***@db/");
        assert_eq!(redact_url("redis://db:6379/"), "redis://db:6379/");
        assert_eq!(redact_url("redis://db/a@b"), "redis://db/a@b");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(
            redact_url("redis://u:pw@a:1/,redis://b:2/,redis://:pw@c:3/"),
            "redis://***@a:1/,redis://b:2/,redis://***@c:3/"
        );
    }

    /// Proves the compare-and-set encoding keeps "absent" apart from an empty value.
    #[test]
    fn tagged_values_keep_absent_apart_from_empty() {
        assert_eq!(tagged(None), b"");
        assert_eq!(tagged(Some(b"")), b"=");
        assert_eq!(tagged(Some(b"\0v")), b"=\0v");
    }

    /// Proves a seed list nobody listens on fails to open with the unreachable hint,
    /// naming every seed.
    #[test]
    fn unreachable_cluster_fails_to_open_clearly() {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("probe port")
                .port()
        };
        let seeds = format!(
            "redis://127.0.0.1:{}/,redis://127.0.0.1:{}/",
            free(),
            free()
        );
        let err = RedisStore::open(&seeds, "pd:", Duration::from_secs(1)).expect_err("refused");
        assert!(
            matches!(
                err,
                StoreError::Open {
                    hint: OpenHint::Unreachable,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains(&seeds), "{err}");
    }

    /// Proves I/O trouble and passing server states are transient, misuse is not.
    #[test]
    fn transience_of_redis_errors() {
        use std::io;
        let io = |kind| RedisError::from(io::Error::from(kind));
        assert!(is_transient(&io(io::ErrorKind::ConnectionRefused)));
        assert!(is_transient(&io(io::ErrorKind::TimedOut)));
        assert!(is_transient(&io(io::ErrorKind::UnexpectedEof)));
        let server = |kind| RedisError::from((ErrorKind::Server(kind), "x"));
        assert!(is_transient(&server(::redis::ServerErrorKind::BusyLoading)));
        assert!(is_transient(&server(::redis::ServerErrorKind::ReadOnly)));
        assert!(!is_transient(&server(
            ::redis::ServerErrorKind::ResponseError
        )));
        assert!(!is_transient(&RedisError::from((
            ErrorKind::InvalidClientConfig,
            "x"
        ))));
    }

    /// Proves settings that cannot work are refused before any connection is tried.
    #[test]
    fn bad_settings_are_refused_at_open() {
        let url = "redis://user:pw@127.0.0.1:1/";
        for (prefix, timeout) in [("a{b}", Duration::from_secs(1)), ("pd:", Duration::ZERO)] {
            let err = RedisStore::open(url, prefix, timeout).expect_err("must refuse");
            assert!(
                matches!(
                    err,
                    StoreError::Open {
                        hint: OpenHint::InvalidSettings,
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(!err.to_string().contains("pw"), "{err}");
        }
        let err = RedisStore::open("http://x/", "pd:", Duration::from_secs(1))
            .expect_err("not a redis url");
        assert!(
            matches!(
                err,
                StoreError::Open {
                    hint: OpenHint::InvalidSettings,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    /// Proves a server nobody listens on fails to open with the unreachable hint, naming
    /// the URL.
    #[test]
    fn unreachable_server_fails_to_open_clearly() {
        // Reserve a port, then free it: nothing listens there for the moment.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("probe port")
            .port();
        let url = format!("redis://127.0.0.1:{port}/");
        let err = RedisStore::open(&url, "pd:", Duration::from_secs(1)).expect_err("refused");
        assert!(
            matches!(
                err,
                StoreError::Open {
                    hint: OpenHint::Unreachable,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains(&url), "{err}");
    }

    /// The message of `e` and of every source under it.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut next = e.source();
        while let Some(s) = next {
            text.push_str(": ");
            text.push_str(&s.to_string());
            next = s.source();
        }
        text
    }

    /// Proves a `rediss://` store works with the server's CA, and that without it (system
    /// roots only) or over plaintext it fails to open instead of talking in the clear.
    #[test]
    fn tls_server_needs_its_ca() {
        let Some(server) =
            permitd_testkit::RedisServer::for_test_tls("store::redis::tls_server_needs_its_ca")
        else {
            return;
        };
        let timeout = Duration::from_secs(2);
        let tls = RedisTls {
            root_cert: Some(std::fs::read(server.ca_file()).expect("ca file")),
            client_cert_key: None,
        };
        let store = RedisStore::open_tls(&server.tls_url(), "pd:", timeout, &tls).expect("open");
        assert!(
            !store.put_resource("r", b"v").expect("put"),
            "nothing to replace"
        );
        assert_eq!(
            store.list_resources().expect("list"),
            [("r".to_owned(), b"v".to_vec())]
        );
        let err = RedisStore::open_tls(&server.tls_url(), "pd:", timeout, &RedisTls::default())
            .expect_err("the throwaway CA is not a system root");
        assert!(chain(&err).contains("certificate"), "{}", chain(&err));
        RedisStore::open(&server.url(), "pd:", timeout).expect_err("plaintext to a TLS port");
    }
}
