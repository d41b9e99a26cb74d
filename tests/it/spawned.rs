//! The real `permitd` binary as a child process (for kill -9 and soak runs): started on a
//! free loopback port with `serve --listen --data-dir [--config]`, ready once Health says
//! SERVING (polled, bounded), killed with SIGKILL. Its stderr goes to a log file beside
//! the data directory, quoted when it fails to start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// How long a start may take before it counts as failed.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// Attempts at a free port (another process may take the one we picked).
const PORT_ATTEMPTS: usize = 5;

/// A running server process.
pub struct Spawned {
    child: Child,
    pub addr: SocketAddr,
    /// Spawn to SERVING.
    pub ready_in: Duration,
}

/// How to start the binary beyond the defaults.
#[derive(Debug, Default, Clone)]
pub struct Launch {
    /// Extra `serve` arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// A program (and its arguments) that runs the binary, e.g. `faketime -f +1h`.
    pub wrap: Vec<String>,
}

/// Why a start failed.
#[derive(Debug)]
pub struct StartError {
    pub log: String,
}

/// A port that was free a moment ago: bind 127.0.0.1:0, read it, drop the socket.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The `permitd serve` command the harness runs on `addr`: its own arguments and
/// environment only (stdin and stdout closed; stderr is the caller's to set).
pub fn command(
    data_dir: &Path,
    config: Option<&Path>,
    launch: &Launch,
    addr: SocketAddr,
) -> Command {
    let mut cmd = match launch.wrap.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(env!("CARGO_BIN_EXE_permitd"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_permitd")),
    };
    cmd.arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("RUST_LOG")
        .env_remove("PERMITD_CONFIG")
        .env_remove("PERMITD_REDIS_URL")
        .env_remove("PERMITD_REDIS_TLS_CA_FILE")
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(&launch.args);
    cmd
}

impl Spawned {
    /// Starts the binary on `data_dir` (with `config` if given) and waits until it serves.
    /// Retries on a port collision; any other early exit is an error carrying its log.
    pub async fn start(
        data_dir: &Path,
        config: Option<&Path>,
        log: &Path,
    ) -> Result<Spawned, StartError> {
        Self::launch(data_dir, config, log, &Launch::default()).await
    }

    /// [`Spawned::start`] with extra arguments, environment, and a wrapper program
    /// (`faketime`) in front of the binary.
    pub async fn launch(
        data_dir: &Path,
        config: Option<&Path>,
        log: &Path,
        launch: &Launch,
    ) -> Result<Spawned, StartError> {
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let log_file = std::fs::File::create(log).expect("log file");
            let mut cmd = command(data_dir, config, launch, addr);
            cmd.stderr(Stdio::from(log_file));
            let started = Instant::now();
            let child = cmd.spawn().expect("spawn permitd");
            let mut s = Spawned {
                child,
                addr,
                ready_in: Duration::ZERO,
            };
            match s.wait_ready(started).await {
                Ok(()) => return Ok(s),
                Err(()) => {
                    s.kill();
                    last = std::fs::read_to_string(log).unwrap_or_default();
                    if !last.contains("cannot listen") {
                        return Err(StartError { log: last });
                    }
                }
            }
        }
        Err(StartError { log: last })
    }

    /// Polls Health until SERVING; fails if the process exits or time runs out.
    async fn wait_ready(&mut self, started: Instant) -> Result<(), ()> {
        let channel = self.channel();
        let mut health = HealthClient::new(channel);
        while started.elapsed() < READY_WITHIN {
            if self.child.try_wait().ok().flatten().is_some() {
                return Err(());
            }
            let req = HealthCheckRequest {
                service: String::new(),
            };
            if health
                .check(req)
                .await
                .is_ok_and(|r| r.into_inner().status == 1)
            {
                self.ready_in = started.elapsed();
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err(())
    }

    /// A server on a fresh temporary data directory with extra `serve` arguments: for
    /// tests that measure the server's own memory, apart from the tests beside it.
    pub async fn temp(args: &[&str]) -> (Spawned, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let launch = Launch {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..Launch::default()
        };
        let s = Self::launch(
            &dir.path().join("data"),
            None,
            &dir.path().join("log"),
            &launch,
        )
        .await
        .unwrap_or_else(|e| panic!("permitd did not start:\n{}", e.log));
        (s, dir)
    }

    /// A lazy channel with no per-call timeout, for streams that outlive one.
    pub fn stream_channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("url")
            .connect_lazy()
    }

    /// A lazy channel to the server, with a per-call timeout so calls to a killed server end.
    pub fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("url")
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect_lazy()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB (Linux `/proc`), 0 when unknown.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// The exit status once the process ends by itself, waiting at most `within`.
    pub async fn exited(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// SIGKILL (no destructors, no flush) and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Bytes of every file under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// An environment variable parsed, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
