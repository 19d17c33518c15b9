//! The contract versions the host runs, and the host's own view of a
//! request (the rules crate's plain types) and of a decision, which all of
//! them are converted to and from.
//!
//! One module per `sealgate:policy` version (`wit/v*/`), each with its
//! bindings, its imports and its conversions, as Zed's extension host keeps
//! one `since_v*.rs` per extension API: [`v2`] is the current contract, [`v1`]
//! keeps modules built against 1.0.0 running. The rest of the host sees only
//! the types here, so a new version is one more file and one more
//! [`PolicyPre`] arm.

pub mod v1;
pub mod v2;

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker, Resource};

use super::guest::{GuestState, HeldKey};

/// What the rules are asked about, in the rules crate's plain types: the
/// host's own view of a request, whatever contract the module speaks.
pub use sealgate_policy::{BucketState, Operation, Request, Sealed};

/// A module's answer, before the host checks it.
pub enum Decision {
    Deny { status: u16, code: String, message: String },
    Allow(Effects),
}

pub struct Effects {
    pub bucket_state: Option<BucketState>,
    pub seal_with: Option<Resource<HeldKey>>,
    pub open_with: Option<Resource<HeldKey>>,
    pub report_algorithm: Option<String>,
    pub response_headers: Vec<(String, String)>,
}

/// Every contract's imports, in one linker: their interface names carry
/// the version, so they do not clash.
pub fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    v2::Policy::add_to_linker::<_, HasSelf<GuestState>>(linker, |s| s)?;
    v1::Policy::add_to_linker::<_, HasSelf<GuestState>>(linker, |s| s)?;
    Ok(())
}

/// A module ready to instantiate, under the contract it was built against.
#[derive(Clone)]
pub enum PolicyPre {
    V2(v2::PolicyPre<GuestState>),
    V1(v1::PolicyPre<GuestState>),
}

impl PolicyPre {
    /// Finds the contract whose exports the component has, newest first.
    pub fn new(pre: InstancePre<GuestState>) -> Result<Self, String> {
        let as_v2 = match v2::PolicyPre::new(pre.clone()) {
            Ok(v2) => return Ok(Self::V2(v2)),
            Err(e) => e,
        };
        match v1::PolicyPre::new(pre) {
            Ok(v1) => Ok(Self::V1(v1)),
            Err(as_v1) => Err(format!("as sealgate:policy@2.0.0: {as_v2:#}; as sealgate:policy@1.0.0: {as_v1:#}")),
        }
    }

    pub fn contract(&self) -> &'static str {
        match self {
            Self::V2(_) => "2.0.0",
            Self::V1(_) => "1.0.0",
        }
    }

    /// `describe()` on a fresh instance: the module's name and version.
    pub async fn describe(&self, store: &mut Store<GuestState>) -> wasmtime::Result<(String, String)> {
        match self {
            Self::V2(pre) => {
                let info = pre.instantiate_async(&mut *store).await?.call_describe(&mut *store).await?;
                Ok((info.name, info.version))
            }
            Self::V1(pre) => pre.instantiate_async(&mut *store).await?.call_describe(&mut *store).await,
        }
    }

    /// `evaluate()` on a fresh instance.
    pub async fn evaluate(&self, store: &mut Store<GuestState>, request: &Request) -> wasmtime::Result<Decision> {
        match self {
            Self::V2(pre) => {
                let policy = pre.instantiate_async(&mut *store).await?;
                let decision = policy.call_evaluate(&mut *store, &v2::request(request)).await?;
                Ok(v2::decision(decision, store.data()))
            }
            Self::V1(pre) => {
                let policy = pre.instantiate_async(&mut *store).await?;
                let decision = policy.call_evaluate(&mut *store, &v1::request(request)).await?;
                Ok(v1::decision(decision))
            }
        }
    }
}
