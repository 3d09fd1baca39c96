//! Accepting connections without letting anyone exhaust the server.
//!
//! - **A connection cap.** At most `max_connections` are open; past it the
//!   accept loop waits (new connections queue in the kernel's backlog) and
//!   says so in the log, once per episode. The cap is lowered to fit the
//!   process's file-descriptor limit, so the store always has files left.
//! - **Back-off on `EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM`.** The loop sleeps
//!   100 ms instead of spinning on an accept that cannot succeed, and logs.
//! - **A handshake timeout.** A connection whose first complete request
//!   (the TLS and HTTP/2 handshakes and a request's headers, or an HTTP/1.1
//!   request head) has not reached the service `handshake_timeout` after it
//!   was accepted is closed, however many bytes it trickled: idle or slow
//!   sockets cannot hold slots for ever.
//! - **Eviction at the cap.** When the cap is reached, the oldest connection
//!   that has not made a complete request yet is closed to make room, else
//!   the oldest that never presented a valid token: without a token nobody
//!   can keep the desk out. Connections that authenticated are never evicted.
//!
//! HTTP/2 limits (streams per connection, keepalive pings that close dead
//! peers) are set on tonic's builder in [`crate::server`].

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
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
    /// A connection that has not made a complete request this long after it
    /// was accepted is closed.
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

/// What the server knows of one connection: whether a complete request
/// came, whether it ever authenticated, and whether it is to be closed.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Accept order: the oldest is evicted first.
    order: u64,
    requested: AtomicBool,
    authenticated: AtomicBool,
    evicted: AtomicBool,
    /// The reader to wake when the connection is evicted.
    waker: Mutex<Option<Waker>>,
}

impl ConnState {
    /// A complete request reached the service, with a valid token or not.
    pub fn request_arrived(&self, authenticated: bool) {
        self.requested.store(true, Ordering::Release);
        if authenticated {
            self.authenticated.store(true, Ordering::Release);
        }
    }

    /// Whether a request with a valid token came on this connection.
    pub fn authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Acquire)
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.wake();
        }
    }
}

/// The open connections, by accept order.
#[derive(Default)]
struct Registry(Mutex<BTreeMap<u64, Weak<ConnState>>>);

impl Registry {
    /// Closes the oldest connection without a complete request, else the
    /// oldest that never authenticated; whether there was one.
    fn evict_one(&self) -> bool {
        let conns = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let live: Vec<Arc<ConnState>> = conns.values().filter_map(Weak::upgrade).collect();
        drop(conns);
        let pick = live
            .iter()
            .find(|c| !c.requested.load(Ordering::Acquire) && !c.evicted.load(Ordering::Acquire))
            .or_else(|| {
                live.iter()
                    .find(|c| !c.authenticated() && !c.evicted.load(Ordering::Acquire))
            });
        match pick {
            Some(c) => {
                tracing::info!(
                    requested = c.requested.load(Ordering::Acquire),
                    "connection cap reached: closing an unauthenticated connection to make room"
                );
                c.evict();
                true
            }
            None => false,
        }
    }
}

/// The connection info a request carries (in its extensions): the TCP
/// addresses and the connection's [`ConnState`].
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub tcp: TcpConnectInfo,
    pub state: Arc<ConnState>,
}

async fn accept_loop(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    max: usize,
    limits: Limits,
    tx: mpsc::Sender<io::Result<Conn>>,
) {
    let registry = Arc::new(Registry::default());
    let mut order = 0;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !registry.evict_one() {
                    tracing::warn!(
                        max_connections = max,
                        "connection cap reached: new connections wait until one closes"
                    );
                }
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
        order += 1;
        let state = Arc::new(ConnState {
            order,
            ..Default::default()
        });
        registry
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(order, Arc::downgrade(&state));
        let conn = Conn {
            stream,
            _slot: permit,
            handshake: Some(Box::pin(tokio::time::sleep(limits.handshake_timeout))),
            state,
            registry: registry.clone(),
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
    /// Until the first complete request: when it fires, the connection is
    /// closed.
    handshake: Option<Pin<Box<tokio::time::Sleep>>>,
    state: Arc<ConnState>,
    registry: Arc<Registry>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.registry
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.state.order);
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            tcp: self.stream.connect_info(),
            state: self.state.clone(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.state.evicted.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room under the connection cap: it never authenticated",
            )));
        }
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if read.is_pending() && !self.state.authenticated() {
            // Until it authenticates, it may be evicted: whoever does must
            // be able to wake this reader.
            *self.state.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            if self.state.evicted.load(Ordering::Acquire) {
                cx.waker().wake_by_ref();
            }
        }
        if self.handshake.is_some() {
            if self.state.requested.load(Ordering::Acquire) {
                self.handshake = None;
            } else if read.is_pending()
                && let Some(deadline) = self.handshake.as_mut()
                && deadline.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no complete request within the handshake timeout: closing the connection",
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
