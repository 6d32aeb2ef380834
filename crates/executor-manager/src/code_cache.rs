//! The manager's cache of function libraries, named by content: `<dir>/<sha256>.so` or
//! `.wasm`. A client sends its library's [`CodeDigest`] in the allocation request; on a hit the
//! executor loads the cached file and the library does not cross the network again.
//!
//! The manager only looks entries up and evicts them; executors write them. An executor that
//! received a library checks that its SHA-256 is the digest the request named before it stores
//! it (temporary file, sync, rename), so a client cannot put bytes under another digest, and
//! no one sees a half-written entry. The directory is created 0700 and must belong to the
//! manager's user: nobody else writes there.
//!
//! The cache is bounded: after each miss, the least recently used entries go until the rest fit
//! the capacity. Entries used within [`IN_USE`] stay, since an executor may be about to open
//! them; the bound is that much soft.

use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};
use function_library::Kind;
use rfaas_protocol::control::{CodeDigest, credential_hex};

/// How long after its last use an entry cannot be evicted: longer than an executor takes from
/// its allocation to opening the file.
pub const IN_USE: Duration = Duration::from_secs(60);

/// Where a library comes from, for one allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeSource {
    /// The executor loads this cached file; the client sends nothing.
    Cached(PathBuf),
    /// The client sends the library; the executor checks its digest and stores it here.
    Store { path: PathBuf, digest: CodeDigest },
    /// The client sends the library and nothing is cached (no cache).
    Sent,
}

/// A bounded directory of function libraries named by their SHA-256.
pub struct CodeCache {
    dir: PathBuf,
    capacity: u64,
}

impl CodeCache {
    /// Opens (creating it 0700 if needed) the cache in `dir`, holding up to `capacity` bytes.
    pub fn open(dir: PathBuf, capacity: u64) -> Result<CodeCache> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let meta = std::fs::metadata(&dir).with_context(|| format!("reading {}", dir.display()))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        if meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
            bail!(
                "{} must belong to this user (uid {uid}) and be private to it (mode 0700); it is uid {}, mode {:o}",
                dir.display(),
                meta.uid(),
                meta.permissions().mode() & 0o777
            );
        }
        Ok(CodeCache { dir, capacity })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the library of one allocation comes from: the cached file if there is one (its
    /// use is recorded for eviction), else the path its executor stores it under.
    pub fn source(&self, digest: &CodeDigest, kind: Kind) -> CodeSource {
        let path = self.entry(digest, kind);
        let used = std::fs::File::options()
            .append(true)
            .open(&path)
            .and_then(|file| file.set_modified(SystemTime::now()));
        match used {
            Ok(()) => CodeSource::Cached(path),
            Err(_) => CodeSource::Store {
                path,
                digest: *digest,
            },
        }
    }

    fn entry(&self, digest: &CodeDigest, kind: Kind) -> PathBuf {
        let extension = match kind {
            Kind::Native => "so",
            Kind::Wasm => "wasm",
        };
        self.dir
            .join(format!("{}.{extension}", credential_hex(digest)))
    }

    /// Removes the least recently used entries, but none used within [`IN_USE`], until the
    /// rest fit the capacity; also removes temporary files older than that. Returns how many
    /// entries went.
    pub fn trim(&self) -> Result<usize> {
        let now = SystemTime::now();
        let age = |modified: SystemTime| now.duration_since(modified).unwrap_or_default();
        let mut entries = Vec::new();
        for item in std::fs::read_dir(&self.dir)? {
            let item = item?;
            let Ok(meta) = item.metadata() else { continue };
            let modified = meta.modified()?;
            let name = item.file_name();
            if name.to_string_lossy().starts_with('.') {
                if age(modified) > IN_USE {
                    let _ = std::fs::remove_file(item.path());
                }
                continue;
            }
            entries.push((modified, meta.len(), item.path()));
        }
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        entries.sort();
        let mut removed = 0;
        for (modified, len, path) in entries {
            if total <= self.capacity || age(modified) <= IN_USE {
                break;
            }
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            total -= len;
            removed += 1;
        }
        Ok(removed)
    }
}

/// The cache directory when none is configured: `$XDG_CACHE_HOME/rfaas/code`, else
/// `~/.cache/rfaas/code`.
pub fn default_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return Some(Path::new(&dir).join("rfaas/code"));
    }
    var("HOME").map(|home| Path::new(&home).join(".cache/rfaas/code"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("rfaas-code-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn age(path: &Path, by: Duration) {
        let file = std::fs::File::options().append(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - by).unwrap();
    }

    #[test]
    fn a_stored_entry_is_a_hit_of_its_kind_only() {
        let dir = scratch("hit");
        let cache = CodeCache::open(dir.clone(), 1 << 20).unwrap();
        let digest = [7u8; 32];
        let CodeSource::Store { path, digest: d } = cache.source(&digest, Kind::Native) else {
            panic!("an empty cache has no hit");
        };
        assert_eq!(d, digest);
        assert_eq!(path.parent(), Some(dir.as_path()));
        std::fs::write(&path, b"library").unwrap();
        assert_eq!(
            cache.source(&digest, Kind::Native),
            CodeSource::Cached(path)
        );
        assert!(matches!(
            cache.source(&digest, Kind::Wasm),
            CodeSource::Store { .. }
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn trimming_evicts_the_least_recently_used_entries_but_not_recent_ones() {
        let dir = scratch("trim");
        let cache = CodeCache::open(dir.clone(), 250).unwrap();
        let paths: Vec<PathBuf> = (0..4u8)
            .map(|i| {
                let CodeSource::Store { path, .. } = cache.source(&[i; 32], Kind::Wasm) else {
                    panic!("no entry yet");
                };
                std::fs::write(&path, [i; 100]).unwrap();
                path
            })
            .collect();
        // Entry 0 is the oldest, 2 the next; 1 was used after both; 3 is recent.
        age(&paths[0], IN_USE * 4);
        age(&paths[2], IN_USE * 3);
        age(&paths[1], IN_USE * 2);
        let stale_tmp = dir.join(".left-by-a-dead-executor.tmp");
        std::fs::write(&stale_tmp, b"partial").unwrap();
        age(&stale_tmp, IN_USE * 2);
        assert_eq!(cache.trim().unwrap(), 2);
        assert!(!paths[0].exists() && !paths[2].exists() && !stale_tmp.exists());
        assert!(paths[1].exists() && paths[3].exists());
        // What is left fits; nothing more goes.
        assert_eq!(cache.trim().unwrap(), 0);
        // Over capacity, yet everything is recent: nothing goes.
        for i in 4..7u8 {
            let CodeSource::Store { path, .. } = cache.source(&[i; 32], Kind::Native) else {
                panic!("no entry yet");
            };
            std::fs::write(&path, [i; 100]).unwrap();
        }
        age(&paths[1], Duration::ZERO);
        assert_eq!(cache.trim().unwrap(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let dir = scratch("mode");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = CodeCache::open(dir.clone(), 1).err().expect("refused");
        assert!(format!("{err:#}").contains("mode 0700"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
