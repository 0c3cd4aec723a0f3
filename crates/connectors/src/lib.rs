//! Connectors: what Switchboard knows about each provider, and how it calls them.
//!
//! - [`manifest`]: the manifest format (one YAML file per provider under `connectors/`);
//! - [`load`]: loading and checking manifests, bundled and from operator folders;
//! - [`catalog`]: the loaded providers, searchable for the marketplace;
//! - [`template`]: base URLs, paths, queries and bodies as minijinja templates;
//! - [`provider`]: a loaded manifest with its compiled templates and schemas;
//! - [`runtime`]: the connections service: install, credentials vault, proxy, actions, health.

pub mod catalog;
pub mod load;
pub mod manifest;
pub mod provider;
pub mod template;

pub use catalog::{Catalog, Query, Sort};
pub use load::ManifestError;
pub use manifest::Manifest;
pub use provider::{FieldProblem, Provider};
pub mod runtime;

pub use runtime::{
    CacheState, Connections, ConnectorError, ConnectorsConfig, Install, ProviderUrls, ProxyRequest, ProxyResponse,
    WebhookTarget,
};
