//! Accepting connections within a cap: each connection holds one permit of its listener's
//! semaphore for its whole life, and the accept loop waits for a free permit before it
//! accepts, so past the cap new clients wait in the kernel's backlog (and time out there)
//! instead of each costing the server a task and buffers.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

pin_project_lite::pin_project! {
    /// A connection counted against its listener's cap until dropped.
    #[derive(Debug)]
    pub struct Capped<T> {
        #[pin]
        inner: T,
        permit: OwnedSemaphorePermit,
    }
}

impl<T> Capped<T> {
    /// The connection itself.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead> AsyncRead for Capped<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

/// `AsyncWrite` of a pin-projected wrapper, passed through to its `inner` field.
macro_rules! write_through {
    ($t:ident) => {
        impl<T: AsyncWrite> AsyncWrite for $t<T> {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.project().inner.poll_write(cx, buf)
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.project().inner.poll_flush(cx)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.project().inner.poll_shutdown(cx)
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                self.project().inner.poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}

write_through!(Capped);

impl tonic::transport::server::Connected for Capped<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Wait for a free slot of `cap`, then accept one connection (nodelay set). Transient
/// accept errors (out of file descriptors) are logged and retried after a pause.
pub async fn accept_one(
    listener: &TcpListener,
    cap: &Arc<Semaphore>,
) -> Option<(Capped<TcpStream>, SocketAddr)> {
    let permit = Arc::clone(cap).acquire_owned().await.ok()?;
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                return Some((Capped { inner: tcp, permit }, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Plaintext connections of `listener`, at most `max` open at once. The loop ends when the
/// receiver is dropped.
#[must_use]
pub fn accept(
    listener: TcpListener,
    max: usize,
) -> mpsc::Receiver<(Capped<TcpStream>, SocketAddr)> {
    let (tx, rx) = mpsc::channel(64);
    let cap = Arc::new(Semaphore::new(max));
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                () = tx.closed() => return,
                c = accept_one(&listener, &cap) => c,
            };
            let Some(c) = next else { return };
            if tx.send(c).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// [`accept`] as an axum listener (the plaintext HTTP side).
#[derive(Debug)]
pub struct HttpListener {
    rx: mpsc::Receiver<(Capped<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl HttpListener {
    /// At most `max` connections of `listener` at once.
    ///
    /// # Errors
    /// The listener has no local address.
    pub fn new(listener: TcpListener, max: usize) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self {
            rx: accept(listener, max),
            local,
        })
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = Capped<TcpStream>;
    type Addr = crate::tls::Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some((io, addr)) => (io, crate::tls::Peer { addr, certs: None }),
            // The accept loop only ends when this receiver is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(crate::tls::Peer {
            addr: self.local,
            certs: None,
        })
    }
}

/// Serve `app` over HTTP/1 on `listener` until `shutdown`, then stop accepting and let open
/// connections finish their requests. Unlike `axum::serve`, each connection has a header
/// timeout: a client that does not finish a request's headers within `header_timeout`
/// (slowloris) is disconnected, so it cannot hold a connection slot for free.
pub async fn serve_http<L>(
    mut listener: L,
    app: axum::Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send,
) where
    L: axum::serve::Listener,
    L::Addr: Clone + Send + Sync + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower_service::Service as _;

    // Each connection task holds a receiver: all are gone when the last one ends.
    let (close_tx, close_rx) = tokio::sync::watch::channel(());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let (close_rx, mut stop_rx) = (close_rx.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer.clone()));
                    app.clone().call(req.map(axum::body::Body::new))
                },
            );
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection(TokioIo::new(io), svc);
            let mut conn = std::pin::pin!(conn);
            loop {
                tokio::select! {
                    res = conn.as_mut() => {
                        if let Err(e) = res {
                            tracing::debug!(error = %e, "HTTP connection ended");
                        }
                        break;
                    }
                    _ = stop_rx.changed() => conn.as_mut().graceful_shutdown(),
                }
            }
            drop(close_rx);
        });
    }
    drop(listener);
    drop(close_rx);
    let _ = stop_tx.send(true);
    close_tx.closed().await;
}

pin_project_lite::pin_project! {
    /// A connection that must send its first bytes within a deadline (the HTTP/2 preface of
    /// a gRPC client): a client that connects and stays silent is disconnected instead of
    /// holding a connection slot for ever. Once bytes came, reads are the inner stream's.
    #[derive(Debug)]
    pub struct FirstBytes<T> {
        #[pin]
        inner: T,
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<T> FirstBytes<T> {
    /// `inner`, which must send a byte within `timeout`.
    pub fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl<T: AsyncRead> AsyncRead for FirstBytes<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        let Some(deadline) = this.deadline.as_mut() else {
            return res;
        };
        match res {
            Poll::Ready(Ok(())) if buf.filled().len() > before => *this.deadline = None,
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request bytes within the header timeout",
                )));
            }
            _ => {}
        }
        res
    }
}

write_through!(FirstBytes);

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for FirstBytes<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
