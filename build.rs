//! Rebuilds the binary when a migration changes (migrations are embedded with `include_str!`),
//! and compiles the descriptors that the gRPC reflection service serves.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    if let Err(e) = descriptors() {
        println!("cargo:warning=cannot compile the Envoy rate limit service's descriptors: {e}");
        std::process::exit(1);
    }
}

/// The proto of Envoy's rate limit service and everything it imports.
const RLS: &str = "envoy/service/ratelimit/v3/rls.proto";

/// Compiles `RLS` from the protos that the envoy-types crate ships (the ones its Rust types were
/// generated from) into `$OUT_DIR/rls.bin`, a serialized `FileDescriptorSet`: what lets
/// `grpcurl` and other reflection clients call the service without proto files of their own.
fn descriptors() -> Result<(), String> {
    use prost::Message;
    let protos = envoy_types_dir()?.join("proto");
    // The tests generate a Python client's stubs from the same protos.
    println!("cargo:rustc-env=VALHALLA_ENVOY_PROTOS={}", protos.display());
    let includes: Vec<PathBuf> = [
        "data-plane-api",
        "xds",
        "protoc-gen-validate",
        "googleapis",
        "cel-spec/proto",
        "opentelemetry-proto",
        "client_model",
    ]
    .iter()
    .map(|dir| protos.join(dir))
    .collect();
    let set = protox::compile([RLS], &includes).map_err(|e| e.to_string())?;
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    std::fs::write(out.join("rls.bin"), set.encode_to_vec()).map_err(|e| e.to_string())
}

/// Where cargo unpacked the envoy-types crate this build uses (registry, vendor folder or git
/// checkout alike), as `cargo metadata` says.
fn envoy_types_dir() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest =
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?).join("Cargo.toml");
    let target = std::env::var("TARGET").map_err(|e| e.to_string())?;
    println!("cargo:rerun-if-changed=Cargo.lock");
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--filter-platform", &target])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    let packages = metadata["packages"]
        .as_array()
        .ok_or("cargo metadata lists no packages")?;
    packages
        .iter()
        .filter(|p| p["name"] == "envoy-types")
        .find_map(|p| p["manifest_path"].as_str())
        .and_then(|path| Path::new(path).parent().map(Path::to_path_buf))
        .ok_or_else(|| "cargo metadata does not list envoy-types".into())
}
