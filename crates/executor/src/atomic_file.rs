//! Cache entries written so that readers see a whole file or none: the bytes go to a
//! temporary file beside the entry, are synced, and the file is renamed into place.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` atomically. The temporary file is `.<name>.<pid>.<n>.tmp` in the
/// same directory, so concurrent writers of one entry never share it; it is removed if any
/// step fails.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_entry_is_written_whole_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("rfaas-atomic-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let entry = dir.join("entry.bin");
        super::write(&entry, b"first").unwrap();
        super::write(&entry, b"second").unwrap();
        assert_eq!(std::fs::read(&entry).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["entry.bin"]);
        assert!(super::write(&dir.join("missing/entry.bin"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
