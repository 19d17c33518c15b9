//! Keys the upstream would not store as given, found out at start-up.
//!
//! S3 keys are opaque strings, but some engines keep objects as a file
//! tree and change a key on the way in: SeaweedFS stores `a//b` as `a/b`
//! and keeps no bytes for `dir/`, Garage stores `/x` as `x`. Passed through,
//! such a key would silently alias another object (a PUT of `a/b` replaces
//! `a//b`, a DELETE of `a//b` deletes `a/b`) or lose an acknowledged body.
//! The gateway probes its upstream once at start-up and refuses, with 400
//! `InvalidArgument`, to write a key whose form the upstream changes; such
//! a key is never found by a read, and deleting it touches nothing.
//! Forms the upstream refuses itself (SeaweedFS: `.` and `..` segments)
//! need nothing here: the refusal reaches the client.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::HeaderMap;

use super::UpstreamStorage;
use super::data_plane::Fetch;
use crate::storage::StorageError;

/// What the upstream does not store exactly (all false: it stores every key as given).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLimits {
    /// `a//b` is stored or listed as another key.
    pub merges_empty_segments: bool,
    /// `/x` is stored or listed as another key.
    pub drops_leading_slash: bool,
    /// `dir/` with a body does not read back that body.
    pub drops_data_under_trailing_slash: bool,
}

const PROBE_BODY: &[u8] = b"sealgate key probe";

impl KeyLimits {
    /// Why `key` would be stored as another key's name, if it would.
    fn aliasing(&self, key: &str) -> Option<&'static str> {
        if self.merges_empty_segments && key.contains("//") {
            Some("the storage behind this gateway merges the empty path segment in `//`")
        } else if self.drops_leading_slash && key.starts_with('/') {
            Some("the storage behind this gateway drops a key's leading `/`")
        } else {
            None
        }
    }

    /// Whether a key can name an object here at all (reads and deletes of
    /// one that cannot find nothing instead of another key's object).
    pub fn can_exist(&self, key: &str) -> bool {
        self.aliasing(key).is_none()
    }

    /// Refuses a write of `key` the upstream would not keep as given;
    /// `has_data` is false only for a write known to be empty.
    pub fn check_write(&self, key: &str, has_data: bool) -> Result<(), StorageError> {
        let problem = self.aliasing(key).or_else(|| {
            (self.drops_data_under_trailing_slash && has_data && key.ends_with('/'))
                .then_some("the storage behind this gateway keeps no data under a key ending in `/`")
        });
        match problem {
            None => Ok(()),
            Some(why) => Err(StorageError::Refused {
                status: 400,
                code: "InvalidArgument".into(),
                message: format!("This key cannot be stored exactly: {why}."),
            }),
        }
    }
}

impl UpstreamStorage {
    /// Writes one probe key per form into the state bucket and checks that
    /// each lists and reads back as written; see the module documentation.
    pub(super) async fn probe_key_limits(&self) -> Result<KeyLimits, StorageError> {
        let base = format!("probes/keys-{}", uuid::Uuid::new_v4().simple());
        let merged = (format!("{base}/a//b"), format!("{base}/a/b"));
        let leading = (format!("/{base}-leading"), format!("{base}-leading"));
        let limits = KeyLimits {
            merges_empty_segments: !self.stores_exactly(&merged.0, Some(&merged.1)).await?,
            drops_leading_slash: !self.stores_exactly(&leading.0, Some(&leading.1)).await?,
            drops_data_under_trailing_slash: !self.stores_exactly(&format!("{base}/dir/"), None).await?,
        };
        // What a changed probe became lies under `base` too.
        for key in self.state_keys_under(&base).await.unwrap_or_default() {
            self.delete_state_key(&key).await;
        }
        if limits != KeyLimits::default() {
            tracing::info!(?limits, "the upstream changes some keys; writes of those are refused (docs/scale-out.md)");
        }
        Ok(limits)
    }

    /// Whether `key`, written with a body, reads back as written and not
    /// as `alias`, the key the upstream might turn it into. (A listing
    /// cannot tell: SeaweedFS lists `a//b` under that very prefix, as `a/b`
    /// under any shorter one.) A write the upstream refuses counts as
    /// exact: it refuses clients too.
    async fn stores_exactly(&self, key: &str, alias: Option<&str>) -> Result<bool, StorageError> {
        let body = Full::new(Bytes::from_static(PROBE_BODY)).map_err(|never| match never {}).boxed();
        self.metrics.upstream_request("PutObject");
        let put = self.data.upload(&self.state_bucket, key, None, HeaderMap::new(), PROBE_BODY.len() as u64, body);
        if let Err(failure) = put.await {
            return match failure.status {
                Some(400..=499) => Ok(true),
                _ => Err(failure.into()),
            };
        }
        let exact = self.reads_back(key).await? && !matches!(alias, Some(alias) if self.reads_back(alias).await?);
        self.delete_state_key(key).await;
        Ok(exact)
    }

    async fn reads_back(&self, key: &str) -> Result<bool, StorageError> {
        self.metrics.upstream_request("GetObject");
        let answer = match self.data.get(&self.state_bucket, key, Fetch::default()).await {
            Ok(answer) => answer,
            Err(failure) if failure.not_found() => return Ok(false),
            Err(failure) => return Err(failure.into()),
        };
        let body = answer.into_body().collect().await.map_err(|e| StorageError::Body(std::io::Error::other(e)))?;
        Ok(body.to_bytes() == PROBE_BODY)
    }

    /// Keys of the state bucket starting with `prefix` (a first page).
    async fn state_keys_under(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.metrics.upstream_request("ListObjectsV2");
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.state_bucket)
            .prefix(prefix)
            .send()
            .await
            .map_err(|e| StorageError::from(super::Failure::from_sdk(e)))?;
        Ok(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect())
    }

    /// Best effort: a probe left behind is a few bytes in the state bucket.
    async fn delete_state_key(&self, key: &str) {
        self.metrics.upstream_request("DeleteObject");
        let _ = self.client.delete_object().bucket(&self.state_bucket).key(key).send().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_only_the_forms_the_upstream_changes() {
        let seaweed =
            KeyLimits { merges_empty_segments: true, drops_leading_slash: true, drops_data_under_trailing_slash: true };
        assert!(seaweed.check_write("a//b", false).is_err());
        assert!(seaweed.check_write("/x", true).is_err());
        assert!(seaweed.check_write("dir/", true).is_err());
        assert!(seaweed.check_write("dir/", false).is_ok(), "an empty folder marker is kept");
        assert!(seaweed.check_write("a/b/c", true).is_ok());
        assert!(!seaweed.can_exist("a//b") && seaweed.can_exist("dir/"));

        let garage = KeyLimits { drops_leading_slash: true, ..KeyLimits::default() };
        assert!(garage.check_write("a//b", true).is_ok() && garage.check_write("dir/", true).is_ok());
        assert!(garage.check_write("//x", true).is_err() && !garage.can_exist("/x"));

        let exact = KeyLimits::default();
        assert!(["a//b", "/x", "dir/"].iter().all(|k| exact.check_write(k, true).is_ok() && exact.can_exist(k)));
    }
}
