//! Rebuilds the binary when a migration changes: migrations are embedded with `include_str!`.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
