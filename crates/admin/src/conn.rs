//! The accept loop: HTTP/1.1 connections served by hyper with a cap and timeouts, so that idle
//! or trickling clients cannot pile up (each holds a task, buffers and a socket).
//!
//! * **Cap**: at most `admin.max_connections` connections at once; one more is accepted and
//!   closed at once (counted and logged as `too_many_connections`), rather than left in the
//!   kernel's backlog where it would hold a probe up without a trace.
//! * **Header read timeout** (`admin.header_read_timeout`, hyper's): a request's head must
//!   arrive within it, counted from the connection's start or the previous answer, so it is
//!   also how long a kept-alive connection may wait idle for its next request. The body then
//!   has as long again ([`crate::guard`], 408).
//! * **Idle timeout** (`admin.idle_timeout`): a connection on which no byte moved either way
//!   for that long, and no request is being handled, is closed (a client that stops reading an
//!   answer, a body that stops half-way). A request being handled never counts as idle: a slow
//!   handler is the server's own, and is never cancelled by this.
//! * Bodies are bounded in size and time by the router ([`crate::guard`]).
//!
//! Shutdown: the loop stops accepting, tells every connection to finish its request in
//! progress and close (hyper's graceful shutdown), waits up to [`SHUTDOWN_WAIT`], then drops
//! the rest.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::Shared;
use crate::guard::Refusal;

/// How long a shutdown waits for connections to finish their request.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// The connection limits (from `AdminSettings`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Accepts and serves connections until `shutdown` fires.
pub async fn accept_loop(
    listener: TcpListener,
    app: Router,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let limits = shared.limits;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // wait a little rather than spin.
                    tracing::warn!(error = %e, "the admin server cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shared
                .refusals
                .note(Refusal::TooManyConnections, peer.ip(), "a connection");
            drop(stream);
            continue;
        };
        let (app, shared, stop) = (app.clone(), shared.clone(), shutdown.clone());
        conns.spawn(async move {
            serve_one(stream, peer, app, &shared, stop).await;
            drop(slot);
        });
    }
    let drained = tokio::time::timeout(SHUTDOWN_WAIT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            left = conns.len(),
            "admin connections still open at shutdown are closed"
        );
    }
}

async fn serve_one(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    shared: &Shared,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let busy = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        let busy = busy.clone();
        async move {
            let _handling = busy.handling();
            app.oneshot(req).await
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.header_read_timeout);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let idle = activity.idle(shared.limits.idle_timeout);
    tokio::pin!(idle);
    let mut stopping = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    if e.is_timeout() {
                        shared.refusals.note(Refusal::HeaderTimeout, peer.ip(), "a request head");
                    } else {
                        tracing::debug!(error = %e, client = %peer, "admin connection ended");
                    }
                }
                return;
            }
            _ = &mut idle => {
                // Dropping the connection closes the socket.
                shared.refusals.note(Refusal::IdleTimeout, peer.ip(), "an idle connection");
                return;
            }
            _ = shutdown.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// When a connection last moved a byte, and how many of its requests are being handled.
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last byte read or written.
    last: AtomicU64,
    handling: AtomicUsize,
}

/// Marks a request as being handled while alive.
struct Handling<'a>(&'a Activity);

impl Drop for Handling<'_> {
    fn drop(&mut self) {
        self.0.touch();
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            handling: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    fn handling(&self) -> Handling<'_> {
        self.handling.fetch_add(1, Ordering::Relaxed);
        Handling(self)
    }

    /// Resolves once the connection has been idle for `limit`.
    async fn idle(&self, limit: Duration) {
        loop {
            let deadline = self.last() + limit;
            if Instant::now() < deadline {
                tokio::time::sleep_until(deadline.into()).await;
                continue;
            }
            if self.handling.load(Ordering::Relaxed) > 0 {
                // A handler at work: the server is slow, not the client.
                self.touch();
                continue;
            }
            return;
        }
    }
}

/// A stream that records when it last moved a byte.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
