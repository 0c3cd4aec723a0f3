//! Every integration test of this crate in one binary: one link instead of one per file,
//! and one process whose tests run in parallel.

#![allow(clippy::unwrap_used)]

mod conformance;
mod inbound;
mod oauth;
mod records;
mod sync_runs;
mod webhooks;
