//! The gateways' door: Envoy's rate limit service (RLS v3) over gRPC, with gRPC health checking
//! and server reflection, served beside the HTTP server from the same replica.

mod descriptors;
mod metrics;
mod rls;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

pub use descriptors::keys;
pub use metrics::{GrpcMetrics, Outcome};
pub use rls::{REFUSAL_KEY, RateLimiter, current_limit};

/// The domain a gateway names in its calls unless `--grpc-domain` says otherwise.
pub const DEFAULT_DOMAIN: &str = "valhalla";

/// The largest call accepted: a gateway's descriptors take hundreds of bytes, and a call of
/// megabytes (tonic's default is 4 MiB) would only cost the replica memory and time.
pub const MAX_CALL_BYTES: usize = 64 * 1024;
/// How long one call may take before it is answered DEADLINE_EXCEEDED (a gateway's own timeout
/// is usually far shorter: the example's is 250 ms).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The most calls in flight on one connection; a gateway's pool opens more connections.
const STREAMS_PER_CONNECTION: u32 = 1024;
/// How often an idle connection is pinged, so that a gateway gone without a word (a killed pod,
/// a dropped network) does not hold it forever.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// The descriptors of the rate limit service and everything it imports, compiled by the build
/// script from the protos envoy-types ships: what reflection clients (`grpcurl`) read.
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rls.bin"));

/// The files of the service's TLS: its certificate and key, and the CA that signs the
/// gateways' client certificates when they authenticate by mTLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("cannot read {}: {source}", crate::text::path(.path))]
    Read { path: PathBuf, source: std::io::Error },
    /// The embedded descriptors do not decode: a build defect, not a setting.
    #[error("cannot set up gRPC reflection: {0}")]
    Reflection(tonic_reflection::server::Error),
    #[error("cannot set up TLS: {}", causes(.0))]
    Tls(tonic::transport::Error),
    #[error("the gRPC server failed: {}", causes(.0))]
    Serve(tonic::transport::Error),
}

impl TlsFiles {
    /// The TLS configuration: a client certificate is required when a client CA is given (and
    /// is then the caller's credential); otherwise callers present an API key.
    pub fn config(&self) -> Result<ServerTlsConfig, GrpcError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| GrpcError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let mut config =
            ServerTlsConfig::new().identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?));
        if let Some(ca) = &self.client_ca {
            config = config
                .client_ca_root(Certificate::from_pem(read(ca)?))
                .client_auth_optional(false);
        }
        Ok(config)
    }
}

/// A transport error with its causes (tonic's own says only "transport error"), on one line.
fn causes(e: &tonic::transport::Error) -> String {
    let mut said = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        said.push_str(": ");
        said.push_str(&c.to_string());
        cause = c.source();
    }
    crate::text::one_line(&said)
}

/// The server's settings, with its TLS (certificates parsed now: a bad one stops the start,
/// before anything is served).
pub fn server(tls: Option<ServerTlsConfig>) -> Result<Server, GrpcError> {
    let server = Server::builder()
        .tcp_nodelay(true)
        .timeout(CALL_TIMEOUT)
        .max_concurrent_streams(STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE / 3));
    match tls {
        Some(tls) => server.tls_config(tls).map_err(GrpcError::Tls),
        None => Ok(server),
    }
}

/// Serves `limiter` on `listener` with `server`'s settings, with health checking (serving from
/// the start: the caller has loaded the view) and reflection, until `shutdown` completes; calls
/// in flight finish.
pub async fn serve(
    listener: TcpListener,
    mut server: Server,
    limiter: RateLimiter,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), GrpcError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<RateLimitServiceServer<RateLimiter>>().await;
    // Both versions: grpcurl and grpcio's tools still ask v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(DESCRIPTORS)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(GrpcError::Reflection)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(GrpcError::Reflection)?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    // A stopping replica tells the gateways' health checks before it stops answering.
    let shutdown = async move {
        shutdown.await;
        health
            .set_not_serving::<RateLimitServiceServer<RateLimiter>>()
            .await;
    };
    server
        .add_service(RateLimitServiceServer::new(limiter).max_decoding_message_size(MAX_CALL_BYTES))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(GrpcError::Serve)
}
