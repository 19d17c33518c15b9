//! What the host enforces of every evaluation, whatever the module says.
//!
//! The module decides *whether* (allow or deny, which error, encrypt or not
//! where the rules leave a choice); the host decides *with what*. Two
//! checkpoints: each KMS import asks the request's [`Scope`] whether the key
//! it names is this request's to use, and an allowed decision is checked by
//! [`Scope::check_effects`] before any handler stores anything. A breach is
//! a [`Violation`]: the request fails with 500, nothing is written, keys
//! created for it are destroyed.

use super::contract::{BucketState, Operation, Request, Sealed};

/// A host-enforced invariant the module broke.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

fn violation(message: impl Into<String>) -> Violation {
    Violation(message.into())
}

/// Where a data key the module holds came from: the host tags each handle
/// so that a decision cannot pass one key off as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Generated in this request under the bucket's own master key.
    Generated,
    /// Unwrapped from the object or upload this request reads or extends.
    Target,
    /// Unwrapped from this request's copy source.
    Source,
}

/// The keys a contract 2.0.0 import may act on.
#[derive(Debug, Clone, Copy)]
pub enum NamedKey {
    /// The bucket's master key.
    Bucket,
    /// What the request reads or extends.
    Target,
    /// The copy source.
    Source,
}

/// Writes that create an object's data: sealed with a fresh data key of the
/// bucket's key when the bucket is encrypted.
fn creates_object(op: Operation) -> bool {
    matches!(
        op,
        Operation::PutObject | Operation::CopyObject | Operation::PostObject | Operation::CreateMultipartUpload
    )
}

/// Writes into an existing upload: sealed with the upload's key when it was
/// created sealed, whatever the bucket says now.
fn extends_upload(op: Operation) -> bool {
    matches!(op, Operation::UploadPart | Operation::UploadPartCopy)
}

/// The operations whose decision sets the bucket's encryption.
fn sets_bucket_state(op: Operation) -> bool {
    matches!(op, Operation::CreateBucket | Operation::PutBucketEncryption | Operation::DeleteBucketEncryption)
}

/// What one request may touch: its bucket, that bucket's key, and the
/// sealed object, upload or copy source the host itself named.
pub struct Scope {
    operation: Operation,
    bucket: String,
    bucket_state: Option<BucketState>,
    target: Option<Sealed>,
    source: Option<Sealed>,
}

/// What an allowed decision asks for, as the checks need to see it.
pub struct Effects<'a> {
    pub bucket_state: Option<&'a BucketState>,
    pub seal_with: Option<KeyOrigin>,
    pub open_with: Option<KeyOrigin>,
    /// Master keys created during this evaluation.
    pub created_keys: &'a [String],
}

impl Scope {
    pub fn of(request: &Request) -> Self {
        Self {
            operation: request.operation,
            bucket: request.bucket.clone(),
            bucket_state: request.bucket_state.clone(),
            target: request.target.clone(),
            source: request.source.clone(),
        }
    }

    pub fn operation(&self) -> Operation {
        self.operation
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn bucket_key(&self) -> Option<&str> {
        self.bucket_state.as_ref().and_then(|b| b.key_id.as_deref())
    }

    /// For contract 2.0.0's imports, which name no key: the bucket's key,
    /// the target or the copy source, when the request has one.
    pub fn named_key(&self, which: NamedKey) -> Result<Sealed, Violation> {
        let found = match which {
            NamedKey::Bucket => self.bucket_key().map(|k| Sealed { key_id: k.to_owned(), wrapped_key: Vec::new() }),
            NamedKey::Target => self.target.clone(),
            NamedKey::Source => self.source.clone(),
        };
        found.ok_or_else(|| {
            violation(format!("{:?} on bucket {:?} has no {which:?} key to use", self.operation, self.bucket))
        })
    }

    fn bucket_encrypted(&self) -> bool {
        self.bucket_state.as_ref().is_some_and(|b| b.encrypted)
    }

    /// A master key only for the bucket being created, or whose encryption
    /// is being turned on and which has no key yet; one per request.
    pub fn may_create_key(&self, bucket: &str, created_so_far: usize) -> Result<(), Violation> {
        let for_this_bucket = bucket == self.bucket;
        let turning_on = match self.operation {
            Operation::CreateBucket => true,
            Operation::PutBucketEncryption => self.bucket_key().is_none(),
            _ => false,
        };
        if !(for_this_bucket && turning_on && created_so_far == 0) {
            return Err(violation(format!(
                "{:?} on bucket {:?} may not create a master key for bucket {bucket:?}",
                self.operation, self.bucket
            )));
        }
        Ok(())
    }

    /// Data keys only from the bucket's own key, only for a write that
    /// creates an object.
    pub fn may_generate(&self, key_id: &str) -> Result<(), Violation> {
        if !(creates_object(self.operation) && self.bucket_key() == Some(key_id)) {
            return Err(violation(format!(
                "{:?} on bucket {:?} may not generate a data key under key {key_id:?}",
                self.operation, self.bucket
            )));
        }
        Ok(())
    }

    /// Unwrapping only what the host named: the target or the copy source,
    /// key id and wrapped key exactly as stored.
    pub fn may_unwrap(&self, key_id: &str, wrapped: &[u8]) -> Result<KeyOrigin, Violation> {
        let is = |s: &Option<Sealed>| s.as_ref().is_some_and(|s| s.key_id == key_id && s.wrapped_key == wrapped);
        if is(&self.target) {
            Ok(KeyOrigin::Target)
        } else if is(&self.source) {
            Ok(KeyOrigin::Source)
        } else {
            Err(violation(format!("{:?} may not unwrap a data key it was not given (key {key_id:?})", self.operation)))
        }
    }

    /// Destroying only the bucket's own key, when the bucket is deleted.
    pub fn may_destroy(&self, key_id: &str) -> Result<(), Violation> {
        if !(self.operation == Operation::DeleteBucket && self.bucket_key() == Some(key_id)) {
            return Err(violation(format!(
                "{:?} on bucket {:?} may not destroy key {key_id:?}",
                self.operation, self.bucket
            )));
        }
        Ok(())
    }

    /// The checks on an allowed decision, before anything is stored.
    pub fn check_effects(&self, effects: &Effects<'_>) -> Result<(), Violation> {
        self.check_bucket_state(effects.bucket_state, effects.created_keys)?;
        self.check_seal(effects.seal_with)?;
        self.check_open(effects.open_with)
    }

    fn check_bucket_state(&self, state: Option<&BucketState>, created: &[String]) -> Result<(), Violation> {
        let Some(state) = state else { return Ok(()) };
        if !sets_bucket_state(self.operation) {
            return Err(violation(format!("{:?} may not change the bucket's encryption", self.operation)));
        }
        let attached = state.key_id.as_deref();
        if state.encrypted && attached.is_none() {
            return Err(violation("an encrypted bucket without a key"));
        }
        match (self.bucket_key(), attached) {
            // A bucket keeps its key: objects sealed under it must stay
            // readable, and DeleteBucket must find it to destroy it.
            (Some(own), Some(k)) if own == k => Ok(()),
            (Some(own), _) => Err(violation(format!("the bucket's key {own:?} may not be dropped or replaced"))),
            (None, Some(k)) if !created.iter().any(|c| c == k) => {
                Err(violation(format!("bucket key {k:?} was neither the bucket's nor created now")))
            }
            (None, _) => Ok(()),
        }
    }

    fn check_seal(&self, seal: Option<KeyOrigin>) -> Result<(), Violation> {
        let (required, expected) = if creates_object(self.operation) {
            (self.bucket_encrypted(), KeyOrigin::Generated)
        } else if extends_upload(self.operation) {
            (self.target.is_some(), KeyOrigin::Target)
        } else {
            (false, KeyOrigin::Generated)
        };
        match seal {
            None if required => Err(violation(format!(
                "{:?} into {:?} was decided in plaintext, but what it writes must be sealed",
                self.operation, self.bucket
            ))),
            None => Ok(()),
            Some(_) if !creates_object(self.operation) && !extends_upload(self.operation) => {
                Err(violation(format!("{:?} writes nothing to seal", self.operation)))
            }
            Some(origin) if origin != expected => Err(violation(format!(
                "{:?} into {:?} would be sealed with a {origin:?} key, not a {expected:?} one",
                self.operation, self.bucket
            ))),
            Some(_) => Ok(()),
        }
    }

    fn check_open(&self, open: Option<KeyOrigin>) -> Result<(), Violation> {
        let (stored, expected) = match self.operation {
            Operation::GetObject | Operation::HeadObject => (&self.target, KeyOrigin::Target),
            Operation::CopyObject | Operation::UploadPartCopy => (&self.source, KeyOrigin::Source),
            _ => (&None, KeyOrigin::Target),
        };
        match open {
            None if stored.is_some() && self.operation != Operation::HeadObject => {
                Err(violation(format!("{:?} reads sealed data but released no key for it", self.operation)))
            }
            None => Ok(()),
            Some(origin) if stored.is_none() || origin != expected => {
                Err(violation(format!("{:?} would open its data with a {origin:?} key", self.operation)))
            }
            Some(_) => Ok(()),
        }
    }

    /// Whether what this request stores or returns is sealed, which is what
    /// the host answers in `x-amz-server-side-encryption` (never the
    /// module's claim).
    pub fn sealed_response(&self, seal: Option<KeyOrigin>) -> bool {
        let reads_sealed =
            matches!(self.operation, Operation::GetObject | Operation::HeadObject | Operation::CompleteMultipartUpload)
                && self.target.is_some();
        seal.is_some() || reads_sealed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(operation: Operation, bucket_state: Option<BucketState>) -> Request {
        Request {
            operation,
            bucket: "b".into(),
            key: Some("k".into()),
            headers: vec![],
            bucket_state,
            target: None,
            source: None,
            requested_algorithm: None,
        }
    }

    fn encrypted() -> Option<BucketState> {
        Some(BucketState { encrypted: true, key_id: Some("kb".into()) })
    }

    fn plain() -> Option<BucketState> {
        Some(BucketState { encrypted: false, key_id: None })
    }

    fn sealed(key_id: &str) -> Option<Sealed> {
        Some(Sealed { key_id: key_id.into(), wrapped_key: vec![1, 2, 3] })
    }

    fn effects(seal: Option<KeyOrigin>, open: Option<KeyOrigin>) -> Effects<'static> {
        Effects { bucket_state: None, seal_with: seal, open_with: open, created_keys: &[] }
    }

    #[test]
    fn writes_into_encrypted_buckets_are_sealed_with_a_fresh_bucket_key() {
        let scope = Scope::of(&request(Operation::PutObject, encrypted()));
        assert!(scope.check_effects(&effects(None, None)).is_err(), "plaintext into an encrypted bucket");
        assert!(scope.check_effects(&effects(Some(KeyOrigin::Generated), None)).is_ok());
        assert!(scope.may_generate("kb").is_ok());
        assert!(scope.may_generate("other").is_err());
        let mut copy = request(Operation::CopyObject, encrypted());
        copy.source = sealed("ka");
        let scope = Scope::of(&copy);
        let stolen = effects(Some(KeyOrigin::Source), Some(KeyOrigin::Source));
        assert!(scope.check_effects(&stolen).is_err(), "sealed under the source's data key");
        assert!(scope.check_effects(&effects(Some(KeyOrigin::Generated), Some(KeyOrigin::Source))).is_ok());
    }

    #[test]
    fn parts_of_a_sealed_upload_are_sealed_with_the_uploads_key() {
        let mut part = request(Operation::UploadPart, None);
        part.target = sealed("kb");
        let scope = Scope::of(&part);
        assert!(scope.check_effects(&effects(None, None)).is_err());
        assert_eq!(scope.may_unwrap("kb", &[1, 2, 3]).unwrap(), KeyOrigin::Target);
        assert!(scope.may_unwrap("kb", &[9]).is_err(), "a wrapped key the host did not give");
        assert!(scope.check_effects(&effects(Some(KeyOrigin::Target), None)).is_ok());
        assert!(scope.may_generate("kb").is_err(), "parts use the upload's key");
    }

    #[test]
    fn keys_are_created_and_destroyed_only_for_the_requests_bucket() {
        let create = Scope::of(&request(Operation::CreateBucket, None));
        assert!(create.may_create_key("b", 0).is_ok());
        assert!(create.may_create_key("b", 1).is_err(), "one key per request");
        assert!(create.may_create_key("elsewhere", 0).is_err());
        let put = Scope::of(&request(Operation::PutObject, encrypted()));
        assert!(put.may_create_key("b", 0).is_err());
        assert!(put.may_destroy("kb").is_err());
        let delete = Scope::of(&request(Operation::DeleteBucket, encrypted()));
        assert!(delete.may_destroy("kb").is_ok());
        assert!(delete.may_destroy("ka").is_err());
    }

    #[test]
    fn a_bucket_setting_attaches_only_its_own_or_a_new_key() {
        let on = Scope::of(&request(Operation::PutBucketEncryption, plain()));
        let foreign = BucketState { encrypted: true, key_id: Some("ka".into()) };
        let check = |state: &BucketState, created: &[String]| {
            on.check_effects(&Effects {
                bucket_state: Some(state),
                seal_with: None,
                open_with: None,
                created_keys: created,
            })
        };
        assert!(check(&foreign, &[]).is_err(), "another bucket's key");
        assert!(check(&foreign, &["ka".to_owned()]).is_ok());
        let off = Scope::of(&request(Operation::DeleteBucketEncryption, encrypted()));
        let dropped = BucketState { encrypted: false, key_id: None };
        let e = Effects { bucket_state: Some(&dropped), seal_with: None, open_with: None, created_keys: &[] };
        assert!(off.check_effects(&e).is_err(), "the key sealed objects need");
        let put = Scope::of(&request(Operation::PutObject, encrypted()));
        let e = Effects {
            bucket_state: Some(&dropped),
            seal_with: Some(KeyOrigin::Generated),
            open_with: None,
            created_keys: &[],
        };
        assert!(put.check_effects(&e).is_err(), "an object write does not change the bucket");
    }

    #[test]
    fn the_encryption_header_follows_what_is_stored() {
        let plain = Scope::of(&request(Operation::PutObject, plain()));
        assert!(!plain.sealed_response(None));
        let mut get = request(Operation::GetObject, encrypted());
        get.target = sealed("kb");
        assert!(Scope::of(&get).sealed_response(None));
    }
}
