//! The benchmark subcommands of the real binary, briefly, against the test server: the batch
//! phase of `permitd bench` and every mode of `permitd bench-coord` run and print their JSON
//! line. Figures are not asserted here (a loaded debug build says little); the commands'
//! own targets are checked by reading their output in `scripts/bench.sh`.

use std::process::Command;
use std::time::Duration;

use crate::support::TestServer;

/// Run `permitd ARGS --server URL` off the runtime (the in-process server keeps serving),
/// bounded by 60 s; returns (exit code, stdout).
async fn run(server: &TestServer, args: &[&str]) -> (i32, String) {
    let mut all: Vec<String> = args.iter().map(|&s| s.to_owned()).collect();
    all.extend(["--server".to_owned(), server.url()]);
    let task = tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_permitd"))
            .args(&all)
            .env_remove("PERMITD_SERVER")
            .output()
            .expect("run permitd");
        (
            out.status.code().expect("exited, not killed"),
            String::from_utf8(out.stdout).expect("utf-8"),
        )
    });
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the bench ends within 60 s")
        .unwrap()
}

/// The batch phase counts permits and compares itself with the unary grant phase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_batch_phase() {
    let server = TestServer::start().await;
    let (code, out) = run(
        &server,
        &[
            "bench",
            "--phases",
            "grant,batch",
            "--batch",
            "20",
            "--concurrency",
            "4",
            "--connections",
            "2",
            "--duration",
            "400ms",
            "--rounds",
            "1",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let line = out.lines().last().unwrap();
    println!("RESULT bench_batch {line}");
    assert!(line.contains("\"batch\":{\"rps\":"), "{line}");
    assert!(line.contains("\"batch_size\":20"), "{line}");
    assert!(line.contains("\"batch_vs_grant_rps\":"), "{line}");
    assert_eq!(
        line.matches("\"errors\":0,").count(),
        2,
        "no failed call: {line}"
    );
    let (code, _) = run(&server, &["bench", "--batch", "1001", "--duration", "1s"]).await;
    assert_eq!(code, 1, "--batch above 1000 is refused");
    server.stop().await;
}

/// The bare floor (`examples/floor.rs`, built by `scripts/test.sh` first): its own
/// process on a free port, measured in the same rounds as permitd's phases, with every
/// phase given against it; the floor phase without a floor server is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_against_the_bare_floor() {
    let server = TestServer::start().await;
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_permitd"))
        .parent()
        .expect("target dir")
        .join("examples/floor");
    assert!(
        exe.exists(),
        "{} is missing: `cargo build --example floor` (scripts/test.sh does)",
        exe.display()
    );
    let port = crate::spawned::free_port();
    let mut floor = Command::new(&exe)
        .arg(format!("127.0.0.1:{port}"))
        .spawn()
        .expect("start the floor server");
    let url = format!("http://127.0.0.1:{port}");
    // Serving once Health answers SERVING (bounded).
    let channel = tonic::transport::Channel::from_shared(url.clone())
        .expect("url")
        .connect_lazy();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut up = false;
    for _ in 0..500 {
        let req = tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        };
        if health
            .check(req)
            .await
            .is_ok_and(|r| r.into_inner().status == 1)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(up, "the floor server serves");
    let pid = floor.id().to_string();
    // The test server runs in this process.
    let own = std::process::id().to_string();
    let (code, out) = run(
        &server,
        &[
            "bench",
            "--phases",
            "health,grant",
            "--floor-server",
            &url,
            "--floor-pid",
            &pid,
            "--server-pid",
            &own,
            "--concurrency",
            "4",
            "--connections",
            "2",
            "--duration",
            "400ms",
            "--rounds",
            "2",
            "--json",
        ],
    )
    .await;
    let _ = floor.kill();
    let _ = floor.wait();
    assert_eq!(code, 0, "{out}");
    let line = out.lines().last().unwrap();
    println!("RESULT bench_floor {line}");
    assert!(line.contains("\"floor\":{\"rps\":"), "{line}");
    // The floor's own CPU was read (its pid), and grant is given against it.
    let floor_part = &line[line.find("\"floor\":").unwrap()..];
    assert!(!floor_part.starts_with("\"floor\":{\"rps\":0,"), "{line}");
    assert!(
        floor_part.contains("\"ratio_rps_bare\":1.000,\"ratio_cpu_bare\":1.000"),
        "{line}"
    );
    let grant = &line[line.find("\"grant\":").unwrap()..];
    assert!(!grant.contains("\"ratio_cpu_bare\":null"), "{line}");
    assert_eq!(line.matches("\"errors\":0,").count(), 3, "{line}");
    let (code, _) = run(&server, &["bench", "--phases", "floor", "--duration", "1s"]).await;
    assert_eq!(code, 1, "the floor phase needs --floor-server");
    server.stop().await;
}

/// Every mode of the coordination benchmark runs against its own upstream and reports
/// calls, 429s, the refused share and the utilisation of the upstream, one JSON line each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_coord_modes() {
    let server = TestServer::start().await;
    let modes = ["known", "high", "low", "bare", "naive"];
    let (code, out) = run(
        &server,
        &[
            "bench-coord",
            "--duration",
            "1s",
            "--workers",
            "4",
            "--rate",
            "20",
            "--modes",
            &modes.join(","),
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    for mode in modes {
        let line = out
            .lines()
            .find(|l| l.starts_with('{') && l.contains(&format!("\"mode\":\"{mode}\"")))
            .unwrap_or_else(|| panic!("a JSON line for {mode}: {out}"));
        println!("RESULT bench_coord {line}");
        assert!(line.contains("\"utilisation\":"), "{line}");
        assert!(out.lines().any(|l| l.starts_with(mode)), "table row {mode}");
        if mode == "naive" {
            assert!(line.contains("\"target_met\":null"), "{line}");
        }
    }
    server.stop().await;
}
