//! Store faults on a real small filesystem: a tmpfs of a few MiB that this test mounts
//! (root, as in CI) under the data directory of the real binary. Writes of completed
//! idempotency results fill it until the disk says ENOSPC. What must hold: the client
//! whose write was not made durable gets an error (never OK), the server turns
//! NOT_SERVING, logs the cause, and exits 1 for its supervisor; and every result it
//! acknowledged is there, byte for byte, when the data directory is opened again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use permitd::proto;
use permitd::proto::idempotency_client::IdempotencyClient;

use crate::spawned::Spawned;

/// A tmpfs of `mib` MiB mounted at a fresh directory, unmounted on drop.
struct SmallFs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(mib: u32) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a {mib} MiB tmpfs failed (the test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { path, _dir: dir }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(ok.success());
}

fn body(i: usize) -> Vec<u8> {
    // Distinct per key and not compressible into nothing.
    let mut v = Vec::with_capacity(64 << 10);
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < 64 << 10 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

#[tokio::test]
async fn a_full_disk_fails_writes_stops_serving_and_loses_nothing_acknowledged() {
    let fs = SmallFs::mount(6);
    let data = fs.path.join("data");
    let log = fs._dir.path().join("permitd.log");
    let mut server = Spawned::start(&data, None, &log)
        .await
        .unwrap_or_else(|e| panic!("permitd did not start:\n{}", e.log));
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel());
    let mut statuses = health
        .watch(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health watch")
        .into_inner();
    let mut idem = IdempotencyClient::new(server.channel());
    let mut acked = Vec::new();
    let mut failure = None;
    // 6 MiB holds well under 200 results of 64 KiB: bounded.
    for i in 0..200 {
        let key = format!("order-{i}");
        let begun = idem
            .begin(proto::BeginRequest {
                key: key.clone(),
                fingerprint: "f".into(),
                ..Default::default()
            })
            .await;
        let token = match begun {
            Ok(b) => b.into_inner().lock_token,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        let done = idem
            .complete(proto::CompleteRequest {
                key: key.clone(),
                result: Some(proto::StoredResult {
                    status_code: 200,
                    body: body(i),
                    ..Default::default()
                }),
                lock_token: token,
            })
            .await;
        match done {
            Ok(_) => acked.push(i),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("the disk never filled");
    assert!(
        matches!(
            failure.code(),
            tonic::Code::Unavailable | tonic::Code::Internal
        ),
        "{failure:?}"
    );
    // Health says NOT_SERVING before the process goes.
    let not_serving = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(s)) = statuses.message().await {
            if s.status == 2 {
                return true;
            }
        }
        false
    })
    .await
    .expect("health changed within 10 s");
    assert!(not_serving, "the health stream ended without NOT_SERVING");
    let status = server
        .exited(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the server did not exit:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    assert_eq!(status.code(), Some(1), "exit status");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("No space left on device") || text.contains("os error 28"),
        "the cause is logged:\n{text}"
    );
    let faults = text.matches("stopping for the supervisor").count();
    assert_eq!(faults, 1, "the fault is logged once:\n{text}");
    // Nothing acknowledged is lost: the same directory, copied to a roomy disk, has every
    // acknowledged result byte for byte.
    let roomy = tempfile::tempdir().expect("tempdir");
    copy_dir(&data, roomy.path());
    let copied = roomy.path().join("data");
    let log2 = roomy.path().join("reopen.log");
    let reopened = Spawned::start(&copied, None, &log2)
        .await
        .unwrap_or_else(|e| panic!("the data directory did not reopen:\n{}", e.log));
    let mut idem = IdempotencyClient::new(reopened.channel());
    for &i in &acked {
        let got = idem
            .get(proto::GetRequest {
                key: format!("order-{i}"),
            })
            .await
            .unwrap_or_else(|e| panic!("acknowledged order-{i} lost: {e:?}"))
            .into_inner();
        let result = got.result.expect("completed");
        assert!(result.body == body(i), "order-{i} came back changed");
    }
    println!(
        "RESULT faults fs=tmpfs-6MiB acknowledged={} failed_call={:?} exit={:?} fault_lines={faults} reopened_all_acknowledged=true",
        acked.len(),
        failure.code(),
        status.code()
    );
    assert!(
        !acked.is_empty(),
        "nothing was written before the disk filled"
    );
}
