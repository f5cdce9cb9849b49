//! Portal connections, plain or TLS, that a request can drop unanswered (the `answer_lost`
//! fault's `drop_connection`): once dropped, every write fails, so hyper closes the connection
//! without sending a byte of the response it was given.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a client has for its TLS handshake; handshakes run one at a time, so one that
/// stalls must not hold the listener for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A portal's listener, with TLS when it has an acceptor, whose connections can be dropped
/// from inside a request.
pub(crate) struct DroppableListener {
    pub(crate) tcp: TcpListener,
    pub(crate) tls: Option<TlsAcceptor>,
}

impl Listener for DroppableListener {
    type Io = DroppableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (DroppableStream, SocketAddr) {
        loop {
            let (tcp, addr) = Listener::accept(&mut self.tcp).await;
            let stream: Box<dyn Io> = match &self.tls {
                None => Box::new(tcp),
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => Box::new(tls),
                        Ok(Err(e)) => {
                            tracing::debug!(%addr, error = %e, "TLS handshake failed");
                            continue;
                        }
                        Err(_) => {
                            tracing::debug!(%addr, "TLS handshake timed out");
                            continue;
                        }
                    }
                }
            };
            return (DroppableStream { stream, dropped: Arc::default() }, addr);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Listener::local_addr(&self.tcp)
    }
}

/// A plain or TLS connection.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One accepted connection: reads pass through; writes fail once it is dropped.
pub(crate) struct DroppableStream {
    stream: Box<dyn Io>,
    dropped: Arc<AtomicBool>,
}

impl DroppableStream {
    fn check(&self) -> io::Result<()> {
        if self.dropped.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "answer lost (fault)"));
        }
        Ok(())
    }
}

impl AsyncRead for DroppableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for DroppableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The connection a request came on (the request's `ConnectInfo`).
#[derive(Clone)]
pub(crate) struct Connection(Arc<AtomicBool>);

impl Connection {
    /// Closes the connection without answering: whatever response the request returns is
    /// never written.
    pub(crate) fn drop_unanswered(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, DroppableListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, DroppableListener>) -> Self {
        Connection(stream.io().dropped.clone())
    }
}
