//! ELF files built with the C compiler.

use crate::support::{compile_c, mutations};
use function_library::{Error, FunctionLibrary, Kind};

const LIBRARY: &str = r#"
#include <stdint.h>
#include <stdio.h>

uint32_t zeta(void* args, uint32_t size, void* res) { return size; }
uint32_t alpha(void* args, uint32_t size, void* res) { puts("imports puts"); return size; }
uint32_t Beta(void* args, uint32_t size, void* res) { return size; }
__attribute__((weak)) uint32_t weak_one(void* args, uint32_t size, void* res) { return 0; }
__attribute__((visibility("hidden"))) uint32_t hidden_one(void* args, uint32_t size, void* res) { return 1; }
__attribute__((visibility("protected"))) uint32_t protected_one(void* args, uint32_t size, void* res) { return 2; }
__attribute__((section(".other_code"))) uint32_t elsewhere(void* args, uint32_t size, void* res) { return 4; }
static uint32_t local_one(void* args, uint32_t size, void* res) { return 3; }
uint32_t uses_locals(void* args, uint32_t size, void* res) {
    return local_one(args, size, res) + hidden_one(args, size, res);
}
int global_data = 5;
const char* global_string = "not a function";
"#;

fn shared_library() -> Vec<u8> {
    compile_c("native-library", LIBRARY, &["-shared", "-fPIC", "-O1"])
}

#[test]
fn exported_text_functions_are_listed_sorted() {
    let library = FunctionLibrary::inspect(&shared_library()).expect("shared library");
    assert_eq!(library.kind(), Kind::Native);
    // Not listed: `puts` (an import), hidden, protected and static functions, data, and functions
    // outside `.text`.
    assert_eq!(
        library.functions(),
        ["Beta", "alpha", "uses_locals", "weak_one", "zeta"]
    );
    assert_eq!(library.index_of("Beta"), Some(0));
    assert_eq!(library.index_of("zeta"), Some(4));
    assert_eq!(library.index_of("puts"), None);
    assert_eq!(library.index_of("elsewhere"), None);
    assert_eq!(library.index_of("global_data"), None);
    assert_eq!(
        library.require_index("hidden_one").unwrap_err().to_string(),
        "no function `hidden_one` in the library (available: Beta, alpha, uses_locals, weak_one, zeta)"
    );
}

#[test]
fn a_32_bit_shared_library_is_read_too() {
    // Without the C runtime, so that no 32-bit libc is needed.
    let bytes = compile_c(
        "native-32-bit",
        "unsigned run(void* a, unsigned s, void* r) { return s; }\n\
         unsigned go(void* a, unsigned s, void* r) { return 0; }\n",
        &["-m32", "-shared", "-fPIC", "-nostdlib"],
    );
    assert_eq!(bytes[4], 1, "ELFCLASS32");
    let library = FunctionLibrary::inspect(&bytes).expect("32-bit shared library");
    assert_eq!(library.functions(), ["go", "run"]);
}

#[test]
fn executables_and_object_files_are_not_shared_libraries() {
    let program =
        "int main(void) { return 0; }\nunsigned f(void* a, unsigned s, void* r) { return s; }\n";
    let cases = [
        ("native-exec", &["-no-pie"][..], "an executable (ET_EXEC)"),
        (
            "native-pie",
            &["-pie", "-fPIE"][..],
            "a position-independent executable (DF_1_PIE)",
        ),
        (
            "native-object",
            &["-c"][..],
            "a relocatable object file (ET_REL)",
        ),
    ];
    for (purpose, flags, description) in cases {
        let error = FunctionLibrary::inspect(&compile_c(purpose, program, flags)).unwrap_err();
        assert_eq!(
            error,
            Error::NotSharedLibrary(description.into()),
            "cc {flags:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("the ELF file is {description}, not a shared library")
        );
    }
}

#[test]
fn a_shared_library_without_functions_is_rejected() {
    let bytes = compile_c(
        "native-data-only",
        "int only_data = 1;\n",
        &["-shared", "-fPIC"],
    );
    let error = FunctionLibrary::inspect(&bytes).unwrap_err();
    assert_eq!(error, Error::NoFunctions(Kind::Native));
    assert_eq!(
        error.to_string(),
        "an ELF shared library exports no functions"
    );
}

#[test]
fn truncated_and_corrupted_libraries_never_panic() {
    let library = shared_library();
    for length in 0..library.len() {
        // Any outcome but a panic is fine: a cut in trailing padding may still parse.
        let _ = FunctionLibrary::inspect(&library[..length]);
    }
    for length in 0..64 {
        assert!(FunctionLibrary::inspect(&library[..length]).is_err());
    }
    for mutated in mutations(&library, 5_000) {
        let _ = FunctionLibrary::inspect(&mutated);
    }
}
