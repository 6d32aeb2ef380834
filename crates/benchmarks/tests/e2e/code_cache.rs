//! The executor manager's code cache: a library crosses the network once; the allocations after
//! it load the manager's copy, named by the library's SHA-256.

use std::time::{Duration, Instant};

use rfaas::AllocationSpec;
use rfaas_protocol::control::{code_digest, credential_hex};

use crate::harness::*;

/// Native and wasm alike: the first allocation sends the library and its executor stores it
/// under its digest; the second loads that copy and gives the same results. A manager started
/// with `--no-code-cache` has the client send it every time.
#[test]
fn a_library_is_sent_once_then_loaded_from_the_managers_code_cache() {
    let _serial = serial();
    let dir = TempDir::new("code-cache");
    let cache = dir.path("code");
    let manager = local_manager_with(&dir, &["--code-cache", arg(&cache)]);
    // Allocates, checks one echo, and that the manager logged `needle` for this allocation.
    let allocate_once = |code: &[u8], needle: &str, fill: u8, size: usize| {
        let before = manager.log().matches(needle).count();
        let executor = allocate(&manager, code, &AllocationSpec::default()).unwrap();
        echo_once(&executor, fill, size).unwrap();
        drop(executor);
        assert_eq!(
            manager.log().matches(needle).count(),
            before + 1,
            "{}",
            manager.log()
        );
    };
    for (library, extension) in [(native_library(), "so"), (wasm_library(), "wasm")] {
        let code = std::fs::read(&library).unwrap();
        let entry = cache.join(format!(
            "{}.{extension}",
            credential_hex(&code_digest(&code))
        ));
        allocate_once(&code, ", code sent", 3, 100);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !entry.is_file() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            std::fs::read(&entry).ok().as_deref(),
            Some(code.as_slice()),
            "{} holds the library",
            entry.display()
        );
        allocate_once(&code, ", code cached", 4, 1000);
    }

    let uncached = TempDir::new("no-code-cache");
    let manager = local_manager_with(&uncached, &["--no-code-cache"]);
    let code = std::fs::read(native_library()).unwrap();
    for fill in [5, 6] {
        let executor = allocate(&manager, &code, &AllocationSpec::default()).unwrap();
        echo_once(&executor, fill, 10).unwrap();
    }
    assert_eq!(
        manager.log().matches(", code sent").count(),
        2,
        "{}",
        manager.log()
    );
    assert!(
        !manager.log().contains(", code cached"),
        "{}",
        manager.log()
    );
}
