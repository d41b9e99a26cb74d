//! The Connect protocol (<https://connectrpc.com/docs/protocol>), so tools without gRPC
//! (curl, n8n, browsers) reach every method: unary calls as `POST /<package.Service>/<Method>`
//! with a proto3-JSON (`application/json`) or binary (`application/proto`) body, server
//! streams (Watch) enveloped (`application/connect+json`, `application/connect+proto`).
//!
//! A call is transcoded into a gRPC request and run through the very stack gRPC calls take
//! (stats, shedding, auth, the handlers), so limits, roles, tenancy and answers are the same
//! by construction. Only the framing and the JSON mapping live here; the mapping is
//! prost-reflect's, read off the descriptors the build already makes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Frame;
use http_body_util::BodyExt as _;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use tonic::codegen::http::{self, HeaderMap, HeaderName, HeaderValue, Request, Response};
use tonic::{Code, Status};
use tower::ServiceExt as _;

/// Bodies in and out of the stack (tonic's boxed body).
pub type Body = tonic::body::Body;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Building the method table failed (a build bug: the descriptors are the build's own).
#[derive(Debug, thiserror::Error)]
#[error("descriptors for the Connect protocol")]
pub struct ConnectError(#[from] prost_reflect::DescriptorError);

/// One method as Connect serves it.
#[derive(Debug)]
struct Method {
    input: MessageDescriptor,
    output: MessageDescriptor,
    kind: Kind,
    /// Largest request message (binary), as the gRPC service decodes it.
    max_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unary,
    ServerStream,
    /// Client and bidirectional streams: gRPC only.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Json,
    Proto,
}

/// The Connect side of every service: which methods exist and how big their requests may be.
#[derive(Debug)]
pub struct Connect {
    methods: HashMap<String, Method>,
    /// The longest a unary call may take, short of the gRPC server's own request timeout,
    /// so that a Connect caller gets a Connect answer rather than tonic's.
    timeout: Duration,
}

/// Room around a request's JSON for names, quoting and base64 (a third more than binary).
const JSON_SLACK: usize = 64 * 1024;

impl Connect {
    /// The methods of the services in `descriptor_sets`; `max_bytes(service)` is the largest
    /// request that service decodes; unary calls end within `request_timeout`.
    ///
    /// # Errors
    /// A descriptor set that does not decode.
    pub fn new(
        descriptor_sets: &[&[u8]],
        max_bytes: impl Fn(&str) -> usize,
        request_timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let mut pool = DescriptorPool::new();
        for set in descriptor_sets {
            pool.decode_file_descriptor_set(*set)?;
        }
        let mut methods = HashMap::new();
        for service in pool.services() {
            let cap = max_bytes(service.full_name());
            for m in service.methods() {
                let kind = match (m.is_client_streaming(), m.is_server_streaming()) {
                    (false, false) => Kind::Unary,
                    (false, true) => Kind::ServerStream,
                    _ => Kind::Other,
                };
                methods.insert(
                    format!("/{}/{}", service.full_name(), m.name()),
                    Method {
                        input: m.input(),
                        output: m.output(),
                        kind,
                        max_bytes: cap,
                    },
                );
            }
        }
        let margin = (request_timeout / 10).min(Duration::from_secs(1));
        Ok(Self {
            methods,
            timeout: request_timeout.saturating_sub(margin),
        })
    }

    /// Whether `path` names a method served here.
    #[must_use]
    pub fn knows(&self, path: &str) -> bool {
        self.methods.contains_key(path)
    }

    /// Whether `req` is a gRPC call (served as it is) rather than a Connect one.
    #[must_use]
    pub fn is_grpc<B>(req: &Request<B>) -> bool {
        req.headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    }

    /// Serve one Connect request by running it through `inner`, the gRPC stack.
    pub async fn serve<S, B>(&self, inner: S, req: Request<B>) -> Response<Body>
    where
        S: tower_service::Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path();
        let Some(method) = self.methods.get(path) else {
            return error(&Status::unimplemented(format!("no method {path}")));
        };
        let codec = match self.check(method, &parts) {
            Ok(c) => c,
            Err(refused) => return refused,
        };
        let deadline = match client_timeout(&parts.headers) {
            Ok(Some(t)) => t.min(self.timeout),
            Ok(None) => self.timeout,
            Err(status) => return error(&status),
        };
        let limit = match codec {
            Codec::Json => method
                .max_bytes
                .saturating_mul(2)
                .saturating_add(JSON_SLACK),
            Codec::Proto => method.max_bytes,
        }
        .saturating_add(5);
        let stream = method.kind == Kind::ServerStream;
        let call = async move {
            let bytes = read_body(body, limit).await?;
            let payload = if stream { unenvelope(bytes)? } else { bytes };
            let message = decode_request(&method.input, codec, &payload)?;
            let mut frame = BytesMut::with_capacity(5 + message.encoded_len());
            frame.put_u8(0);
            frame.put_u32(u32::try_from(message.encoded_len()).unwrap_or(u32::MAX));
            message.encode_raw(&mut frame);
            let grpc = grpc_request(parts, frame.freeze(), deadline);
            let Ok(res) = inner.oneshot(grpc).await;
            Ok(res)
        };
        if stream {
            // The stream's messages flow for as long as the caller reads; only the request
            // and the answer's head are bounded by the deadline.
            match tokio::time::timeout(deadline, call).await {
                Ok(Ok(res)) => stream_response(res, method.output.clone(), codec),
                Ok(Err(status)) => end_only(&status, codec),
                Err(_) => end_only(&deadline_exceeded(), codec),
            }
        } else {
            let unary = async {
                let res = call.await.map_err(|s| error(&s))?;
                unary_response(res, &method.output, codec).await
            };
            match tokio::time::timeout(deadline, unary).await {
                Ok(Ok(res)) | Ok(Err(res)) => res,
                Err(_) => error(&deadline_exceeded()),
            }
        }
    }

    /// The method, content type and encodings a Connect call must have.
    #[allow(clippy::result_large_err)]
    fn check(
        &self,
        method: &Method,
        parts: &http::request::Parts,
    ) -> Result<Codec, Response<Body>> {
        if method.kind == Kind::Other {
            return Err(error(&Status::unimplemented(
                "client and bidirectional streams are served over gRPC only",
            )));
        }
        if parts.method != http::Method::POST {
            let mut res = error(&Status::unimplemented(format!(
                "{} is not served: Connect calls are POST",
                parts.method
            )));
            *res.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
            res.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
            return Err(res);
        }
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let codec = match (method.kind, media.as_str()) {
            (Kind::Unary, "application/json")
            | (Kind::ServerStream, "application/connect+json") => Codec::Json,
            (Kind::Unary, "application/proto")
            | (Kind::ServerStream, "application/connect+proto") => Codec::Proto,
            _ => {
                let accepted = if method.kind == Kind::Unary {
                    "application/json, application/proto"
                } else {
                    "application/connect+json, application/connect+proto"
                };
                let mut res = error(&Status::invalid_argument(format!(
                    "content-type {content_type:?} is not served by {}: send {accepted}",
                    parts.uri.path()
                )));
                *res.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
                if let Ok(v) = HeaderValue::from_str(accepted) {
                    res.headers_mut().insert("accept-post", v);
                }
                return Err(res);
            }
        };
        if let Some(v) = parts.headers.get("connect-protocol-version")
            && v.as_bytes() != b"1"
        {
            return Err(error(&Status::invalid_argument(
                "connect-protocol-version must be 1",
            )));
        }
        let encoding = if method.kind == Kind::Unary {
            "content-encoding"
        } else {
            "connect-content-encoding"
        };
        if let Some(v) = parts.headers.get(encoding)
            && v.as_bytes() != b"identity"
        {
            let mut res = error(&Status::unimplemented(format!(
                "{encoding} {v:?} is not served: send identity"
            )));
            let accept = if method.kind == Kind::Unary {
                "accept-encoding"
            } else {
                "connect-accept-encoding"
            };
            res.headers_mut()
                .insert(accept, HeaderValue::from_static("identity"));
            return Err(res);
        }
        Ok(codec)
    }
}

fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("the call did not finish within its timeout")
}

/// `connect-timeout-ms`: at most 10 digits, positive.
fn client_timeout(headers: &HeaderMap) -> Result<Option<Duration>, Status> {
    let Some(v) = headers.get("connect-timeout-ms") else {
        return Ok(None);
    };
    let bad = || Status::invalid_argument("connect-timeout-ms must be 1 to 10 digits");
    let s = v.to_str().map_err(|_| bad())?;
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let ms: u64 = s.parse().map_err(|_| bad())?;
    Ok(Some(Duration::from_millis(ms)))
}

async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Status>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Status::resource_exhausted(
            format!("request body over {limit} bytes (max_message_bytes)"),
        )),
        Err(e) => Err(Status::cancelled(format!("reading the request body: {e}"))),
    }
}

/// The one message of a streaming request's envelope.
fn unenvelope(mut bytes: Bytes) -> Result<Bytes, Status> {
    if bytes.len() < 5 {
        return Err(Status::invalid_argument(
            "a streaming request is one enveloped message (5-byte prefix, then the message)",
        ));
    }
    let flags = bytes.get_u8();
    let len = bytes.get_u32() as usize;
    if flags & 1 != 0 {
        return Err(Status::unimplemented("compressed messages are not served"));
    }
    if flags != 0 || len != bytes.len() {
        return Err(Status::invalid_argument(format!(
            "a streaming request is one enveloped message: flags {flags}, length {len}, {} bytes follow",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn decode_request(
    desc: &MessageDescriptor,
    codec: Codec,
    payload: &[u8],
) -> Result<DynamicMessage, Status> {
    match codec {
        Codec::Json if payload.iter().all(u8::is_ascii_whitespace) => {
            Ok(DynamicMessage::new(desc.clone()))
        }
        Codec::Json => {
            let mut de = serde_json::Deserializer::from_slice(payload);
            DynamicMessage::deserialize(desc.clone(), &mut de)
                .and_then(|m| de.end().map(|()| m))
                .map_err(|e| Status::invalid_argument(format!("request body: {e}")))
        }
        Codec::Proto => DynamicMessage::decode(desc.clone(), payload)
            .map_err(|e| Status::invalid_argument(format!("request body: {e}"))),
    }
}

/// Request headers that are the transport's own, not the call's metadata. Cookies are
/// never credentials here: a page could make a browser send them to this API.
fn transport_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "content-type"
            | "content-length"
            | "content-encoding"
            | "accept-encoding"
            | "accept"
            | "te"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "upgrade"
            | "proxy-connection"
            | "host"
            | "cookie"
            | "expect"
    ) || n.starts_with("connect-")
        || n.starts_with("grpc-")
}

fn grpc_request(parts: http::request::Parts, frame: Bytes, deadline: Duration) -> Request<Body> {
    let mut req = Request::new(Body::new(http_body_util::Full::new(frame)));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = parts.uri;
    *req.version_mut() = http::Version::HTTP_2;
    let headers = req.headers_mut();
    for (name, value) in &parts.headers {
        if !transport_header(name) {
            headers.append(name, value.clone());
        }
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    if let Ok(v) = HeaderValue::from_str(&format!("{}m", deadline.as_millis().min(99_999_999))) {
        headers.insert("grpc-timeout", v);
    }
    *req.extensions_mut() = parts.extensions;
    req
}

/// The status a gRPC answer carries in `headers` (a trailers-only answer) or `trailers`.
fn status_of(headers: &HeaderMap) -> Option<Status> {
    headers
        .contains_key("grpc-status")
        .then(|| Status::from_header_map(headers))?
}

/// Connect's HTTP status for a code.
fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode as H;
    match code {
        Code::Ok => H::OK,
        Code::Cancelled => H::from_u16(499).unwrap_or(H::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => H::BAD_REQUEST,
        Code::DeadlineExceeded => H::GATEWAY_TIMEOUT,
        Code::NotFound => H::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => H::CONFLICT,
        Code::PermissionDenied => H::FORBIDDEN,
        Code::ResourceExhausted => H::TOO_MANY_REQUESTS,
        Code::Unimplemented => H::NOT_IMPLEMENTED,
        Code::Unknown | Code::Internal | Code::DataLoss => H::INTERNAL_SERVER_ERROR,
        Code::Unavailable => H::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => H::UNAUTHORIZED,
    }
}

/// Connect's name for a code.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

fn error_json(status: &Status) -> serde_json::Value {
    let mut e = serde_json::Map::new();
    e.insert("code".into(), code_name(status.code()).into());
    if !status.message().is_empty() {
        e.insert("message".into(), status.message().into());
    }
    serde_json::Value::Object(e)
}

/// A unary error answer.
fn error(status: &Status) -> Response<Body> {
    let mut res = Response::new(Body::new(http_body_util::Full::new(Bytes::from(
        error_json(status).to_string(),
    ))));
    *res.status_mut() = http_status(status.code());
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status.code() == Code::Unauthenticated {
        res.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"permitd\""),
        );
    }
    res
}

/// The call's own metadata among an answer's headers or trailers.
fn metadata(headers: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    headers.iter().filter(|(n, _)| {
        let n = n.as_str();
        n != "content-type" && !n.starts_with("grpc-")
    })
}

/// The one message of a unary gRPC answer's body.
fn one_message(mut data: Bytes) -> Result<Bytes, Status> {
    if data.len() < 5 {
        return Err(Status::internal("the answer carried no message"));
    }
    let flags = data.get_u8();
    let len = data.get_u32() as usize;
    if flags != 0 || len != data.len() {
        return Err(Status::internal("the answer's framing is not one message"));
    }
    Ok(data)
}

fn encode_answer(desc: &MessageDescriptor, codec: Codec, message: Bytes) -> Result<Bytes, Status> {
    match codec {
        Codec::Proto => Ok(message),
        Codec::Json => {
            let m = DynamicMessage::decode(desc.clone(), message)
                .map_err(|e| Status::internal(format!("decoding the answer: {e}")))?;
            let mut out = Vec::with_capacity(256);
            m.serialize_with_options(
                &mut serde_json::Serializer::new(&mut out),
                &SerializeOptions::new(),
            )
            .map_err(|e| Status::internal(format!("encoding the answer: {e}")))?;
            Ok(Bytes::from(out))
        }
    }
}

fn content_type(codec: Codec, stream: bool) -> HeaderValue {
    HeaderValue::from_static(match (codec, stream) {
        (Codec::Json, false) => "application/json",
        (Codec::Proto, false) => "application/proto",
        (Codec::Json, true) => "application/connect+json",
        (Codec::Proto, true) => "application/connect+proto",
    })
}

async fn unary_response(
    res: Response<Body>,
    output: &MessageDescriptor,
    codec: Codec,
) -> Result<Response<Body>, Response<Body>> {
    let (parts, body) = res.into_parts();
    if let Some(status) = status_of(&parts.headers) {
        return Err(error(&status));
    }
    let collected = body
        .collect()
        .await
        .map_err(|e: Status| error(&Status::new(e.code(), e.message())))?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status =
        status_of(&trailers).unwrap_or_else(|| Status::internal("the answer carried no status"));
    if status.code() != Code::Ok {
        return Err(error(&status));
    }
    let message = one_message(collected.to_bytes()).map_err(|s| error(&s))?;
    let body = encode_answer(output, codec, message).map_err(|s| error(&s))?;
    let mut out = Response::new(Body::new(http_body_util::Full::new(body)));
    let headers = out.headers_mut();
    for (n, v) in metadata(&parts.headers) {
        headers.append(n, v.clone());
    }
    for (n, v) in metadata(&trailers) {
        if let Ok(name) = HeaderName::from_bytes(format!("trailer-{n}").as_bytes()) {
            headers.append(name, v.clone());
        }
    }
    headers.insert(http::header::CONTENT_TYPE, content_type(codec, false));
    Ok(out)
}

fn envelope(flags: u8, message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + message.len());
    b.put_u8(flags);
    b.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    b.put_slice(message);
    b.freeze()
}

/// A stream's last envelope: its status and trailing metadata, as JSON in both codecs.
fn end_envelope(status: &Status, trailers: &HeaderMap) -> Bytes {
    let mut end = serde_json::Map::new();
    if status.code() != Code::Ok {
        end.insert("error".into(), error_json(status));
    }
    let mut meta = serde_json::Map::new();
    for (n, v) in metadata(trailers) {
        if let Ok(v) = v.to_str() {
            let entry = meta
                .entry(n.as_str().to_owned())
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let serde_json::Value::Array(a) = entry {
                a.push(v.into());
            }
        }
    }
    if !meta.is_empty() {
        end.insert("metadata".into(), serde_json::Value::Object(meta));
    }
    envelope(2, serde_json::Value::Object(end).to_string().as_bytes())
}

/// A stream that ended before its first message: 200 and the end envelope alone (Connect
/// streams carry their errors in it).
fn end_only(status: &Status, codec: Codec) -> Response<Body> {
    let mut res = Response::new(Body::new(http_body_util::Full::new(end_envelope(
        status,
        &HeaderMap::new(),
    ))));
    res.headers_mut()
        .insert(http::header::CONTENT_TYPE, content_type(codec, true));
    res
}

fn stream_response(res: Response<Body>, output: MessageDescriptor, codec: Codec) -> Response<Body> {
    let (parts, body) = res.into_parts();
    if let Some(status) = status_of(&parts.headers) {
        return end_only(&status, codec);
    }
    let mut out = Response::new(Body::new(Transcoded {
        inner: body,
        buf: BytesMut::new(),
        output,
        codec,
        done: false,
    }));
    let headers = out.headers_mut();
    for (n, v) in metadata(&parts.headers) {
        headers.append(n, v.clone());
    }
    headers.insert(http::header::CONTENT_TYPE, content_type(codec, true));
    out
}

/// A gRPC answer's stream of messages re-framed as Connect envelopes, message by message as
/// the caller reads (so a slow reader slows the stream, as over gRPC).
struct Transcoded {
    inner: Body,
    buf: BytesMut,
    output: MessageDescriptor,
    codec: Codec,
    done: bool,
}

impl Transcoded {
    /// The next whole gRPC message in the buffer, if there is one.
    fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err(Status::internal("a compressed message in the answer"));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    fn end(
        &mut self,
        status: &Status,
        trailers: &HeaderMap,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.done = true;
        Poll::Ready(Some(Ok(Frame::data(end_envelope(status, trailers)))))
    }
}

impl http_body::Body for Transcoded {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.next_message() {
                Ok(Some(m)) => match encode_answer(&this.output, this.codec, m) {
                    Ok(b) => return Poll::Ready(Some(Ok(Frame::data(envelope(0, &b))))),
                    Err(s) => return this.end(&s, &HeaderMap::new()),
                },
                Ok(None) => {}
                Err(s) => return this.end(&s, &HeaderMap::new()),
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.buf.extend_from_slice(&data),
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        let status = status_of(&trailers).unwrap_or_else(|| {
                            Status::internal("the stream ended without a status")
                        });
                        return this.end(&status, &trailers);
                    }
                },
                Some(Err(s)) => return this.end(&s, &HeaderMap::new()),
                None => {
                    return this.end(
                        &Status::internal("the stream ended without a status"),
                        &HeaderMap::new(),
                    );
                }
            }
        }
    }
}

/// Connect in front of the gRPC port's stack: gRPC calls pass straight through; the rest
/// are transcoded into it.
#[derive(Debug, Clone)]
pub struct ConnectLayer(pub Arc<Connect>);

impl<S> tower_layer::Layer<S> for ConnectLayer {
    type Service = ConnectService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnectService {
            inner,
            connect: Arc::clone(&self.0),
        }
    }
}

/// The service of [`ConnectLayer`].
#[derive(Debug, Clone)]
pub struct ConnectService<S> {
    inner: S,
    connect: Arc<Connect>,
}

pin_project_lite::pin_project! {
    /// A gRPC call's own future, or a Connect call's.
    #[project = EitherProj]
    #[allow(missing_docs)] // the fields are the futures the variants name
    pub enum Either<F> {
        /// Passed through.
        Grpc {
            #[pin]
            f: F,
        },
        /// Transcoded.
        Connect {
            f: Pin<Box<dyn Future<Output = Response<Body>> + Send>>,
        },
    }
}

impl<F: Future<Output = Result<Response<Body>, Infallible>>> Future for Either<F> {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            EitherProj::Grpc { f } => f.poll(cx),
            EitherProj::Connect { f } => f.as_mut().poll(cx).map(Ok),
        }
    }
}

impl<S> tower_service::Service<Request<Body>> for ConnectService<S>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if Connect::is_grpc(&req) {
            return Either::Grpc {
                f: self.inner.call(req),
            };
        }
        // The clone is not the instance that was polled ready: take that one for the call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let connect = Arc::clone(&self.connect);
        Either::Connect {
            f: Box::pin(async move { connect.serve(inner, req).await }),
        }
    }
}
