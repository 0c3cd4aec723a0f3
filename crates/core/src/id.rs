//! Public identifiers: a short prefix naming the kind, then a ULID, so ids sort by creation
//! time and a stray id in a log says what it points at (`evt_01J…`).

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// What an id points at; each kind has its own prefix ([`IdKind::prefix`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// A tenant (`ten_`).
    Tenant,
    /// An API key (`key_`).
    ApiKey,
    /// An event (`evt_`).
    Event,
    /// An event type (`et_`).
    EventType,
    /// A job on the queue (`job_`); also names leases and worker processes.
    Job,
    /// A value in the `secrets` table, sealed with the secret box (`sec_`).
    Secret,
    /// An outgoing-webhook endpoint (`ep_`).
    Endpoint,
    /// An event's delivery to one endpoint (`msg_`).
    Message,
    /// One try at delivering a message (`atmpt_`).
    Attempt,
    /// An installed integration (`conn_`).
    Connection,
    /// A received incoming webhook (`inb_`).
    Inbound,
    /// A run of a connection's sync (`srun_`).
    SyncRun,
}

impl IdKind {
    /// The text before the `_` in ids of this kind.
    pub const fn prefix(self) -> &'static str {
        match self {
            IdKind::Tenant => "ten",
            IdKind::ApiKey => "key",
            IdKind::Event => "evt",
            IdKind::EventType => "et",
            IdKind::Job => "job",
            IdKind::Secret => "sec",
            IdKind::Endpoint => "ep",
            IdKind::Message => "msg",
            IdKind::Attempt => "atmpt",
            IdKind::Connection => "conn",
            IdKind::Inbound => "inb",
            IdKind::SyncRun => "srun",
        }
    }
}

/// ULIDs from one process increase strictly, even within a millisecond, so ids created in
/// sequence list in that sequence.
fn next_ulid() -> Ulid {
    static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);
    let mut generator = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    generator.get_or_insert_with(ulid::Generator::new).generate().unwrap_or_else(|_| Ulid::new())
}

/// A prefixed, time-sortable identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Id(String);

/// An id that is malformed or of another kind.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("expected an id of the form {expected}_<26 characters>")]
pub struct IdParseError {
    /// The prefix the id should have had.
    pub expected: &'static str,
}

impl Id {
    /// A new id of `kind`; ids made later in this process sort after it.
    pub fn new(kind: IdKind) -> Self {
        Self(format!("{}_{}", kind.prefix(), next_ulid().to_string().to_lowercase()))
    }

    /// Parses an id that must be of `kind`; anything else is refused, so a key id can never be
    /// used where an event id is expected.
    pub fn parse(kind: IdKind, s: &str) -> Result<Self, IdParseError> {
        let err = IdParseError { expected: kind.prefix() };
        let rest = s.strip_prefix(kind.prefix()).and_then(|r| r.strip_prefix('_')).ok_or(err.clone())?;
        Ulid::from_str(rest).map_err(|_| err)?;
        Ok(Self(s.to_string()))
    }

    /// The smallest possible id of `kind` created at `at`: every id of that kind created
    /// earlier sorts below it.
    pub fn lower_bound(kind: IdKind, at: chrono::DateTime<chrono::Utc>) -> String {
        let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
        format!("{}_{}", kind.prefix(), Ulid::from_parts(millis, 0).to_string().to_lowercase())
    }

    /// Wraps an id read back from the database, which was validated when it was written.
    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }

    /// The id's text, prefix included.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_sort_by_creation() {
        let a = Id::new(IdKind::Event);
        let b = Id::new(IdKind::Event);
        assert!(a.as_str().starts_with("evt_"));
        assert_eq!(a.as_str().len(), 4 + 26);
        assert!(a < b, "{a} should sort before {b}");
        let now = chrono::Utc::now();
        assert!(Id::lower_bound(IdKind::Event, now - chrono::Duration::seconds(1)).as_str() < a.as_str());
        assert!(Id::lower_bound(IdKind::Event, now + chrono::Duration::seconds(1)).as_str() > b.as_str());
    }

    #[test]
    fn parse_refuses_other_kinds_and_garbage() {
        let evt = Id::new(IdKind::Event);
        assert_eq!(Id::parse(IdKind::Event, evt.as_str()).unwrap(), evt);
        assert!(Id::parse(IdKind::ApiKey, evt.as_str()).is_err());
        assert!(Id::parse(IdKind::Event, "evt_nope").is_err());
        assert!(Id::parse(IdKind::Event, "").is_err());
    }
}
