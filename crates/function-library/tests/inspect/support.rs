//! Helpers: a tiny wasm module assembler, a C compiler driver, and input mutations.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The wasm value type `i32`.
pub const I32: u8 = 0x7f;
/// The wasm value type `i64`.
pub const I64: u8 = 0x7e;

/// A WebAssembly module assembled by hand, section by section.
#[derive(Default)]
pub struct Module {
    types: Vec<(Vec<u8>, Vec<u8>)>,
    imports: Vec<Vec<u8>>,
    functions: Vec<u32>,
    memory: bool,
    globals: u32,
    exports: Vec<Vec<u8>>,
    /// The code of each function: locals, instructions, `end`.
    pub bodies: Vec<Vec<u8>>,
}

impl Module {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a function type `(params) -> (results)`.
    pub fn with_type(mut self, (params, results): (&[u8], &[u8])) -> Self {
        self.types.push((params.to_vec(), results.to_vec()));
        self
    }

    /// Defines functions of the given type indices; each returns zeros.
    pub fn with_functions(mut self, types: &[u32]) -> Self {
        for &ty in types {
            let mut body = vec![0x00]; // no locals
            for &result in &self.types[ty as usize].1 {
                match result {
                    I32 => body.extend([0x41, 0x00]),
                    I64 => body.extend([0x42, 0x00]),
                    other => panic!("no constant for value type {other:#x}"),
                }
            }
            body.push(0x0b);
            self.functions.push(ty);
            self.bodies.push(body);
        }
        self
    }

    /// Defines a memory of one page.
    pub fn with_memory(mut self) -> Self {
        self.memory = true;
        self
    }

    /// Defines an immutable i32 global.
    pub fn with_global(mut self) -> Self {
        self.globals += 1;
        self
    }

    /// Imports a memory of one page.
    pub fn import_memory(mut self, module: &str, field: &str) -> Self {
        let mut import = name(module);
        import.extend(name(field));
        import.extend([0x02, 0x00, 0x01]);
        self.imports.push(import);
        self
    }

    pub fn export_memory(self, export: &str) -> Self {
        self.export(export, 0x02, 0)
    }

    pub fn export_function(self, export: &str, index: u32) -> Self {
        self.export(export, 0x00, index)
    }

    pub fn export_global(self, export: &str, index: u32) -> Self {
        self.export(export, 0x03, index)
    }

    fn export(mut self, export: &str, kind: u8, index: u32) -> Self {
        let mut entry = name(export);
        entry.push(kind);
        leb(index, &mut entry);
        self.exports.push(entry);
        self
    }

    /// The binary module.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = b"\0asm\x01\0\0\0".to_vec();
        let types = self.types.iter().map(|(params, results)| {
            let mut ty = vec![0x60];
            ty.extend(vector(params.iter().map(|&p| vec![p])));
            ty.extend(vector(results.iter().map(|&r| vec![r])));
            ty
        });
        section(&mut out, 1, vector(types));
        section(&mut out, 2, vector(self.imports.iter().cloned()));
        let functions = self.functions.iter().map(|&ty| {
            let mut index = Vec::new();
            leb(ty, &mut index);
            index
        });
        section(&mut out, 3, vector(functions));
        if self.memory {
            section(&mut out, 5, vector([vec![0x00, 0x01]]));
        }
        let globals = (0..self.globals).map(|_| vec![I32, 0x00, 0x41, 0x00, 0x0b]);
        section(&mut out, 6, vector(globals));
        section(&mut out, 7, vector(self.exports.iter().cloned()));
        let bodies = self.bodies.iter().map(|body| {
            let mut sized = Vec::new();
            leb(body.len() as u32, &mut sized);
            sized.extend(body);
            sized
        });
        section(&mut out, 10, vector(bodies));
        out
    }
}

fn leb(mut value: u32, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn name(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    leb(text.len() as u32, &mut out);
    out.extend(text.as_bytes());
    out
}

fn vector(items: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    let items: Vec<Vec<u8>> = items.into_iter().collect();
    let mut out = Vec::new();
    leb(items.len() as u32, &mut out);
    out.extend(items.concat());
    out
}

/// Appends a section, unless it is an empty vector.
fn section(out: &mut Vec<u8>, id: u8, contents: Vec<u8>) {
    if contents == [0] {
        return;
    }
    out.push(id);
    leb(contents.len() as u32, out);
    out.extend(contents);
}

/// A fresh directory for the given purpose, not shared with any other call.
fn scratch(purpose: &str) -> PathBuf {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("function-library")
        .join(format!("{purpose}-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch directory");
    dir
}

/// Compiles C `source` with `cc FLAGS -o OUT`, returning the output file.
pub fn compile_c(purpose: &str, source: &str, flags: &[&str]) -> Vec<u8> {
    let dir = scratch(purpose);
    let source_path = dir.join("source.c");
    let output = dir.join("output");
    std::fs::write(&source_path, source).expect("write C source");
    let status = Command::new("cc")
        .args(flags)
        .arg("-o")
        .arg(&output)
        .arg(&source_path)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc {flags:?} failed");
    let bytes = std::fs::read(output).expect("read compiler output");
    std::fs::remove_dir_all(dir).expect("remove scratch directory");
    bytes
}

/// `count` variants of `bytes` with a few bytes overwritten and sometimes cut short.
pub fn mutations(bytes: &[u8], count: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count).map(move |_| {
        let mut mutated = bytes.to_vec();
        for _ in 0..1 + next() % 3 {
            let position = (next() % mutated.len() as u64) as usize;
            mutated[position] = next() as u8;
        }
        if next() % 4 == 0 {
            mutated.truncate((next() % mutated.len() as u64) as usize);
        }
        mutated
    })
}
