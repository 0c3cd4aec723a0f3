//! Incoming webhooks: verifying providers' signatures (`verify`) and answering their
//! handshakes (`handshake`).

pub mod handshake;
pub mod verify;
