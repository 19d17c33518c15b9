//! The policy runtime: runs the bucket-encryption rules, a WebAssembly
//! component, in a fresh sandboxed instance per request, and swaps the
//! module on a running gateway.
//!
//! One `Engine` with the pooling allocator; an `InstancePre` per loaded
//! module; per request a new `Store` with a 16 MiB memory limit and a 50 ms
//! deadline on guest execution (time in KMS imports excluded). A trap, a
//! timeout, a memory-limit hit or a malformed decision is an error the S3
//! front answers with 500 InternalError, having written nothing.

mod contract;
mod guest;
mod invariants;
pub mod persisted;
mod selftest;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};
use sha2::Digest;
use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimitsBuilder, UpdateDeadline,
};

pub use contract::{BucketState, Operation, Request, Sealed};
use contract::{Decision, PolicyPre};
pub use guest::KeyContexts;
use guest::{GuestState, HeldKey};
use invariants::{KeyOrigin, Scope};
pub use persisted::PersistedPolicy;

use crate::kms::{DataKey, Kms};
use crate::metrics::Metrics;

/// The default module, built from `guest/component` and embedded so the
/// gateway runs with no module file.
pub const DEFAULT_MODULE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/default-policy.wasm"));

const MEMORY_LIMIT: usize = 16 << 20;
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Epoch ticks a guest may run through: about 50 ms of execution.
const GUEST_TICKS: u32 = 10;
/// Concurrent evaluations; the instance pool is sized for them.
const SLOTS: u32 = 128;
/// Pool room beyond the evaluation slots: load-time self-tests and
/// `describe` calls run outside the slots.
const SPARE_SLOTS: u32 = 8;
/// What one evaluation may instantiate. The store limits enforce it (a
/// module that needs more fails its self-test and is refused) and the pool
/// is sized as this times the slots, so an admitted evaluation always finds
/// room. The shipped modules use 3 core instances, 1 memory, 1 table.
const CORE_INSTANCES_PER_EVALUATION: u32 = 8;
const MEMORIES_PER_EVALUATION: u32 = 4;
const TABLES_PER_EVALUATION: u32 = 8;
/// How a used pool slot is reset for the next request. By default the
/// pages a guest dirtied are dropped (madvise) and fault back in, zeroed,
/// when the next instance touches them: 6 page faults per evaluation of the
/// shipped modules, half of its time. With Linux's PAGEMAP_SCAN (6.7+)
/// wasmtime finds the dirty pages and zeroes them in place instead, up to
/// these many bytes per slot (beyond them it drops pages as before), so
/// they stay resident: 0 faults, p50 24 → 12 µs (BENCHMARKS.md). What
/// stays resident between requests is what the guests dirtied, ~20 KiB per
/// used slot for the shipped modules, and never more than these budgets
/// times the pool (68 MiB of memories, 4 MiB of tables).
const MEMORY_KEEP_RESIDENT: usize = 128 << 10;
const TABLE_KEEP_RESIDENT: usize = 4 << 10;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("module does not compile as a component: {0}")]
    Compile(String),
    #[error("module does not fit a sealgate:policy world (2.0.0 or 1.0.0): {0}")]
    Imports(String),
    #[error("module failed its self-test: {0}")]
    SelfTest(String),
    #[error("guest trapped or ran out of time or memory: {0}")]
    Guest(String),
    #[error("guest returned a malformed decision: {0}")]
    Malformed(String),
    #[error("the module broke a host-enforced invariant: {0}")]
    Violation(String),
    #[error("module not swapped in: it could not be kept for restarts: {0}")]
    Persist(String),
}

/// What `GET /policy` shows about the loaded module.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyInfo {
    pub name: String,
    pub version: String,
    pub sha256: String,
    /// The `sealgate:policy` version it was built against.
    pub contract: String,
    /// RFC 3339.
    pub loaded_at: String,
    pub source: String,
}

struct LoadedPolicy {
    pre: PolicyPre,
    info: PolicyInfo,
}

/// A guest's answer, checked and with its key handles resolved.
pub enum Verdict {
    Deny { status: u16, code: String, message: String },
    Allow(Box<Allowed>),
}

#[derive(Default)]
pub struct Allowed {
    pub bucket_state: Option<BucketState>,
    pub seal_with: Option<DataKey>,
    pub open_with: Option<DataKey>,
    pub report_algorithm: Option<String>,
    pub response_headers: HeaderMap,
    pub after: AfterCommit,
}

/// KMS work that depends on whether the request commits. Dropped without
/// either outcome (a handler returned early), it counts as failed.
#[derive(Default)]
pub struct AfterCommit {
    kms: Option<Arc<dyn Kms>>,
    /// Created by this request and attached to its bucket.
    created_keys: Vec<String>,
    destroy_keys: Vec<String>,
}

async fn destroy_keys(kms: &dyn Kms, keys: Vec<String>, why: &str) {
    for key_id in keys {
        if let Err(e) = kms.destroy_key(&key_id).await {
            tracing::warn!(key_id = %key_id, error = %e, "could not destroy {why}");
        }
    }
}

impl AfterCommit {
    /// The request committed: carry out deferred key destructions.
    pub async fn committed(mut self) {
        self.created_keys.clear();
        let Some(kms) = self.kms.clone() else { return };
        destroy_keys(kms.as_ref(), std::mem::take(&mut self.destroy_keys), "a bucket master key").await;
    }

    /// The request failed: keys created for it are destroyed again.
    pub async fn failed(mut self) {
        let Some(kms) = self.kms.clone() else { return };
        destroy_keys(kms.as_ref(), std::mem::take(&mut self.created_keys), "an unused bucket master key").await;
    }
}

impl Drop for AfterCommit {
    fn drop(&mut self) {
        let (Some(kms), false) = (self.kms.take(), self.created_keys.is_empty()) else { return };
        let keys = std::mem::take(&mut self.created_keys);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { destroy_keys(kms.as_ref(), keys, "an unused bucket master key").await });
        }
    }
}

pub struct PolicyRuntime {
    engine: Engine,
    linker: Linker<GuestState>,
    current: ArcSwap<LoadedPolicy>,
    kms: Arc<dyn Kms>,
    slots: Semaphore,
    metrics: Arc<Metrics>,
    /// Serializes swaps so two loads cannot interleave.
    swap_lock: tokio::sync::Mutex<()>,
    /// Where the active module is kept for restarts (none in benchmarks).
    persisted: Option<PersistedPolicy>,
}

/// The engine, resetting slots in place where the kernel can say which
/// pages are dirty (see [`MEMORY_KEEP_RESIDENT`]). Without PAGEMAP_SCAN,
/// keeping pages resident would mean zeroing the whole budget every time,
/// slower than the faults; wasmtime refuses `Enabled::Yes` there, and the
/// engine is built as before.
fn engine() -> anyhow::Result<Engine> {
    match engine_with(true) {
        Ok(engine) => Ok(engine),
        Err(e) => {
            tracing::info!(reason = %e, "policy instances: PAGEMAP_SCAN unavailable, slots reset by madvise");
            engine_with(false)
        }
    }
}

fn engine_with(reset_in_place: bool) -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    if reset_in_place {
        pool.pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT);
    }
    let evaluations = SLOTS + SPARE_SLOTS;
    pool.total_component_instances(evaluations)
        .total_core_instances(evaluations * CORE_INSTANCES_PER_EVALUATION)
        .total_memories(evaluations * MEMORIES_PER_EVALUATION)
        .total_tables(evaluations * TABLES_PER_EVALUATION)
        .total_stacks(evaluations)
        .max_memory_size(MEMORY_LIMIT);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_reservation(MEMORY_LIMIT as u64)
        .memory_guard_size(64 << 10)
        .max_wasm_stack(512 << 10)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| anyhow::anyhow!("creating the wasm engine: {e}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

impl PolicyRuntime {
    /// Starts with the module last swapped in (kept in `persisted`), else
    /// `module`, else the embedded default; and the epoch ticker.
    pub async fn start(
        kms: Arc<dyn Kms>,
        metrics: Arc<Metrics>,
        module: Option<(Vec<u8>, String)>,
        persisted: Option<PersistedPolicy>,
    ) -> anyhow::Result<Arc<Self>> {
        let engine = engine()?;
        let mut linker = Linker::new(&engine);
        contract::add_to_linker(&mut linker).map_err(|e| anyhow::anyhow!("linking host imports: {e}"))?;
        let kept = persisted.as_ref().map(PersistedPolicy::load).transpose()?.flatten();
        let (bytes, source) = match (kept, module) {
            (Some((bytes, source)), configured) => {
                if let Some((_, path)) = configured {
                    tracing::warn!(policy = %path, "the module last swapped in stays active over --policy; send SIGHUP to load --policy");
                }
                (bytes, format!("{source}, kept across a restart"))
            }
            (None, Some(module)) => module,
            (None, None) => (DEFAULT_MODULE.to_vec(), "embedded default".into()),
        };
        let loaded = prepare(&engine, &linker, bytes, source).await?;
        let runtime = Arc::new(Self {
            engine,
            linker,
            current: ArcSwap::from_pointee(loaded),
            kms,
            slots: Semaphore::new(SLOTS as usize),
            metrics,
            swap_lock: tokio::sync::Mutex::new(()),
            persisted,
        });
        // A plain thread, not a tokio task: a guest spinning on a runtime
        // worker must not be able to starve the clock that stops it.
        let ticker = runtime.engine.weak();
        std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
            while let Some(engine) = ticker.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })?;
        let info = runtime.info();
        tracing::info!(policy = %info.name, contract = %info.contract, sha256 = %info.sha256, "policy module loaded");
        Ok(runtime)
    }

    pub fn info(&self) -> PolicyInfo {
        self.current.load().info.clone()
    }

    pub fn kms(&self) -> &Arc<dyn Kms> {
        &self.kms
    }

    /// Compiles, checks and self-tests a candidate, keeps it for restarts,
    /// then swaps it in. Requests in flight finish on the module they
    /// started with.
    pub async fn load(&self, bytes: Vec<u8>, source: String) -> Result<PolicyInfo, PolicyError> {
        let _one_at_a_time = self.swap_lock.lock().await;
        let started = Instant::now();
        let kept = self.persisted.as_ref().map(|_| (bytes.clone(), source.clone()));
        let prepared = prepare(&self.engine, &self.linker, bytes, source).await;
        let prepared = match (prepared, &self.persisted, kept) {
            (Ok(loaded), Some(store), Some((bytes, source))) => store
                .save(&bytes, &loaded.info.sha256, &source)
                .map(|()| loaded)
                .map_err(|e| PolicyError::Persist(e.to_string())),
            (prepared, ..) => prepared,
        };
        match prepared {
            Ok(loaded) => {
                let info = loaded.info.clone();
                self.current.store(Arc::new(loaded));
                self.metrics.policy_swapped(started.elapsed().as_secs_f64());
                tracing::info!(policy = %info.name, version = %info.version, sha256 = %info.sha256, source = %info.source, swap_ms = started.elapsed().as_millis() as u64, "policy module swapped in");
                Ok(info)
            }
            Err(e) => {
                self.metrics.policy_refused();
                tracing::warn!(error = %e, "policy module refused; the previous one stays");
                Err(e)
            }
        }
    }

    /// Evaluates one request on a fresh instance of the current module.
    pub async fn evaluate(&self, request: Request, contexts: KeyContexts) -> Result<Verdict, PolicyError> {
        let _slot = self.slots.acquire().await.expect("semaphore never closes");
        let loaded = self.current.load_full();
        let started = Instant::now();
        let sha256 = &loaded.info.sha256;
        let verdict = evaluate_once(&self.engine, &loaded.pre, sha256, self.kms.clone(), &request, contexts).await;
        self.metrics.policy_evaluated(started.elapsed().as_secs_f64());
        match &verdict {
            Err(e @ PolicyError::Violation(_)) => {
                self.metrics.policy_violated();
                tracing::error!(module_sha256 = %sha256, operation = ?request.operation, error = %e, "policy decision refused");
            }
            Err(e) => {
                self.metrics.policy_trapped();
                tracing::error!(module_sha256 = %sha256, operation = ?request.operation, error = %e, "policy guest failed");
            }
            Ok(_) => {}
        }
        verdict
    }
}

/// One evaluation on a fresh store: run the guest, check its decision
/// against the host's invariants, and settle the keys it created — those
/// of a denied, failed or refused request, and those it did not attach,
/// are destroyed here.
async fn evaluate_once(
    engine: &Engine,
    pre: &PolicyPre,
    sha256: &str,
    kms: Arc<dyn Kms>,
    request: &Request,
    contexts: KeyContexts,
) -> Result<Verdict, PolicyError> {
    let mut store = new_store(engine, kms.clone(), contexts, Scope::of(request), sha256);
    let decision = call_evaluate(pre, &mut store, request).await;
    // A violation at an import trapped the guest; it is the reason to report.
    let verdict = match (store.data_mut().violation.take(), decision) {
        (Some(v), _) => Err(PolicyError::Violation(v.to_string())),
        (None, Err(e)) if store.data().memory_refused => Err(PolicyError::Guest(format!("memory limit hit: {e}"))),
        (None, Err(e)) => Err(e),
        (None, Ok(decision)) => resolve(decision, &mut store),
    };
    let state = store.data_mut();
    let (created, destroy) = (std::mem::take(&mut state.created_keys), std::mem::take(&mut state.destroy_after_commit));
    let attached = match &verdict {
        Ok(Verdict::Allow(allowed)) => allowed.bucket_state.as_ref().and_then(|b| b.key_id.clone()),
        _ => None,
    };
    let (attached, unused): (Vec<_>, Vec<_>) = created.into_iter().partition(|k| Some(k) == attached.as_ref());
    destroy_keys(kms.as_ref(), unused, "an unused bucket master key").await;
    let mut verdict = verdict?;
    if let Verdict::Allow(allowed) = &mut verdict {
        allowed.after = AfterCommit { kms: Some(kms), created_keys: attached, destroy_keys: destroy };
    }
    Ok(verdict)
}

fn new_store(
    engine: &Engine,
    kms: Arc<dyn Kms>,
    contexts: KeyContexts,
    scope: Scope,
    sha256: &str,
) -> Store<GuestState> {
    let state = GuestState {
        table: ResourceTable::new(),
        limits: StoreLimitsBuilder::new()
            .memory_size(MEMORY_LIMIT)
            .instances(CORE_INSTANCES_PER_EVALUATION as usize)
            .tables(TABLES_PER_EVALUATION as usize)
            .memories(MEMORIES_PER_EVALUATION as usize)
            .build(),
        kms,
        contexts,
        scope,
        violation: None,
        created_keys: Vec::new(),
        destroy_after_commit: Vec::new(),
        ticks_running: 0,
        module_sha256: sha256.to_owned(),
        memory_refused: false,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| s);
    store.set_epoch_deadline(1);
    // The callback runs once per tick the guest spends executing wasm: a
    // guest waiting on a slow KMS import, or descheduled by a busy machine,
    // collects at most one tick when it resumes. So the count measures the
    // guest's own running time, not wall time (a wall-clock deadline failed
    // healthy modules on a loaded 2-core machine).
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        state.ticks_running += 1;
        if state.ticks_running > GUEST_TICKS { Ok(UpdateDeadline::Interrupt) } else { Ok(UpdateDeadline::Continue(1)) }
    });
    store
}

async fn call_evaluate(
    pre: &PolicyPre,
    store: &mut Store<GuestState>,
    request: &Request,
) -> Result<Decision, PolicyError> {
    pre.evaluate(store, request).await.map_err(|e| PolicyError::Guest(format!("{e:#}")))
}

/// Compiles a module and checks it against the world and the self-test.
async fn prepare(
    engine: &Engine,
    linker: &Linker<GuestState>,
    bytes: Vec<u8>,
    source: String,
) -> Result<LoadedPolicy, PolicyError> {
    let sha256 = sha256_hex(&bytes);
    let compile_engine = engine.clone();
    let component = tokio::task::spawn_blocking(move || Component::new(&compile_engine, &bytes))
        .await
        .map_err(|e| PolicyError::Compile(e.to_string()))?
        .map_err(|e| PolicyError::Compile(format!("{e:#}")))?;
    check_resources(&component)?;
    let instance_pre = linker.instantiate_pre(&component).map_err(|e| PolicyError::Imports(format!("{e:#}")))?;
    let pre = PolicyPre::new(instance_pre).map_err(PolicyError::Imports)?;
    let (name, version) = describe(engine, &pre, &sha256).await?;
    selftest::run(engine, &pre, &sha256).await?;
    let info = PolicyInfo {
        name,
        version,
        sha256,
        contract: pre.contract().to_owned(),
        loaded_at: time::OffsetDateTime::from(SystemTime::now())
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        source,
    };
    Ok(LoadedPolicy { pre, info })
}

/// Refuses, with a clear reason, a module whose memories or tables exceed
/// what one evaluation may have (core instances are checked by the
/// self-test, which instantiates under the same limits).
fn check_resources(component: &Component) -> Result<(), PolicyError> {
    let Some(needs) = component.resources_required() else {
        return Err(PolicyError::Imports("the component imports core modules; it must be self-contained".into()));
    };
    if needs.num_memories > MEMORIES_PER_EVALUATION || needs.num_tables > TABLES_PER_EVALUATION {
        return Err(PolicyError::Imports(format!(
            "the component needs {} memories and {} tables; at most {MEMORIES_PER_EVALUATION} and \
             {TABLES_PER_EVALUATION} per evaluation",
            needs.num_memories, needs.num_tables
        )));
    }
    Ok(())
}

async fn describe(engine: &Engine, pre: &PolicyPre, sha256: &str) -> Result<(String, String), PolicyError> {
    let names = selftest::Names::random();
    let scope = Scope::of(&names.request(Operation::GetObject, &[], None));
    let mut store = new_store(engine, selftest::kms(), names.contexts(), scope, sha256);
    let (name, version) =
        pre.describe(&mut store).await.map_err(|e| PolicyError::SelfTest(format!("describe: {e:#}")))?;
    let printable = |s: &str| !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_graphic());
    if !printable(&name) || !printable(&version) {
        return Err(PolicyError::SelfTest("describe() returned an unprintable name or version".into()));
    }
    Ok((name, version))
}

fn take_key(
    store: &mut Store<GuestState>,
    handle: Option<wasmtime::component::Resource<HeldKey>>,
) -> Result<Option<HeldKey>, PolicyError> {
    match handle {
        None => Ok(None),
        Some(h) => store
            .data_mut()
            .table
            .delete(h)
            .map(Some)
            .map_err(|e| PolicyError::Malformed(format!("data key handle: {e}"))),
    }
}

/// Response headers a module may not set: the host says what it stored.
const HOST_OWNED_HEADER_PREFIX: &str = "x-amz-server-side-encryption";

/// A module's response headers: valid `x-amz-*` headers, without the ones
/// the host owns.
fn module_headers(headers: Vec<(String, String)>) -> Result<HeaderMap, PolicyError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let parsed = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value));
        match parsed {
            (Ok(_), Ok(_)) if lower.starts_with(HOST_OWNED_HEADER_PREFIX) => {}
            (Ok(n), Ok(v)) if lower.starts_with("x-amz-") => {
                map.insert(n, v);
            }
            _ => return Err(PolicyError::Malformed(format!("response header {name:?}"))),
        }
    }
    Ok(map)
}

/// Checks a decision and resolves its key handles. A decision is malformed
/// when an error is not an HTTP error status with an S3-style code or a
/// response header is not a valid `x-amz-*` header; it is a violation when
/// it breaks an invariant the host enforces (see [`invariants`]).
fn resolve(decision: Decision, store: &mut Store<GuestState>) -> Result<Verdict, PolicyError> {
    let effects = match decision {
        Decision::Deny { status, code, message } => {
            let code_ok = !code.is_empty() && code.len() <= 64 && code.chars().all(|c| c.is_ascii_alphanumeric());
            if !(400..=599).contains(&status) || !code_ok {
                return Err(PolicyError::Malformed(format!("denial with status {status} and code {code:?}")));
            }
            let message = message.chars().take(1024).collect();
            return Ok(Verdict::Deny { status, code, message });
        }
        Decision::Allow(effects) => effects,
    };
    let seal_with = take_key(store, effects.seal_with)?;
    let open_with = take_key(store, effects.open_with)?;
    let mut response_headers = module_headers(effects.response_headers)?;
    let state = store.data();
    let origin = |k: &Option<HeldKey>| k.as_ref().map(|k| k.origin);
    let (seal_origin, open_origin): (Option<KeyOrigin>, _) = (origin(&seal_with), origin(&open_with));
    let checked = invariants::Effects {
        bucket_state: effects.bucket_state.as_ref(),
        seal_with: seal_origin,
        open_with: open_origin,
        created_keys: &state.created_keys,
    };
    state.scope.check_effects(&checked).map_err(|v| PolicyError::Violation(v.to_string()))?;
    if state.scope.sealed_response(seal_origin) {
        response_headers.insert(HOST_OWNED_HEADER_PREFIX, HeaderValue::from_static("AES256"));
    }
    Ok(Verdict::Allow(Box::new(Allowed {
        bucket_state: effects.bucket_state,
        seal_with: seal_with.map(|k| k.key),
        open_with: open_with.map(|k| k.key),
        report_algorithm: effects.report_algorithm,
        response_headers,
        after: AfterCommit::default(),
    })))
}
