//! The built policy component (`target/policies/default.wasm`, and
//! `encrypt-all.wasm` when present) on the same arbitrary inputs as the
//! `rules` target, through wasmtime with stub imports: a scripted in-memory
//! KMS that gives each data key a unique serial. Each decision must keep the
//! invariants of `sealgate_policy::fuzzing::check` and agree with the rules
//! run natively on the same input and KMS script.
//!
//! Why its own bindings of ../wit/v2.0.0 (the current contract) rather than `sealgate::policy::PolicyRuntime`:
//! the host crate's build script builds the default component for
//! wasm32-wasip2 with the *current* toolchain (nightly, under cargo fuzz),
//! and the nightly toolchain here has no wasm32-wasip2 standard library
//! (rustup cannot fetch it). The store set-up mirrors the host's (memory
//! limit, stack, deferred key destruction); fuel stands in for the epoch
//! deadline so that a runaway guest is a deterministic finding.
//!
//! Set SEALGATE_FUZZ_POLICY_DIR to fuzz modules from another directory.

#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::{Corpus, fuzz_target};
use sealgate_policy::fuzzing::{Input, KeyRef, KmsLog, Observed, ObservedEffects, check, run_native, same_decision};
use sealgate_policy::{self as rules, Variant};
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};

wasmtime::component::bindgen!({
    world: "policy",
    path: "../wit/v2.0.0",
    imports: { default: trappable },
    with: {
        "sealgate:policy/kms.data-key": HeldKey,
    },
});

use crate::sealgate::policy::kms::{KmsError as WitKmsError, KmsErrorKind};
use crate::sealgate::policy::types as wit;

/// A data key handle: the serial the stub KMS handed out.
pub struct HeldKey(u64);

struct State {
    table: ResourceTable,
    limits: StoreLimits,
    log: KmsLog,
    /// The request, for the keys contract 2.0.0's imports stand for.
    request: rules::Request,
}

fn wit_error(kind: sealgate_policy::fuzzing::FailKind) -> WitKmsError {
    let wit_kind = match kind {
        rules::KmsErrorKind::Unavailable => KmsErrorKind::Unavailable,
        rules::KmsErrorKind::Refused => KmsErrorKind::Refused,
        rules::KmsErrorKind::NotFound => KmsErrorKind::NotFound,
        rules::KmsErrorKind::Invalid => KmsErrorKind::Invalid,
    };
    WitKmsError { kind: wit_kind, message: format!("scripted failure ({})", kind.code()) }
}

/// An import for a key the request does not have: the host stops the guest
/// there (a violation), so here it is a finding.
fn out_of_scope(what: &str) -> wasmtime::Error {
    wasmtime::Error::msg(format!("policy violation: {what} outside the request's scope"))
}

impl State {
    fn hand_out(&mut self, issued: Result<u64, sealgate_policy::fuzzing::FailKind>) -> wasmtime::Result<Result<Resource<HeldKey>, WitKmsError>> {
        match issued {
            Ok(serial) => Ok(Ok(self.table.push(HeldKey(serial))?)),
            Err(kind) => Ok(Err(wit_error(kind))),
        }
    }

    fn bucket_key(&self) -> Option<String> {
        self.request.bucket_state.as_ref().and_then(|b| b.key_id.clone())
    }
}

impl crate::sealgate::policy::kms::HostDataKey for State {
    fn drop(&mut self, key: Resource<HeldKey>) -> wasmtime::Result<()> {
        self.table.delete(key)?;
        Ok(())
    }
}

impl crate::sealgate::policy::kms::Host for State {
    fn create_bucket_key(&mut self) -> wasmtime::Result<Result<(), WitKmsError>> {
        let bucket = self.request.bucket.clone();
        Ok(self.log.create(&bucket).map(drop).map_err(wit_error))
    }

    fn generate_data_key(&mut self) -> wasmtime::Result<Result<Resource<HeldKey>, WitKmsError>> {
        let key_id = self.bucket_key().ok_or_else(|| out_of_scope("a data key without a bucket key"))?;
        let issued = self.log.generate(&key_id);
        self.hand_out(issued)
    }

    fn open_target(&mut self) -> wasmtime::Result<Result<Resource<HeldKey>, WitKmsError>> {
        let target = self.request.target.clone().ok_or_else(|| out_of_scope("opening a target"))?;
        let issued = self.log.unwrap(&target.key_id, &target.wrapped_key);
        self.hand_out(issued)
    }

    fn open_source(&mut self) -> wasmtime::Result<Result<Resource<HeldKey>, WitKmsError>> {
        let source = self.request.source.clone().ok_or_else(|| out_of_scope("opening a copy source"))?;
        let issued = self.log.unwrap(&source.key_id, &source.wrapped_key);
        self.hand_out(issued)
    }

    fn destroy_bucket_key(&mut self) -> wasmtime::Result<Result<(), WitKmsError>> {
        let key_id = self.bucket_key().ok_or_else(|| out_of_scope("destroying a bucket key"))?;
        // As in the host: deferred until the request commits, Ok now.
        self.log.destroyed.push(key_id);
        Ok(Ok(()))
    }
}

impl crate::sealgate::policy::log::Host for State {
    fn log(&mut self, _level: crate::sealgate::policy::log::Level, _message: String) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl crate::sealgate::policy::types::Host for State {}

const MEMORY_LIMIT: usize = 16 << 20;
const FUEL: u64 = 200_000_000;

struct Runtime {
    engine: Engine,
    policies: Vec<(String, Variant, PolicyPre<State>)>,
}

impl Runtime {
    fn load() -> Runtime {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .memory_reservation(MEMORY_LIMIT as u64)
            .memory_guard_size(64 << 10)
            .max_wasm_stack(512 << 10);
        let engine = Engine::new(&config).expect("wasm engine");
        let mut linker = Linker::new(&engine);
        Policy::add_to_linker::<_, HasSelf<State>>(&mut linker, |s| s).expect("linking the stub imports");
        let dir = std::env::var_os("SEALGATE_FUZZ_POLICY_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/policies"));
        let mut policies = Vec::new();
        for (file, variant, required) in [
            ("default.wasm", Variant::DEFAULT, true),
            ("encrypt-all.wasm", Variant::ENCRYPT_ALL, false),
            ("aws.wasm", Variant::AWS, false),
        ] {
            let path = dir.join(file);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if required => panic!("reading {} ({e}): run `make policies` first", path.display()),
                Err(_) => continue,
            };
            let component = Component::new(&engine, &bytes).expect("compiling the policy component");
            let pre = linker.instantiate_pre(&component).expect("the component fits the world");
            let pre = PolicyPre::new(pre).expect("the component exports the world");
            eprintln!("component target: fuzzing {} ({variant:?})", path.display());
            policies.push((file.to_owned(), variant, pre));
        }
        Runtime { engine, policies }
    }
}

thread_local! {
    static RUNTIME: Runtime = Runtime::load();
}

fn to_wit(request: &rules::Request) -> wit::Request {
    use rules::Operation as R;
    use wit::Operation as W;
    let operation = match request.operation {
        R::CreateBucket => W::CreateBucket,
        R::DeleteBucket => W::DeleteBucket,
        R::PutBucketEncryption => W::PutBucketEncryption,
        R::GetBucketEncryption => W::GetBucketEncryption,
        R::DeleteBucketEncryption => W::DeleteBucketEncryption,
        R::PutObject => W::PutObject,
        R::CopyObject => W::CopyObject,
        R::PostObject => W::PostObject,
        R::CreateMultipartUpload => W::CreateMultipartUpload,
        R::UploadPart => W::UploadPart,
        R::UploadPartCopy => W::UploadPartCopy,
        R::CompleteMultipartUpload => W::CompleteMultipartUpload,
        R::GetObject => W::GetObject,
        R::HeadObject => W::HeadObject,
    };
    wit::Request {
        operation,
        bucket: request.bucket.clone(),
        key: request.key.clone(),
        headers: request.headers.iter().map(|(name, value)| wit::Header { name: name.clone(), value: value.clone() }).collect(),
        bucket_state: request
            .bucket_state
            .as_ref()
            .map(|b| wit::BucketState { encrypted: b.encrypted, has_key: b.key_id.is_some() }),
        target_sealed: request.target.is_some(),
        source_sealed: request.source.is_some(),
        requested_algorithm: request.requested_algorithm.clone(),
    }
}

fn resolve_key(store: &mut Store<State>, handle: Option<Resource<HeldKey>>) -> Option<KeyRef> {
    let handle = handle?;
    let state = store.data_mut();
    Some(match state.table.delete(handle) {
        Ok(HeldKey(serial)) => state.log.key_ref(serial),
        Err(e) => KeyRef::Foreign(format!("bad handle: {e}")),
    })
}

/// Evaluates `input` on one loaded component; the decision and its KMS log.
fn run_component(engine: &Engine, pre: &PolicyPre<State>, input: &Input) -> (Observed, KmsLog) {
    let state = State {
        table: ResourceTable::new(),
        limits: StoreLimitsBuilder::new().memory_size(MEMORY_LIMIT).instances(8).tables(8).memories(4).build(),
        log: KmsLog::new(&input.kms),
        request: input.request.clone(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    store.set_fuel(FUEL).expect("fuel is enabled");
    let policy = pre.instantiate(&mut store).unwrap_or_else(|e| panic!("instantiating the component: {e:#}"));
    let request = to_wit(&input.request);
    let decision = policy.call_evaluate(&mut store, &request).unwrap_or_else(|e| {
        panic!("invariant violated: the component failed instead of deciding: {e:#}\ninput: {input:#?}")
    });
    let observed = match decision {
        wit::Decision::Deny(e) => Observed::Deny { status: e.status, code: e.code, message: e.message },
        wit::Decision::Allow(e) => {
            let seal_with = resolve_key(&mut store, e.seal_with);
            let open_with = resolve_key(&mut store, e.open_with);
            // As the host does: the bucket keeps its key, else gets the one
            // created in this request (a bucket being created has none yet).
            let state = store.data();
            let creating = state.request.operation == rules::Operation::CreateBucket;
            let own = state.bucket_key().filter(|_| !creating);
            let attached = own.or_else(|| state.log.created.first().cloned());
            Observed::Allow(ObservedEffects {
                bucket_state: e.bucket_setting.map(|b| rules::BucketState { encrypted: b.encrypted, key_id: attached }),
                seal_with,
                open_with,
                report_algorithm: e.report_algorithm,
                response_headers: e.response_headers.into_iter().map(|h| (h.name, h.value)).collect(),
            })
        }
    };
    (observed, store.into_data().log)
}

fuzz_target!(|data: &[u8]| -> Corpus {
    let input = Input::build(data);
    RUNTIME.with(|rt| {
        for (file, variant, pre) in &rt.policies {
            let (observed, log) = run_component(&rt.engine, pre, &input);
            if let Err(violation) = check(&input, *variant, &observed, &log) {
                panic!("invariant violated by {file}: {violation}\ndecision: {observed:#?}\ninput: {input:#?}");
            }
            // The component is the rules compiled to wasm: on the same
            // request and KMS script it must decide exactly as they do.
            let (native, _) = run_native(&input, *variant, false);
            if let Err(diff) = same_decision(&observed, &native) {
                panic!("{file} and the native rules disagree: {diff}\ninput: {input:#?}");
            }
        }
    });
    Corpus::Keep
});
