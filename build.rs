//! Rebuilds the binary when a migration changes (migrations are embedded with `include_str!`),
//! compiles the descriptors that the gRPC reflection service serves, and records what
//! `--version` says about the build (its git commit, target, profile and compiler).

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    build_info();
    if let Err(e) = descriptors() {
        println!("cargo:warning=cannot compile the Envoy rate limit service's descriptors: {e}");
        std::process::exit(1);
    }
}

/// Sets `VALHALLA_OPS_GIT_COMMIT` (the git commit, `-dirty` when tracked files differ from it, or
/// `unknown` outside a git checkout) and `VALHALLA_OPS_BUILD` (target, profile, compiler).
/// A build from a source archive names its commit in `VALHALLA_OPS_GIT_COMMIT` itself.
fn build_info() {
    println!("cargo:rerun-if-env-changed=VALHALLA_OPS_GIT_COMMIT");
    let commit = match std::env::var("VALHALLA_OPS_GIT_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => commit.trim().to_owned(),
        _ => git_commit().unwrap_or_else(|| "unknown".into()),
    };
    println!("cargo:rustc-env=VALHALLA_OPS_GIT_COMMIT={commit}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let compiler = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|v| v.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "rustc (unknown version)".into());
    let target = std::env::var("TARGET").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    println!("cargo:rustc-env=VALHALLA_OPS_BUILD={target}, {profile} build, {compiler}");
}

/// The commit checked out where this crate is, when the crate is the root of that checkout
/// (not a folder vendored into another project's repository).
fn git_commit() -> Option<String> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let top = git(&["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != Path::new(&dir).canonicalize().ok()? {
        return None;
    }
    // Say it again when the commit moves (a commit, a checkout) or a source file is edited
    // (which may make the tree dirty). Not on every change of the index: `git status` rewrites
    // it, and each would rebuild the crate.
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            let path = Path::new(&dir).join(path);
            // A path that does not exist would make cargo rerun this script on every build.
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])?;
    Some(if dirty.is_empty() {
        commit
    } else {
        format!("{commit}-dirty")
    })
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
