//! Every integration test of this crate in one binary: one link instead of one per file,
//! and one process whose tests run in parallel.

#![allow(clippy::unwrap_used)]

mod connections;
mod manifests;
