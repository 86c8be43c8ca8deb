//! `serve`: the HTTP server over the store, until Ctrl-C or SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use super::Status;
use crate::server::{self, AppState};
use crate::store::Store as _;

/// Options of `serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "VALHALLA_BIND",
        default_value = "127.0.0.1:8080",
        hide_env_values = true
    )]
    bind: SocketAddr,
}

impl Args {
    /// Serves until a shutdown signal; in-flight requests finish first.
    pub async fn run(
        self,
        state_dir: &std::path::Path,
        store: &super::StoreConfig,
    ) -> anyhow::Result<Status> {
        let db = super::open(store).await?;
        let listener = tokio::net::TcpListener::bind(self.bind)
            .await
            .with_context(|| format!("cannot listen on {}", self.bind))?;
        let addr = listener.local_addr()?;
        // Said whatever the log level: an operator needs to know where the server is.
        let _ = writeln!(
            std::io::stderr(),
            "valhalla-ops: serving http://{addr} ({} store)",
            db.backend()
        );
        let state = AppState {
            state_dir: Some(state_dir.to_owned()),
            ..AppState::new(db)
        };
        server::serve(listener, Arc::new(state), server::shutdown_signal())
            .await
            .context("the HTTP server failed")?;
        Ok(Status::Ok)
    }
}
