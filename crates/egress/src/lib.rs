//! Every outbound HTTP call Switchboard makes goes through this crate.
//!
//! - [`policy`]: which addresses may be reached (the SSRF guard's rules);
//! - [`target`]: checking a URL before it is stored or called;
//! - `resolver`: name resolution that checks every address and pins the connection to it;
//! - [`client`]: the guarded HTTP client, with error kinds fit for recording.

pub mod client;
pub mod policy;
mod resolver;
pub mod target;

pub use client::{EgressClient, EgressConfig, EgressError, ErrorKind, read_excerpt};
pub use policy::{AddressPolicy, Refusal};
pub use resolver::StaticHosts;
pub use target::TargetError;
