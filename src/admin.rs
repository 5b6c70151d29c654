//! The admin server, put together with a daemon: the `admin` section's listener, the metrics
//! the daemon reports to, and the server over the daemon's `Control`. `run` and `demo` use it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use soarjobd_admin::{AdminSettings, Metrics, Shared};
use soarjobd_core::config::Settings;
use soarjobd_engine::{DaemonBuilder, RunningDaemon};

/// The admin server's listener, bound before the daemon starts (a busy port fails the start
/// before anything runs), and the metrics the daemon is built to report to.
pub struct Admin {
    settings: AdminSettings,
    listener: Option<TcpListener>,
    metrics: Arc<Metrics>,
}

/// A running admin server; [`RunningAdmin::stop`] after the daemon has shut down, so
/// `/readyz` answers 503 during the shutdown.
pub struct RunningAdmin {
    pub addr: SocketAddr,
    stop: CancellationToken,
    server: soarjobd_admin::Server,
}

impl Admin {
    /// Reads the `admin` section and binds its address (none when it is `off`).
    pub async fn bind(settings: &Settings) -> Result<Admin, String> {
        let settings = soarjobd_admin::config::from_settings(settings)
            .map_err(|p| soarjobd_core::config::grammar::join(&p))?;
        Admin::bind_with(settings).await
    }

    /// For the demo: the configured address, or any free loopback port when it is taken
    /// (a daemon may already run on this machine).
    pub async fn bind_or_any(settings: &Settings) -> Result<Admin, String> {
        let mut admin = soarjobd_admin::config::from_settings(settings)
            .map_err(|p| soarjobd_core::config::grammar::join(&p))?;
        // Both attempts fail loudly: the demo's point is the page.
        admin.listen_set = true;
        match Admin::bind_with(admin.clone()).await {
            Ok(a) => Ok(a),
            Err(_) if admin.listen.is_some() => {
                admin.listen = Some(([127, 0, 0, 1], 0).into());
                Admin::bind_with(admin).await
            }
            Err(e) => Err(e),
        }
    }

    async fn bind_with(settings: AdminSettings) -> Result<Admin, String> {
        let listener = match settings.listen {
            None => None,
            Some(addr) => match TcpListener::bind(addr).await {
                Ok(l) => Some(l),
                Err(e) if !settings.listen_set => {
                    tracing::warn!(
                        address = %addr,
                        error = %e,
                        "the admin server's default address is taken: running without it \
                         (set admin.listen to another address, or `off`)"
                    );
                    None
                }
                Err(e) => return Err(format!("cannot listen on {addr} (admin.listen): {e}")),
            },
        };
        Ok(Admin {
            settings,
            listener,
            metrics: Metrics::new(),
        })
    }

    /// The status page's address, once bound (`None` when the server is off).
    pub fn url(&self) -> Option<String> {
        let addr = self.listener.as_ref()?.local_addr().ok()?;
        Some(format!("http://{addr}/"))
    }

    /// The daemon reporting to this server's metrics.
    pub fn daemon(&self, builder: DaemonBuilder) -> DaemonBuilder {
        builder.observer(self.metrics.clone())
    }

    /// Serves the started daemon (nothing when the server is off).
    pub fn start(self, daemon: &RunningDaemon) -> std::io::Result<Option<RunningAdmin>> {
        let Some(listener) = self.listener else {
            return Ok(None);
        };
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(
            daemon.control(),
            self.metrics,
            &self.settings,
            addr,
        ));
        let stop = CancellationToken::new();
        let server = soarjobd_admin::serve(listener, shared, stop.clone())?;
        tracing::info!(url = %format!("http://{}/", server.addr), "admin server listening");
        Ok(Some(RunningAdmin {
            addr: server.addr,
            stop,
            server,
        }))
    }
}

impl RunningAdmin {
    /// The status page's address.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.server.task.await;
    }
}

/// `soarjobd probe`: GETs `path` on the admin server (the Dockerfile's HEALTHCHECK calls
/// `/livez`); true on a 200. Plain HTTP/1.0 over a socket, so the image needs no curl.
pub async fn probe(addr: SocketAddr, path: &str) -> Result<bool, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut head = Vec::new();
        s.take(4096).read_to_end(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(std::time::Duration::from_secs(5), io)
        .await
        .map_err(|_| format!("{addr} did not answer in 5 s"))?
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&head);
    let status_line = text.lines().next().unwrap_or("");
    Ok(status_line.split_whitespace().nth(1) == Some("200"))
}
