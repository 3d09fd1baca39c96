//! Accepting connections without letting anyone exhaust the server.
//!
//! - **A connection cap.** At most `max_connections` are open; past it the
//!   accept loop waits (new connections queue in the kernel's backlog) and
//!   says so in the log, once per episode. The cap is lowered to fit the
//!   process's file-descriptor limit, so the store always has files left.
//! - **Back-off on `EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM`.** The loop sleeps
//!   100 ms instead of spinning on an accept that cannot succeed, and logs.
//! - **A first-byte timeout.** A connection that sends nothing for
//!   `handshake_timeout` (a TLS or HTTP/2 handshake never begun) is closed:
//!   idle sockets cannot hold slots for ever.
//!
//! HTTP/2 limits (streams per connection, keepalive pings that close dead
//! peers) are set on tonic's builder in [`crate::server`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How connections are accepted.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most open connections (before fitting the descriptor limit).
    pub max_connections: usize,
    /// A connection that sends no byte for this long is closed.
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Descriptors kept back from connections: the store's files, the tokens
/// file, logs.
const RESERVED_FDS: u64 = 64;

/// `max` lowered to fit the soft `RLIMIT_NOFILE`, less [`RESERVED_FDS`].
pub fn fit_to_fd_limit(max: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !ok || limit.rlim_cur == libc::RLIM_INFINITY {
        return max;
    }
    let room = limit.rlim_cur.saturating_sub(RESERVED_FDS).max(1);
    max.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// The accepted connections of `listener`, within `limits`. The accept loop
/// ends when the returned stream is dropped.
pub fn incoming(listener: TcpListener, limits: Limits) -> ReceiverStream<io::Result<Conn>> {
    let max = fit_to_fd_limit(limits.max_connections);
    if max < limits.max_connections {
        tracing::warn!(
            max_connections = max,
            asked = limits.max_connections,
            "lowered the connection cap to fit the file-descriptor limit (ulimit -n)"
        );
    }
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(accept_loop(
        listener,
        Arc::new(Semaphore::new(max)),
        max,
        limits,
        tx,
    ));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    max: usize,
    limits: Limits,
    tx: mpsc::Sender<io::Result<Conn>>,
) {
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                tracing::warn!(
                    max_connections = max,
                    "connection cap reached: new connections wait until one closes"
                );
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                    () = tx.closed() => return,
                }
            }
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = tx.closed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if out_of_resources(&e) => {
                tracing::warn!(error = %e, "cannot accept a connection: out of file descriptors or memory; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => {
                // Aborted by the peer before it was accepted, and the like.
                tracing::debug!(error = %e, "accept failed");
                continue;
            }
        };
        // Nagle's algorithm would hold small responses back for up to 40 ms.
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            stream,
            _slot: permit,
            first_byte: Some(Box::pin(tokio::time::sleep(limits.handshake_timeout))),
        };
        if tx.send(Ok(conn)).await.is_err() {
            return;
        }
    }
}

fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// An accepted connection: holds its slot under the cap until closed.
pub struct Conn {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    /// Until the first byte arrives: when it fires, the connection is
    /// closed.
    first_byte: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if self.first_byte.is_some() {
            if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                self.first_byte = None;
            } else if read.is_pending()
                && let Some(deadline) = self.first_byte.as_mut()
                && deadline.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing: closing the connection",
                )));
            }
        }
        read
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
