//! The resolver the HTTP client connects through: it resolves the name itself, refuses the
//! host when any of its addresses is refused, and hands the client only checked addresses.
//! The client connects to exactly those, so a name cannot resolve to a public address when
//! checked and a private one when connected (DNS rebinding).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::policy::AddressPolicy;
use crate::target::{TargetError, check_ip};

/// Resolution failed: the name does not exist or the resolver is unreachable.
#[derive(Debug, thiserror::Error)]
#[error("could not resolve {host}: {message}")]
pub struct DnsError {
    pub host: String,
    pub message: String,
}

/// The name resolved to an address the policy refuses.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RefusedAddress(pub TargetError);

/// Names resolved to fixed addresses instead of asking DNS (like curl's `--resolve`).
pub type StaticHosts = HashMap<String, Vec<IpAddr>>;

#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    pub(crate) policy: Arc<AddressPolicy>,
    pub(crate) static_hosts: Arc<StaticHosts>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addresses = this.resolve_checked(name.as_str()).await?;
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

impl GuardedResolver {
    /// Resolves `host` and checks every address. The port of the returned addresses is 0; the
    /// HTTP client sets the URL's port.
    pub(crate) async fn resolve_checked(
        &self,
        host: &str,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let addresses = match self.static_hosts.get(&host.to_ascii_lowercase()) {
            Some(ips) => ips.iter().map(|ip| SocketAddr::new(*ip, 0)).collect(),
            None => lookup(host).await?,
        };
        check_all(host, addresses, &self.policy)
    }
}

async fn lookup(host: &str) -> Result<Vec<SocketAddr>, DnsError> {
    Ok(tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| DnsError { host: host.to_string(), message: e.to_string() })?
        .collect())
}

fn check_all(
    host: &str,
    addresses: Vec<SocketAddr>,
    policy: &AddressPolicy,
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    if addresses.is_empty() {
        return Err(Box::new(DnsError { host: host.to_string(), message: "no addresses".into() }));
    }
    for address in &addresses {
        check_ip(&format!("{host} (resolved to {})", address.ip()), address.ip(), policy).map_err(RefusedAddress)?;
    }
    Ok(addresses)
}
