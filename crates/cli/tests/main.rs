//! Every integration test of this crate in one binary: one link instead of one per file,
//! and one process whose tests run in parallel.

#![allow(clippy::unwrap_used)]

mod cli;
mod common;
mod connections;
mod inbound;
mod limits;
mod webhooks;
