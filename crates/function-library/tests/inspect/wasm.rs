//! Hand-assembled WebAssembly modules.

use crate::support::{I32, I64, Module, mutations};
use function_library::{Error, FunctionLibrary, Kind, MAX_FUNCTIONS};

const RFAAS: (&[u8], &[u8]) = (&[I32, I32, I32], &[I32]);

/// A valid module: memory, and three rFaaS functions exported under unsorted names.
fn valid_module() -> Vec<u8> {
    Module::new()
        .with_type(RFAAS)
        .with_functions(&[0, 0, 0])
        .with_memory()
        .export_memory("memory")
        .export_function("zeta", 0)
        .export_function("Alpha", 1)
        .export_function("beta", 2)
        .encode()
}

#[test]
fn functions_are_sorted_by_byte_order_and_indexed_by_position() {
    let library = FunctionLibrary::inspect(&valid_module()).expect("valid module");
    assert_eq!(library.kind(), Kind::Wasm);
    assert_eq!(library.functions(), ["Alpha", "beta", "zeta"]);
    assert_eq!(library.index_of("Alpha"), Some(0));
    assert_eq!(library.index_of("beta"), Some(1));
    assert_eq!(library.index_of("zeta"), Some(2));
    assert_eq!(library.index_of("memory"), None);
    assert_eq!(library.require_index("zeta"), Ok(2));
    let error = library.require_index("gamma").unwrap_err();
    assert_eq!(
        error.to_string(),
        "no function `gamma` in the library (available: Alpha, beta, zeta)"
    );
    assert_eq!(
        FunctionLibrary::inspect_as(&valid_module(), Kind::Wasm),
        Ok(library)
    );
}

#[test]
fn other_exports_are_ignored() {
    let module = Module::new()
        .with_type(RFAAS)
        .with_functions(&[0])
        .with_memory()
        .with_global()
        .export_memory("memory")
        .export_global("__heap_base", 0)
        .export_function("run", 0)
        .encode();
    let library = FunctionLibrary::inspect(&module).expect("valid module");
    assert_eq!(library.functions(), ["run"]);
}

#[test]
fn hooks_for_the_executor_are_not_functions() {
    const VOID: (&[u8], &[u8]) = (&[], &[]);
    const SETTER: (&[u8], &[u8]) = (&[I32], &[]);
    let module = Module::new()
        .with_type(RFAAS)
        .with_type(VOID)
        .with_type(SETTER)
        .with_functions(&[0, 1, 2])
        .with_memory()
        .export_memory("memory")
        .export_function("run", 0)
        .export_function("_initialize", 1)
        .export_function("__rfaas_set_output_capacity", 2)
        .encode();
    let library = FunctionLibrary::inspect(&module).expect("a reactor with SDK hooks");
    assert_eq!(library.functions(), ["run"]);
}

#[test]
fn a_wasi_command_is_refused() {
    const VOID: (&[u8], &[u8]) = (&[], &[]);
    let module = Module::new()
        .with_type(RFAAS)
        .with_type(VOID)
        .with_functions(&[0, 1])
        .with_memory()
        .export_memory("memory")
        .export_function("run", 0)
        .export_function("_start", 1)
        .encode();
    let error = FunctionLibrary::inspect(&module).unwrap_err();
    assert_eq!(error, Error::CommandModule);
    assert!(
        error.to_string().contains("-mexec-model=reactor"),
        "{error}"
    );
}

#[test]
fn a_module_without_memory_is_rejected() {
    let module = Module::new()
        .with_type(RFAAS)
        .with_functions(&[0])
        .export_function("run", 0)
        .encode();
    assert_eq!(
        FunctionLibrary::inspect(&module),
        Err(Error::MissingMemoryExport)
    );
}

#[test]
fn a_memory_that_is_not_exported_as_memory_is_rejected() {
    let module = Module::new()
        .with_type(RFAAS)
        .with_functions(&[0])
        .with_memory()
        .export_memory("mem")
        .export_function("run", 0)
        .encode();
    let error = FunctionLibrary::inspect(&module).unwrap_err();
    assert_eq!(error, Error::MissingMemoryExport);
    assert!(error.to_string().contains("`memory`"), "{error}");

    // A function called `memory` is not a memory.
    let module = Module::new()
        .with_type(RFAAS)
        .with_functions(&[0])
        .with_memory()
        .export_function("memory", 0)
        .encode();
    assert_eq!(
        FunctionLibrary::inspect(&module),
        Err(Error::MissingMemoryExport)
    );
}

#[test]
fn an_imported_memory_is_rejected() {
    let module = Module::new()
        .with_type(RFAAS)
        .import_memory("env", "memory")
        .with_functions(&[0])
        .export_memory("memory")
        .export_function("run", 0)
        .encode();
    let error = FunctionLibrary::inspect(&module).unwrap_err();
    assert_eq!(error, Error::ImportedMemory);
    assert_eq!(
        error.to_string(),
        "the module imports its memory; it must define and export `memory`"
    );
}

#[test]
fn a_function_with_the_wrong_signature_is_rejected() {
    let module = Module::new()
        .with_type(RFAAS)
        .with_type((&[I32, I64], &[]))
        .with_functions(&[0, 1])
        .with_memory()
        .export_memory("memory")
        .export_function("good", 0)
        .export_function("bad", 1)
        .encode();
    let error = FunctionLibrary::inspect(&module).unwrap_err();
    assert_eq!(
        error,
        Error::WrongSignature {
            function: "bad".into(),
            signature: "(i32, i64) -> ()".into()
        }
    );
    assert_eq!(
        error.to_string(),
        "the exported function `bad` has the type `(i32, i64) -> ()`, \
         expected `(i32, i32, i32) -> i32`"
    );

    let module = Module::new()
        .with_type((&[I32, I32, I32], &[I32, I32]))
        .with_functions(&[0])
        .with_memory()
        .export_memory("memory")
        .export_function("pair", 0)
        .encode();
    assert_eq!(
        FunctionLibrary::inspect(&module),
        Err(Error::WrongSignature {
            function: "pair".into(),
            signature: "(i32, i32, i32) -> (i32, i32)".into()
        })
    );
}

#[test]
fn a_module_without_functions_is_rejected() {
    let module = Module::new().with_memory().export_memory("memory").encode();
    let error = FunctionLibrary::inspect(&module).unwrap_err();
    assert_eq!(error, Error::NoFunctions(Kind::Wasm));
    assert_eq!(error.to_string(), "a wasm module exports no functions");
}

#[test]
fn an_invalid_module_is_rejected() {
    // The body of a function returning i32 returns nothing: the validator refuses it.
    let mut module = Module::new()
        .with_type(RFAAS)
        .with_functions(&[0])
        .with_memory()
        .export_memory("memory")
        .export_function("run", 0);
    module.bodies[0] = vec![0x00, 0x0b];
    let error = FunctionLibrary::inspect(&module.encode()).unwrap_err();
    assert!(
        matches!(&error, Error::InvalidWasm(reason) if reason.contains("type mismatch")),
        "{error:?}"
    );

    // The magic number alone is not a module.
    assert!(matches!(
        FunctionLibrary::inspect(b"\0asm"),
        Err(Error::InvalidWasm(_))
    ));
}

#[test]
fn at_most_32767_functions() {
    let build = |count: usize| {
        let mut module = Module::new()
            .with_type(RFAAS)
            .with_functions(&[0])
            .with_memory()
            .export_memory("memory");
        for index in 0..count {
            module = module.export_function(&format!("f{index:05}"), 0);
        }
        module.encode()
    };
    let library = FunctionLibrary::inspect(&build(MAX_FUNCTIONS)).expect("32767 functions");
    assert_eq!(library.functions().len(), MAX_FUNCTIONS);
    assert_eq!(library.index_of("f32766"), Some(32766));
    assert_eq!(
        FunctionLibrary::inspect(&build(MAX_FUNCTIONS + 1)),
        Err(Error::TooManyFunctions(MAX_FUNCTIONS + 1))
    );
}

#[test]
fn truncated_and_corrupted_modules_never_panic() {
    let module = valid_module();
    for length in 0..module.len() {
        assert!(FunctionLibrary::inspect(&module[..length]).is_err());
    }
    for mutated in mutations(&module, 5_000) {
        // Any outcome but a panic is fine.
        let _ = FunctionLibrary::inspect(&mutated);
    }
}

/// wasmtime runs SIMD (Rust's `+simd128`, clang's `-msimd128`); the inspector must accept what
/// it runs. `cargo test -p function-library` checks it without wasmtime's features unified in.
#[test]
fn a_module_with_simd_instructions_is_accepted() {
    let module = wat::parse_str(
        r#"(module
             (memory (export "memory") 1)
             (func (export "splat") (param i32 i32 i32) (result i32)
               (v128.store (local.get 2) (i32x4.splat (local.get 1)))
               (i32.const 16)))"#,
    )
    .unwrap();
    let library = FunctionLibrary::inspect(&module).expect("a module with SIMD");
    assert_eq!(library.functions(), ["splat"]);
}
