//! Every outbound HTTP call Switchboard makes goes through this crate.
//!
//! - [`policy`]: which addresses may be reached (the SSRF guard's rules);
//! - [`target`]: checking a URL before it is stored or called;
//! - `resolver`: name resolution that checks every address and pins the connection to it;
//! - [`client`]: the guarded HTTP client, with error kinds fit for recording, and `call`,
//!   which adds the protections provider calls need:
//! - [`breaker`]: a circuit breaker per tenant and provider base URL;
//! - [`ratelimit`]: per-key quotas that also learn from the provider's rate-limit headers.

#![warn(missing_docs)]

pub mod breaker;
pub mod client;
pub mod policy;
pub mod ratelimit;
mod resolver;
pub mod target;

pub use breaker::{BreakerConfig, BreakerKey, BreakerSnapshot, CircuitState};
pub use client::{
    CallError, CallPolicy, CallResponse, EgressClient, EgressConfig, EgressError, ErrorKind, RetryPolicy, read_excerpt,
};
pub use policy::{AddressPolicy, Refusal};
pub use ratelimit::{Quota, RateHeaders};
pub use resolver::StaticHosts;
pub use target::TargetError;
