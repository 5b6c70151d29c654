//! soarjobd-sim: in-process simulators of the platforms soarjobd talks to, for tests, benchmarks and `demo`.
//!
//! Invariant: nothing here shares a wire type with `soarjobd_clients::soar` or `soarjobd_clients::threatconnect`.
//! Each side is written from the spec on its own, so a misreading of the wire format cannot hide
//! in a shared struct.
//!
//! Shared by both: [`Server`] and [`Handle`] (the server lifecycle), `faults` (latency, rate
//! limit, random faults, scripted next calls) and `rng` (deterministic randomness).

mod faults;
mod rng;
mod smtp;
pub mod soar;
pub mod threatconnect;

pub use smtp::{Mail, SmtpOptions, SmtpSink};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// An axum server on loopback with a graceful stop: the lifecycle both simulators share (no
/// wire types, so invariant 5 holds).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds `listen` (port 0 picks a free port) and serves `app` until stopped.
    pub async fn start(app: axum::Router, listen: SocketAddr) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Server {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// The bound address (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight requests finish (up to 5 s), and stops.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(Duration::from_secs(5), &mut self.task).await {
            Ok(Ok(r)) => r,
            Ok(Err(join)) => Err(std::io::Error::other(join)),
            Err(_) => {
                self.task.abort();
                Ok(())
            }
        }
    }
}

/// A running simulator: its server and its state (`S` is the simulator's state type).
#[derive(Debug)]
pub struct Handle<S> {
    server: Server,
    state: Arc<S>,
}

impl<S> Handle<S> {
    /// Serves `app` on `listen` (port 0 picks a free port); `state` is what `app` shares.
    pub async fn start(
        state: Arc<S>,
        app: axum::Router,
        listen: SocketAddr,
    ) -> std::io::Result<Handle<S>> {
        let server = Server::start(app, listen).await?;
        Ok(Handle { server, state })
    }

    /// The bound address (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://{addr}`: the root (inspection routes live under `/_sim/`).
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The state, for in-process tests.
    pub fn state(&self) -> &Arc<S> {
        &self.state
    }

    /// Stops accepting, lets in-flight requests finish (up to 5 s), and stops.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.server.shutdown().await
    }

    /// Serves until `signal` completes, then shuts down (for `soarjobd sim ...`).
    pub async fn serve_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        signal.await;
        self.shutdown().await
    }
}
