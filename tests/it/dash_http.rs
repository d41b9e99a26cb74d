//! Helpers of the dashboard and metrics tests: plain HTTP/1.0 over a tokio `TcpStream` (no
//! chunked encoding to undo: the server closes the connection at the body's end), and
//! `/metrics` parsed by a strict Prometheus text-format parser.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One HTTP answer.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// Send `METHOD path` and read the whole answer (bounded by 10 s).
pub async fn request(addr: SocketAddr, method: &str, path: &str) -> HttpResponse {
    let io = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read");
        raw
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .expect("an answer within 10 s");
    parse_response(&String::from_utf8(raw).expect("utf-8"))
}

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    request(addr, "GET", path).await
}

fn parse_response(raw: &str) -> HttpResponse {
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A parsed scrape.
pub type Scrape = MetricsExposition<PrometheusType, PrometheusValue>;

/// Fetch `/metrics` and parse it; any syntax or consistency error fails the test.
pub async fn scrape(addr: SocketAddr) -> Scrape {
    let r = get(addr, "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.headers["content-type"].starts_with("text/plain; version=0.0.4"),
        "{:?}",
        r.headers
    );
    openmetrics_parser::prometheus::parse_prometheus(&r.body)
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e:?}\n{}", r.body))
}

/// The value of a sample: a gauge's or counter's value, a histogram's count. `None` when
/// the family or the series is absent.
pub fn value(scrape: &Scrape, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let f = scrape
        .families
        .get(family)
        .or_else(|| scrape.families.get(family.trim_end_matches("_total")))?;
    let names = f.get_label_names();
    let mut wanted = vec![String::new(); names.len()];
    if labels.len() != names.len() {
        return None;
    }
    for (k, v) in labels {
        let i = names.iter().position(|n| n == k)?;
        (*v).clone_into(&mut wanted[i]);
    }
    let s = f.get_sample_by_label_values(&wanted)?;
    Some(match &s.value {
        PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
        PrometheusValue::Counter(c) => c.value.as_f64(),
        #[allow(clippy::cast_precision_loss)]
        PrometheusValue::Histogram(h) => h.count.unwrap_or(0) as f64,
        PrometheusValue::Summary(_) => return None,
    })
}

/// Like [`value`], failing the test when absent.
pub fn must(scrape: &Scrape, family: &str, labels: &[(&str, &str)]) -> f64 {
    value(scrape, family, labels)
        .unwrap_or_else(|| panic!("no sample {family}{labels:?} in the scrape"))
}

/// Poll `/metrics` (bounded: 10 s) until `pred` holds on the scrape.
pub async fn wait_metrics(addr: SocketAddr, what: &str, pred: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..500 {
        let s = scrape(addr).await;
        if pred(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("metrics never showed {what}");
}
