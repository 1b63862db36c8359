//! The web app as `pizza serve web` and `pizza demo` run it: its options, and the app assembled
//! on a listener (the view the status service writes, the session key, the limits).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::server::{self, Limits};
use super::session::{KeyError, SessionKey};
use super::{router, session_key_path, AppState, HealthCheck, LiveStreams};
use crate::clock::parse_duration;
use crate::options::ServiceConfig;
use crate::shutdown::Shutdown;
use crate::store::{StoreError, ViewStore};
use crate::transport::Transport;

/// The web app's options, besides the services' ([`crate::options::ServiceOpts`]).
#[derive(Args, Clone, Debug)]
pub struct WebOpts {
    /// The web app's session signing key, 64 hex characters. Default: the installation's key in
    /// DATA_DIR/session.key, generated on first start.
    #[arg(long, env = "PIZZA_SESSION_KEY", hide_env_values = true, value_parser = parse_session_key)]
    pub session_key: Option<SessionKey>,
    /// Connections the web app keeps open at once; more wait until one closes.
    #[arg(long, env = "PIZZA_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// How long a web client may take to send a request's headers; an idle connection is closed
    /// after it too (500ms, 10s, 1m).
    #[arg(long, env = "PIZZA_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub header_timeout: Duration,
    /// On shutdown, how long the web app's open connections get to finish (500ms, 10s, 1m).
    #[arg(long, env = "PIZZA_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

fn parse_session_key(s: &str) -> Result<SessionKey, String> {
    SessionKey::from_hex(s).ok_or_else(|| "expected 64 hex characters (32 bytes)".into())
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be above 0".into()),
        d => Ok(d),
    }
}

impl WebOpts {
    /// The server's limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections as usize,
            header_read_timeout: self.header_timeout,
            shutdown_grace: self.shutdown_grace,
        }
    }
}

/// Why the web app did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("binding {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("creating the data directory {0}")]
    DataDir(String, #[source] std::io::Error),
    #[error("opening the view")]
    View(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Binds `addr`, for [`serve`].
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Bind(addr, e))?;
    tracing::info!(%addr, "web app listening");
    Ok(listener)
}

/// Serves the web app on `listener` until `shutdown` (then drains within the shutdown grace). It
/// folds its own view from the log into `cfg.data_dir` and orders through `transport`; `health`
/// answers `/health-check`.
pub async fn serve<T: Transport>(
    listener: tokio::net::TcpListener,
    transport: T,
    cfg: &ServiceConfig,
    opts: &WebOpts,
    health: Arc<dyn HealthCheck>,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    crate::store::private_dir(&cfg.data_dir)
        .map_err(|e| StartError::DataDir(cfg.data_dir.display().to_string(), e))?;
    // The web app's own view, folded from the whole log, so any number of web instances each
    // show every order (issue 15).
    let view = Arc::new(ViewStore::open(&cfg.web_view_path())?);
    // The follower writes through a connection of its own: a live stream learns of a change from
    // SQLite's `data_version`, which counts only other connections' commits.
    let folded = Arc::new(ViewStore::open(&cfg.web_view_path())?);
    let follower = crate::view::follow(transport.clone(), &cfg.sys, folded);
    let key = match &opts.session_key {
        Some(k) => k.clone(),
        None => SessionKey::load_or_create(&session_key_path(&cfg.data_dir))?,
    };
    let limits = opts.limits();
    let state = Arc::new(AppState {
        transport,
        sys: cfg.sys.clone(),
        view,
        follower: Some(Arc::new(follower)),
        key,
        shutdown: shutdown.clone(),
        live: LiveStreams::for_connections(limits.max_connections),
        health,
        handed_out: Default::default(),
    });
    server::serve(listener, router(state), limits, shutdown).await;
    Ok(())
}
