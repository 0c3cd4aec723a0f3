//! Incoming webhooks: verifying providers' signatures (`verify`).

pub mod verify;
