//! Incoming webhooks: verifying providers' signatures (`verify`), answering their handshakes
//! (`handshake`), and reading what their bodies say (`document`).

pub mod document;
pub mod handshake;
pub mod verify;
