//! [`RedisStore`]: resources and records in a Redis shared by several permitd replicas.
//!
//! Layout ([`keys`]): resources in one hash, `<prefix>resources`; each record in its own
//! string key, `<prefix>{rec:<tree>}:r:<key>`, indexed by a per-tree sorted set,
//! `<prefix>{rec:<tree>}:index`, whose members (all scored 0) are the record keys, so a
//! `ZRANGE .. BYLEX` page lists them in byte order like a sled range. The prefix namespaces
//! one deployment, so several can share a Redis. Values are framed by [`codec`] exactly as
//! on sled; damage reads as absent and is counted once ([`CorruptTracker`]).
//!
//! Atomicity, without Lua:
//! - a resource put or delete is `MULTI; HGET; HSET|HDEL; EXEC`: the old value comes back
//!   from the same transaction, so "replaced" / "existed" cannot race another writer;
//! - [`RecordStore::update`] is optimistic: `WATCH record; GET record`, run the closure,
//!   then `MULTI; SET record + ZADD index` (or `DEL + ZREM`) `; EXEC`. A nil `EXEC` means
//!   another client wrote the key after the `GET`; the loop reads again and reruns the
//!   closure (the trait allows several runs). Record and index share a cluster hash tag,
//!   so the transaction stays on one slot.
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
//! Calls are synchronous over a small pool of blocking connections, each with read and
//! write timeouts of the `op_timeout` given to [`RedisStore::open`]. A connection that saw
//! any error is dropped, never reused (it may hold a half-read reply or a pending
//! `WATCH`), and a dropped connection also empties the pool: its siblings talk to the same
//! server and are most likely dead too. Writes are never retried here: after an I/O error
//! their outcome is unknown, and rerunning an update's closure against a value it may
//! itself have written would report the wrong outcome (a claim that won would read as
//! lost). The error says whether retrying can help; the caller decides.
//!
//! No Redis type leaves this file: errors are boxed into [`StoreError`] sources.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ::redis::{
    Client, Connection, ConnectionLike, ErrorKind, RedisError, RedisResult, RetryMethod, Value,
};

use super::corrupt::CorruptTracker;
use super::keys::RecordTree;
use super::records::{RecordStore, Scanned, Write};
use super::{OpenHint, ResourceStore, StoreError, codec, keys};

/// Idle connections kept for reuse; more are opened under load and closed when returned.
const MAX_IDLE: usize = 16;

/// Resources and records in Redis, namespaced by a key prefix.
pub struct RedisStore {
    /// Opens new connections.
    client: Client,
    /// The URL with any password masked, for messages.
    shown_url: String,
    /// Prepended to every key ([`keys::redis_resources_key`] and friends).
    prefix: String,
    /// Connect, read and write timeout of every call.
    op_timeout: Duration,
    /// Connections free for the next call.
    idle: Mutex<Vec<Connection>>,
    /// Damaged entries seen since open.
    corrupt: CorruptTracker,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shown_url)
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
    /// Opens one connection before returning, so a wrong address fails at startup rather
    /// than on the first request.
    ///
    /// # Errors
    /// [`StoreError::Open`] naming the URL (password masked): [`OpenHint::InvalidSettings`]
    /// for a malformed URL, a zero timeout, a prefix holding `{` or `}` (it could form a
    /// cluster hash tag, see [`keys::valid_redis_prefix`]) or refused credentials;
    /// [`OpenHint::Unreachable`] when the server does not answer.
    pub fn open(url: &str, prefix: &str, op_timeout: Duration) -> Result<Self, StoreError> {
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
        let client =
            Client::open(url).map_err(|e| open_error(OpenHint::InvalidSettings, e.into()))?;
        let store = RedisStore {
            client,
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
    fn connect(&self) -> RedisResult<Connection> {
        let conn = self.client.get_connection_with_timeout(self.op_timeout)?;
        conn.set_read_timeout(Some(self.op_timeout))?;
        conn.set_write_timeout(Some(self.op_timeout))?;
        Ok(conn)
    }

    /// The idle pool, whether or not a previous holder panicked (it only pushes and pops).
    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a healthy connection back for reuse, unless the pool is full.
    fn release(&self, conn: Connection) {
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
        f: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        let pooled = self.idle().pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.connect().map_err(|e| backend("connect", e))?,
        };
        match f(&mut conn) {
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

    /// `HGET` of resource key `key` and `then` (an `HSET` or `HDEL` of it) in one
    /// transaction: the value the write replaced, read atomically with it.
    fn resource_swap(
        &self,
        op: &'static str,
        key: &[u8],
        then: &::redis::Cmd,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let hash = self.resources_key();
        let (old, _): (Option<Vec<u8>>, Value) = self.with_conn(op, |c| {
            ::redis::pipe()
                .atomic()
                .cmd("HGET")
                .arg(&hash)
                .arg(key)
                .add_command(then.clone())
                .query(c)
        })?;
        Ok(old)
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
        self.with_conn("insert", |c| {
            ::redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(&record)
                .arg(raw)
                .ignore()
                .cmd("ZADD")
                .arg(&index)
                .arg(0)
                .arg(key)
                .ignore()
                .exec(c)
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
        let mut set = ::redis::cmd("HSET");
        set.arg(self.resources_key())
            .arg(key)
            .arg(codec::encode(value));
        let old = self.resource_swap("put_resource", key, &set)?;
        Ok(self
            .corrupt
            .was_live(keys::RESOURCES_TREE, key, old.as_deref()))
    }

    fn delete_resource(&self, name: &str) -> Result<bool, StoreError> {
        let key = keys::resource_key(name);
        let mut del = ::redis::cmd("HDEL");
        del.arg(self.resources_key()).arg(key);
        let old = self.resource_swap("delete_resource", key, &del)?;
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
                ::redis::cmd("WATCH").arg(&record).exec(c)?;
                let current: Option<Vec<u8>> = ::redis::cmd("GET").arg(&record).query(c)?;
                let payload = current
                    .as_deref()
                    .and_then(|raw| self.corrupt.decode_value(tree.name(), key, raw));
                let mut tx = ::redis::pipe();
                tx.atomic();
                match f(payload) {
                    // Mirrors sled: deleting an absent key changes nothing; deleting a
                    // damaged one does (the bytes were there).
                    Write::Keep => return unwatch(c),
                    Write::Delete if current.is_none() => return unwatch(c),
                    Write::Delete => tx
                        .cmd("DEL")
                        .arg(&record)
                        .ignore()
                        .cmd("ZREM")
                        .arg(&index)
                        .arg(key)
                        .ignore(),
                    Write::Put(payload) => tx
                        .cmd("SET")
                        .arg(&record)
                        .arg(codec::encode(&payload))
                        .ignore()
                        .cmd("ZADD")
                        .arg(&index)
                        .arg(0)
                        .arg(key)
                        .ignore(),
                };
                // Nil (None) when the watched key changed since the GET: read again.
                let committed: Option<Value> = tx.query(c)?;
                if committed.is_some() {
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

/// Drops the `WATCH` of an update that writes nothing; the update changed nothing.
fn unwatch(c: &mut Connection) -> RedisResult<bool> {
    ::redis::cmd("UNWATCH").exec(c)?;
    Ok(false)
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

/// `url` with the password (the whole user-info part) masked, fit for logs and errors.
fn redact_url(url: &str) -> String {
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
}
