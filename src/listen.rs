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

impl<T: AsyncWrite> AsyncWrite for Capped<T> {
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
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop only ends when this receiver is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, HttpListener>>
    for crate::tls::Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, HttpListener>) -> Self {
        crate::tls::Peer {
            addr: *stream.remote_addr(),
            certs: None,
        }
    }
}
