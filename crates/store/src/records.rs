//! The records syncs keep of providers' data: per connection and model, keyed by the
//! provider's primary key, with change detection by content hash and one change order per
//! stream (connection and model) that a cursor follows exactly.

use switchboard_core::{Id, Timestamp};

/// Records are written in batches of at most this many (a provider's page, typically).
pub const MAX_RECORD_BATCH: usize = 1000;

/// A record as a sync run found it, already mapped to its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// The primary key's value at the provider.
    pub external_id: String,
    /// The mapped record, JSON text.
    pub data: String,
    /// A digest of `data`: a record whose hash did not change is not rewritten.
    pub hash: String,
    /// The provider's version or ETag, when it has one.
    pub version: Option<String>,
}

/// Which stream a batch of changes belongs to, and who made them when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordStream {
    /// The tenant the connection belongs to.
    pub tenant_id: Id,
    /// `conn_…`, the connection the records come through.
    pub connection_id: Id,
    /// The sync model's name.
    pub model: String,
}

/// How a batch of records changed the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordCounts {
    /// Not stored before.
    pub added: u64,
    /// Stored with another hash, or deleted before (and now back).
    pub updated: u64,
    /// Stored with the same hash: nothing was written.
    pub unchanged: u64,
    /// Soft-deleted now.
    pub deleted: u64,
}

/// A record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The primary key's value at the provider.
    pub external_id: String,
    /// The mapped record, JSON text (the last version seen, also once deleted).
    pub data: String,
    /// A digest of `data`.
    pub hash: String,
    /// The provider's version or ETag, when it has one.
    pub version: Option<String>,
    /// When a sync first stored it.
    pub first_seen_at: Timestamp,
    /// When it last changed (including its deletion).
    pub updated_at: Timestamp,
    /// When it was found deleted at the provider.
    pub deleted_at: Option<Timestamp>,
    /// The sync run that last changed it, if a run did.
    pub run_id: Option<Id>,
    /// Its place in the stream's change order: every change takes a higher one.
    pub change_seq: i64,
}

/// Narrows [`RecordStore::list_records`].
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    /// Only changes after this place in the change order (a cursor).
    pub after_seq: Option<i64>,
    /// Only records changed after this time.
    pub modified_after: Option<Timestamp>,
    /// Deleted records too (as tombstones).
    pub include_deleted: bool,
    /// At most this many.
    pub limit: u32,
}

/// The records store.
#[async_trait::async_trait]
pub trait RecordStore: Send + Sync {
    /// Upserts a batch (at most [`MAX_RECORD_BATCH`]; the last of several with one id wins) in
    /// one unit. A record whose hash is unchanged and that is not deleted is left alone: a
    /// batch of nothing new writes nothing at all. With `seen_by`, a full-refresh run, every
    /// record of the batch is also marked seen by that run, changed or not.
    async fn write_records(
        &self,
        stream: &RecordStream,
        records: Vec<NewRecord>,
        run_id: Option<&Id>,
        seen_by: Option<&Id>,
        at: Timestamp,
    ) -> Result<RecordCounts, crate::StoreError>;
    /// Live records of the stream that the full-refresh run `run_id` has not seen (at most
    /// `limit`, in id order): once it has fetched everything, those were deleted at the
    /// provider.
    async fn unseen_records(
        &self,
        stream: &RecordStream,
        run_id: &Id,
        limit: u32,
    ) -> Result<Vec<String>, crate::StoreError>;
    /// Forgets what the run has seen (when it ends, whichever way).
    async fn forget_seen(&self, tenant_id: &Id, run_id: &Id) -> Result<(), crate::StoreError>;
    /// Soft-deletes these records (at most [`MAX_RECORD_BATCH`]) where they exist and are
    /// not deleted yet, in one unit; answers how many were.
    async fn delete_records(
        &self,
        stream: &RecordStream,
        external_ids: Vec<String>,
        run_id: Option<&Id>,
        at: Timestamp,
    ) -> Result<u64, crate::StoreError>;
    /// Records of the stream in change order.
    async fn list_records(
        &self,
        stream: &RecordStream,
        filter: &RecordFilter,
    ) -> Result<Vec<Record>, crate::StoreError>;
}

/// Refuses a batch larger than [`MAX_RECORD_BATCH`].
pub(crate) fn check_batch(len: usize) -> Result<(), crate::StoreError> {
    if len > MAX_RECORD_BATCH {
        return Err(crate::StoreError::Invalid(format!(
            "a batch of {len} records; at most {MAX_RECORD_BATCH} are written at once"
        )));
    }
    Ok(())
}

/// The batch with one record per id, the last given for each, in the order ids first came.
pub(crate) fn last_of_each(records: Vec<NewRecord>) -> Vec<NewRecord> {
    let mut position = std::collections::HashMap::with_capacity(records.len());
    let mut unique: Vec<NewRecord> = Vec::with_capacity(records.len());
    for record in records {
        match position.get(&record.external_id) {
            Some(&index) => unique[index] = record,
            None => {
                position.insert(record.external_id.clone(), unique.len());
                unique.push(record);
            }
        }
    }
    unique
}
