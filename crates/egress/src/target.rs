//! Checking a URL before anything is sent to it.
//!
//! The URL parser follows the WHATWG URL standard, which reads IPv4 hosts written in decimal
//! (`http://2130706433/`), hex (`0x7f.0.0.1`), octal (`0177.0.0.1`) or shortened (`127.1`)
//! as the addresses they mean, so each of those reaches the address check below as a plain
//! IP, not as a name that DNS would later turn into one.

use std::net::IpAddr;

use url::{Host, Url};

use crate::policy::{AddressPolicy, Refusal, refused_host_name};

/// Why a URL was refused before anything was sent to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The URL does not parse; holds the parser's message.
    #[error("is not a valid URL: {0}")]
    Invalid(String),
    /// The scheme is not http or https; holds it.
    #[error("must use http or https, not {0:?}")]
    Scheme(String),
    /// The URL names no host.
    #[error("must name a host")]
    NoHost,
    /// The host (or an address its name resolved to) is refused by the address policy.
    #[error("{host} is {refusal}")]
    Refused {
        /// The host as written, with the address it resolved to when DNS gave a refused one.
        host: String,
        /// The refused range the address falls in.
        refusal: Refusal,
    },
}

impl TargetError {
    /// A stable code for problem details and recorded attempts.
    pub fn code(&self) -> &'static str {
        match self {
            TargetError::Invalid(_) | TargetError::NoHost => "invalid_url",
            TargetError::Scheme(_) => "unsupported_scheme",
            TargetError::Refused { refusal, .. } => refusal.code(),
        }
    }
}

/// Parses `url` and checks everything that can be checked without DNS: the scheme, and the
/// host when it is an IP literal or a name that always means this machine.
pub fn check_url(url: &str, policy: &AddressPolicy) -> Result<Url, TargetError> {
    let parsed = Url::parse(url).map_err(|e| TargetError::Invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(TargetError::Scheme(parsed.scheme().to_string()));
    }
    check_host(&parsed, policy)?;
    Ok(parsed)
}

pub(crate) fn check_host(url: &Url, policy: &AddressPolicy) -> Result<(), TargetError> {
    match url.host() {
        None => Err(TargetError::NoHost),
        Some(Host::Ipv4(ip)) => check_ip(&ip.to_string(), IpAddr::V4(ip), policy),
        Some(Host::Ipv6(ip)) => check_ip(&ip.to_string(), IpAddr::V6(ip), policy),
        Some(Host::Domain(name)) => {
            if policy.allow_private {
                return Ok(());
            }
            match refused_host_name(name) {
                Some(refusal) => Err(TargetError::Refused { host: name.to_string(), refusal }),
                None => Ok(()),
            }
        }
    }
}

pub(crate) fn check_ip(host: &str, ip: IpAddr, policy: &AddressPolicy) -> Result<(), TargetError> {
    policy.check(ip).map_err(|refusal| TargetError::Refused { host: host.to_string(), refusal })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal_of(url: &str) -> Option<&'static str> {
        check_url(url, &AddressPolicy::default()).err().map(|e| e.code())
    }

    #[test]
    fn loopback_is_refused_in_every_notation() {
        for url in [
            "http://127.0.0.1/hook",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.0x0.0x0.0x1/",
            "http://0177.0.0.1/",
            "http://017700000001/",
            "http://127.0.0.1./",
            "http://[::1]/",
            "http://[0:0:0:0:0:0:0:1]/",
            "https://localhost:8443/",
            "http://LocalHost./",
        ] {
            assert_eq!(refusal_of(url), Some("loopback_address"), "{url}");
        }
    }

    #[test]
    fn disguised_private_and_metadata_addresses_are_refused() {
        assert_eq!(refusal_of("http://[::ffff:127.0.0.1]/"), Some("ipv4_embedded_in_ipv6"));
        assert_eq!(refusal_of("http://[::ffff:7f00:1]/"), Some("ipv4_embedded_in_ipv6"));
        assert_eq!(refusal_of("http://0xa9fea9fe/latest/meta-data"), Some("cloud_metadata_address"));
        assert_eq!(refusal_of("http://169.254.169.254/"), Some("cloud_metadata_address"));
        assert_eq!(refusal_of("http://metadata.google.internal/"), Some("cloud_metadata_address"));
        assert_eq!(refusal_of("http://167772161/"), Some("private_address"));
        assert_eq!(refusal_of("http://0/"), Some("unspecified_address"));
        assert_eq!(refusal_of("http://[fd00::1]:8080/"), Some("unique_local_address"));
    }

    #[test]
    fn only_http_urls_with_a_host_are_accepted() {
        assert_eq!(refusal_of("ftp://example.com/"), Some("unsupported_scheme"));
        assert_eq!(refusal_of("file:///etc/passwd"), Some("unsupported_scheme"));
        assert_eq!(refusal_of("not a url"), Some("invalid_url"));
        assert_eq!(refusal_of("http://"), Some("invalid_url"));
        assert!(check_url("https://hooks.example.com/in?x=1", &AddressPolicy::default()).is_ok());
        assert!(check_url("http://8.8.8.8:8080/", &AddressPolicy::default()).is_ok());
    }

    #[test]
    fn lifting_the_guard_allows_local_targets() {
        assert!(check_url("http://127.0.0.1:9000/", &AddressPolicy::allow_all()).is_ok());
        assert!(check_url("http://localhost:9000/", &AddressPolicy::allow_all()).is_ok());
    }
}
