//! `health`: ask a running `serve` on this host whether it is ready or alive (a container's
//! health check, where there is no curl).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use http_body_util::{BodyExt as _, Empty};

use super::Status;

/// The longest answer read: `/readyz` says a few fields.
const MAX_BODY: usize = 4096;

/// Options of `health`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where `serve` listens (its `--bind`, read from the same variable); an unspecified address
    /// (0.0.0.0, ::) is asked on loopback.
    #[arg(long, env = "VALHALLA_BIND", default_value = super::serve::DEFAULT_BIND, hide_env_values = true)]
    bind: SocketAddr,

    /// Ask whether the process answers (`/healthz`) instead of whether it is ready (`/readyz`:
    /// the database answers).
    #[arg(long)]
    live: bool,

    /// How long to wait for the whole answer.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    timeout: Duration,
}

impl Args {
    /// Prints the answer; fails unless it is 200.
    pub async fn run(self) -> anyhow::Result<Status> {
        let at = asked_at(self.bind);
        let path = if self.live { "/healthz" } else { "/readyz" };
        let url = format!("http://{at}{path}");
        let (status, body) = tokio::time::timeout(self.timeout, get(at, path))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {}", humantime::format_duration(self.timeout)))
            .and_then(|answer| answer)
            .with_context(|| format!("cannot ask {url}"))?;
        let body = crate::text::one_line(String::from_utf8_lossy(&body).trim());
        anyhow::ensure!(status == 200, "{url} answered {status}: {body}");
        super::print_out(&format!("{body}\n"))?;
        Ok(Status::Ok)
    }
}

/// Where to ask a server bound to `bind`.
fn asked_at(bind: SocketAddr) -> SocketAddr {
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bind.port())
}

/// One HTTP/1.1 GET of `path` on a fresh connection: the status and at most `MAX_BODY` bytes.
async fn get(at: SocketAddr, path: &str) -> anyhow::Result<(u16, Bytes)> {
    let stream = tokio::net::TcpStream::connect(at).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, at.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
        .to_bytes();
    driver.abort();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_bind_is_asked_on_loopback() {
        let asked = |bind: &str| asked_at(bind.parse().unwrap()).to_string();
        assert_eq!(asked("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(asked("[::]:9000"), "[::1]:9000");
        assert_eq!(asked("10.1.2.3:80"), "10.1.2.3:80");
    }
}
