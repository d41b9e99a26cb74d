//! Run-time administration over the real server: PutResource / ListResources /
//! GetQuota / DeleteResource, persistence of run-time definitions across a restart on the
//! same data directory, and resources declared in the config file.

use std::time::{Duration, Instant};

use permitd::config::Config;
use permitd::proto;
use tonic::Code;

use crate::support::{
    TestServer, acquire_req, dur, from_dur, limit, put, resource, wait_queue_depth,
};

async fn list_all(server: &TestServer, prefix: &str) -> Vec<proto::Resource> {
    server
        .quotas()
        .await
        .list_resources(proto::ListResourcesRequest {
            prefix: prefix.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .resources
}

/// PutResource answers the resource as stored, defaults filled in (lease 60 s, max_queue
/// 1 000, learn_from_headers true, burst = amount, backoff defaults), and `replaced` is
/// false for a new name and true for the second put of the same name.
#[tokio::test]
async fn put_fills_defaults_and_reports_replaced() {
    let server = TestServer::start().await;
    let mut q = server.quotas().await;
    let r = resource(
        "adm:defaults",
        vec![limit("requests", 7, Duration::from_secs(60), 0)],
        0,
    );
    let first = q
        .put_resource(proto::PutResourceRequest {
            resource: Some(r.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replaced);
    let stored = first.resource.unwrap();
    assert_eq!(stored.name, "adm:defaults");
    assert_eq!(
        from_dur(stored.lease.as_ref().unwrap()),
        Duration::from_secs(60)
    );
    assert_eq!(stored.max_queue, 1000);
    assert_eq!(stored.learn_from_headers, Some(true));
    assert_eq!(stored.limits.len(), 1);
    assert_eq!(stored.limits[0].burst, 7, "burst 0 is stored as the amount");
    let b = stored.backoff.as_ref().unwrap();
    assert_eq!(b.kind, proto::BackoffKind::FullJitter as i32);
    assert_eq!(
        from_dur(b.base.as_ref().unwrap()),
        Duration::from_millis(500)
    );
    assert_eq!(b.max_attempts, 6);

    let second = q
        .put_resource(proto::PutResourceRequest { resource: Some(r) })
        .await
        .unwrap()
        .into_inner();
    assert!(second.replaced);
    assert_eq!(
        second.resource.as_ref(),
        Some(&stored),
        "same input, same stored form"
    );
    // What ListResources shows is what PutResource answered.
    assert_eq!(list_all(&server, "adm:").await, [stored]);
    server.stop().await;
}

/// 25 resources, page_size 10: three pages of 10, 10 and 5 in name order, the last with an
/// empty next_page_token; the prefix keeps other names out.
#[tokio::test]
async fn list_pages_in_name_order_with_prefix() {
    let server = TestServer::start().await;
    let lim = || vec![limit("requests", 1, Duration::from_secs(1), 0)];
    // Defined out of order, with neighbours on both sides of the prefix.
    for i in (0..25).rev() {
        put(&server, resource(&format!("page:{i:02}"), lim(), 0)).await;
    }
    for other in ["pag", "pagez", "other:1", "page"] {
        put(&server, resource(other, lim(), 0)).await;
    }
    let mut q = server.quotas().await;
    let mut token = String::new();
    let mut pages = Vec::new();
    loop {
        let page = q
            .list_resources(proto::ListResourcesRequest {
                prefix: "page:".into(),
                page_size: 10,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        pages.push(
            page.resources
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>(),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages.len() < 10, "paging never ends");
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
    let all: Vec<String> = pages.concat();
    let want: Vec<String> = (0..25).map(|i| format!("page:{i:02}")).collect();
    assert_eq!(all, want);
    // Page size 0 means the default (100): everything in one page, all names sorted.
    let everything = list_all(&server, "").await;
    let names: Vec<&str> = everything.iter().map(|r| r.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    assert_eq!(names.len(), 29);
    server.stop().await;
}

/// GetQuota of a partition never used shows the full limit and zero counters, and reading
/// it takes nothing: the first acquire in that partition then sees limit - 1.
#[tokio::test]
async fn get_quota_of_a_fresh_partition() {
    let server = TestServer::start().await;
    let mut r = resource(
        "adm:pp",
        vec![limit("requests", 5, Duration::from_secs(3600), 0)],
        2,
    );
    r.per_partition = true;
    put(&server, r).await;
    let mut q = server.quotas().await;
    for _ in 0..3 {
        let u = q
            .get_quota(proto::GetQuotaRequest {
                resource: "adm:pp".into(),
                partition: "user:fresh".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(u.partition, "user:fresh");
        assert_eq!(u.dimensions.len(), 1);
        assert_eq!(u.dimensions[0].dimension, "requests");
        assert_eq!((u.dimensions[0].limit, u.dimensions[0].remaining), (5, 5));
        assert_eq!((u.in_flight, u.concurrency, u.queue_depth), (0, 2, 0));
        assert_eq!((u.granted_total, u.denied_total), (0, 0));
    }
    let mut req = acquire_req("adm:pp");
    req.partition = "user:fresh".into();
    let a = server
        .permits()
        .await
        .acquire_permit(req)
        .await
        .unwrap()
        .into_inner();
    assert!(a.granted);
    assert_eq!(a.remaining.get("requests"), Some(&4));
    server.stop().await;
}

/// DeleteResource answers a queued waiter at once with NOT_FOUND; afterwards acquire and
/// GetQuota are NOT_FOUND, the list no longer has it, and a second delete is NOT_FOUND.
#[tokio::test]
async fn delete_answers_waiters_then_not_found() {
    let server = TestServer::start().await;
    put(
        &server,
        resource(
            "adm:del",
            vec![limit("requests", 1, Duration::from_secs(3600), 0)],
            0,
        ),
    )
    .await;
    let mut p = server.permits().await;
    assert!(
        p.acquire_permit(acquire_req("adm:del"))
            .await
            .unwrap()
            .into_inner()
            .granted
    );
    let mut waiter = server.permits().await;
    let queued = tokio::spawn(async move {
        let mut req = acquire_req("adm:del");
        req.max_wait = Some(dur(Duration::from_secs(30)));
        let t = Instant::now();
        (waiter.acquire_permit(req).await, t.elapsed())
    });
    wait_queue_depth(&server, "adm:del", "", 1).await;
    let mut q = server.quotas().await;
    q.delete_resource(proto::DeleteResourceRequest {
        name: "adm:del".into(),
    })
    .await
    .unwrap();
    let (res, waited) = tokio::time::timeout(Duration::from_secs(5), queued)
        .await
        .expect("the waiter is answered at once")
        .unwrap();
    assert_eq!(res.unwrap_err().code(), Code::NotFound);
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    let e = p.acquire_permit(acquire_req("adm:del")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = q
        .get_quota(proto::GetQuotaRequest {
            resource: "adm:del".into(),
            partition: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(list_all(&server, "adm:").await.is_empty());
    let e = q
        .delete_resource(proto::DeleteResourceRequest {
            name: "adm:del".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    server.stop().await;
}

/// Restart keeps run-time resources: put two (one of them twice, changed), delete one,
/// stop, start again on the same data directory: exactly the kept one is listed, with its
/// last definition, and it grants under those limits.
#[tokio::test]
async fn restart_keeps_run_time_resources() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await;
    let hour = Duration::from_secs(3600);
    put(
        &server,
        resource("adm:gone", vec![limit("requests", 9, hour, 0)], 0),
    )
    .await;
    put(
        &server,
        resource("adm:kept", vec![limit("requests", 1, hour, 0)], 0),
    )
    .await;
    let mut kept = resource(
        "adm:kept",
        vec![
            limit("requests", 3, hour, 0),
            limit("tokens", 500, Duration::from_secs(60), 100),
        ],
        2,
    );
    kept.per_partition = true;
    kept.lease = Some(dur(Duration::from_secs(5)));
    kept.max_queue = 7;
    kept.learn_from_headers = Some(false);
    kept.dimensions = vec!["input_tokens".into()];
    let stored = server
        .quotas()
        .await
        .put_resource(proto::PutResourceRequest {
            resource: Some(kept),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stored.replaced);
    let stored = stored.resource.unwrap();
    server
        .quotas()
        .await
        .delete_resource(proto::DeleteResourceRequest {
            name: "adm:gone".into(),
        })
        .await
        .unwrap();
    let data_dir = server.data_dir.clone();
    let drain = server.stop().await;
    assert!(drain < Duration::from_secs(5), "{drain:?}");

    let server = TestServer::start_in(&data_dir).await;
    assert_eq!(
        list_all(&server, "").await,
        [stored],
        "exactly the kept one, unchanged"
    );
    let mut p = server.permits().await;
    let mut req = acquire_req("adm:kept");
    req.partition = "u:1".into();
    req.cost = [("tokens".to_owned(), 100u64)].into();
    let a = p.acquire_permit(req.clone()).await.unwrap().into_inner();
    assert!(a.granted);
    assert_eq!(a.remaining.get("requests"), Some(&2));
    assert_eq!(
        a.remaining.get("tokens"),
        Some(&0),
        "burst 100 survived the restart"
    );
    req.cost.clear();
    req.cost.insert("tokens".into(), 101);
    let e = p.acquire_permit(req).await.unwrap_err();
    assert_eq!(
        e.code(),
        Code::InvalidArgument,
        "burst 100 still caps a cost"
    );
    let e = p.acquire_permit(acquire_req("adm:gone")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "the deleted one stays deleted");
    server.stop().await;
}

/// A resource declared in the config file is served from the start: listed with its
/// limits and granting, with nothing put at run time.
#[tokio::test]
async fn config_file_resource_is_served_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(Config {
        resources: vec![resource(
            "cfg:one",
            vec![limit("requests", 2, Duration::from_secs(3600), 0)],
            0,
        )],
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    })
    .await;
    let listed = list_all(&server, "").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "cfg:one");
    assert_eq!(listed[0].limits[0].amount, 2);
    let mut p = server.permits().await;
    let granted: Vec<bool> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(
                p.acquire_permit(acquire_req("cfg:one"))
                    .await
                    .unwrap()
                    .into_inner()
                    .granted,
            );
        }
        v
    };
    assert_eq!(granted, [true, true, false]);
    server.stop().await;
}
