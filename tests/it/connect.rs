//! HTTP/JSON (the Connect protocol): every unary method over curl-shaped JSON requests
//! answers what the same call over gRPC answers (one table drives both); bad requests get
//! a clear status and store nothing; Watch streams as Connect envelopes.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message as _;
use prost_reflect::DynamicMessage;
use serde_json::Value;
use tonic::codegen::http;

use crate::connect_client::{code_of, envelope, method, pool};
use crate::support::TestServer;

type Http = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A POST as curl makes it: (HTTP status, headers, body).
async fn post(
    client: &Http,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (u16, http::HeaderMap, Bytes) {
    let mut req = http::Request::post(url);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let res = client
        .request(req.body(Full::new(body.into())).expect("request"))
        .await
        .expect("HTTP call");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    (status, headers, body)
}

async fn post_json(client: &Http, url: &str, json: &str) -> (u16, Value) {
    let (status, headers, body) = post(
        client,
        url,
        &[("content-type", "application/json")],
        json.to_owned(),
    )
    .await;
    assert_eq!(
        headers.get("content-type").map(http::HeaderValue::as_bytes),
        Some(&b"application/json"[..]),
        "{url}: {body:?}"
    );
    let v = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body:?}"));
    (status, v)
}

/// An answer in a form both transports reduce to: the message as proto3 JSON, or the error's
/// code and message.
#[derive(Debug, PartialEq)]
enum Answer {
    Ok(Value),
    Err(tonic::Code, String),
}

/// One gRPC unary call with the request given as JSON (turned into its protobuf bytes).
async fn grpc_call(ch: &tonic::transport::Channel, path: &str, json: &str) -> Answer {
    use tower::ServiceExt as _;
    let pool = pool();
    let m = method(&pool, path).expect("a method");
    let mut de = serde_json::Deserializer::from_str(json);
    let req = DynamicMessage::deserialize(m.input(), &mut de).expect("request JSON");
    let bytes = req.encode_to_vec();
    let mut frame = BytesMut::new();
    frame.put_u8(0);
    frame.put_u32(u32::try_from(bytes.len()).expect("size"));
    frame.put_slice(&bytes);
    let req = http::Request::post(format!("http://127.0.0.1{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(Full::new(frame.freeze())))
        .expect("request");
    let res = ch.clone().oneshot(req).await.expect("gRPC call");
    let (parts, body) = res.into_parts();
    if let Some(s) = tonic::Status::from_header_map(&parts.headers)
        && parts.headers.contains_key("grpc-status")
    {
        return Answer::Err(s.code(), s.message().to_owned());
    }
    let collected = body.collect().await.expect("gRPC body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = tonic::Status::from_header_map(&trailers).expect("a status");
    if status.code() != tonic::Code::Ok {
        return Answer::Err(status.code(), status.message().to_owned());
    }
    let mut data = collected.to_bytes();
    data.advance(5);
    let answer = DynamicMessage::decode(m.output(), data).expect("answer");
    Answer::Ok(serde_json::to_value(&answer).expect("answer JSON"))
}

async fn connect_call(client: &Http, base: &str, path: &str, json: &str) -> Answer {
    let (status, v) = post_json(client, &format!("{base}{path}"), json).await;
    if status == 200 {
        Answer::Ok(v)
    } else {
        Answer::Err(
            code_of(v["code"].as_str().unwrap_or("")),
            v["message"].as_str().unwrap_or("").to_owned(),
        )
    }
}

/// Values that differ between two runs of the same calls (ids, clocks, rates).
fn mask(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if ["permitId", "lockToken"].contains(&k.as_str()) {
                    *v = Value::String("<id>".into());
                } else {
                    mask(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask),
        Value::String(s) => {
            let duration = s.ends_with('s')
                && s[..s.len() - 1]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.')
                && s.len() > 1;
            let timestamp = s.len() > 19 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T';
            if duration || timestamp {
                *s = "<time>".into();
            }
        }
        Value::Number(n) if n.is_f64() => *v = Value::String("<rate>".into()),
        _ => {}
    }
}

/// The calls: every unary method of every service, in an order that exercises them
/// (answers' `permitId` and `lockToken` are captured for the calls after).
const TABLE: &[(&str, &str)] = &[
    ("/grpc.health.v1.Health/Check", "{}"),
    (
        "/permitd.v1.Quotas/PutResource",
        r#"{"resource":{"name":"t:x","limits":[{"dimension":"requests","amount":"5","period":"60s"}],"limitsKnown":true,"concurrency":2}}"#,
    ),
    (
        "/permitd.v1.Quotas/PutResource",
        r#"{"resource":{"name":"t:p","limits":[{"dimension":"requests","amount":100,"period":"60s","scope":"LIMIT_SCOPE_PARTITION"}],"limitsKnown":true}}"#,
    ),
    (
        "/permitd.v1.Quotas/PutResource",
        r#"{"resource":{"name":""}}"#,
    ),
    ("/permitd.v1.Quotas/ListResources", "{}"),
    ("/permitd.v1.Quotas/GetQuota", r#"{"resource":"t:x"}"#),
    ("/permitd.v1.Quotas/GetQuota", r#"{"resource":"nope"}"#),
    (
        "/permitd.v1.Permits/AcquirePermit",
        r#"{"resource":"t:x","cost":{"requests":"1"},"maxWait":"1s"}"#,
    ),
    (
        "/permitd.v1.Permits/ReportOutcome",
        r#"{"permitId":"$permitId","statusCode":200,"headers":{"x-ratelimit-limit-requests":"5"}}"#,
    ),
    ("/permitd.v1.Permits/AcquirePermit", r#"{"resource":"t:x"}"#),
    (
        "/permitd.v1.Permits/ReleasePermit",
        r#"{"permitId":"$permitId","refund":true}"#,
    ),
    (
        "/permitd.v1.Permits/ReleasePermit",
        r#"{"permitId":"garbage"}"#,
    ),
    (
        "/permitd.v1.Permits/AcquirePermits",
        r#"{"requests":[{"resource":"t:p","partition":"u1"},{"resource":"t:p","partition":"u2"},{"resource":"nope"}]}"#,
    ),
    (
        "/permitd.v1.Permits/ComputeBackoff",
        r#"{"resource":"t:x","attempt":2,"statusCode":429,"headers":{"retry-after":"7"}}"#,
    ),
    (
        "/permitd.v1.Permits/AcquirePermit",
        r#"{"resource":"t:x","priority":-1}"#,
    ),
    (
        "/permitd.v1.Quotas/GetSummary",
        r#"{"resource":"t:p","top":5}"#,
    ),
    (
        "/permitd.v1.Quotas/ListPartitions",
        r#"{"resource":"t:p","pageSize":1,"order":"PARTITION_ORDER_NAME"}"#,
    ),
    ("/permitd.v1.Quotas/ResetResource", r#"{"name":"t:x"}"#),
    (
        "/permitd.v1.Idempotency/Begin",
        r#"{"key":"k1","fingerprint":"f","ttl":"60s"}"#,
    ),
    (
        "/permitd.v1.Idempotency/Begin",
        r#"{"key":"k1","fingerprint":"f"}"#,
    ),
    (
        "/permitd.v1.Idempotency/Complete",
        r#"{"key":"k1","lockToken":"$lockToken","result":{"statusCode":200,"body":"aGVsbG8=","headers":{"x-a":"b"}}}"#,
    ),
    ("/permitd.v1.Idempotency/Get", r#"{"key":"k1"}"#),
    (
        "/permitd.v1.Idempotency/Begin",
        r#"{"key":"k1","fingerprint":"f"}"#,
    ),
    (
        "/permitd.v1.Idempotency/Begin",
        r#"{"key":"k1","fingerprint":"other"}"#,
    ),
    (
        "/permitd.v1.Idempotency/Begin",
        r#"{"key":"k2","fingerprint":"f"}"#,
    ),
    (
        "/permitd.v1.Idempotency/Abandon",
        r#"{"key":"k2","lockToken":"$lockToken"}"#,
    ),
    (
        "/permitd.v1.Idempotency/Abandon",
        r#"{"key":"k9","lockToken":"x"}"#,
    ),
    ("/permitd.v1.Idempotency/Stats", "{}"),
    (
        "/permitd.v1.Cache/Put",
        r#"{"namespace":"n","key":"k","value":"aGk=","ttl":"60s"}"#,
    ),
    ("/permitd.v1.Cache/Get", r#"{"namespace":"n","key":"k"}"#),
    (
        "/permitd.v1.Cache/Get",
        r#"{"namespace":"n","key":"missing"}"#,
    ),
    ("/permitd.v1.Cache/Delete", r#"{"namespace":"n","key":"k"}"#),
    ("/permitd.v1.Cache/Stats", "{}"),
    ("/permitd.v1.Quotas/DeleteResource", r#"{"name":"t:x"}"#),
    ("/permitd.v1.Quotas/DeleteResource", r#"{"name":"t:x"}"#),
    (
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
        r#"{"domain":"d"}"#,
    ),
];

/// Fill `$name` placeholders from what earlier answers carried.
fn fill(json: &str, captured: &HashMap<String, String>) -> String {
    let mut out = json.to_owned();
    for (k, v) in captured {
        out = out.replace(&format!("${k}"), v);
    }
    out
}

fn capture(answer: &Answer, captured: &mut HashMap<String, String>) {
    if let Answer::Ok(Value::Object(m)) = answer {
        for k in ["permitId", "lockToken"] {
            if let Some(Value::String(v)) = m.get(k) {
                captured.insert(k.into(), v.clone());
            }
        }
    }
}

/// Every unary method, over gRPC on one server and over HTTP/JSON on a twin: the same
/// answers, call by call, once run-dependent values (ids, clocks, rates) are masked.
#[tokio::test]
async fn every_unary_method_answers_as_over_grpc() {
    let pool = pool();
    let unary: Vec<String> = pool
        .services()
        .flat_map(|s| {
            s.methods()
                .filter(|m| !m.is_client_streaming() && !m.is_server_streaming())
                .map(|m| format!("/{}/{}", s.full_name(), m.name()))
                .collect::<Vec<_>>()
        })
        .collect();
    let missing: Vec<_> = unary
        .iter()
        .filter(|p| !TABLE.iter().any(|(t, _)| t == p))
        .collect();
    assert!(missing.is_empty(), "methods without a row: {missing:?}");

    let (grpc_server, json_server) = (TestServer::start().await, TestServer::start().await);
    let ch = grpc_server.channel().await;
    let client = http_client();
    let base = format!("http://{}", json_server.addr);
    let (mut over_grpc, mut over_json) = (HashMap::new(), HashMap::new());
    let mut errors = 0;
    for (path, json) in TABLE {
        let mut a = grpc_call(&ch, path, &fill(json, &over_grpc)).await;
        let mut b = connect_call(&client, &base, path, &fill(json, &over_json)).await;
        capture(&a, &mut over_grpc);
        capture(&b, &mut over_json);
        for x in [&mut a, &mut b] {
            match x {
                Answer::Ok(v) => mask(v),
                Answer::Err(..) => {}
            }
        }
        if matches!(a, Answer::Err(..)) {
            errors += 1;
        }
        assert_eq!(a, b, "{path} {json}");
    }
    println!(
        "RESULT connect same_answers calls={} errors={errors} methods={}",
        TABLE.len(),
        unary.len()
    );
    assert!(errors >= 6, "the table exercises error answers too");
    grpc_server.stop().await;
    json_server.stop().await;
}

/// Shapes a proto3-JSON user writes by hand: camelCase or proto names in, camelCase out,
/// 64-bit integers as strings, durations as "1.5s", enums by name.
#[tokio::test]
async fn the_json_mapping_is_proto3s() {
    let server = TestServer::start().await;
    let client = http_client();
    let url = |m: &str| format!("http://{}/permitd.v1.{m}", server.addr);
    let (status, v) = post_json(
        &client,
        &url("Quotas/PutResource"),
        r#"{"resource":{"name":"j:x","limits":[{"dimension":"requests","amount":3,"period":"1.5s"}],
            "limits_known":true}}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["resource"]["limits"][0]["amount"], "3");
    assert_eq!(v["resource"]["limits"][0]["period"], "1.500s");
    assert_eq!(v["resource"]["limitsKnown"], true);
    let (status, v) = post_json(
        &client,
        &url("Permits/AcquirePermit"),
        r#"{"resource":"j:x"}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["granted"], true);
    assert!(v["permitId"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    assert_eq!(v["remaining"]["requests"], "2");
    let (_, q) = post_json(&client, &url("Quotas/GetQuota"), r#"{"resource":"j:x"}"#).await;
    assert_eq!(q["dimensions"][0]["source"], "LIMIT_SOURCE_CONFIG", "{q}");
    server.stop().await;
}

/// Malformed JSON, unknown fields, wrong types, wrong content type, oversized bodies, other
/// methods and bad protocol headers: each a clear status, naming what is wrong, and none
/// writes anything.
#[tokio::test]
async fn bad_requests_get_clear_statuses() {
    let server = TestServer::start_tuned(|c| c.max_message_bytes = 64 * 1024).await;
    let client = http_client();
    let put = format!("http://{}/permitd.v1.Quotas/PutResource", server.addr);
    let json = [("content-type", "application/json")];
    // (what, headers, body, HTTP status, code, what the message names)
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, &'a str)>,
        Bytes,
        u16,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "malformed",
            json.to_vec(),
            Bytes::from_static(b"{\"resource\":"),
            400,
            "invalid_argument",
            "request body",
        ),
        (
            "unknown field",
            json.to_vec(),
            Bytes::from_static(br#"{"resource":{"name":"b:x"},"colour":"red"}"#),
            400,
            "invalid_argument",
            "colour",
        ),
        (
            "wrong type",
            json.to_vec(),
            Bytes::from_static(br#"{"resource":{"name":"b:x","limits":"many"}}"#),
            400,
            "invalid_argument",
            "request body",
        ),
        (
            "trailing garbage",
            json.to_vec(),
            Bytes::from_static(br#"{"resource":{"name":"b:x"}} {}"#),
            400,
            "invalid_argument",
            "trailing",
        ),
        (
            "content type",
            vec![("content-type", "text/plain")],
            Bytes::from_static(b"{}"),
            415,
            "invalid_argument",
            "application/json",
        ),
        (
            "no content type",
            vec![],
            Bytes::from_static(b"{}"),
            415,
            "invalid_argument",
            "content-type",
        ),
        (
            "oversized",
            json.to_vec(),
            Bytes::from(format!(
                r#"{{"resource":{{"name":"b:x","description":"{}"}}}}"#,
                "x".repeat(1 << 20)
            )),
            429,
            "resource_exhausted",
            "max_message_bytes",
        ),
        (
            "protocol version",
            vec![
                ("content-type", "application/json"),
                ("connect-protocol-version", "2"),
            ],
            Bytes::from_static(b"{}"),
            400,
            "invalid_argument",
            "connect-protocol-version",
        ),
        (
            "timeout header",
            vec![
                ("content-type", "application/json"),
                ("connect-timeout-ms", "soon"),
            ],
            Bytes::from_static(b"{}"),
            400,
            "invalid_argument",
            "connect-timeout-ms",
        ),
        (
            "compressed",
            vec![
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            Bytes::from_static(b"{}"),
            501,
            "unimplemented",
            "content-encoding",
        ),
        (
            "binary garbage",
            vec![("content-type", "application/proto")],
            Bytes::from_static(b"\xff\xff\xff"),
            400,
            "invalid_argument",
            "request body",
        ),
    ];
    for (what, headers, body, want_status, want_code, names) in cases {
        let (status, _, body) = post(&client, &put, &headers, body).await;
        let v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(status, want_status, "{what}: {v}");
        assert_eq!(v["code"], want_code, "{what}: {v}");
        let message = v["message"].as_str().unwrap_or("");
        assert!(
            message.contains(names),
            "{what}: {message:?} should name {names:?}"
        );
        println!("RESULT connect bad_request {what:?} -> {status} {want_code}");
    }
    // Another method on a known path, and an unknown path.
    let get = client
        .request(
            http::Request::get(&put)
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("GET");
    assert_eq!(get.status(), 405);
    assert_eq!(
        get.headers().get("allow").map(http::HeaderValue::as_bytes),
        Some(&b"POST"[..])
    );
    let (status, v) = post_json(
        &client,
        &format!("http://{}/permitd.v1.Quotas/Nope", server.addr),
        "{}",
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (501, Some("unimplemented")),
        "{v}"
    );
    // Nothing was defined by any of them.
    let (_, list) = post_json(
        &client,
        &format!("http://{}/permitd.v1.Quotas/ListResources", server.addr),
        "{}",
    )
    .await;
    assert_eq!(list, serde_json::json!({}), "{list}");
    server.stop().await;
}

/// Watch over Connect: the snapshot, then a change, as enveloped JSON; then the end
/// envelope when the server shuts down. Errors come in the end envelope too.
#[tokio::test]
async fn watch_streams_as_connect_envelopes() {
    let server = TestServer::start_with_metrics().await;
    let client = http_client();
    let base = format!("http://{}", server.metrics_addr.expect("HTTP listener"));
    let (status, v) = post_json(
        &client,
        &format!("{base}/permitd.v1.Quotas/PutResource"),
        r#"{"resource":{"name":"w:x","limits":[{"dimension":"requests","amount":10,"period":"60s"}],"limitsKnown":true}}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let req = http::Request::post(format!("{base}/permitd.v1.Quotas/Watch"))
        .header("content-type", "application/connect+json")
        .body(Full::new(envelope(
            0,
            br#"{"resourcePrefix":"w:","minInterval":"0.010s"}"#,
        )))
        .expect("request");
    let res = client.request(req).await.expect("Watch");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("content-type")
            .map(http::HeaderValue::as_bytes),
        Some(&b"application/connect+json"[..])
    );
    let mut body = res.into_body();
    let mut buf = BytesMut::new();
    let mut next = async || -> (u8, Value) {
        loop {
            if buf.len() >= 5 {
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if buf.len() >= 5 + len {
                    let flags = buf[0];
                    buf.advance(5);
                    let m = buf.split_to(len);
                    return (flags, serde_json::from_slice(&m).expect("envelope JSON"));
                }
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .expect("an envelope within 10 s")
                .expect("the stream goes on")
                .expect("frame");
            if let Ok(d) = frame.into_data() {
                buf.extend_from_slice(&d);
            }
        }
    };
    let (flags, first) = next().await;
    assert_eq!(flags, 0);
    assert_eq!(first["resource"], "w:x", "{first}");
    let (status, _) = post_json(
        &client,
        &format!("{base}/permitd.v1.Permits/AcquirePermit"),
        r#"{"resource":"w:x"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let mut seen = None;
    for _ in 0..20 {
        let (flags, u) = next().await;
        assert_eq!(flags, 0, "{u}");
        if u["inFlight"] == 1 {
            seen = Some(u);
            break;
        }
    }
    let seen = seen.expect("the acquire shows in the stream");
    assert_eq!(seen["grantedTotal"], "1", "{seen}");
    // A bad request: the answer is 200 with the error in the end envelope.
    let bad = http::Request::post(format!("{base}/permitd.v1.Quotas/Watch"))
        .header("content-type", "application/connect+json")
        .body(Full::new(envelope(0, br#"{"minInterval":"-1s"}"#)))
        .expect("request");
    let res = client.request(bad).await.expect("Watch");
    assert_eq!(res.status(), 200);
    let b = res.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(b[0], 2, "{b:?}");
    let end: Value = serde_json::from_slice(&b[5..]).expect("end JSON");
    assert_eq!(end["error"]["code"], "invalid_argument", "{end}");
    // Shutdown ends the open stream with an end envelope saying so.
    let stop = tokio::spawn(async move { server.stop().await });
    loop {
        let (flags, m) = next().await;
        if flags == 2 {
            assert_eq!(m["error"]["code"], "unavailable", "{m}");
            break;
        }
    }
    stop.await.expect("stopped");
}
