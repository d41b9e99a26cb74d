//! Helpers permitd's unit and integration tests share; not part of the service. A crate of
//! its own, a dev-dependency only, so the shipped library neither carries nor exports it.
//! Std only.
//!
//! [`RedisServer`] runs a real, throwaway `redis-server` on a loopback port. Readiness is
//! the server's own "Ready to accept connections" log line, read from its stdout, never a
//! sleep. Each server also gets a watchdog (`sh`, blocked reading a pipe only this process
//! holds): if the test process dies or exits without dropping the server (a `static`
//! shared by a test binary is never dropped), the pipe closes and the watchdog kills the
//! server and removes its directory, so no `redis-server` outlives its tests.
//!
//! [`RedisServer::start_tls`] serves TLS only, with a throwaway CA and a server certificate
//! for `127.0.0.1` made by the `openssl` CLI in the server's directory.
//!
//! [`RedisCluster`] runs three such servers in cluster mode (same start, readiness and
//! watchdog code) and joins them with `redis-cli --cluster create`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The program started, looked up on `PATH`.
const REDIS_SERVER: &str = "redis-server";

/// The program that makes the throwaway CA and server certificate of a TLS server.
const OPENSSL: &str = "openssl";

/// The program that joins cluster nodes and reports cluster state, looked up on `PATH`.
const REDIS_CLI: &str = "redis-cli";

/// Nodes of a [`RedisCluster`]: the fewest masters `redis-cli --cluster create` accepts.
const CLUSTER_NODES: usize = 3;

/// A cluster node's bus listens on its port plus this (Redis's fixed offset).
const CLUSTER_BUS_OFFSET: u16 = 10_000;

/// Pause between two polls of `cluster info`: Redis offers no event for "state is ok".
const CLUSTER_POLL: Duration = Duration::from_millis(20);

/// The log line by which redis-server says it serves (7.0: "Ready to accept connections",
/// 7.2 adds " tcp").
const READY_LINE: &str = "Ready to accept connections";

/// How long a start may take, from spawn to the ready line.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Fresh ports tried when redis-server fails to bind the one picked (another process took
/// it between our probe and its bind).
const PORT_ATTEMPTS: usize = 5;

/// Tells apart the temporary directories of servers started by one process.
static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A `redis-server` child process on `127.0.0.1`, without persistence, in its own
/// temporary directory. Dropping it kills the server and removes the directory.
#[derive(Debug)]
pub struct RedisServer {
    /// The port, kept across [`RedisServer::kill`] so [`RedisServer::restart`] reuses it.
    port: u16,
    /// The server's working directory (`--dir`), removed on drop.
    dir: PathBuf,
    /// The running server and its watchdog; `None` after [`RedisServer::kill`].
    running: Option<Running>,
    /// Serves TLS only (on `port`), with the certificates in `dir`.
    tls: bool,
}

/// A live server process and the watchdog that kills it if this process goes away.
#[derive(Debug)]
struct Running {
    /// The redis-server process.
    server: Child,
    /// `sh` waiting for EOF on its stdin (held by us) to kill `server`.
    watchdog: Child,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it accepts connections.
    ///
    /// # Errors
    /// A message when the temporary directory cannot be created, redis-server cannot be
    /// spawned, or it does not report readiness within 10 s (its output is included).
    pub fn start() -> Result<RedisServer, String> {
        Self::start_in(fresh_dir("redis")?, false)
    }

    /// Starts a server that speaks TLS only (no plaintext port), with a certificate for
    /// `127.0.0.1` signed by a throwaway CA ([`RedisServer::ca_file`]); clients need no
    /// certificate of their own. Connect with [`RedisServer::tls_url`].
    ///
    /// # Errors
    /// As [`RedisServer::start`], and when `openssl` cannot make the certificates (its
    /// output is included).
    pub fn start_tls() -> Result<RedisServer, String> {
        let dir = fresh_dir("redis-tls")?;
        if let Err(e) = make_certificates(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        Self::start_in(dir, true)
    }

    /// Starts a server in `dir` (which it then owns) on a free port.
    fn start_in(dir: PathBuf, tls: bool) -> Result<RedisServer, String> {
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match spawn_ready(port, &dir, tls, &[]) {
                Ok(running) => {
                    return Ok(RedisServer {
                        port,
                        dir,
                        running: Some(running),
                        tls,
                    });
                }
                // Someone took the port between the probe and redis' bind: pick another.
                Err(e) if e.contains("Address already in use") => last_error = e,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(format!(
            "redis-server could not bind a port in {PORT_ATTEMPTS} attempts: {last_error}"
        ))
    }

    /// A server for test `test_name`, or `None` (after printing a skip notice to stderr)
    /// when `redis-server` is not installed.
    ///
    /// # Panics
    /// When redis-server is missing and env `CI` is `true` (in CI a missing prerequisite
    /// is a failure, not a skip), or when it is installed but fails to start.
    #[must_use]
    pub fn for_test(test_name: &str) -> Option<RedisServer> {
        if !installed(test_name, &[REDIS_SERVER]) {
            return None;
        }
        match RedisServer::start() {
            Ok(server) => Some(server),
            Err(e) => panic!("{test_name}: cannot start redis-server: {e}"),
        }
    }

    /// A TLS server ([`RedisServer::start_tls`]) for test `test_name`, or `None` (after a
    /// skip notice) when `redis-server` or `openssl` is not installed.
    ///
    /// # Panics
    /// As [`RedisServer::for_test`]: a missing program under `CI=true`, or a failed start.
    #[must_use]
    pub fn for_test_tls(test_name: &str) -> Option<RedisServer> {
        if !installed(test_name, &[REDIS_SERVER, OPENSSL]) {
            return None;
        }
        match RedisServer::start_tls() {
            Ok(server) => Some(server),
            Err(e) => panic!("{test_name}: cannot start a TLS redis-server: {e}"),
        }
    }

    /// The URL clients connect with: `redis://127.0.0.1:<port>/` (a TLS server does not
    /// answer it: use [`RedisServer::tls_url`]).
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The TLS URL of a server from [`RedisServer::start_tls`]: `rediss://127.0.0.1:<port>/`.
    #[must_use]
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.port)
    }

    /// The PEM file of the CA that signed a TLS server's certificate: what clients trust.
    #[must_use]
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(CA_FILE)
    }

    /// The server's port (the same after [`RedisServer::restart`]).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL and waits for it to exit: an abrupt outage. The port
    /// stays with this value for [`RedisServer::restart`]. Killing a stopped server does
    /// nothing.
    pub fn kill(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers, the outage
    /// a timeout must catch. [`RedisServer::resume`] undoes it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(r) = &self.running {
            // The shell's `kill` builtin (always there, unlike procps): std sends only
            // SIGKILL.
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("kill {sig} {}", r.server.id()))
                .status();
        }
    }

    /// Starts the server again on the same port (killing it first if it runs) and waits
    /// until it accepts connections. Nothing is persisted: it comes back empty.
    ///
    /// # Errors
    /// A message when it cannot be spawned or does not become ready within 10 s (e.g.
    /// another process took the port meanwhile).
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.running = Some(spawn_ready(self.port, &self.dir, self.tls, &[])?);
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three `redis-server` nodes on `127.0.0.1` in cluster mode, every slot assigned (no
/// replicas), without persistence, in one temporary directory. Dropping it kills every
/// node and removes the directory.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes' client ports, in start order.
    ports: Vec<u16>,
    /// The nodes' working directory (`--dir` and cluster config files), removed on drop.
    dir: PathBuf,
    /// The running nodes and their watchdogs.
    nodes: Vec<Running>,
}

impl RedisCluster {
    /// Starts three cluster-mode nodes on free loopback ports, joins them with
    /// `redis-cli --cluster create` and waits until every node reports
    /// `cluster_state:ok`.
    ///
    /// # Errors
    /// A message when a node cannot be started (as [`RedisServer::start`]), the cluster
    /// cannot be created (redis-cli's output is included), or it is not ok within 10 s.
    pub fn start() -> Result<RedisCluster, String> {
        let dir = fresh_dir("redis-cluster")?;
        // Built before any node starts, so an error below drops (kills) those started.
        let mut cluster = RedisCluster {
            ports: Vec::with_capacity(CLUSTER_NODES),
            dir,
            nodes: Vec::with_capacity(CLUSTER_NODES),
        };
        for _ in 0..CLUSTER_NODES {
            let (port, node) = spawn_cluster_node(&cluster.dir)?;
            cluster.ports.push(port);
            cluster.nodes.push(node);
        }
        cluster.create()?;
        cluster.wait_ok()?;
        Ok(cluster)
    }

    /// A cluster for test `test_name`, or `None` (after printing a skip notice to stderr)
    /// when `redis-server` or `redis-cli` is not installed.
    ///
    /// # Panics
    /// When one is missing and env `CI` is `true` (as [`RedisServer::for_test`]), or when
    /// both are installed but the cluster fails to start.
    #[must_use]
    pub fn for_test(test_name: &str) -> Option<RedisCluster> {
        if !installed(test_name, &[REDIS_SERVER, REDIS_CLI]) {
            return None;
        }
        match RedisCluster::start() {
            Ok(cluster) => Some(cluster),
            Err(e) => panic!("{test_name}: cannot start a redis cluster: {e}"),
        }
    }

    /// One URL per node, `redis://127.0.0.1:<port>/`, in start order.
    #[must_use]
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    /// [`RedisCluster::urls`] joined with `,`: the seed list a cluster client opens with.
    #[must_use]
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    /// Assigns all slots over the nodes, masters only.
    fn create(&self) -> Result<(), String> {
        let nodes = self.ports.iter().map(|port| format!("127.0.0.1:{port}"));
        let out = Command::new(REDIS_CLI)
            .arg("--cluster")
            .arg("create")
            .args(nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {REDIS_CLI}: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{REDIS_CLI} --cluster create failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// Polls `cluster info` on every node until each says `cluster_state:ok`: `create`
    /// returns once slots are assigned, but nodes agree on it a moment later.
    fn wait_ok(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut pending = self.ports.clone();
        loop {
            let mut last = String::new();
            pending.retain(|&port| match cluster_info(port) {
                Ok(info) if info.lines().any(|l| l.trim_end() == "cluster_state:ok") => false,
                Ok(info) => {
                    last = format!("port {port}: {info}");
                    true
                }
                Err(e) => {
                    last = e;
                    true
                }
            });
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "cluster not ok within {START_TIMEOUT:?} on ports {pending:?}; last: {last}"
                ));
            }
            std::thread::sleep(CLUSTER_POLL);
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in self.nodes.drain(..) {
            node.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts one cluster-mode node in `dir` on a free port (retrying taken ports like
/// [`RedisServer::start`]); its cluster config file is `nodes-<port>.conf` in `dir`.
fn spawn_cluster_node(dir: &Path) -> Result<(u16, Running), String> {
    let mut last_error = String::new();
    for _ in 0..PORT_ATTEMPTS {
        let port = free_cluster_port()?;
        let config = dir.join(format!("nodes-{port}.conf"));
        let extra = [
            "--cluster-enabled".to_owned(),
            "yes".to_owned(),
            "--cluster-config-file".to_owned(),
            config.display().to_string(),
            "--cluster-node-timeout".to_owned(),
            "2000".to_owned(),
        ];
        match spawn_ready(port, dir, false, &extra) {
            Ok(node) => return Ok((port, node)),
            Err(e) if e.contains("Address already in use") => last_error = e,
            Err(e) => return Err(e),
        }
    }
    Err(format!(
        "redis-server could not bind a port in {PORT_ATTEMPTS} attempts: {last_error}"
    ))
}

/// The output of `redis-cli -p <port> cluster info`.
fn cluster_info(port: u16) -> Result<String, String> {
    let out = Command::new(REDIS_CLI)
        .args(["-p", &port.to_string(), "cluster", "info"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {REDIS_CLI}: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Running {
    /// Stops the watchdog first, then the server, so the watchdog can never signal a pid
    /// that was reaped and reused.
    fn stop(mut self) {
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// A fresh temporary directory `permitd-<what>-<pid>-<n>`, created.
fn fresh_dir(what: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!(
        "permitd-{what}-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Whether every program in `programs` is on `PATH`; if not, `false` after a skip notice
/// naming test `test_name`.
///
/// # Panics
/// When one is missing and env `CI` is `true`: in CI a missing prerequisite is a failure.
fn installed(test_name: &str, programs: &[&str]) -> bool {
    let Some(missing) = programs.iter().find(|p| !on_path(p)) else {
        return true;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test_name}: {missing} is not installed; CI must install it \
         (apt-get install -y redis-server openssl, see scripts/test.sh)"
    );
    eprintln!("SKIP {test_name}: {missing} not installed");
    false
}

/// A loopback port free at the time of asking (bound to port 0, read back, released).
fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot probe a free port: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("cannot read the probed port: {e}"))?
        .port();
    Ok(port)
}

/// A loopback port free at the time of asking whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> Result<u16, String> {
    for _ in 0..PORT_ATTEMPTS * 4 {
        let port = free_port()?;
        let Some(bus) = port.checked_add(CLUSTER_BUS_OFFSET) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            return Ok(port);
        }
    }
    Err("no loopback port with a free cluster bus port found".to_owned())
}

/// The listening arguments: plaintext on `port`, or (`tls`) TLS only on `port` with the
/// certificates [`make_certificates`] left in `dir`.
fn listen_args(port: u16, dir: &Path, tls: bool) -> Vec<String> {
    if !tls {
        return vec!["--port".to_owned(), port.to_string()];
    }
    let file = |name: &str| dir.join(name).display().to_string();
    vec![
        "--port".to_owned(),
        "0".to_owned(),
        "--tls-port".to_owned(),
        port.to_string(),
        "--tls-cert-file".to_owned(),
        file(SERVER_CERT),
        "--tls-key-file".to_owned(),
        file(SERVER_KEY),
        "--tls-ca-cert-file".to_owned(),
        file(CA_FILE),
        // Clients prove nothing: the tests exercise server verification only.
        "--tls-auth-clients".to_owned(),
        "no".to_owned(),
    ]
}

/// The throwaway CA's certificate, in a TLS server's directory.
const CA_FILE: &str = "ca.pem";
/// The TLS server's certificate (for IP 127.0.0.1, signed by the CA) and key.
const SERVER_CERT: &str = "server.pem";
/// The TLS server's private key.
const SERVER_KEY: &str = "server.key";

/// Makes a CA and a server certificate for `127.0.0.1` signed by it in `dir`, with the
/// `openssl` CLI (P-256 keys: quick to generate; valid for a week).
fn make_certificates(dir: &Path) -> Result<(), String> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    // rustls (webpki) wants a proper v3 chain: a CA marked as one, and a leaf with the
    // address in subjectAltName (the common name is not looked at).
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| format!("cannot write server.ext: {e}"))?;
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            ec[0],
            ec[1],
            ec[2],
            ec[3],
            ec[4],
            "-keyout",
            "ca.key",
            "-out",
            CA_FILE,
            "-days",
            "7",
            "-subj",
            "/CN=permitd test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        &[
            "req",
            ec[0],
            ec[1],
            ec[2],
            ec[3],
            ec[4],
            "-keyout",
            SERVER_KEY,
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            CA_FILE,
            "-CAkey",
            "ca.key",
            "-set_serial",
            "1",
            "-days",
            "7",
            "-extfile",
            "server.ext",
            "-out",
            SERVER_CERT,
        ],
    ];
    for args in steps {
        let out = Command::new(OPENSSL)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {OPENSSL}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{OPENSSL} {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

/// Spawns redis-server on `port` (TLS only when `tls`) in `dir` (plus `extra` arguments)
/// with its watchdog, and waits for its ready line.
fn spawn_ready(port: u16, dir: &Path, tls: bool, extra: &[String]) -> Result<Running, String> {
    let mut server = Command::new(REDIS_SERVER)
        .args(listen_args(port, dir, tls))
        .args(["--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot spawn {REDIS_SERVER}: {e}"))?;
    let watchdog = match spawn_watchdog(server.id(), dir) {
        Ok(watchdog) => watchdog,
        Err(e) => {
            let _ = server.kill();
            let _ = server.wait();
            return Err(e);
        }
    };
    let Some(stdout) = server.stdout.take() else {
        Running { server, watchdog }.stop();
        return Err("redis-server stdout is not piped".to_owned());
    };
    let running = Running { server, watchdog };
    match wait_ready(&stdout_lines(stdout)) {
        Ok(()) => Ok(running),
        Err(e) => {
            running.stop();
            Err(format!("redis-server on port {port}: {e}"))
        }
    }
}

/// `sh` that kills `pid` and removes `dir` once its stdin (a pipe whose write end only
/// this process holds) reaches EOF, i.e. when this process exits or drops the pipe.
fn spawn_watchdog(pid: u32, dir: &Path) -> Result<Child, String> {
    Command::new("sh")
        .args(["-c", r#"read _; kill -9 "$1"; rm -rf "$2""#, "watchdog"])
        .arg(pid.to_string())
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot spawn the redis-server watchdog (sh): {e}"))
}

/// The lines of the server's stdout, read on a thread so the wait can time out. The
/// thread keeps draining after readiness (until the server exits) so the server never
/// blocks on a full pipe.
fn stdout_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                // Nobody listens once the server is ready: keep reading, drop the line.
                Ok(_) => {
                    let _ = tx.send(String::from_utf8_lossy(&line).trim_end().to_owned());
                }
            }
        }
    });
    rx
}

/// Waits for [`READY_LINE`] on `lines`, up to [`START_TIMEOUT`].
fn wait_ready(lines: &mpsc::Receiver<String>) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(READY_LINE) => return Ok(()),
            Ok(line) => seen.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "not ready within {START_TIMEOUT:?}; output:\n{}",
                    seen.join("\n")
                ));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!("exited before ready; output:\n{}", seen.join("\n")));
            }
        }
    }
}

/// Whether an executable file named `program` is in a directory of `PATH`.
fn on_path(program: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
}

/// Whether `path` is a file someone may execute.
#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether `path` is a file (no execute bit to check off Unix).
#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// Sends `PING` in RESP and returns the reply, or the connection error.
    fn ping(port: u16) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply)?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    /// Proves the server answers once `start` returns, is down after `kill`, answers again
    /// on the same port after `restart`, and that drop stops it and removes its directory.
    #[test]
    fn start_kill_restart_drop() {
        let Some(mut server) = RedisServer::for_test("testkit::start_kill_restart_drop") else {
            return;
        };
        let port = server.port();
        assert_eq!(server.url(), format!("redis://127.0.0.1:{port}/"));
        assert_eq!(ping(port).expect("ping"), "+PONG\r\n");
        assert!(server.dir.is_dir());
        server.kill();
        assert!(ping(port).is_err(), "a killed server must not answer");
        server.kill();
        server.restart().expect("restart");
        assert_eq!(server.port(), port);
        assert_eq!(ping(port).expect("ping after restart"), "+PONG\r\n");
        let dir = server.dir.clone();
        drop(server);
        assert!(ping(port).is_err(), "a dropped server must not answer");
        assert!(!dir.exists(), "drop must remove {}", dir.display());
    }

    /// Proves the watchdog stops a server whose owner vanished without dropping it.
    #[test]
    fn watchdog_kills_an_orphaned_server() {
        let Some(mut server) = RedisServer::for_test("testkit::watchdog_kills_an_orphaned_server")
        else {
            return;
        };
        let port = server.port();
        let mut running = server.running.take().expect("running");
        // What process exit does to the pipe: the watchdog sees EOF.
        drop(running.watchdog.stdin.take());
        running.watchdog.wait().expect("watchdog exits");
        running.server.wait().expect("server was killed");
        assert!(ping(port).is_err());
        assert!(!server.dir.exists(), "the watchdog removes the directory");
    }

    /// Proves a cluster answers on every node with every slot served once `start`
    /// returns, and that drop stops every node and removes the directory.
    #[test]
    fn cluster_start_and_drop() {
        let Some(cluster) = RedisCluster::for_test("testkit::cluster_start_and_drop") else {
            return;
        };
        let urls = cluster.urls();
        assert_eq!(urls.len(), CLUSTER_NODES);
        assert_eq!(cluster.url_list(), urls.join(","));
        let ports = cluster.ports.clone();
        for (port, url) in ports.iter().zip(&urls) {
            assert_eq!(url, &format!("redis://127.0.0.1:{port}/"));
            assert_eq!(ping(*port).expect("ping"), "+PONG\r\n");
            let info = cluster_info(*port).expect("cluster info");
            assert!(info.contains("cluster_state:ok"), "{info}");
            assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
            assert!(info.contains("cluster_known_nodes:3"), "{info}");
        }
        let dir = cluster.dir.clone();
        assert!(dir.join(format!("nodes-{}.conf", ports[0])).is_file());
        drop(cluster);
        for port in ports {
            assert!(ping(port).is_err(), "a dropped node must not answer");
        }
        assert!(!dir.exists(), "drop must remove {}", dir.display());
    }

    /// Proves `for_test` finds programs on `PATH` and not elsewhere.
    #[test]
    fn path_lookup() {
        assert!(on_path("sh"));
        assert!(!on_path("permitd-no-such-program"));
    }
}
