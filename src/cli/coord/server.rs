//! `--spawn-server`: bench-coord runs permitd itself, on 127.0.0.1:<a free port> with a
//! temporary data directory, and can restart it (SIGTERM, then the same port and directory)
//! in the middle of a run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tonic::Code;
use tonic::transport::Endpoint;

use permitd::proto::{self, quotas_client::QuotasClient};

/// How long a start may take before it counts as failed.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a SIGTERM'd server may drain before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(15);
/// Fresh ports tried when another process took the one picked.
const PORT_ATTEMPTS: usize = 5;

/// A permitd process this command started.
#[derive(Debug)]
pub(super) struct Spawned {
    bin: PathBuf,
    addr: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
}

impl Spawned {
    /// Start `bin serve` on a free loopback port and a fresh data directory; returns once it
    /// answers.
    pub(super) async fn start(bin: &Path) -> anyhow::Result<Self> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "permitd-bench-coord-{}-{stamp}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the server's directory {}", dir.display()))?;
        let mut s = Self {
            bin: bin.to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            child: None,
        };
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            s.addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            match s.launch().await {
                Ok(()) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("the server did not start")))
    }

    /// The server's URL.
    pub(super) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGTERM the server, wait for it to exit, and start it again on the same port and
    /// data directory. Returns how long it was away.
    pub(super) async fn restart(&mut self) -> anyhow::Result<Duration> {
        let began = Instant::now();
        self.stop().await;
        // The port may linger a moment after the exit: retry within the start's bound.
        let mut last = None;
        while began.elapsed() < READY_WITHIN + STOP_WITHIN {
            match self.launch().await {
                Ok(()) => return Ok(began.elapsed()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("the server did not restart")))
    }

    /// SIGTERM the server and wait for it to exit (SIGKILL after 15 s).
    pub(super) async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !term.is_ok_and(|s| s.success()) {
            let _ = child.kill();
        }
        let began = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if began.elapsed() > STOP_WITHIN {
                eprintln!("bench-coord: the server ignored SIGTERM for 15 s; killing it");
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Spawn the process on `self.addr` and wait until it answers; on failure the process
    /// is gone and the error quotes its log.
    async fn launch(&mut self) -> anyhow::Result<()> {
        let log = self.dir.join("server.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(&self.bin)
            .arg("serve")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--log-filter", "warn"])
            .env_remove("PERMITD_CONFIG")
            .env_remove("PERMITD_REDIS_URL")
            .env_remove("PERMITD_METRICS_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        match ready(&mut child, self.addr).await {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                Err(e.context(format!("server log: {}", log.trim())))
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Ask GetQuota until the server answers anything but UNAVAILABLE (NOT_FOUND is an
/// answer); fail if the process exits or 30 s pass.
async fn ready(child: &mut Child, addr: SocketAddr) -> anyhow::Result<()> {
    let began = Instant::now();
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2));
    while began.elapsed() < READY_WITHIN {
        if let Some(status) = child.try_wait().ok().flatten() {
            anyhow::bail!("the server exited ({status}) before answering on {addr}");
        }
        if let Ok(channel) = endpoint.connect().await {
            let answer = QuotasClient::new(channel)
                .get_quota(proto::GetQuotaRequest {
                    resource: "bench-coord:ready".into(),
                    partition: String::new(),
                })
                .await;
            match answer {
                Ok(_) => return Ok(()),
                Err(s) if s.code() != Code::Unavailable => return Ok(()),
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("the server did not answer on {addr} within 30 s")
}
