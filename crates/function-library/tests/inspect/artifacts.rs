//! The repository's example function libraries, built with cargo.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::mutations;
use function_library::{FunctionLibrary, Kind};

/// The repository root.
fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds a package with its own target directory, kept between runs so that rebuilds are quick.
fn cargo_build(manifest: &str, target_dir: &str, args: &[&str]) -> PathBuf {
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(target_dir);
    let status = Command::new(env!("CARGO"))
        .arg("build")
        .arg("--manifest-path")
        .arg(repository().join(manifest))
        .arg("--target-dir")
        .arg(&target_dir)
        .args(args)
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build of {manifest} failed");
    target_dir
}

#[test]
fn functions_native() {
    let target_dir = cargo_build("functions-native/Cargo.toml", "functions-native", &[]);
    let bytes = std::fs::read(target_dir.join("debug/libfunctions.so")).expect("libfunctions.so");
    let library = FunctionLibrary::inspect_as(&bytes, Kind::Native).expect("libfunctions.so");
    println!("libfunctions.so: {:?}", library.functions());
    assert_eq!(
        library.functions(),
        ["crash", "empty", "oversize", "pattern", "sleep"]
    );
    for mutated in mutations(&bytes, 500) {
        let _ = FunctionLibrary::inspect(&mutated);
    }
}

#[test]
fn functions_wasm() {
    let target_dir = cargo_build(
        "functions-wasm/Cargo.toml",
        "functions-wasm",
        &["--release", "--target", "wasm32-unknown-unknown"],
    );
    let bytes = std::fs::read(target_dir.join("wasm32-unknown-unknown/release/functions.wasm"))
        .expect("functions.wasm");
    let library = FunctionLibrary::inspect_as(&bytes, Kind::Wasm).expect("functions.wasm");
    println!("functions.wasm: {:?}", library.functions());
    assert_eq!(
        library.functions(),
        [
            "empty",
            "out_of_bounds",
            "oversize",
            "pattern",
            "spin",
            "trap"
        ]
    );
    for length in 0..bytes.len() {
        let _ = FunctionLibrary::inspect(&bytes[..length]);
    }
    for mutated in mutations(&bytes, 2_000) {
        let _ = FunctionLibrary::inspect(&mutated);
    }
}
