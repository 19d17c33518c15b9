//! The middle of the key hierarchy: bucket keys, and the gateway's bounded
//! cache of them.
//!
//! master key (in the KMS, never leaves it)
//!   → bucket key (random 256-bit, one per epoch, stored only wrapped by the
//!     KMS, in the bucket record)
//!     → data key (random, one per object or upload, wrapped locally by the
//!       bucket key, bound to bucket and object key)
//!
//! [`BucketKeyKms`] sits between the policy guest and the KMS and keeps the
//! guest's view unchanged (`generate_data_key`, `unwrap_data_key`): a PUT or
//! GET reaches the KMS only when this gateway does not hold the bucket key
//! of that epoch. Unwrapped bucket keys live in memory only, for at most the
//! cache TTL (plus the offline grace when the KMS is unreachable), and are
//! zeroized when evicted.
//!
//! Data keys wrapped before the hierarchy existed (directly by the KMS)
//! are recognised by their shape and still unwrapped by the KMS.
//!
//! Wrapped data key layout (never change it; a new layout gets a new version):
//! `"SGBK" ‖ 0x01 ‖ bucket key id (16) ‖ nonce (12) ‖ AES-256-GCM(bucket key,
//! nonce, data key (32), aad) ‖ tag (16)`, 81 bytes, where
//! `aad = "sealgate/bucket-key-wrap/1" ‖ bucket key id ‖ bucket ‖ 0 ‖ object key ‖ 0`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngCore;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use super::{DataKey, KeyContext, Kms, KmsError};
use crate::metrics::Metrics;
use crate::storage::{BucketChange, BucketKeyRecord, BucketRecord, Storage, StorageError};

const MAGIC: &[u8; 4] = b"SGBK";
const WRAP_VERSION: u8 = 1;
const ID_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = MAGIC.len() + 1 + ID_LEN;
pub const WRAPPED_LEN: usize = HEADER_LEN + NONCE_LEN + 32 + 16;
const AAD_LABEL: &[u8] = b"sealgate/bucket-key-wrap/1";

type BucketKeyId = [u8; ID_LEN];

/// How long keys stay, as the operator configured it.
#[derive(Debug, Clone)]
pub struct BucketKeySettings {
    /// How long an unwrapped bucket key may be used without asking the KMS
    /// again. Zero: every operation asks the KMS (one call, as before the
    /// hierarchy).
    pub cache_ttl: Duration,
    /// A new bucket-key epoch is started for writes once the current one is
    /// this old.
    pub max_age: Duration,
    /// While the KMS is unreachable (not when it refuses), an expired key
    /// may still be used this long past its TTL.
    pub offline_grace: Duration,
    /// Most bucket keys held at once.
    pub max_cached: usize,
}

impl Default for BucketKeySettings {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(300),
            max_age: Duration::from_secs(24 * 3600),
            offline_grace: Duration::ZERO,
            max_cached: 10_000,
        }
    }
}

/// The bucket key id named by a wrapped data key of the hierarchy; None for
/// a data key wrapped directly by the KMS (before the hierarchy).
pub fn bucket_key_of(wrapped: &[u8]) -> Option<String> {
    parse(wrapped).map(|(id, ..)| hex::encode(id))
}

fn parse(wrapped: &[u8]) -> Option<(BucketKeyId, [u8; NONCE_LEN], &[u8])> {
    if wrapped.len() != WRAPPED_LEN || &wrapped[..4] != MAGIC || wrapped[4] != WRAP_VERSION {
        return None;
    }
    let id = wrapped[5..HEADER_LEN].try_into().ok()?;
    let nonce = wrapped[HEADER_LEN..HEADER_LEN + NONCE_LEN].try_into().ok()?;
    Some((id, nonce, &wrapped[HEADER_LEN + NONCE_LEN..]))
}

fn aad(id: &BucketKeyId, context: &KeyContext) -> Vec<u8> {
    let mut aad = AAD_LABEL.to_vec();
    aad.extend_from_slice(id);
    for part in [&context.bucket, &context.key] {
        aad.extend_from_slice(part.as_bytes());
        aad.push(0);
    }
    aad
}

fn cipher(bucket_key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bucket_key).expect("32-byte key"))
}

fn wrap_locally(bucket_key: &[u8; 32], id: &BucketKeyId, data_key: &[u8; 32], context: &KeyContext) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    wrap_with_nonce(bucket_key, id, nonce, data_key, context)
}

fn wrap_with_nonce(
    bucket_key: &[u8; 32],
    id: &BucketKeyId,
    nonce: [u8; NONCE_LEN],
    data_key: &[u8; 32],
    context: &KeyContext,
) -> Vec<u8> {
    let mut sealed = data_key.to_vec();
    cipher(bucket_key)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad(id, context)), &mut sealed)
        .expect("sealing 32 bytes cannot fail");
    let mut wrapped = Vec::with_capacity(WRAPPED_LEN);
    wrapped.extend_from_slice(MAGIC);
    wrapped.push(WRAP_VERSION);
    wrapped.extend_from_slice(id);
    wrapped.extend_from_slice(&nonce);
    wrapped.extend_from_slice(&sealed);
    wrapped
}

fn unwrap_locally(
    bucket_key: &[u8; 32],
    id: &BucketKeyId,
    nonce: [u8; NONCE_LEN],
    sealed: &[u8],
    context: &KeyContext,
) -> Result<Zeroizing<[u8; 32]>, KmsError> {
    let mut buf = Zeroizing::new(sealed.to_vec());
    let opened = cipher(bucket_key)
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad(id, context)), &mut buf)
        .map_err(|_| KmsError::Refused("wrapped key does not authenticate under its bucket key and context".into()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(opened);
    Ok(key)
}

/// What the KMS binds a wrapped bucket key to. Object keys are never empty
/// in S3, so this context is never an object's.
fn bucket_key_context(bucket: &str) -> KeyContext {
    KeyContext { bucket: bucket.to_owned(), key: String::new() }
}

fn now_unix_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

struct CachedKey {
    key: Zeroizing<[u8; 32]>,
    fetched: Instant,
}

/// The epoch new data keys of a bucket are wrapped under, as last looked up.
struct CurrentEpoch {
    id: BucketKeyId,
    created_unix_ms: i64,
    checked: Instant,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<(String, BucketKeyId), CachedKey>,
    /// Per bucket and master key id the guest asked for.
    current: HashMap<(String, String), CurrentEpoch>,
}

pub struct BucketKeyKms {
    inner: Arc<dyn Kms>,
    storage: Arc<dyn Storage>,
    settings: BucketKeySettings,
    metrics: Arc<Metrics>,
    cache: Mutex<Cache>,
    /// One KMS fetch per bucket at a time, so a burst of requests after a
    /// miss makes one KMS call, not one each: those queued behind a fetch
    /// take its key from the cache, or its error (kept here), instead of
    /// asking a failing KMS one after another.
    fetching: Mutex<HashMap<String, FetchLock>>,
}

type FetchLock = Arc<tokio::sync::Mutex<Option<(Instant, KmsError)>>>;

fn storage_error(e: StorageError) -> KmsError {
    match e {
        StorageError::NoSuchBucket => KmsError::Refused("the bucket does not exist".into()),
        other => KmsError::Unavailable(format!("reading the bucket's keys: {other}")),
    }
}

impl BucketKeyKms {
    pub fn new(
        inner: Arc<dyn Kms>,
        storage: Arc<dyn Storage>,
        settings: BucketKeySettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { inner, storage, settings, metrics, cache: Mutex::default(), fetching: Mutex::default() }
    }

    /// The KMS behind the hierarchy (for master-key work such as rotation).
    pub fn master(&self) -> &Arc<dyn Kms> {
        &self.inner
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn caching(&self) -> bool {
        !self.settings.cache_ttl.is_zero()
    }

    /// Drops (and zeroizes) every key past its TTL and grace. Run periodically.
    pub fn purge_expired(&self) {
        let keep = self.settings.cache_ttl + self.settings.offline_grace;
        let ttl = self.settings.cache_ttl;
        let mut cache = self.cache();
        cache.keys.retain(|_, k| k.fetched.elapsed() < keep);
        cache.current.retain(|_, c| c.checked.elapsed() < ttl);
        drop(cache);
        // Fetch locks nobody holds or waits on (buckets gone quiet or deleted).
        let mut locks = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
    }

    /// Forgets everything about `bucket` (rotation, deletion).
    pub fn forget_bucket(&self, bucket: &str) {
        let mut cache = self.cache();
        cache.keys.retain(|(b, _), _| b != bucket);
        cache.current.retain(|(b, _), _| b != bucket);
    }

    fn fetch_lock(&self, bucket: &str) -> FetchLock {
        let mut locks = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(bucket.to_owned()).or_default().clone()
    }

    /// Waits for the bucket's fetch in progress. Err: that fetch failed
    /// while we waited; its error is ours.
    async fn fetch_turn<'l>(
        &self,
        lock: &'l FetchLock,
    ) -> Result<tokio::sync::MutexGuard<'l, Option<(Instant, KmsError)>>, KmsError> {
        let queued = Instant::now();
        let turn = lock.lock().await;
        match &*turn {
            Some((failed_at, error)) if *failed_at >= queued => Err(error.clone()),
            _ => Ok(turn),
        }
    }

    fn cached_key(&self, bucket: &str, id: &BucketKeyId, within: Duration) -> Option<Zeroizing<[u8; 32]>> {
        let cache = self.cache();
        let entry = cache.keys.get(&(bucket.to_owned(), *id))?;
        (entry.fetched.elapsed() < within).then(|| entry.key.clone())
    }

    fn remember_key(&self, bucket: &str, id: BucketKeyId, key: &Zeroizing<[u8; 32]>) {
        if !self.caching() {
            return;
        }
        let keep = self.settings.cache_ttl + self.settings.offline_grace;
        let mut cache = self.cache();
        if cache.keys.len() >= self.settings.max_cached {
            cache.keys.retain(|_, k| k.fetched.elapsed() < keep);
        }
        while cache.keys.len() >= self.settings.max_cached.max(1) {
            let oldest = cache.keys.iter().min_by_key(|(_, k)| k.fetched).map(|(id, _)| id.clone());
            match oldest {
                Some(oldest) => cache.keys.remove(&oldest),
                None => break,
            };
        }
        cache.keys.insert((bucket.to_owned(), id), CachedKey { key: key.clone(), fetched: Instant::now() });
    }

    /// The plaintext of bucket key `id` of `bucket`: from the cache, else
    /// unwrapped by the KMS (one call). `record` saves a read when the
    /// caller has the bucket record already.
    async fn bucket_key(
        &self,
        bucket: &str,
        id: &BucketKeyId,
        record: Option<&BucketRecord>,
    ) -> Result<Zeroizing<[u8; 32]>, KmsError> {
        if let Some(key) = self.cached_key(bucket, id, self.settings.cache_ttl) {
            self.metrics.bucket_key_lookup("hit");
            return Ok(key);
        }
        // Without a cache there is nothing to share: every caller fetches.
        let lock = self.fetch_lock(bucket);
        let mut turn = match self.caching() {
            true => Some(self.fetch_turn(&lock).await?),
            false => None,
        };
        if let Some(key) = self.cached_key(bucket, id, self.settings.cache_ttl) {
            self.metrics.bucket_key_lookup("hit");
            return Ok(key);
        }
        self.metrics.bucket_key_lookup("miss");
        let result = self.fetch_bucket_key(bucket, id, record).await;
        if let Some(turn) = turn.as_mut() {
            **turn = result.as_ref().err().map(|e| (Instant::now(), e.clone()));
        }
        result
    }

    async fn fetch_bucket_key(
        &self,
        bucket: &str,
        id: &BucketKeyId,
        record: Option<&BucketRecord>,
    ) -> Result<Zeroizing<[u8; 32]>, KmsError> {
        let fetched = match record {
            Some(record) => record.clone(),
            None => self
                .storage
                .get_bucket(bucket)
                .await
                .map_err(storage_error)?
                .ok_or_else(|| KmsError::Refused("the bucket does not exist".into()))?,
        };
        let hex_id = hex::encode(id);
        let Some(entry) = fetched.encryption.bucket_keys.iter().find(|k| k.id == hex_id) else {
            // Most likely a deep rotation dropped it after this request read
            // the object or upload, which now names another: a retry reads that.
            return Err(KmsError::Unavailable(format!("bucket key {hex_id} is not one of the bucket's (retired?)")));
        };
        match self.inner.unwrap_data_key(&entry.master_key_id, &entry.wrapped, &bucket_key_context(bucket)).await {
            Ok(unwrapped) => {
                self.remember_key(bucket, *id, &unwrapped.plaintext);
                Ok(unwrapped.plaintext)
            }
            Err(KmsError::Unavailable(reason)) => {
                let within = self.settings.cache_ttl + self.settings.offline_grace;
                match self.cached_key(bucket, id, within) {
                    Some(key) if !self.settings.offline_grace.is_zero() => {
                        self.metrics.bucket_key_lookup("stale");
                        tracing::warn!(bucket, reason = %reason, "KMS unavailable: using a cached bucket key within the offline grace");
                        Ok(key)
                    }
                    _ => Err(KmsError::Unavailable(reason)),
                }
            }
            Err(refused) => {
                // The KMS says no (key revoked or destroyed): forget the key now.
                self.cache().keys.remove(&(bucket.to_owned(), *id));
                Err(refused)
            }
        }
    }

    /// The master key new data keys of `bucket` go under when the guest
    /// asks for `key_id`: the bucket's current master key, also when the
    /// guest names the one a rotation is moving away from. Any other key
    /// is not this bucket's to use.
    fn master_for(record: &BucketRecord, key_id: &str) -> Result<String, KmsError> {
        let current = record.encryption.key_id.as_deref();
        if current == Some(key_id) || record.encryption.rotating_from.as_deref() == Some(key_id) {
            return current.map(str::to_owned).ok_or_else(|| KmsError::Refused("the bucket has no master key".into()));
        }
        Err(KmsError::Refused(format!("key {key_id} is not this bucket's master key")))
    }

    fn fresh_epoch<'r>(&self, record: &'r BucketRecord, master: &str) -> Option<&'r BucketKeyRecord> {
        let max_age_ms = self.settings.max_age.as_millis() as i64;
        let now = now_unix_ms();
        record
            .encryption
            .bucket_keys
            .iter()
            .rev()
            .find(|k| k.master_key_id == master && !k.retired && now - k.created_unix_ms < max_age_ms)
    }

    fn cached_current(&self, bucket: &str, key_id: &str) -> Option<BucketKeyId> {
        let cache = self.cache();
        let current = cache.current.get(&(bucket.to_owned(), key_id.to_owned()))?;
        let young = now_unix_ms() - current.created_unix_ms < self.settings.max_age.as_millis() as i64;
        (young && current.checked.elapsed() < self.settings.cache_ttl).then_some(current.id)
    }

    /// The bucket key new data keys of `bucket` are wrapped under, starting
    /// a new epoch when there is none for the current master key or it is
    /// older than the maximum age.
    async fn current_bucket_key(
        &self,
        bucket: &str,
        key_id: &str,
    ) -> Result<(BucketKeyId, Zeroizing<[u8; 32]>), KmsError> {
        if let Some(id) = self.cached_current(bucket, key_id) {
            let key = self.bucket_key(bucket, &id, None).await?;
            return Ok((id, key));
        }
        let record = self.storage.get_bucket(bucket).await.map_err(storage_error)?;
        let record = record.ok_or_else(|| KmsError::Refused("the bucket does not exist".into()))?;
        let master = Self::master_for(&record, key_id)?;
        let (id, created_unix_ms, key) = match self.fresh_epoch(&record, &master) {
            Some(epoch) => {
                let id = decode_id(&epoch.id)?;
                (id, epoch.created_unix_ms, self.bucket_key(bucket, &id, Some(&record)).await?)
            }
            None => self.start_epoch(bucket, &master).await?,
        };
        if self.caching() {
            let current = CurrentEpoch { id, created_unix_ms, checked: Instant::now() };
            self.cache().current.insert((bucket.to_owned(), key_id.to_owned()), current);
        }
        Ok((id, key))
    }

    /// Makes a bucket key, has the KMS wrap it, and adds it to the bucket
    /// record unless another request (or gateway) added a fresh one first;
    /// then that one is used and ours is dropped.
    async fn start_epoch(
        &self,
        bucket: &str,
        master: &str,
    ) -> Result<(BucketKeyId, i64, Zeroizing<[u8; 32]>), KmsError> {
        let lock = self.fetch_lock(bucket);
        let mut one_fetch = self.fetch_turn(&lock).await?;
        // A request that held the lock before us may have started one.
        if let Some(record) = self.storage.get_bucket(bucket).await.map_err(storage_error)?
            && let Some(epoch) = self.fresh_epoch(&record, master)
        {
            drop(one_fetch);
            let id = decode_id(&epoch.id)?;
            return Ok((id, epoch.created_unix_ms, self.bucket_key(bucket, &id, Some(&record)).await?));
        }
        let key = super::random_data_key();
        let mut id = [0u8; ID_LEN];
        rand::rng().fill_bytes(&mut id);
        let wrapped = match self.inner.wrap_data_key(master, &key, &bucket_key_context(bucket)).await {
            Ok(wrapped) => wrapped,
            Err(e) => {
                *one_fetch = Some((Instant::now(), e.clone()));
                return Err(e);
            }
        };
        let created_unix_ms = now_unix_ms();
        let ours = BucketKeyRecord {
            id: hex::encode(id),
            master_key_id: master.to_owned(),
            wrapped,
            created_unix_ms,
            retired: false,
        };
        let (master_owned, max_age_ms) = (master.to_owned(), self.settings.max_age.as_millis() as i64);
        let candidate = ours.clone();
        let change: BucketChange = Box::new(move |record| {
            let now = now_unix_ms();
            let current = record.encryption.key_id.as_deref() == Some(master_owned.as_str());
            let fresh_exists = record
                .encryption
                .bucket_keys
                .iter()
                .any(|k| k.master_key_id == master_owned && !k.retired && now - k.created_unix_ms < max_age_ms);
            if !current || fresh_exists {
                return false;
            }
            record.encryption.bucket_keys.push(candidate.clone());
            true
        });
        let record = self.storage.modify_bucket(bucket, change).await.map_err(storage_error)?;
        if record.encryption.bucket_keys.contains(&ours) {
            self.metrics.bucket_key_created();
            tracing::info!(bucket, bucket_key = %ours.id, master_key = %master, "new bucket-key epoch");
            self.remember_key(bucket, id, &key);
            return Ok((id, created_unix_ms, key));
        }
        drop(one_fetch);
        // Someone else started one, or the master key changed meanwhile.
        let master = Self::master_for(&record, master)?;
        let epoch = self
            .fresh_epoch(&record, &master)
            .ok_or_else(|| KmsError::Unavailable("the bucket's keys changed while starting an epoch; retry".into()))?;
        let id = decode_id(&epoch.id)?;
        Ok((id, epoch.created_unix_ms, self.bucket_key(bucket, &id, Some(&record)).await?))
    }

    /// Re-wraps every bucket key of `bucket` held by `old_master` under
    /// `new_master` (two KMS calls each) and retires it: the next write
    /// starts a new epoch. Objects are not touched. Returns how many moved.
    pub async fn rewrap_bucket_keys(
        &self,
        bucket: &str,
        old_master: &str,
        new_master: &str,
    ) -> Result<u64, RewrapError> {
        let mut moved = 0;
        loop {
            let record = self.storage.get_bucket(bucket).await?.ok_or(StorageError::NoSuchBucket)?;
            let Some(entry) = record.encryption.bucket_keys.iter().find(|k| k.master_key_id == old_master).cloned()
            else {
                return Ok(moved);
            };
            let context = bucket_key_context(bucket);
            let key = self.inner.unwrap_data_key(old_master, &entry.wrapped, &context).await?;
            let wrapped = self.inner.wrap_data_key(new_master, &key.plaintext, &context).await?;
            let new_master = new_master.to_owned();
            let change: BucketChange = Box::new(move |record| {
                let Some(slot) = record.encryption.bucket_keys.iter_mut().find(|k| **k == entry) else {
                    return false;
                };
                slot.master_key_id = new_master.clone();
                slot.wrapped = wrapped.clone();
                slot.retired = true;
                true
            });
            self.storage.modify_bucket(bucket, change).await?;
            moved += 1;
        }
    }

    /// Removes every bucket key of `bucket` except `keep` (after a deep
    /// rewrap moved every data key away from them). Returns how many.
    pub async fn drop_bucket_keys_except(&self, bucket: &str, keep: &[String]) -> Result<u64, StorageError> {
        let keep = keep.to_vec();
        let before = self.storage.get_bucket(bucket).await?.map_or(0, |r| r.encryption.bucket_keys.len());
        let change: BucketChange = Box::new(move |record| {
            record.encryption.bucket_keys.retain(|k| keep.contains(&k.id));
            true
        });
        let after = self.storage.modify_bucket(bucket, change).await?.encryption.bucket_keys.len();
        self.forget_bucket(bucket);
        Ok(before.saturating_sub(after) as u64)
    }

    /// The id of the epoch new data keys of `bucket` go under now (for a
    /// deep rewrap), starting one if needed.
    pub async fn current_bucket_key_id(&self, bucket: &str, key_id: &str) -> Result<String, KmsError> {
        Ok(hex::encode(self.current_bucket_key(bucket, key_id).await?.0))
    }
}

fn decode_id(hex_id: &str) -> Result<BucketKeyId, KmsError> {
    hex::decode(hex_id)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| KmsError::Invalid(format!("malformed bucket key id {hex_id:?} in the bucket record")))
}

#[derive(Debug, thiserror::Error)]
pub enum RewrapError {
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

#[async_trait::async_trait]
impl Kms for BucketKeyKms {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn create_key(&self, bucket: &str) -> Result<String, KmsError> {
        self.inner.create_key(bucket).await
    }

    /// Wraps under the bucket's current bucket key (no KMS call when it is cached).
    async fn wrap_data_key(
        &self,
        key_id: &str,
        plaintext: &[u8; 32],
        context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        let (id, bucket_key) = self.current_bucket_key(&context.bucket, key_id).await?;
        Ok(wrap_locally(&bucket_key, &id, plaintext, context))
    }

    async fn unwrap_data_key(&self, key_id: &str, wrapped: &[u8], context: &KeyContext) -> Result<DataKey, KmsError> {
        let Some((id, nonce, sealed)) = parse(wrapped) else {
            // Wrapped before the hierarchy: the KMS unwraps it, as it always did.
            return self.inner.unwrap_data_key(key_id, wrapped, context).await;
        };
        let bucket_key = self.bucket_key(&context.bucket, &id, None).await?;
        let plaintext = unwrap_locally(&bucket_key, &id, nonce, sealed, context)?;
        Ok(DataKey { key_id: key_id.to_owned(), plaintext, wrapped: wrapped.to_vec() })
    }

    async fn destroy_key(&self, key_id: &str) -> Result<(), KmsError> {
        self.inner.destroy_key(key_id).await
    }

    async fn health(&self) -> Result<(), KmsError> {
        self.inner.health().await
    }
}

/// The local wrapping alone, for the fuzz target (`crate::fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing {
    use super::*;

    /// Opens `wrapped` under `bucket_key` as the gateway would.
    pub fn unwrap_with(bucket_key: &[u8; 32], wrapped: &[u8], context: &KeyContext) -> Option<[u8; 32]> {
        let (id, nonce, sealed) = parse(wrapped)?;
        unwrap_locally(bucket_key, &id, nonce, sealed, context).ok().map(|k| *k)
    }

    /// Wraps `data_key` again with the id and nonce `template` carries.
    pub fn rewrap_like(bucket_key: &[u8; 32], template: &[u8], data_key: &[u8; 32], context: &KeyContext) -> Vec<u8> {
        let (id, nonce, _) = parse(template).expect("a template that parsed");
        wrap_with_nonce(bucket_key, &id, nonce, data_key, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(key: &str) -> KeyContext {
        KeyContext { bucket: "b".into(), key: key.into() }
    }

    #[test]
    fn local_wrap_round_trips_and_is_bound_to_its_context_and_bucket_key() {
        let (bucket_key, id) = ([9u8; 32], [3u8; ID_LEN]);
        let data_key = [5u8; 32];
        let wrapped = wrap_locally(&bucket_key, &id, &data_key, &ctx("o"));
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        assert_eq!(bucket_key_of(&wrapped), Some(hex::encode(id)));
        let (pid, nonce, sealed) = parse(&wrapped).unwrap();
        assert_eq!(pid, id);
        assert_eq!(*unwrap_locally(&bucket_key, &id, nonce, sealed, &ctx("o")).unwrap(), data_key);
        assert!(unwrap_locally(&bucket_key, &id, nonce, sealed, &ctx("other")).is_err());
        assert!(unwrap_locally(&[8u8; 32], &id, nonce, sealed, &ctx("o")).is_err());
        assert!(unwrap_locally(&bucket_key, &[4u8; ID_LEN], nonce, sealed, &ctx("o")).is_err());
    }

    #[test]
    fn data_keys_wrapped_directly_by_a_kms_are_not_taken_for_ours() {
        // The local KMS's layout: 0x01 ‖ nonce ‖ sealed key ‖ tag, 61 bytes.
        assert_eq!(bucket_key_of(&[1u8; 61]), None);
        assert_eq!(bucket_key_of(&[0u8; WRAPPED_LEN]), None);
        let mut almost = wrap_locally(&[9u8; 32], &[3u8; ID_LEN], &[5u8; 32], &ctx("o"));
        almost[4] = 2;
        assert_eq!(bucket_key_of(&almost), None);
    }
}
