//! The bottom layer: identifiers, the clock, API-key tokens, the secret box, webhook
//! signature schemes, bounded JSON Schema compilation, keyed rate limits, the masking of
//! credential-like header values, and the field problems services answer for bad input.
//!
//! Nothing here performs I/O except reading and writing the master key file, so every other
//! crate can depend on it.

#![warn(missing_docs)]

pub mod api_key;
pub mod clock;
pub mod id;
pub mod problem;
pub mod rate;
pub mod redact;
pub mod schema;
pub mod secret_box;
pub mod signature;

pub use clock::{Clock, ManualClock, SystemClock};
pub use id::{Id, IdKind};
pub use problem::FieldProblem;
pub use secret_box::{KeyRing, SecretBox, SecretBoxError};

/// Timestamps are UTC with microsecond precision everywhere (they are stored as
/// microseconds since the Unix epoch).
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// Converts a timestamp to the integer form stored in the database.
pub fn to_micros(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

/// Converts stored microseconds back to a timestamp. Out-of-range values clamp to the epoch
/// rather than panic: they can only come from a corrupted row.
pub fn from_micros(us: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_micros(us).unwrap_or_default()
}
