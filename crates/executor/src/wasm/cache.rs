//! The on-disk cache of compiled modules: compiling is the expensive part of a cold start.
//!
//! Entries are `<dir>/<key>.cwasm`, where the key is the SHA-256 of the module's bytes and of
//! [`Engine::precompile_compatibility_hash`] (wasmtime version, target and compilation
//! settings). A cryptographic hash matters here: executors of different clients share the
//! cache, so a client must not be able to craft code whose key collides with someone else's
//! module. Entries are written to a temporary file, synced and renamed into place, so
//! concurrent executors never see a half-written file and a file is never changed once it
//! has its name.
//!
//! The directory is `$RFAAS_CACHE_DIR`, else `$XDG_CACHE_HOME/rfaas/wasm`, else
//! `~/.cache/rfaas/wasm`. A cache that cannot be read or written costs a compile and a warning,
//! never the allocation.

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

/// What the cache did for one module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CacheOutcome {
    /// Loaded from the cache: no compilation.
    Hit,
    /// Compiled, then stored in the cache (`stored`) or not (a warning says why).
    Miss { stored: bool },
    /// No cache directory could be found; compiled.
    Disabled,
}

/// A module ready to instantiate and how it was obtained.
pub(crate) struct Loaded {
    pub(crate) module: Module,
    pub(crate) outcome: CacheOutcome,
    /// Time to compile (miss) or to load the cached file (hit).
    pub(crate) elapsed: Duration,
}

/// The cache directory from the environment, if any.
pub(crate) fn default_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("RFAAS_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return Some(Path::new(&dir).join("rfaas/wasm"));
    }
    var("HOME").map(|home| Path::new(&home).join(".cache/rfaas/wasm"))
}

/// The cache key of `code` for `engine`, in hex.
pub(crate) fn key(engine: &Engine, code: &[u8]) -> String {
    /// Feeds `Hash` input into SHA-256.
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            // Not used: the digest is read with `finalize`.
            0
        }
    }
    let mut sha = Sha(Sha256::new());
    sha.0.update(b"rfaas-wasm-cache-v1\0");
    sha.0.update((code.len() as u64).to_le_bytes());
    sha.0.update(code);
    engine.precompile_compatibility_hash().hash(&mut sha);
    sha.0.finalize().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Compiles `code`, or loads it from the cache in `dir`.
pub(crate) fn load(engine: &Engine, code: &[u8], dir: Option<&Path>) -> Result<Loaded> {
    let Some(dir) = dir else {
        tracing::warn!("no wasm cache directory (set RFAAS_CACHE_DIR or HOME); compiling");
        let (module, elapsed) = compile(engine, code)?;
        return Ok(Loaded {
            module,
            outcome: CacheOutcome::Disabled,
            elapsed,
        });
    };
    let path = dir.join(format!("{}.cwasm", key(engine, code)));
    if path.is_file() {
        let started = Instant::now();
        // SAFETY: deserializing runs no checks on the machine code, so the file must be one that
        // `Module::serialize` produced for a compatible engine. Files named `<key>.cwasm` in
        // the cache directory are written only by `store` below, from a module this engine
        // compiled from exactly these bytes (the key covers the code and the engine's
        // compatibility hash, and wasmtime checks its version and settings again on load).
        // The directory is private to the user running the executors (created 0700), so nobody
        // else writes there. Deserializing maps the file, which must not change while the
        // module lives: entries are only ever replaced by renaming a new file over them (the
        // mapped inode is unchanged) and never written in place.
        match unsafe { Module::deserialize_file(engine, &path) } {
            Ok(module) => {
                return Ok(Loaded {
                    module,
                    outcome: CacheOutcome::Hit,
                    elapsed: started.elapsed(),
                });
            }
            Err(e) => tracing::warn!(
                "cached module {} is unusable ({e}); compiling again",
                path.display()
            ),
        }
    }
    let (module, elapsed) = compile(engine, code)?;
    let stored = match store(&module, dir, &path) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                "could not cache the compiled module in {}: {e:#}",
                dir.display()
            );
            false
        }
    };
    Ok(Loaded {
        module,
        outcome: CacheOutcome::Miss { stored },
        elapsed,
    })
}

fn compile(engine: &Engine, code: &[u8]) -> Result<(Module, Duration)> {
    let started = Instant::now();
    let module = Module::from_binary(engine, code)
        .map_err(|e| anyhow::anyhow!("compiling the wasm module failed: {e:#}"))?;
    Ok((module, started.elapsed()))
}

/// Writes `module` to `path` atomically, creating the cache directory if need be.
fn store(module: &Module, dir: &Path, path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let bytes = module
        .serialize()
        .map_err(|e| anyhow::anyhow!("serializing the module: {e:#}"))?;
    Ok(crate::atomic_file::write(path, &bytes)?)
}
