//! The checked-in `include/rfaas.h` is what cbindgen makes of the crate today.
//! `RFAAS_UPDATE_HEADER=1 cargo test -p rfaas-c --test header` rewrites it.

use std::path::Path;

#[test]
fn checked_in_header_is_what_cbindgen_generates() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let path = crate_dir.join("include/rfaas.h");
    if std::env::var_os("RFAAS_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read(&path).unwrap_or_default();
    if checked_in != generated {
        let old = String::from_utf8_lossy(&checked_in);
        let new = String::from_utf8_lossy(&generated);
        let first = old
            .lines()
            .zip(new.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| old.lines().count().min(new.lines().count()));
        panic!(
            "{} is stale (first difference at line {}: {:?} should be {:?}); \
             regenerate it with RFAAS_UPDATE_HEADER=1 cargo test -p rfaas-c --test header",
            path.display(),
            first + 1,
            old.lines().nth(first).unwrap_or("<end>"),
            new.lines().nth(first).unwrap_or("<end>"),
        );
    }
}
