//! GetSummary, ListPartitions and WatchSummaries over a real connection, and Watch's
//! partition filters: what a person or a tool reads of a resource with many partitions.

use std::collections::HashMap;
use std::time::Duration;

use permitd::proto;
use tokio_stream::StreamExt;

use crate::support::{TestServer, acquire_req, dur, limit, put, resource};

const HOUR: Duration = Duration::from_secs(3600);

/// A per-partition resource of 10 requests an hour per partition, with permits taken:
/// `user:0` 9 (near empty), `user:1` 5, `team:a` 1, `user:2` 10 and one denial.
async fn busy(server: &TestServer) {
    let mut r = resource("s:p", vec![limit("requests", 10, HOUR, 0)], 0);
    r.per_partition = true;
    put(server, r).await;
    put(
        server,
        resource("s:flat", vec![limit("requests", 100, HOUR, 0)], 0),
    )
    .await;
    let mut c = server.permits().await;
    for (p, n) in [("user:0", 9), ("user:1", 5), ("team:a", 1), ("user:2", 11)] {
        for _ in 0..n {
            c.acquire_permit(proto::AcquirePermitRequest {
                partition: p.into(),
                ..acquire_req("s:p")
            })
            .await
            .expect("acquire");
        }
    }
    c.acquire_permit(acquire_req("s:flat"))
        .await
        .expect("acquire");
}

fn names(v: &[proto::QuotaUpdate]) -> Vec<&str> {
    v.iter().map(|u| u.partition.as_str()).collect()
}

#[tokio::test]
async fn summary_and_pages() {
    let server = TestServer::start().await;
    busy(&server).await;
    let mut q = server.quotas().await;
    let s = q
        .get_summary(proto::GetSummaryRequest {
            resource: "s:p".into(),
            partition_prefix: String::new(),
            top: 3,
        })
        .await
        .expect("summary")
        .into_inner();
    assert!(s.per_partition);
    assert_eq!(s.resource, "s:p");
    assert!(
        s.resource_bucket.is_none(),
        "no shared limits, no shared bucket"
    );
    assert_eq!(
        (
            s.live_partitions,
            s.granted_total,
            s.denied_total,
            s.in_flight
        ),
        (4, 25, 1, 25)
    );
    assert_eq!(s.near_empty, 2, "user:0 (1 of 10 left) and user:2 (none)");
    assert!((s.near_empty_share - 0.5).abs() < 1e-9);
    assert_eq!(names(&s.top), ["user:2", "user:0", "user:1"]);
    assert_eq!(s.top[0].dimensions[0].remaining, 0);
    assert_eq!(s.top[0].denied_total, 1);

    let users = q
        .get_summary(proto::GetSummaryRequest {
            resource: "s:p".into(),
            partition_prefix: "user:".into(),
            top: 0,
        })
        .await
        .expect("summary")
        .into_inner();
    assert_eq!((users.live_partitions, users.granted_total), (3, 24));
    assert_eq!(names(&users.top), ["user:2", "user:0", "user:1"]);

    // A resource without partitions: its bucket is the summary.
    let flat = q
        .get_summary(proto::GetSummaryRequest {
            resource: "s:flat".into(),
            ..Default::default()
        })
        .await
        .expect("summary")
        .into_inner();
    assert!(!flat.per_partition);
    assert_eq!(flat.live_partitions, 0);
    assert_eq!(flat.resource_bucket.expect("bucket").granted_total, 1);

    // Pages, by name and by pressure, each order with its own tokens.
    let page = |order: proto::PartitionOrder, token: &str| proto::ListPartitionsRequest {
        resource: "s:p".into(),
        partition_prefix: String::new(),
        order: order as i32,
        page_size: 2,
        page_token: token.into(),
    };
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let p = q
            .list_partitions(page(proto::PartitionOrder::Name, &token))
            .await
            .expect("page")
            .into_inner();
        assert_eq!(p.total, 4);
        all.extend(p.partitions.iter().map(|u| u.partition.clone()));
        if p.next_page_token.is_empty() {
            break;
        }
        token = p.next_page_token;
    }
    assert_eq!(all, ["team:a", "user:0", "user:1", "user:2"]);
    let first = q
        .list_partitions(page(proto::PartitionOrder::Pressure, ""))
        .await
        .expect("page")
        .into_inner();
    assert_eq!(names(&first.partitions), ["user:2", "user:0"]);
    let second = q
        .list_partitions(page(
            proto::PartitionOrder::Pressure,
            &first.next_page_token,
        ))
        .await
        .expect("page")
        .into_inner();
    assert_eq!(names(&second.partitions), ["user:1", "team:a"]);
    assert!(second.next_page_token.is_empty());

    // Bad input names its field; an unknown resource is NOT_FOUND.
    let e = q
        .list_partitions(page(proto::PartitionOrder::Name, &first.next_page_token))
        .await
        .expect_err("a pressure token in name order");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("page_token"), "{}", e.message());
    let e = q
        .get_summary(proto::GetSummaryRequest {
            resource: "s:p".into(),
            partition_prefix: "a\nb".into(),
            top: 1,
        })
        .await
        .expect_err("bad prefix");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("partition_prefix"), "{}", e.message());
    let e = q
        .get_summary(proto::GetSummaryRequest {
            resource: "s:nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = q
        .list_partitions(proto::ListPartitionsRequest {
            resource: "s:p".into(),
            order: 9,
            ..Default::default()
        })
        .await
        .expect_err("unknown order");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("order"), "{}", e.message());
}

#[tokio::test]
async fn watch_summaries_follow_changes() {
    let server = TestServer::start().await;
    busy(&server).await;
    let mut q = server.quotas().await;
    let mut s = q
        .watch_summaries(proto::WatchSummariesRequest {
            resource_prefix: "s:".into(),
            partition_prefix: String::new(),
            top: 2,
            min_interval: Some(dur(Duration::from_millis(250))),
        })
        .await
        .expect("watch")
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .expect("a summary in time")
            .expect("open")
            .expect("a summary")
    };
    let mut seen: HashMap<String, proto::ResourceSummary> = HashMap::new();
    while seen.len() < 2 {
        let m = next().await;
        seen.insert(m.resource.clone(), m);
    }
    assert_eq!(seen["s:p"].live_partitions, 4);
    assert_eq!(names(&seen["s:p"].top), ["user:2", "user:0"]);
    assert!(seen["s:flat"].resource_bucket.is_some());
    // A new partition under more pressure than any: the next summary shows it first.
    let mut c = server.permits().await;
    for _ in 0..12 {
        c.acquire_permit(proto::AcquirePermitRequest {
            partition: "user:9".into(),
            ..acquire_req("s:p")
        })
        .await
        .expect("acquire");
    }
    let m = loop {
        let m = next().await;
        if m.resource == "s:p" && m.live_partitions == 5 {
            break m;
        }
    };
    assert_eq!(m.top[0].partition, "user:9");
    assert_eq!(m.top[0].denied_total, 2);
    assert_eq!(m.denied_total, 3);
}

/// Watch's filters: a partition prefix, and resource-wide buckets only.
#[tokio::test]
async fn watch_partition_filters() {
    let server = TestServer::start().await;
    busy(&server).await;
    let mut q = server.quotas().await;
    let first = async |q: &mut proto::quotas_client::QuotasClient<_>, req| {
        let mut s = q.watch(req).await.expect("watch").into_inner();
        let mut got = Vec::new();
        // The snapshot comes at once; nothing changes meanwhile, so a pause ends it.
        while let Ok(Some(Ok(u))) = tokio::time::timeout(Duration::from_millis(500), s.next()).await
        {
            got.push(format!("{}/{}", u.resource, u.partition));
        }
        got.sort();
        got
    };
    let users = first(
        &mut q,
        proto::WatchRequest {
            resource_prefix: "s:".into(),
            partition_prefix: "user:".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(users, ["s:p/user:0", "s:p/user:1", "s:p/user:2"]);
    let shared = first(
        &mut q,
        proto::WatchRequest {
            resource_prefix: "s:".into(),
            resource_buckets_only: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(shared, ["s:flat/"]);
}
