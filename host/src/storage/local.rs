//! The embedded store: object bytes in files named by random ids under
//! `<data-dir>/objects/`, everything else in a redb database
//! (`<data-dir>/metadata.redb`).
//!
//! Why redb: every commit is a crash-safe, fsynced transaction, so an object
//! record and the replacement of its predecessor become visible together or
//! not at all, and listing is a sorted range scan. Object keys never become
//! file paths: a key is only ever a database key.
//!
//! Write protocol: body → `tmp/<id>` → fsync → rename to `objects/<id[..2]>/<id>`
//! → fsync directory → (later) metadata commit. A crash before the commit
//! leaves an unreferenced file, removed at the next start-up.

use std::collections::HashSet;
use std::ops::{Bound, Range};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::*;

const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
/// Key: bucket name, NUL, object key. Bucket names never contain NUL, so one
/// bucket's objects are a contiguous range ordered by key bytes, as S3 lists.
const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
/// (bucket, upload id) of every pending upload: a bucket's uploads without
/// a scan of everyone's.
const UPLOADS_BY_BUCKET: TableDefinition<(&str, &str), ()> = TableDefinition::new("uploads_by_bucket");
const PARTS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("parts");

pub struct LocalStorage {
    db: Arc<Database>,
    objects_dir: PathBuf,
    tmp_dir: PathBuf,
    /// Holds the data dir's lock for as long as the store is open.
    _lock: std::fs::File,
}

impl From<redb::Error> for StorageError {
    fn from(e: redb::Error) -> Self {
        StorageError::Metadata(e.to_string())
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self { StorageError::from(redb::Error::from(e)) }
        }
    )*};
}
redb_errors!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialize")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Metadata(format!("corrupt record: {e}")))
}

fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Data ids are 32 lower-case hex digits; anything else is refused before
/// it can touch a path.
fn is_data_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An exclusive lock on `DATA_DIR/lock`, held while the store is open.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, StorageError> {
    let path = data_dir.join("lock");
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::Metadata(format!(
            "the data dir {} is in use by another sealgate process (it holds {}); refusing to start",
            data_dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

fn holds_data_files(objects_dir: &Path) -> Result<bool, StorageError> {
    for shard in std::fs::read_dir(objects_dir)? {
        let shard = shard?.path();
        if shard.is_dir() && std::fs::read_dir(&shard)?.next().is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether the database was ever initialised by this store.
fn has_tables(db: &Database) -> Result<bool, StorageError> {
    let txn = db.begin_read()?;
    match txn.open_table(BUCKETS) {
        Ok(_) => Ok(true),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn orphaned_data(data_dir: &Path, state: &str) -> StorageError {
    StorageError::Metadata(format!(
        "the data dir {dir} holds object files but its metadata database {dir}/metadata.redb {state}; \
         refusing to start, nothing was deleted. Restore metadata.redb from a backup, or move {dir}/objects \
         away to start with an empty store",
        dir = data_dir.display()
    ))
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl LocalStorage {
    /// Opens (or creates) the store and recovers from any earlier crash:
    /// removes temp files, expires old multipart uploads and deletes data
    /// files no committed record references.
    ///
    /// Refuses, touching nothing, when another process has the data dir
    /// open, or when it holds object files but no metadata database (the
    /// sweep would otherwise take every file for garbage).
    pub fn open(data_dir: &Path, upload_expiry: std::time::Duration) -> Result<Self, StorageError> {
        let objects_dir = data_dir.join("objects");
        let tmp_dir = data_dir.join("tmp");
        std::fs::create_dir_all(&objects_dir)?;
        let lock = lock_data_dir(data_dir)?;
        let db_path = data_dir.join("metadata.redb");
        let db_present = std::fs::metadata(&db_path).is_ok_and(|m| m.len() > 0);
        if !db_present && holds_data_files(&objects_dir)? {
            return Err(orphaned_data(data_dir, "is missing or empty"));
        }
        let db = Database::create(&db_path)?;
        std::fs::set_permissions(&db_path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        if !has_tables(&db)? && holds_data_files(&objects_dir)? {
            return Err(orphaned_data(data_dir, "has no tables"));
        }
        // Only now, with the lock held: another instance's uploads in
        // flight would otherwise lose their bytes.
        if tmp_dir.exists() {
            std::fs::remove_dir_all(&tmp_dir)?;
        }
        std::fs::create_dir_all(&tmp_dir)?;
        let txn = db.begin_write()?;
        txn.open_table(BUCKETS)?;
        txn.open_table(OBJECTS)?;
        txn.open_table(PARTS)?;
        index_uploads_by_bucket(&txn)?;
        txn.commit()?;
        let store = Self { db: Arc::new(db), objects_dir, tmp_dir, _lock: lock };
        store.expire_old_uploads(upload_expiry)?;
        store.remove_unreferenced_data()?;
        Ok(store)
    }

    fn data_path(&self, id: &str) -> Result<PathBuf, StorageError> {
        if !is_data_id(id) {
            return Err(StorageError::Metadata(format!("invalid data id {id:?}")));
        }
        Ok(self.objects_dir.join(&id[..2]).join(id))
    }

    fn expire_old_uploads(&self, expiry: std::time::Duration) -> Result<u64, StorageError> {
        let (count, segments) = expire_uploads_in(&self.db, expiry)?;
        self.delete_segments(&segments);
        Ok(count)
    }

    fn remove_unreferenced_data(&self) -> Result<(), StorageError> {
        let mut referenced = HashSet::new();
        {
            let txn = self.db.begin_read()?;
            for item in txn.open_table(OBJECTS)?.iter()? {
                let object: ObjectRecord = decode(item?.1.value())?;
                referenced.extend(object.parts.into_iter().map(|p| p.segment.data_id));
            }
            for item in txn.open_table(PARTS)?.iter()? {
                let part: PartRecord = decode(item?.1.value())?;
                referenced.insert(part.part.segment.data_id);
            }
        }
        for shard in std::fs::read_dir(&self.objects_dir)? {
            let shard = shard?.path();
            if !shard.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&shard)? {
                let file = file?;
                let name = file.file_name().to_string_lossy().into_owned();
                if !referenced.contains(&name) {
                    tracing::info!(data_id = %name, "removing data no record references");
                    std::fs::remove_file(file.path())?;
                }
            }
        }
        Ok(())
    }

    fn delete_segments(&self, segments: &[DataSegment]) {
        for segment in segments {
            if let Ok(path) = self.data_path(&segment.data_id)
                && let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(data_id = %segment.data_id, error = %e, "could not remove replaced data");
            }
        }
    }

    /// Runs a metadata operation off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StorageError::Metadata(format!("metadata task failed: {e}")))?
    }

    /// Removes data files in the background: freeing a replaced or deleted
    /// object's bytes is not on the request's path. A crash before they are
    /// gone leaves them to the start-up sweep (`remove_unreferenced_data`).
    fn delete_segments_later(&self, segments: Vec<DataSegment>) {
        if segments.is_empty() {
            return;
        }
        let paths: Vec<PathBuf> = segments.iter().filter_map(|s| self.data_path(&s.data_id).ok()).collect();
        drop(tokio::task::spawn_blocking(move || {
            for path in paths {
                let _ = std::fs::remove_file(path);
            }
        }));
    }
}

/// Removes an upload and its parts in one transaction; returns their data.
/// Removes the uploads started more than `expiry` ago; returns how many and
/// the data segments to delete.
fn expire_uploads_in(db: &Database, expiry: std::time::Duration) -> Result<(u64, Vec<DataSegment>), StorageError> {
    let cutoff = now_ms() - expiry.as_millis() as i64;
    let expired: Vec<String> = {
        let txn = db.begin_read()?;
        let mut out = Vec::new();
        for item in txn.open_table(UPLOADS)?.iter()? {
            let (id, value) = item?;
            let upload: UploadRecord = decode(value.value())?;
            if upload.initiated_unix_ms < cutoff {
                out.push(id.value().to_owned());
            }
        }
        out
    };
    let (mut count, mut segments) = (0, Vec::new());
    for id in expired {
        match remove_upload(db, &id) {
            Ok(removed) => {
                tracing::info!(upload_id = %id, "expired an abandoned multipart upload");
                count += 1;
                segments.extend(removed);
            }
            // Completed or aborted meanwhile.
            Err(StorageError::NoSuchUpload) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((count, segments))
}

/// Fills the bucket index of uploads in a store made before it existed.
fn index_uploads_by_bucket(txn: &redb::WriteTransaction) -> Result<(), StorageError> {
    let uploads = txn.open_table(UPLOADS)?;
    let mut index = txn.open_table(UPLOADS_BY_BUCKET)?;
    if index.first()?.is_some() || uploads.first()?.is_none() {
        return Ok(());
    }
    for item in uploads.iter()? {
        let upload: UploadRecord = decode(item?.1.value())?;
        index.insert((upload.bucket.as_str(), upload.upload_id.as_str()), ())?;
    }
    Ok(())
}

/// Removes an upload's record and its index entry; false when there was none.
fn forget_upload(txn: &redb::WriteTransaction, upload_id: &str) -> Result<Option<UploadRecord>, StorageError> {
    let Some(value) = txn.open_table(UPLOADS)?.remove(upload_id)?.map(|v| v.value().to_vec()) else {
        return Ok(None);
    };
    let upload: UploadRecord = decode(&value)?;
    txn.open_table(UPLOADS_BY_BUCKET)?.remove((upload.bucket.as_str(), upload_id))?;
    Ok(Some(upload))
}

/// Ids of the bucket's pending uploads, from the index.
fn bucket_upload_ids(
    index: &impl ReadableTable<(&'static str, &'static str), ()>,
    bucket: &str,
) -> Result<Vec<String>, StorageError> {
    let mut ids = Vec::new();
    for item in index.range((bucket, "")..)? {
        let (key, _) = item?;
        let (b, id) = key.value();
        if b != bucket {
            break;
        }
        ids.push(id.to_owned());
    }
    Ok(ids)
}

fn remove_upload(db: &Database, upload_id: &str) -> Result<Vec<DataSegment>, StorageError> {
    let txn = db.begin_write()?;
    let segments = {
        if forget_upload(&txn, upload_id)?.is_none() {
            return Err(StorageError::NoSuchUpload);
        }
        take_parts(&mut txn.open_table(PARTS)?, upload_id)?.into_iter().map(|p| p.part.segment).collect()
    };
    txn.commit()?;
    Ok(segments)
}

fn take_parts(parts: &mut redb::Table<(&str, u32), &[u8]>, upload_id: &str) -> Result<Vec<PartRecord>, StorageError> {
    let mut out = Vec::new();
    for item in parts.extract_from_if((upload_id, 0)..=(upload_id, u32::MAX), |_, _| true)? {
        out.push(decode(item?.1.value())?);
    }
    Ok(out)
}

fn list_range(
    objects: &impl ReadableTable<&'static [u8], &'static [u8]>,
    bucket: &str,
    query: &ListQuery,
) -> Result<ListPage, StorageError> {
    let mut page = ListPage::default();
    if query.max_keys == 0 {
        return Ok(page);
    }
    let base_len = bucket.len() + 1;
    let prefix_key = object_key(bucket, &query.prefix);
    let delimiter = query.delimiter.as_deref().filter(|d| !d.is_empty());
    let mut cursor: Bound<Vec<u8>> = match &query.start_after {
        Some(after) if object_key(bucket, after) >= prefix_key => Bound::Excluded(object_key(bucket, after)),
        _ => Bound::Included(prefix_key.clone()),
    };
    'scan: loop {
        let range = (cursor.as_ref().map(Vec::as_slice), Bound::Unbounded);
        for item in objects.range::<&[u8]>(range)? {
            let (k, v) = item?;
            let raw = k.value();
            if !raw.starts_with(&prefix_key) {
                break 'scan;
            }
            let key = std::str::from_utf8(&raw[base_len..])
                .map_err(|_| StorageError::Metadata("non-UTF-8 key in store".into()))?;
            if let Some(d) = delimiter
                && let Some(pos) = key[query.prefix.len()..].find(d)
            {
                let common = &key[..query.prefix.len() + pos + d.len()];
                let already_listed = query.start_after.as_deref().is_some_and(|after| common <= after);
                if !already_listed {
                    if page.entries.len() == query.max_keys {
                        page.is_truncated = true;
                        break 'scan;
                    }
                    page.entries.push(ListEntry::CommonPrefix(common.to_owned()));
                }
                // UTF-8 never contains 0xFF, so this sorts after every key under `common`.
                let mut next = object_key(bucket, common);
                next.push(0xFF);
                cursor = Bound::Included(next);
                continue 'scan;
            }
            if page.entries.len() == query.max_keys {
                page.is_truncated = true;
                break 'scan;
            }
            page.entries.push(ListEntry::Object(key.to_owned(), decode(v.value())?));
        }
        break;
    }
    Ok(page)
}

#[async_trait::async_trait]
impl Storage for LocalStorage {
    async fn create_bucket(&self, bucket: BucketRecord) -> Result<(), StorageError> {
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            {
                let mut buckets = txn.open_table(BUCKETS)?;
                if let Some(existing) = buckets.get(bucket.name.as_str())? {
                    let existing: BucketRecord = decode(existing.value())?;
                    return Err(StorageError::BucketExists { owner: existing.owner });
                }
                buckets.insert(bucket.name.as_str(), encode(&bucket).as_slice())?;
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn get_bucket(&self, name: &str) -> Result<Option<BucketRecord>, StorageError> {
        let name = name.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let buckets = txn.open_table(BUCKETS)?;
            buckets.get(name.as_str())?.map(|v| decode(v.value())).transpose()
        })
        .await
    }

    async fn update_bucket(&self, bucket: BucketRecord) -> Result<(), StorageError> {
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            {
                let mut buckets = txn.open_table(BUCKETS)?;
                if buckets.get(bucket.name.as_str())?.is_none() {
                    return Err(StorageError::NoSuchBucket);
                }
                buckets.insert(bucket.name.as_str(), encode(&bucket).as_slice())?;
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn modify_bucket(&self, name: &str, mut change: BucketChange) -> Result<BucketRecord, StorageError> {
        let name = name.to_owned();
        // One redb write transaction: serialized with every other writer.
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let record = {
                let mut buckets = txn.open_table(BUCKETS)?;
                let mut record: BucketRecord = match buckets.get(name.as_str())? {
                    Some(v) => decode(v.value())?,
                    None => return Err(StorageError::NoSuchBucket),
                };
                if change(&mut record) {
                    buckets.insert(name.as_str(), encode(&record).as_slice())?;
                }
                record
            };
            txn.commit()?;
            Ok(record)
        })
        .await
    }

    async fn list_buckets(&self) -> Result<Vec<BucketRecord>, StorageError> {
        self.blocking(|db| {
            let txn = db.begin_read()?;
            let mut out = Vec::new();
            for item in txn.open_table(BUCKETS)?.iter()? {
                out.push(decode(item?.1.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn delete_bucket(&self, name: &str) -> Result<(), StorageError> {
        let name = name.to_owned();
        let segments = self
            .blocking(move |db| {
                let txn = db.begin_write()?;
                let mut segments = Vec::new();
                {
                    let mut buckets = txn.open_table(BUCKETS)?;
                    if buckets.get(name.as_str())?.is_none() {
                        return Err(StorageError::NoSuchBucket);
                    }
                    let objects = txn.open_table(OBJECTS)?;
                    let start = object_key(&name, "");
                    if let Some(first) = objects.range::<&[u8]>(start.as_slice()..)?.next()
                        && first?.0.value().starts_with(&start)
                    {
                        return Err(StorageError::BucketNotEmpty);
                    }
                    let pending = bucket_upload_ids(&txn.open_table(UPLOADS_BY_BUCKET)?, &name)?;
                    for id in pending {
                        forget_upload(&txn, &id)?;
                        let mut parts = txn.open_table(PARTS)?;
                        segments.extend(take_parts(&mut parts, &id)?.into_iter().map(|p| p.part.segment));
                    }
                    buckets.remove(name.as_str())?;
                }
                txn.commit()?;
                Ok(segments)
            })
            .await?;
        self.delete_segments_later(segments);
        Ok(())
    }

    async fn write_data(&self, _target: &WriteTarget, body: ByteStream) -> Result<StagedData, StorageError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let tmp_path = self.tmp_dir.join(&id);
        let final_path = self.data_path(&id)?;
        // One blocking thread takes the body from here to a durable file in
        // its final place (see data_file.rs). It hands back a StagedData as
        // soon as the file has that place, so the file is removed again on
        // any later failure, or if this request is gone by then.
        let writing = tokio::task::spawn_blocking(move || -> Result<StagedData, StorageError> {
            // Removes the temp file on every early return, including a body error.
            let mut tmp_guard = RemoveOnDrop(Some(tmp_path.clone()));
            let size = super::data_file::write_new_file(&tmp_path, body)?;
            let shard = final_path.parent().expect("data path has a shard").to_owned();
            std::fs::create_dir_all(&shard)?;
            std::fs::rename(&tmp_path, &final_path)?;
            tmp_guard.0 = None;
            let segment = DataSegment { data_id: id, stored_size: size };
            let staged = StagedData::new(segment, move || {
                let _ = std::fs::remove_file(final_path);
            });
            std::fs::File::open(&shard)?.sync_all()?;
            Ok(staged)
        });
        writing.await.map_err(|e| StorageError::Io(std::io::Error::other(e)))?
    }

    fn read_data(&self, segment: &DataSegment, range: Range<u64>) -> Result<StoredReader, StorageError> {
        use std::io::{Read, Seek};
        let mut file = std::fs::File::open(self.data_path(&segment.data_id)?)?;
        if file.metadata()?.len() != segment.stored_size {
            return Err(StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "stored data has the wrong length",
            )));
        }
        file.seek(std::io::SeekFrom::Start(range.start))?;
        Ok(Box::new(file.take(range.end - range.start)))
    }

    async fn commit_object(
        &self,
        bucket: &BucketRecord,
        key: &str,
        object: ObjectRecord,
        data: Vec<StagedData>,
    ) -> Result<String, StorageError> {
        let etag = object.etag.clone();
        let (name, generation, db_key) =
            (bucket.name.clone(), bucket.generation.clone(), object_key(&bucket.name, key));
        let replaced = self
            .blocking(move |db| {
                let txn = db.begin_write()?;
                let replaced = {
                    let current =
                        txn.open_table(BUCKETS)?.get(name.as_str())?.map(|v| decode::<BucketRecord>(v.value()));
                    match current.transpose()? {
                        Some(current) if current.generation == generation => {
                            if object.sealing.as_ref().is_some_and(|s| !current.accepts_new(s)) {
                                return Err(StorageError::KeyRetired);
                            }
                        }
                        _ => return Err(StorageError::NoSuchBucket),
                    }
                    let mut objects = txn.open_table(OBJECTS)?;
                    let old = objects.insert(db_key.as_slice(), encode(&object).as_slice())?;
                    match old {
                        Some(old) => decode::<ObjectRecord>(old.value())?.parts,
                        None => Vec::new(),
                    }
                };
                txn.commit()?;
                for staged in data {
                    staged.keep();
                }
                Ok(replaced)
            })
            .await?;
        self.delete_segments_later(replaced.into_iter().map(|p| p.segment).collect());
        Ok(etag)
    }

    async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, StorageError> {
        let db_key = object_key(bucket, key);
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let objects = txn.open_table(OBJECTS)?;
            objects.get(db_key.as_slice())?.map(|v| decode(v.value())).transpose()
        })
        .await
    }

    async fn delete_object(&self, bucket: &str, key: &str) -> Result<bool, StorageError> {
        let db_key = object_key(bucket, key);
        let removed = self
            .blocking(move |db| {
                let txn = db.begin_write()?;
                let removed = match txn.open_table(OBJECTS)?.remove(db_key.as_slice())? {
                    Some(old) => Some(decode::<ObjectRecord>(old.value())?),
                    None => None,
                };
                txn.commit()?;
                Ok(removed)
            })
            .await?;
        let existed = removed.is_some();
        if let Some(old) = removed {
            self.delete_segments_later(old.parts.into_iter().map(|p| p.segment).collect());
        }
        Ok(existed)
    }

    async fn list_objects(&self, bucket: &BucketRecord, query: &ListQuery) -> Result<ListPage, StorageError> {
        let (bucket, query) = (bucket.name.clone(), query.clone());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            list_range(&txn.open_table(OBJECTS)?, &bucket, &query)
        })
        .await
    }

    async fn create_upload(&self, upload: UploadRecord) -> Result<String, StorageError> {
        let upload_id = upload.upload_id.clone();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let bucket =
                txn.open_table(BUCKETS)?.get(upload.bucket.as_str())?.map(|v| decode::<BucketRecord>(v.value()));
            let Some(bucket) = bucket.transpose()? else {
                return Err(StorageError::NoSuchBucket);
            };
            if upload.sealing.as_ref().is_some_and(|s| !bucket.accepts_new(s)) {
                return Err(StorageError::KeyRetired);
            }
            txn.open_table(UPLOADS)?.insert(upload.upload_id.as_str(), encode(&upload).as_slice())?;
            txn.open_table(UPLOADS_BY_BUCKET)?.insert((upload.bucket.as_str(), upload.upload_id.as_str()), ())?;
            txn.commit()?;
            Ok(())
        })
        .await?;
        Ok(upload_id)
    }

    async fn replace_object_sealing(
        &self,
        bucket: &str,
        key: &str,
        expected: &Sealing,
        new: Sealing,
    ) -> Result<bool, StorageError> {
        let (db_key, expected) = (object_key(bucket, key), expected.clone());
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let replaced = {
                let mut objects = txn.open_table(OBJECTS)?;
                let current = objects.get(db_key.as_slice())?.map(|v| decode::<ObjectRecord>(v.value())).transpose()?;
                match current {
                    Some(mut object) if object.sealing.as_ref() == Some(&expected) => {
                        object.sealing = Some(new);
                        objects.insert(db_key.as_slice(), encode(&object).as_slice())?;
                        true
                    }
                    _ => false,
                }
            };
            txn.commit()?;
            Ok(replaced)
        })
        .await
    }

    async fn replace_upload_sealing(
        &self,
        upload_id: &str,
        expected: &Sealing,
        new: Sealing,
    ) -> Result<bool, StorageError> {
        let (upload_id, expected) = (upload_id.to_owned(), expected.clone());
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let replaced = {
                let mut uploads = txn.open_table(UPLOADS)?;
                let current =
                    uploads.get(upload_id.as_str())?.map(|v| decode::<UploadRecord>(v.value())).transpose()?;
                match current {
                    Some(mut upload) if upload.sealing.as_ref() == Some(&expected) => {
                        upload.sealing = Some(new);
                        uploads.insert(upload_id.as_str(), encode(&upload).as_slice())?;
                        true
                    }
                    _ => false,
                }
            };
            txn.commit()?;
            Ok(replaced)
        })
        .await
    }

    async fn get_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Option<UploadRecord>, StorageError> {
        let upload_id = upload_id.to_owned();
        let upload: Option<UploadRecord> = self
            .blocking(move |db| {
                let txn = db.begin_read()?;
                let uploads = txn.open_table(UPLOADS)?;
                uploads.get(upload_id.as_str())?.map(|v| decode(v.value())).transpose()
            })
            .await?;
        Ok(upload.filter(|u| u.bucket == bucket && u.key == key))
    }

    async fn commit_part(
        &self,
        upload: &UploadRecord,
        part: PartRecord,
        data: StagedData,
    ) -> Result<String, StorageError> {
        let (upload_id, etag) = (upload.upload_id.clone(), part.part.etag.clone());
        let replaced = self
            .blocking(move |db| {
                let txn = db.begin_write()?;
                let replaced = {
                    if txn.open_table(UPLOADS)?.get(upload_id.as_str())?.is_none() {
                        return Err(StorageError::NoSuchUpload);
                    }
                    let mut parts = txn.open_table(PARTS)?;
                    let old = parts.insert((upload_id.as_str(), part.part_number), encode(&part).as_slice())?;
                    old.map(|v| decode::<PartRecord>(v.value())).transpose()?
                };
                txn.commit()?;
                data.keep();
                Ok(replaced)
            })
            .await?;
        self.delete_segments_later(replaced.into_iter().map(|p| p.part.segment).collect());
        Ok(etag)
    }

    async fn list_parts(&self, upload: &UploadRecord) -> Result<Vec<PartRecord>, StorageError> {
        let upload_id = upload.upload_id.clone();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let parts = txn.open_table(PARTS)?;
            let mut out = Vec::new();
            for item in parts.range((upload_id.as_str(), 0)..=(upload_id.as_str(), u32::MAX))? {
                out.push(decode(item?.1.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn complete_upload(&self, upload: &UploadRecord, mut object: ObjectRecord) -> Result<String, StorageError> {
        let (upload_id, etag) = (upload.upload_id.clone(), object.etag.clone());
        let unused = self
            .blocking(move |db| {
                let txn = db.begin_write()?;
                let unused = {
                    let Some(upload) = forget_upload(&txn, &upload_id)? else {
                        return Err(StorageError::NoSuchUpload);
                    };
                    let bucket = txn
                        .open_table(BUCKETS)?
                        .get(upload.bucket.as_str())?
                        .map(|v| decode::<BucketRecord>(v.value()));
                    let Some(bucket) = bucket.transpose()? else {
                        return Err(StorageError::NoSuchBucket);
                    };
                    // The upload's sealing as it is now (a rotation may have
                    // re-wrapped it since the caller read it), never a stale copy.
                    object.sealing = upload.sealing.clone();
                    if object.sealing.as_ref().is_some_and(|s| !bucket.can_open(s)) {
                        return Err(StorageError::KeyRetired);
                    }
                    let used: HashSet<&str> = object.parts.iter().map(|p| p.segment.data_id.as_str()).collect();
                    let current = take_parts(&mut txn.open_table(PARTS)?, &upload_id)?;
                    let current_ids: HashSet<&str> = current.iter().map(|p| p.part.segment.data_id.as_str()).collect();
                    if !used.is_subset(&current_ids) {
                        // Dropping the transaction undoes everything above.
                        return Err(StorageError::PartChanged);
                    }
                    let mut unused: Vec<DataSegment> = current
                        .iter()
                        .map(|p| p.part.segment.clone())
                        .filter(|s| !used.contains(s.data_id.as_str()))
                        .collect();
                    let db_key = object_key(&upload.bucket, &upload.key);
                    let mut objects = txn.open_table(OBJECTS)?;
                    if let Some(old) = objects.insert(db_key.as_slice(), encode(&object).as_slice())? {
                        unused.extend(decode::<ObjectRecord>(old.value())?.parts.into_iter().map(|p| p.segment));
                    }
                    unused
                };
                txn.commit()?;
                Ok(unused)
            })
            .await?;
        self.delete_segments_later(unused);
        Ok(etag)
    }

    async fn abort_upload(&self, upload: &UploadRecord) -> Result<(), StorageError> {
        let upload_id = upload.upload_id.clone();
        let segments = self.blocking(move |db| remove_upload(db, &upload_id)).await?;
        self.delete_segments_later(segments);
        Ok(())
    }

    async fn expire_uploads(&self, max_age: std::time::Duration) -> Result<u64, StorageError> {
        let (count, segments) = self.blocking(move |db| expire_uploads_in(db, max_age)).await?;
        self.delete_segments_later(segments);
        Ok(count)
    }

    async fn list_uploads(&self, bucket: &str) -> Result<Vec<UploadRecord>, StorageError> {
        let bucket = bucket.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let uploads = txn.open_table(UPLOADS)?;
            let mut out = Vec::new();
            for id in bucket_upload_ids(&txn.open_table(UPLOADS_BY_BUCKET)?, &bucket)? {
                if let Some(v) = uploads.get(id.as_str())? {
                    out.push(decode::<UploadRecord>(v.value())?);
                }
            }
            out.sort_by(|a, b| (&a.key, a.initiated_unix_ms).cmp(&(&b.key, b.initiated_unix_ms)));
            Ok(out)
        })
        .await
    }
}

struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}
