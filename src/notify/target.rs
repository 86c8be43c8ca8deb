//! Where a sink may send: checked when its URL is read (http or https, no credentials in it)
//! and again once its host resolves (never a link-local address, where the cloud metadata
//! service answers, unless the sink allows it), and shown with its secret parts hidden.

use std::net::IpAddr;

use url::{Host, Url};

/// Why a sink's URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the sink URL is not a URL ({0})")]
    NotUrl(String),
    #[error("{0}: a sink is sent to over http or https only")]
    Scheme(String),
    #[error("{0}: credentials belong in the sink's secret, not in its URL")]
    Credentials(String),
    #[error("{0}: {1} is no address to send to")]
    NoDestination(String, IpAddr),
    #[error(
        "{0}: {1} is link-local (the cloud metadata service answers there); a sink sends there only if it allows link-local addresses"
    )]
    LinkLocal(String, IpAddr),
}

/// A sink's URL, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    url: Url,
    allow_link_local: bool,
}

impl Target {
    /// Reads `raw`: http or https, a host, no user or password; a host that is an address
    /// is checked as [`Target::check_resolved`] checks resolved ones.
    pub fn parse(raw: &str, allow_link_local: bool) -> Result<Target, TargetError> {
        let url = Url::parse(raw.trim()).map_err(|e| TargetError::NotUrl(e.to_string()))?;
        let target = Target {
            url,
            allow_link_local,
        };
        let shown = target.shown();
        if !matches!(target.url.scheme(), "http" | "https") {
            return Err(TargetError::Scheme(shown));
        }
        if !target.url.username().is_empty() || target.url.password().is_some() {
            return Err(TargetError::Credentials(shown));
        }
        match target.url.host() {
            Some(Host::Ipv4(ip)) => target.check_resolved(&[IpAddr::V4(ip)])?,
            Some(Host::Ipv6(ip)) => target.check_resolved(&[IpAddr::V6(ip)])?,
            Some(Host::Domain(_)) => {}
            None => return Err(TargetError::NotUrl("it names no host".into())),
        }
        Ok(target)
    }

    /// Checks the addresses the host resolved to, just before a call: a name that resolves to
    /// the metadata service is refused as the address itself would be.
    pub fn check_resolved(&self, addrs: &[IpAddr]) -> Result<(), TargetError> {
        for &addr in addrs {
            let ip = canonical(addr);
            if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
                return Err(TargetError::NoDestination(self.shown(), addr));
            }
            if link_local(ip) && !self.allow_link_local {
                return Err(TargetError::LinkLocal(self.shown(), addr));
            }
        }
        Ok(())
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL as logs, errors and answers show it: scheme, host and port; the path and the
    /// query hidden, since tokens live there (a Slack webhook's path is its secret).
    pub fn shown(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        let port = self.url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let hidden = if self.url.path() == "/" && self.url.query().is_none() {
            ""
        } else {
            "/…"
        };
        crate::text::shown(&format!("{}://{host}{port}{hidden}", self.url.scheme()))
    }
}

/// An IPv4 address written as IPv6 (`::ffff:169.254.169.254`) is the IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// 169.254.0.0/16 and fe80::/10.
fn link_local(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(raw: &str) -> TargetError {
        Target::parse(raw, false).unwrap_err()
    }

    #[test]
    fn internal_receivers_are_allowed_and_the_metadata_service_is_not() {
        for ok in [
            "https://hooks.slack.com/services/T0/B0/secret",
            "http://127.0.0.1:9000/hook",
            "http://10.1.2.3/hook",
            "http://[::1]:8080/",
            "https://oncall.internal.example/hook?token=x",
        ] {
            assert!(Target::parse(ok, false).is_ok(), "{ok}");
        }
        for metadata in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
            "http://[::ffff:169.254.169.254]/",
        ] {
            assert!(
                matches!(refused(metadata), TargetError::LinkLocal(..)),
                "{metadata}"
            );
            assert!(Target::parse(metadata, true).is_ok(), "allowed: {metadata}");
        }
        assert!(matches!(
            refused("http://0.0.0.0/"),
            TargetError::NoDestination(..)
        ));
        assert!(matches!(
            refused("http://224.0.0.1/"),
            TargetError::NoDestination(..)
        ));
    }

    #[test]
    fn only_http_and_https_without_credentials() {
        assert!(matches!(refused("ftp://example.com/x"), TargetError::Scheme(_)));
        assert!(matches!(refused("file:///etc/passwd"), TargetError::Scheme(_)));
        assert!(matches!(
            refused("https://user:pw@example.com/"),
            TargetError::Credentials(_)
        ));
        assert!(matches!(refused("not a url"), TargetError::NotUrl(_)));
    }

    #[test]
    fn a_name_that_resolves_to_the_metadata_service_is_refused_at_the_call() {
        let target = Target::parse("https://looks-harmless.example/hook", false).unwrap();
        let metadata: IpAddr = "169.254.169.254".parse().unwrap();
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        assert!(target.check_resolved(&[public]).is_ok());
        assert!(matches!(
            target.check_resolved(&[public, metadata]),
            Err(TargetError::LinkLocal(..))
        ));
    }

    #[test]
    fn a_url_is_shown_without_its_path_and_query() {
        let slack = Target::parse("https://hooks.slack.com/services/T0/B0/very-secret", false).unwrap();
        assert_eq!(slack.shown(), "https://hooks.slack.com/…");
        let bare = Target::parse("http://127.0.0.1:9000", false).unwrap();
        assert_eq!(bare.shown(), "http://127.0.0.1:9000");
        let error = refused("https://user:hunter2@example.com/hook?token=t0ken").to_string();
        assert!(!error.contains("hunter2") && !error.contains("t0ken"), "{error}");
    }
}
