//! The real `permitd` binary as a client of the test server: exit statuses, what it prints
//! on stdout and stderr, and reading resources from TOML on stdin.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::TestServer;

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run `permitd ARGS` (with `stdin` piped in when given) off the async runtime, so the
/// in-process server keeps serving. Bounded by the binary's own `--timeout` and by 30 s.
async fn permitd(args: &[&str], stdin: Option<&str>) -> Run {
    let args: Vec<String> = args.iter().map(|&s| s.to_owned()).collect();
    let stdin = stdin.map(str::to_owned);
    let run = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_permitd"))
            .args(&args)
            .env_remove("PERMITD_SERVER")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn permitd");
        if let Some(text) = stdin {
            // Dropping the handle closes stdin, so the binary sees EOF.
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(text.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().expect("wait permitd");
        Run {
            code: out.status.code().expect("exited, not killed"),
            stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
        }
    });
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("permitd exits within 30 s")
        .unwrap()
}

/// `permitd SUBCOMMAND ... --server URL --timeout 5s`.
async fn client(server: &TestServer, args: &[&str], stdin: Option<&str>) -> Run {
    let url = server.url();
    let mut all = args.to_vec();
    all.extend(["--server", url.as_str(), "--timeout", "5s"]);
    permitd(&all, stdin).await
}

/// The value of `"key":"..."` in a one-line JSON object (permit ids hold no quotes).
fn json_string<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// The cells of the first table row whose first cell is `first`.
fn table_row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{text}"))
}

/// A full client session: `resources put -` from stdin (a single-resource snippet and a
/// `[[resources]]` document), `resources list`, `acquire` granted twice then denied (exit
/// 3, with retry_after), `acquire --json`, `release` (then NOT_FOUND, exit 1), `quota`.
#[tokio::test]
async fn cli_session_against_the_server() {
    let server = TestServer::start().await;

    let snippet = "name = \"cli:two\"\nlimits_known = true\n\n[[limits]]\ndimension = \"requests\"\namount = 2\nperiod = \"1m\"\n";
    let r = client(&server, &["resources", "put", "-"], Some(snippet)).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "created cli:two\n");
    let doc = "[[resources]]\nname = \"cli:many\"\nconcurrency = 5\nlimits_known = true\n\n[[resources.limits]]\n\
               dimension = \"requests\"\namount = 100\nperiod = \"1h\"\n";
    let r = client(&server, &["resources", "put", "-"], Some(doc)).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, "created cli:many\n");

    let r = client(&server, &["resources", "list"], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    // NAME, LIMITS ("requests 2/1m", then the stored burst), CONCURRENCY, ...
    let two = table_row(&r.stdout, "cli:two");
    assert_eq!(two[1..3], ["requests", "2/1m"], "{}", r.stdout);
    assert!(two.contains(&"unlimited"), "{}", r.stdout);
    let many = table_row(&r.stdout, "cli:many");
    assert_eq!(many[1..3], ["requests", "100/1h"], "{}", r.stdout);
    assert!(many.contains(&"5"), "{}", r.stdout);

    for i in 1..=2 {
        let r = client(&server, &["acquire", "cli:two"], None).await;
        assert_eq!(r.code, 0, "call {i}: {r:?}");
        assert!(r.stdout.starts_with("granted\n"), "{}", r.stdout);
        let remaining = format!("requests={}", 2 - i);
        assert!(r.stdout.contains(&remaining), "{}", r.stdout);
    }
    let r = client(&server, &["acquire", "cli:two"], None).await;
    assert_eq!(r.code, 3, "denied is exit 3: {r:?}");
    assert!(r.stdout.starts_with("denied\n"), "{}", r.stdout);
    let reason = table_row(&r.stdout, "reason:");
    assert_eq!(reason[1], "rate_limited");
    let retry = table_row(&r.stdout, "retry_after:");
    let retry = humantime::parse_duration(&retry[1..].join(" ")).expect("a duration");
    // 2 per minute: the next token is at most 30 s away, and never zero on a denial.
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(30),
        "{retry:?}"
    );

    let r = client(&server, &["acquire", "cli:many", "--json"], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.lines().count(), 1, "one JSON line: {}", r.stdout);
    let line = r.stdout.trim_end();
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    assert!(line.contains("\"granted\":true"), "{line}");
    assert!(line.contains("\"remaining\":{\"requests\":99}"), "{line}");
    let id = json_string(line, "permit_id")
        .expect("permit_id")
        .to_owned();

    let r = client(&server, &["release", &id], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, format!("released {id}\n"));
    let r = client(&server, &["release", &id], None).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("NOT_FOUND"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);

    let r = client(&server, &["quota", "cli:two"], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    let dim = table_row(&r.stdout, "requests");
    assert_eq!(
        (dim[1], dim[2]),
        ("0", "2"),
        "remaining 0 of 2:\n{}",
        r.stdout
    );
    assert_eq!(table_row(&r.stdout, "granted_total:")[1], "2");
    assert_eq!(table_row(&r.stdout, "denied_total:")[1], "1");
    let r = client(&server, &["quota", "cli:many"], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        table_row(&r.stdout, "in_flight:")[1..],
        ["0", "of", "5"],
        "released"
    );

    let r = client(&server, &["acquire", "cli:nothere"], None).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.starts_with("error: NOT_FOUND: "), "{}", r.stderr);
    println!(
        "RESULT cli session=ok denied_exit=3 retry_after_ms={}",
        retry.as_millis()
    );
    server.stop().await;
}

/// `acquire` against a port nobody listens on exits 1 with one `error:` line on stderr
/// and nothing on stdout.
#[tokio::test]
async fn cli_closed_port_is_one_line_error() {
    // Bind then drop: the port is known and (for the moment) closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let r = permitd(
        &["acquire", "any", "--server", &url, "--timeout", "3s"],
        None,
    )
    .await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{:?}", r.stderr);
    assert!(
        r.stderr
            .starts_with(&format!("error: cannot connect to {url}")),
        "{}",
        r.stderr
    );
}

/// `permitd summary`: totals over a per-partition resource's partitions and the ones under
/// most pressure first; `--all` pages through every partition (by name, or by pressure).
#[tokio::test]
async fn cli_summary_and_partitions() {
    let server = TestServer::start().await;
    let mut r = crate::support::resource(
        "cli:users",
        vec![crate::support::limit(
            "requests",
            4,
            std::time::Duration::from_secs(3600),
            0,
        )],
        0,
    );
    r.per_partition = true;
    crate::support::put(&server, r).await;
    let mut c = server.permits().await;
    // 1500 partitions (more than one page) with a grant each; u:7 empty and denied once.
    for start in (0..1500).step_by(500) {
        let requests = (start..start + 500)
            .map(|i| {
                let mut r = crate::support::acquire_req("cli:users");
                r.partition = format!("u:{i}");
                r
            })
            .collect();
        c.acquire_permits(permitd::proto::AcquirePermitsRequest { requests })
            .await
            .unwrap();
    }
    for _ in 0..4 {
        let mut r = crate::support::acquire_req("cli:users");
        r.partition = "u:7".into();
        c.acquire_permit(r).await.unwrap();
    }
    let r = client(&server, &["summary", "cli:users", "--top", "3"], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(table_row(&r.stdout, "partitions:")[1], "1500");
    assert_eq!(table_row(&r.stdout, "granted:")[1], "1503");
    assert_eq!(table_row(&r.stdout, "denied:")[1], "1");
    // The top table: u:7 first (empty, denied), three rows.
    let top: Vec<&str> = r
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("PARTITION"))
        .skip(1)
        .collect();
    assert_eq!(top.len(), 3, "{}", r.stdout);
    assert!(top[0].starts_with("u:7 "), "{}", r.stdout);
    assert_eq!(table_row(&r.stdout, "u:7")[2], "0/4");
    let all = client(&server, &["summary", "cli:users", "--all"], None).await;
    assert_eq!(all.code, 0, "{all:?}");
    let names: Vec<&str> = all
        .stdout
        .lines()
        .filter(|l| l.starts_with("u:"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut want: Vec<String> = (0..1500).map(|i| format!("u:{i}")).collect();
    want.sort();
    assert_eq!(names, want, "every partition once, in name order");
    let pressed = client(
        &server,
        &[
            "summary",
            "cli:users",
            "--all",
            "--by-pressure",
            "--partition-prefix",
            "u:7",
        ],
        None,
    )
    .await;
    let first = pressed.stdout.lines().find(|l| l.starts_with("u:"));
    assert!(
        first.is_some_and(|l| l.starts_with("u:7 ")),
        "{}",
        pressed.stdout
    );
    assert_eq!(table_row(&pressed.stdout, "partitions:")[1], "111");
    let r = client(&server, &["summary", "cli:nothere"], None).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.starts_with("error: NOT_FOUND: "), "{}", r.stderr);
    server.stop().await;
}
