//! Kind detection, kind names, and inputs that are no library at all.

use crate::support::{Module, compile_c};
use function_library::{Error, FunctionLibrary, Kind};

fn wasm_module() -> Vec<u8> {
    let i32 = crate::support::I32;
    Module::new()
        .with_type((&[i32, i32, i32], &[i32]))
        .with_functions(&[0])
        .with_memory()
        .export_memory("memory")
        .export_function("run", 0)
        .encode()
}

fn shared_library() -> Vec<u8> {
    compile_c(
        "detect-library",
        "unsigned run(void* a, unsigned s, void* r) { return s; }\n",
        &["-shared", "-fPIC"],
    )
}

#[test]
fn kinds_are_detected_from_the_magic_number() {
    assert_eq!(Kind::detect(&shared_library()), Ok(Kind::Native));
    assert_eq!(Kind::detect(&wasm_module()), Ok(Kind::Wasm));
    assert_eq!(Kind::detect(b"\x7fELF"), Ok(Kind::Native));
    assert_eq!(Kind::detect(b"\0asm"), Ok(Kind::Wasm));
}

#[test]
fn garbage_and_empty_input_are_rejected() {
    let error = Kind::detect(b"#!/bin/sh\necho hello\n").unwrap_err();
    assert_eq!(
        error.to_string(),
        "neither an ELF shared library nor a WebAssembly module (first bytes: 23 21 2f 62 69 6e 2f 73)"
    );
    assert_eq!(
        FunctionLibrary::inspect(b"\x7fEL"),
        Err(Error::UnknownFormat {
            first_bytes: "7f 45 4c".into()
        })
    );
    assert_eq!(Kind::detect(b""), Err(Error::Empty));
    assert_eq!(FunctionLibrary::inspect(b""), Err(Error::Empty));
    assert_eq!(
        FunctionLibrary::inspect_as(b"", Kind::Wasm),
        Err(Error::Empty)
    );
    assert!(matches!(
        FunctionLibrary::inspect(b"\x7fELF garbage that is not an ELF header"),
        Err(Error::MalformedElf(_))
    ));
}

#[test]
fn the_announced_kind_must_match_the_code() {
    let error = FunctionLibrary::inspect_as(&shared_library(), Kind::Wasm).unwrap_err();
    assert_eq!(
        error.to_string(),
        "expected a wasm module but the code is an ELF shared library"
    );
    let error = FunctionLibrary::inspect_as(&wasm_module(), Kind::Native).unwrap_err();
    assert_eq!(
        error,
        Error::KindMismatch {
            expected: Kind::Native,
            actual: Kind::Wasm
        }
    );
    assert_eq!(
        error.to_string(),
        "expected an ELF shared library but the code is a wasm module"
    );
    let native = FunctionLibrary::inspect_as(&shared_library(), Kind::Native).expect("native");
    assert_eq!(native.functions(), ["run"]);
}

#[test]
fn kind_names_round_trip() {
    for kind in [Kind::Native, Kind::Wasm] {
        assert_eq!(kind.to_string().parse::<Kind>(), Ok(kind));
    }
    assert_eq!(Kind::Native.to_string(), "native");
    assert_eq!(Kind::Wasm.to_string(), "wasm");
    let error = "Wasm".parse::<Kind>().unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown library kind `Wasm` (expected `native` or `wasm`)"
    );
}
