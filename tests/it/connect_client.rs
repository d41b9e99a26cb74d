//! A tonic channel that speaks Connect: generated clients over it make every call as an
//! HTTP/1.1 Connect call with a proto3-JSON body (server streams enveloped), so a test
//! written against gRPC runs over Connect unchanged.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Frame;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use tonic::codegen::http::{self, HeaderMap, HeaderValue};
use tonic::{Code, Status};

type Body = tonic::body::Body;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Any channel the generated clients take: gRPC's own, or Connect's.
pub type AnyChannel =
    tower::util::BoxCloneService<http::Request<Body>, http::Response<Body>, BoxError>;

/// A gRPC channel, boxed.
pub fn grpc(ch: tonic::transport::Channel) -> AnyChannel {
    use tower::ServiceExt as _;
    tower::util::BoxCloneService::new(ch.map_err(BoxError::from))
}

/// Connect calls to `http://{addr}`.
pub fn connect(addr: std::net::SocketAddr) -> AnyChannel {
    tower::util::BoxCloneService::new(ConnectChannel::new(addr))
}

/// Every method of permitd's services and health, by path.
pub fn pool() -> DescriptorPool {
    let mut pool = DescriptorPool::new();
    pool.decode_file_descriptor_set(permitd::proto::FILE_DESCRIPTOR_SET)
        .expect("permitd descriptors");
    pool.decode_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .expect("health descriptors");
    pool
}

/// The method at `path` (`/pkg.Service/Method`).
pub fn method(pool: &DescriptorPool, path: &str) -> Option<MethodDescriptor> {
    let (service, name) = path.strip_prefix('/')?.split_once('/')?;
    pool.get_service_by_name(service)?
        .methods()
        .find(|m| m.name() == name)
}

/// The gRPC code of a Connect code name.
pub fn code_of(name: &str) -> Code {
    match name {
        "canceled" => Code::Cancelled,
        "invalid_argument" => Code::InvalidArgument,
        "deadline_exceeded" => Code::DeadlineExceeded,
        "not_found" => Code::NotFound,
        "already_exists" => Code::AlreadyExists,
        "permission_denied" => Code::PermissionDenied,
        "resource_exhausted" => Code::ResourceExhausted,
        "failed_precondition" => Code::FailedPrecondition,
        "aborted" => Code::Aborted,
        "out_of_range" => Code::OutOfRange,
        "unimplemented" => Code::Unimplemented,
        "internal" => Code::Internal,
        "unavailable" => Code::Unavailable,
        "data_loss" => Code::DataLoss,
        "unauthenticated" => Code::Unauthenticated,
        _ => Code::Unknown,
    }
}

/// A Connect error body as a status.
pub fn status_of_error(body: &[u8]) -> Status {
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Status::internal(format!("not a Connect error body ({e}): {body:?}")),
    };
    Status::new(
        code_of(v["code"].as_str().unwrap_or("")),
        v["message"].as_str().unwrap_or(""),
    )
}

/// A Connect client in the shape of a tonic channel.
#[derive(Clone)]
pub struct ConnectChannel {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    pool: DescriptorPool,
}

impl ConnectChannel {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
            pool: pool(),
        }
    }

    async fn call(self, req: http::Request<Body>) -> Result<http::Response<Body>, BoxError> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let Some(m) = method(&self.pool, &path) else {
            return Ok(Status::unimplemented(format!("no method {path} here")).into_http());
        };
        let mut frame = body.collect().await?.to_bytes();
        if frame.len() < 5 {
            return Err("no request message".into());
        }
        frame.advance(5);
        let json = serde_json::to_vec(&DynamicMessage::decode(m.input(), frame)?)?;
        let stream = m.is_server_streaming();
        let mut out = http::Request::post(format!("{}{path}", self.base));
        for (n, v) in &parts.headers {
            let s = n.as_str();
            if s != "content-type" && s != "te" && !s.starts_with("grpc-") {
                out = out.header(n, v);
            }
        }
        let (content_type, body) = if stream {
            ("application/connect+json", envelope(0, &json))
        } else {
            ("application/json", Bytes::from(json))
        };
        let out = out
            .header("content-type", content_type)
            .body(Full::new(body))?;
        let res = self.client.request(out).await?;
        let ok = res.status() == http::StatusCode::OK;
        let headers = res.headers().clone();
        if !ok || !stream {
            let body = res.into_body().collect().await?.to_bytes();
            if !ok {
                return Ok(status_of_error(&body).into_http());
            }
            let mut de = serde_json::Deserializer::from_slice(&body);
            let answer = DynamicMessage::deserialize(m.output(), &mut de)?;
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let frames = vec![
                Ok::<_, Status>(Frame::data(envelope(0, &answer.encode_to_vec()))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut res = http::Response::new(Body::new(http_body_util::StreamBody::new(
                tokio_stream::iter(frames),
            )));
            *res.headers_mut() = headers;
            res.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/grpc"));
            return Ok(res);
        }
        // A stream that ends before its first message is gRPC's trailers-only answer: read
        // up to the first envelope to tell.
        let mut inner = res.into_body();
        let mut buf = BytesMut::new();
        loop {
            if buf.len() >= 5 {
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if buf.len() >= 5 + len {
                    break;
                }
            }
            match inner.frame().await {
                Some(f) => {
                    if let Ok(d) = f?.into_data() {
                        buf.extend_from_slice(&d);
                    }
                }
                None => return Ok(Status::internal("the stream ended with nothing").into_http()),
            }
        }
        if buf[0] & 2 != 0 {
            let end: serde_json::Value = serde_json::from_slice(&buf[5..]).unwrap_or_default();
            if let Some(e) = end.get("error") {
                return Ok(Status::new(
                    code_of(e["code"].as_str().unwrap_or("")),
                    e["message"].as_str().unwrap_or(""),
                )
                .into_http());
            }
        }
        let mut res = http::Response::new(Body::new(Envelopes {
            inner,
            buf,
            output: m.output(),
            done: false,
        }));
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        Ok(res)
    }
}

impl tower_service::Service<http::Request<Body>> for ConnectChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(self.clone().call(req))
    }
}

pub fn envelope(flags: u8, message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + message.len());
    b.put_u8(flags);
    b.put_u32(u32::try_from(message.len()).expect("message size"));
    b.put_slice(message);
    b.freeze()
}

/// Connect envelopes in, gRPC frames and trailers out.
struct Envelopes {
    inner: hyper::body::Incoming,
    buf: BytesMut,
    output: MessageDescriptor,
    done: bool,
}

impl http_body::Body for Envelopes {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if this.buf.len() >= 5 {
                let len = u32::from_be_bytes([this.buf[1], this.buf[2], this.buf[3], this.buf[4]])
                    as usize;
                if this.buf.len() >= 5 + len {
                    let flags = this.buf[0];
                    this.buf.advance(5);
                    let message = this.buf.split_to(len);
                    if flags & 2 != 0 {
                        this.done = true;
                        let end: serde_json::Value =
                            serde_json::from_slice(&message).unwrap_or_default();
                        let status = match end.get("error") {
                            Some(e) => Status::new(
                                code_of(e["code"].as_str().unwrap_or("")),
                                e["message"].as_str().unwrap_or(""),
                            ),
                            None => Status::new(Code::Ok, ""),
                        };
                        let mut trailers = HeaderMap::new();
                        status
                            .add_header(&mut trailers)
                            .map_err(|e| Status::internal(e.to_string()))?;
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    let mut de = serde_json::Deserializer::from_slice(&message);
                    let m = DynamicMessage::deserialize(this.output.clone(), &mut de)
                        .map_err(|e| Status::internal(format!("a streamed message: {e}")))?;
                    return Poll::Ready(Some(Ok(Frame::data(envelope(0, &m.encode_to_vec())))));
                }
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        this.buf.extend_from_slice(&d);
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(Status::unavailable(e.to_string())))),
                None => {
                    this.done = true;
                    return Poll::Ready(Some(Err(Status::internal(
                        "the stream ended without its end envelope",
                    ))));
                }
            }
        }
    }
}
