//! Builds the default policy component (guest/component) for wasm32-wasip2
//! so the binary can embed it: the gateway must run with no module file.
//! A separate target dir keeps this nested cargo off the outer build's lock.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().to_path_buf();
    for watched in ["wit", "guest/src", "guest/component/src", "guest/component/Cargo.toml", "guest/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }
    // A prebuilt module instead (the fuzz build runs on nightly, which need
    // not have the wasm target): `make fuzz` passes target/policies/default.wasm.
    println!("cargo:rerun-if-env-changed=SEALGATE_DEFAULT_POLICY");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("default-policy.wasm");
    if let Ok(prebuilt) = std::env::var("SEALGATE_DEFAULT_POLICY") {
        println!("cargo:rerun-if-changed={prebuilt}");
        std::fs::copy(&prebuilt, &out).unwrap_or_else(|e| panic!("copying SEALGATE_DEFAULT_POLICY {prebuilt}: {e}"));
        return;
    }
    let target_dir = workspace.join("target/policy-build");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&workspace)
        .args(["build", "--profile", "wasm", "--target", "wasm32-wasip2", "-p", "sealgate-policy-component"])
        .arg("--target-dir")
        .arg(&target_dir)
        // The outer build's flags are for the host, not the guest.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        // Under `cargo clippy` these would lint the guest with the host's
        // lint flags (`make lint` runs clippy on the guest crates itself).
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .env_remove("CLIPPY_CONF_DIR")
        .status()
        .expect("running cargo for the policy component");
    assert!(
        status.success(),
        "building the default policy component failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)"
    );
    let built = target_dir.join("wasm32-wasip2/wasm/sealgate_policy_component.wasm");
    std::fs::copy(&built, &out).expect("copying the policy component");
}
