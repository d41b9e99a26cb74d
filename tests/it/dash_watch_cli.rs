//! `permitd watch` (the real binary) against the test server: JSON lines that follow the
//! permits taken, the table (plain text when stdout is a pipe), and clean ends on server
//! shutdown and on Ctrl-C.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::support::{TestServer, acquire_req, limit, put, resource};

const HOUR: Duration = Duration::from_secs(3600);

/// A running `permitd watch` whose stdout lines arrive on a channel.
struct Watcher {
    child: Option<Child>,
    pid: u32,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line read so far.
    seen: Vec<String>,
}

impl Watcher {
    fn start(server: &TestServer, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_permitd"))
            .arg("watch")
            .args(args)
            .args(["--server", &server.url(), "--timeout", "5s"])
            .env_remove("PERMITD_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn permitd watch");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            pid: child.id(),
            child: Some(child),
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line containing every needle (bounded: 10 s).
    async fn line_with(&mut self, needles: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no line with {needles:?} in time"))
                .expect("watch still running");
            self.seen.push(line.clone());
            if needles.iter().all(|n| line.contains(n)) {
                return line;
            }
        }
    }

    /// Wait (bounded: 10 s) for the exit; returns (status, stderr). The lines printed
    /// meanwhile are added to `seen`.
    async fn exit(&mut self) -> (i32, String) {
        let mut child = self.child.take().expect("running");
        let waited = tokio::task::spawn_blocking(move || {
            let status = child.wait().expect("wait");
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            (status.code().expect("exited, not killed"), err)
        });
        let out = tokio::time::timeout(Duration::from_secs(10), waited)
            .await
            .expect("permitd watch exits within 10 s")
            .unwrap();
        // The reader thread ends at EOF, closing the channel.
        while let Some(line) = self.lines.recv().await {
            self.seen.push(line);
        }
        out
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `--json`: the snapshot, then a line per change showing the permits taken; other
/// prefixes are filtered out; the server's shutdown ends it with status 0.
#[tokio::test]
async fn watch_json_follows_permits() {
    let server = TestServer::start().await;
    put(
        &server,
        resource("dash:cli", vec![limit("requests", 100, HOUR, 0)], 4),
    )
    .await;
    put(
        &server,
        resource("other", vec![limit("requests", 100, HOUR, 0)], 0),
    )
    .await;
    let mut w = Watcher::start(
        &server,
        &["--json", "--prefix", "dash:", "--interval", "50ms"],
    );
    let first = w.line_with(&["\"resource\":\"dash:cli\""]).await;
    assert!(first.starts_with('{') && first.ends_with('}'), "{first}");
    assert!(first.contains("\"remaining\":100,") && first.contains("\"source\":\"config\""));
    let mut c = server.permits().await;
    for _ in 0..3 {
        assert!(
            c.acquire_permit(acquire_req("dash:cli"))
                .await
                .unwrap()
                .into_inner()
                .granted
        );
    }
    c.acquire_permit(acquire_req("other")).await.unwrap();
    let moved = w
        .line_with(&["\"resource\":\"dash:cli\"", "\"granted_total\":3,"])
        .await;
    assert!(
        moved.contains("\"remaining\":97,") && moved.contains("\"in_flight\":3,"),
        "{moved}"
    );
    assert!(moved.contains("\"concurrency\":4,"));
    server.stop().await;
    let (code, stderr) = w.exit().await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("stream ended"), "{stderr}");
    assert!(w.seen.iter().all(|l| !l.contains("\"resource\":\"other\"")));
}

/// The table: a header, one row per bucket and dimension with a text bar, in flight,
/// queued; printed without escape codes into a pipe; Ctrl-C ends it with status 0.
#[tokio::test]
async fn watch_table_and_ctrl_c() {
    let server = TestServer::start().await;
    put(
        &server,
        resource("dash:tab", vec![limit("requests", 10, HOUR, 0)], 2),
    )
    .await;
    let mut c = server.permits().await;
    for _ in 0..2 {
        assert!(
            c.acquire_permit(acquire_req("dash:tab"))
                .await
                .unwrap()
                .into_inner()
                .granted
        );
    }
    let mut w = Watcher::start(&server, &["--prefix", "dash:tab"]);
    let header = w
        .line_with(&["RESOURCE", "DIMENSION", "IN FLIGHT", "QUEUED"])
        .await;
    assert!(
        !header.contains('\x1b'),
        "no escape codes into a pipe: {header:?}"
    );
    let row = w.line_with(&["dash:tab", "requests"]).await;
    assert!(row.contains("[################....]  8/10"), "{row}");
    assert!(row.contains("2/2"), "in flight / concurrency: {row}");
    let status = Command::new("kill")
        .args(["-INT", &w.pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let (code, stderr) = w.exit().await;
    assert_eq!(code, 0, "{stderr}");
    server.stop().await;
}

/// `--partition-prefix` and `--resource-buckets-only` narrow the stream the way Watch's
/// filters do: a resource with many partitions can be watched for some users, or for its
/// shared limits alone.
#[tokio::test]
async fn watch_filters_partitions() {
    let server = TestServer::start().await;
    let mut r = resource("dash:part", vec![limit("requests", 100, HOUR, 0)], 0);
    r.per_partition = true;
    put(&server, r).await;
    put(
        &server,
        resource("dash:flat", vec![limit("requests", 100, HOUR, 0)], 0),
    )
    .await;
    let mut c = server.permits().await;
    for p in ["team-a/1", "team-a/2", "team-b/1"] {
        let mut r = acquire_req("dash:part");
        r.partition = p.into();
        assert!(c.acquire_permit(r).await.unwrap().into_inner().granted);
    }
    let mut w = Watcher::start(
        &server,
        &[
            "--json",
            "--prefix",
            "dash:",
            "--partition-prefix",
            "team-a/",
        ],
    );
    w.line_with(&["\"partition\":\"team-a/1\""]).await;
    w.line_with(&["\"partition\":\"team-a/2\""]).await;
    // A change to team-b/1, then one to team-a/1: the latter arrives, the former never.
    for p in ["team-b/1", "team-a/1"] {
        let mut r = acquire_req("dash:part");
        r.partition = p.into();
        c.acquire_permit(r).await.unwrap();
    }
    w.line_with(&["\"partition\":\"team-a/1\"", "\"granted_total\":2,"])
        .await;
    assert!(
        w.seen.iter().all(|l| !l.contains("team-b/")),
        "{:?}",
        w.seen
    );
    assert!(
        w.seen.iter().all(|l| !l.contains("dash:flat")),
        "{:?}",
        w.seen
    );

    let mut shared = Watcher::start(
        &server,
        &["--json", "--prefix", "dash:", "--resource-buckets-only"],
    );
    shared.line_with(&["\"resource\":\"dash:flat\""]).await;
    c.acquire_permit(acquire_req("dash:flat")).await.unwrap();
    let mut r = acquire_req("dash:part");
    r.partition = "team-a/3".into();
    c.acquire_permit(r).await.unwrap();
    c.acquire_permit(acquire_req("dash:flat")).await.unwrap();
    shared
        .line_with(&["\"resource\":\"dash:flat\"", "\"granted_total\":2,"])
        .await;
    assert!(
        shared
            .seen
            .iter()
            .all(|l| !l.contains("\"partition\":\"team")),
        "{:?}",
        shared.seen
    );
    server.stop().await;
    for mut w in [w, shared] {
        let (code, stderr) = w.exit().await;
        assert_eq!(code, 0, "{stderr}");
    }
}
