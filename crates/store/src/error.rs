/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken; the string names what already exists.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The store was closed: its writer has stopped and the write was not made.
    #[error("the store is closed")]
    Closed,
    /// The caller asked for something the store refuses (a batch too large…).
    #[error("{0}")]
    Invalid(String),
    /// The options cannot be used: an unsupported or invalid URL, a bad schema name.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// The database or its driver failed (connection, statement, constraint…).
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// SQLite failed in a unit its writer runs straight on the connection.
    #[error("database error: {0}")]
    Sqlite(#[source] rusqlite::Error),
    /// Bringing the schema up to date failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The group commit that carried this write failed; nothing of it was kept.
    #[error("commit failed: {0}")]
    Commit(String),
    /// A stored value cannot be read back (an unknown status name, invalid JSON…).
    #[error("a stored row is corrupt: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

impl StoreError {
    pub(crate) fn conflict_or(e: sqlx::Error, what: &'static str) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
            _ => StoreError::Database(e),
        }
    }
}
