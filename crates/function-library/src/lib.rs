//! Inspect an rFaaS function library without loading or running it.
//!
//! rFaaS ships function code from the client to the executor, either as a native ELF shared
//! library or as a WebAssembly module. Both sides derive the function indices of the wire
//! protocol from that code: the index of a function is its position among the library's function
//! names sorted by byte order. This crate reads those names with a parser only — the client never
//! `dlopen`s or instantiates the code it ships.
//!
//! - **Native**: the defined functions (`STT_FUNC`, global or weak binding, default visibility)
//!   in the `.text` section of the ELF shared object's dynamic symbol table, each with the C ABI
//!   `uint32_t f(void* args, uint32_t size, void* res)`.
//! - **Wasm**: the exported functions of a valid module that defines and exports its own
//!   `memory`; each must have the type `(i32, i32, i32) -> i32`.
//!
//! Exports that are hooks for the executor rather than functions for clients are not functions:
//! a WASI reactor's `_initialize` and the SDK's `__rfaas_*` hooks (see [`is_hook`]). A WASI
//! command module (one that exports `_start`) is refused: it is a program, not a library.
//!
//! A library holds at least one and at most [`MAX_FUNCTIONS`] functions, as the wire protocol
//! carries the index in 15 bits.
//!
//! # Example
//!
//! ```
//! use function_library::{FunctionLibrary, Kind};
//!
//! // A minimal wasm module exporting its memory and `(func (param i32 i32 i32) (result i32))`
//! // twice, as `empty` and `echo`.
//! let module: &[u8] = &[
//!     0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
//!     0x01, 0x08, 0x01, 0x60, 0x03, 0x7f, 0x7f, 0x7f, 0x01, 0x7f, // type section
//!     0x03, 0x02, 0x01, 0x00, // function section
//!     0x05, 0x03, 0x01, 0x00, 0x01, // memory section: one page
//!     0x07, 0x19, 0x03, // export section, 3 exports
//!     0x06, b'm', b'e', b'm', b'o', b'r', b'y', 0x02, 0x00,
//!     0x05, b'e', b'm', b'p', b't', b'y', 0x00, 0x00,
//!     0x04, b'e', b'c', b'h', b'o', 0x00, 0x00,
//!     0x0a, 0x06, 0x01, 0x04, 0x00, 0x20, 0x01, 0x0b, // code: return `size`
//! ];
//!
//! let library = FunctionLibrary::inspect(module)?;
//! assert_eq!(library.kind(), Kind::Wasm);
//! assert_eq!(library.functions(), ["echo", "empty"]);
//! assert_eq!(library.index_of("empty"), Some(1));
//! assert!(library.require_index("missing").is_err());
//!
//! // The executor checks the code against the kind the client announced.
//! assert!(FunctionLibrary::inspect_as(module, Kind::Native).is_err());
//! # Ok::<(), function_library::Error>(())
//! ```

#![deny(missing_docs)]

use std::fmt;
use std::str::FromStr;

use object::elf;
use object::read::elf::{ElfFile, FileHeader, Sym as _};
use wasmparser::types::EntityType;
use wasmparser::{CompositeInnerType, FuncType, ValType, Validator};

/// The largest number of functions a library may hold: the wire protocol carries the function
/// index in 15 bits.
pub const MAX_FUNCTIONS: usize = 0x7FFF;

/// The ELF magic number, at the start of every native shared library.
const ELF_MAGIC: &[u8] = b"\x7fELF";
/// The WebAssembly magic number, at the start of every wasm module.
const WASM_MAGIC: &[u8] = b"\0asm";
/// The name under which a wasm module must export its memory.
const MEMORY_EXPORT: &str = "memory";
/// How many leading bytes an unrecognised input quotes in its error.
const QUOTED_BYTES: usize = 8;
/// A WASI reactor's initialiser, which the executor runs once per instance.
pub const WASI_INITIALIZE: &str = "_initialize";
/// The entry point of a WASI command module.
const WASI_START: &str = "_start";
/// The prefix of the hooks the function SDK exports for the executor.
pub const HOOK_PREFIX: &str = "__rfaas_";
/// The SDK's hook `void __rfaas_set_output_capacity(uint32_t)`, which the executor calls with
/// the size of every output slot before the first function runs.
pub const SET_OUTPUT_CAPACITY: &str = "__rfaas_set_output_capacity";

/// Whether an export is a hook for the executor, not a function clients call: a WASI
/// reactor's `_initialize`, or an SDK hook (`__rfaas_…`).
pub fn is_hook(name: &str) -> bool {
    name == WASI_INITIALIZE || name.starts_with(HOOK_PREFIX)
}

/// Why a function library was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input holds no bytes at all.
    #[error("the code is empty (0 bytes): expected an ELF shared library or a WebAssembly module")]
    Empty,
    /// The input starts with neither the ELF nor the WebAssembly magic number.
    #[error("neither an ELF shared library nor a WebAssembly module (first bytes: {first_bytes})")]
    UnknownFormat {
        /// The first bytes of the input, in hex.
        first_bytes: String,
    },
    /// The code is of another kind than the one announced.
    #[error("expected {} but the code is {}", .expected.article_noun(), .actual.article_noun())]
    KindMismatch {
        /// The announced kind.
        expected: Kind,
        /// The kind of the code.
        actual: Kind,
    },
    /// A library kind name that is neither `native` nor `wasm`.
    #[error("unknown library kind `{0}` (expected `native` or `wasm`)")]
    UnknownKind(String),
    /// The ELF file could not be parsed.
    #[error("malformed ELF file: {0}")]
    MalformedElf(String),
    /// The ELF file is valid but not a shared library.
    #[error("the ELF file is {0}, not a shared library")]
    NotSharedLibrary(String),
    /// A function symbol name is not valid UTF-8.
    #[error("the ELF shared library exports a function whose name is not UTF-8: `{0}`")]
    NonUtf8Name(String),
    /// The bytes are not a valid WebAssembly module.
    #[error("invalid WebAssembly module: {0}")]
    InvalidWasm(String),
    /// The wasm module imports a memory instead of defining it.
    #[error("the module imports its memory; it must define and export `memory`")]
    ImportedMemory,
    /// The wasm module is a WASI command, not a library of functions.
    #[error(
        "the module is a WASI command (it exports `_start`), which runs once as a program; \
         build a library: a Rust `cdylib`, or C with `-mexec-model=reactor`"
    )]
    CommandModule,
    /// The wasm module does not export a memory named `memory`.
    #[error("the module does not export a memory named `memory`; it must define and export it")]
    MissingMemoryExport,
    /// An exported wasm function has the wrong type.
    #[error(
        "the exported function `{function}` has the type `{signature}`, \
         expected `(i32, i32, i32) -> i32`"
    )]
    WrongSignature {
        /// The name of the function.
        function: String,
        /// Its actual type, e.g. `(i32) -> ()`.
        signature: String,
    },
    /// The library holds no function.
    #[error("{} exports no functions", .0.article_noun())]
    NoFunctions(Kind),
    /// The library holds more functions than a 15-bit index can address.
    #[error(
        "the library exports {0} functions, more than the {max} a 15-bit function index can address",
        max = MAX_FUNCTIONS
    )]
    TooManyFunctions(usize),
    /// The library holds no function of the requested name.
    #[error("no function `{name}` in the library (available: {available})")]
    UnknownFunction {
        /// The requested name.
        name: String,
        /// The names of the library's functions, comma-separated.
        available: String,
    },
}

/// The kind of code a function library holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A native ELF shared library, loaded with `dlopen`.
    Native,
    /// A WebAssembly module, run in a sandbox.
    Wasm,
}

impl Kind {
    /// Detects the kind of `bytes` from its magic number.
    ///
    /// Only the first four bytes are looked at; [`FunctionLibrary::inspect`] checks the rest.
    ///
    /// # Errors
    ///
    /// [`Error::Empty`] for empty input, [`Error::UnknownFormat`] when the input starts with
    /// neither `\x7fELF` nor `\0asm`.
    pub fn detect(bytes: &[u8]) -> Result<Kind, Error> {
        if bytes.is_empty() {
            Err(Error::Empty)
        } else if bytes.starts_with(ELF_MAGIC) {
            Ok(Kind::Native)
        } else if bytes.starts_with(WASM_MAGIC) {
            Ok(Kind::Wasm)
        } else {
            let first_bytes = bytes
                .iter()
                .take(QUOTED_BYTES)
                .map(|byte| format!("{byte:02x}"))
                .collect::<Vec<_>>()
                .join(" ");
            Err(Error::UnknownFormat { first_bytes })
        }
    }

    /// The kind with its article, as used in error messages.
    fn article_noun(self) -> &'static str {
        match self {
            Kind::Native => "an ELF shared library",
            Kind::Wasm => "a wasm module",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Native => "native",
            Kind::Wasm => "wasm",
        })
    }
}

impl FromStr for Kind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" => Ok(Kind::Native),
            "wasm" => Ok(Kind::Wasm),
            other => Err(Error::UnknownKind(other.to_owned())),
        }
    }
}

/// The functions of a library, as found in its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionLibrary {
    kind: Kind,
    functions: Vec<String>,
}

impl FunctionLibrary {
    /// Inspects `bytes`, detecting its kind with [`Kind::detect`].
    ///
    /// # Errors
    ///
    /// Any [`Error`] but [`Error::KindMismatch`], [`Error::UnknownKind`] and
    /// [`Error::UnknownFunction`]: the input is not a function library that rFaaS can run.
    pub fn inspect(bytes: &[u8]) -> Result<Self, Error> {
        let kind = Kind::detect(bytes)?;
        let functions = match kind {
            Kind::Native => native_functions(bytes)?,
            Kind::Wasm => wasm_functions(bytes)?,
        };
        Self::from_names(kind, functions)
    }

    /// Inspects `bytes`, which must be code of the `expected` kind.
    ///
    /// # Errors
    ///
    /// [`Error::KindMismatch`] when the code is of the other kind, otherwise as
    /// [`FunctionLibrary::inspect`].
    pub fn inspect_as(bytes: &[u8], expected: Kind) -> Result<Self, Error> {
        let actual = Kind::detect(bytes)?;
        if actual != expected {
            return Err(Error::KindMismatch { expected, actual });
        }
        Self::inspect(bytes)
    }

    /// The kind of the library's code.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The names of the library's functions, sorted by byte order.
    ///
    /// The position of a name is the function index used on the wire.
    pub fn functions(&self) -> &[String] {
        &self.functions
    }

    /// The wire index of the function `name`, if the library has it.
    pub fn index_of(&self, name: &str) -> Option<u16> {
        let index = self
            .functions
            .binary_search_by(|function| function.as_str().cmp(name))
            .ok()?;
        // Never fails: construction caps the number of functions at MAX_FUNCTIONS.
        u16::try_from(index).ok()
    }

    /// The wire index of the function `name`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownFunction`], listing the available names, when the library has no such
    /// function.
    pub fn require_index(&self, name: &str) -> Result<u16, Error> {
        self.index_of(name).ok_or_else(|| Error::UnknownFunction {
            name: name.to_owned(),
            available: self.functions.join(", "),
        })
    }

    /// Sorts and checks the function names found in code of the given kind.
    fn from_names(kind: Kind, mut functions: Vec<String>) -> Result<Self, Error> {
        functions.sort_unstable();
        functions.dedup();
        if functions.is_empty() {
            return Err(Error::NoFunctions(kind));
        }
        if functions.len() > MAX_FUNCTIONS {
            return Err(Error::TooManyFunctions(functions.len()));
        }
        Ok(Self { kind, functions })
    }
}

/// The function names of an ELF shared library, unsorted.
fn native_functions(bytes: &[u8]) -> Result<Vec<String>, Error> {
    match object::FileKind::parse(bytes) {
        Ok(object::FileKind::Elf32) => {
            elf_functions::<elf::FileHeader32<object::Endianness>>(bytes)
        }
        Ok(object::FileKind::Elf64) => {
            elf_functions::<elf::FileHeader64<object::Endianness>>(bytes)
        }
        Ok(other) => Err(Error::MalformedElf(format!(
            "unsupported object file kind {other:?}"
        ))),
        Err(error) => Err(Error::MalformedElf(error.to_string())),
    }
}

/// The function names of a 32- or 64-bit ELF shared library, unsorted.
fn elf_functions<Elf: FileHeader<Endian = object::Endianness>>(
    bytes: &[u8],
) -> Result<Vec<String>, Error> {
    let malformed = |error: object::Error| Error::MalformedElf(error.to_string());
    let file = ElfFile::<Elf>::parse(bytes).map_err(malformed)?;
    let endian = file.endian();

    match file.elf_header().e_type(endian) {
        elf::ET_DYN => {}
        elf::ET_EXEC => return Err(Error::NotSharedLibrary("an executable (ET_EXEC)".into())),
        elf::ET_REL => {
            return Err(Error::NotSharedLibrary(
                "a relocatable object file (ET_REL)".into(),
            ));
        }
        elf::ET_CORE => return Err(Error::NotSharedLibrary("a core dump (ET_CORE)".into())),
        other => {
            return Err(Error::NotSharedLibrary(format!(
                "of unknown type {other:#x}"
            )));
        }
    }
    // Position-independent executables are ET_DYN too; the linker marks them with DF_1_PIE.
    let dynamic = file.elf_dynamic_table().map_err(malformed)?;
    let is_pie = dynamic
        .iter()
        .any(|entry| entry.tag == elf::DT_FLAGS_1 && entry.val & u64::from(elf::DF_1_PIE) != 0);
    if is_pie {
        return Err(Error::NotSharedLibrary(
            "a position-independent executable (DF_1_PIE)".into(),
        ));
    }

    // Without a `.text` section there is no function to call.
    let Some((text, _)) = file.elf_section_table().section_by_name(endian, b".text") else {
        return Ok(Vec::new());
    };
    let symbols = file.elf_dynamic_symbol_table();
    let mut functions = Vec::new();
    for (index, symbol) in symbols.enumerate() {
        let exported = symbol.st_type() == elf::STT_FUNC
            && matches!(symbol.st_bind(), elf::STB_GLOBAL | elf::STB_WEAK)
            && symbol.st_visibility() == elf::STV_DEFAULT;
        if !exported {
            continue;
        }
        let section = symbols
            .symbol_section(endian, symbol, index)
            .map_err(malformed)?;
        if section != Some(text) {
            continue;
        }
        let name = symbols.symbol_name(endian, symbol).map_err(malformed)?;
        let name = std::str::from_utf8(name)
            .map_err(|_| Error::NonUtf8Name(String::from_utf8_lossy(name).into_owned()))?;
        if !is_hook(name) {
            functions.push(name.to_owned());
        }
    }
    Ok(functions)
}

/// The exported function names of a wasm module, unsorted.
fn wasm_functions(bytes: &[u8]) -> Result<Vec<String>, Error> {
    let types = Validator::new()
        .validate_all(bytes)
        .map_err(|error| Error::InvalidWasm(error.to_string()))?;
    let types = types.as_ref();
    let (Some(mut imports), Some(exports)) = (types.core_imports(), types.core_exports()) else {
        return Err(Error::InvalidWasm("not a core module".into()));
    };

    if imports.any(|(_, _, entity)| matches!(entity, EntityType::Memory(_))) {
        return Err(Error::ImportedMemory);
    }
    let mut has_memory = false;
    let mut functions = Vec::new();
    for (name, entity) in exports {
        match entity {
            EntityType::Memory(_) if name == MEMORY_EXPORT => has_memory = true,
            EntityType::Func(_) if name == WASI_START => return Err(Error::CommandModule),
            EntityType::Func(_) | EntityType::FuncExact(_) if is_hook(name) => {}
            EntityType::Func(id) | EntityType::FuncExact(id) => {
                let signature = match &types[id].composite_type.inner {
                    CompositeInnerType::Func(signature) => signature,
                    // The validator only gives functions function types.
                    _ => return Err(Error::InvalidWasm(format!("`{name}` is not a function"))),
                };
                if signature.params() != [ValType::I32; 3] || signature.results() != [ValType::I32]
                {
                    return Err(Error::WrongSignature {
                        function: name.to_owned(),
                        signature: format_signature(signature),
                    });
                }
                functions.push(name.to_owned());
            }
            // Other exports (globals such as `__heap_base`, tables) are harmless.
            _ => {}
        }
    }
    if !has_memory {
        return Err(Error::MissingMemoryExport);
    }
    Ok(functions)
}

/// Formats a wasm function type as `(i32, i64) -> f32`, `() -> ()` or `(i32) -> (i32, i32)`.
fn format_signature(signature: &FuncType) -> String {
    let list = |types: &[ValType]| {
        types
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let results = match signature.results() {
        [single] => single.to_string(),
        results => format!("({})", list(results)),
    };
    format!("({}) -> {results}", list(signature.params()))
}
