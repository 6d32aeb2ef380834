//! Runs `rfaas_figure` on CSV files as the benchmarks write them and reads the SVG it draws.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXE: &str = env!("CARGO_BIN_EXE_rfaas_figure");

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("rfaas_figure-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    format!("{}", path.display())
}

fn figure(args: &[&str]) -> Output {
    Command::new(EXE).args(args).output().unwrap()
}

/// The texts of an SVG file's `<text>` elements, trimmed.
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            Some(
                t.split_once('>')?
                    .1
                    .split_once("</text>")?
                    .0
                    .trim()
                    .to_owned(),
            )
        })
        .collect()
}

/// Rows of `warm_benchmarker` (repetition,size,round_trip_ns) for one size.
fn round_trips(size: u64, ns: &[u64]) -> String {
    let mut s = String::from("repetition,size,round_trip_ns\n");
    for (i, n) in ns.iter().enumerate() {
        s += &format!("{i},{size},{n}\n");
    }
    s
}

#[test]
fn latency_figure_has_a_line_per_series_and_the_sizes_as_ticks() {
    let dir = scratch("latency");
    let out = dir.join("latency.svg");
    let mut args = vec![
        "latency".to_owned(),
        "-o".into(),
        format!("{}", out.display()),
    ];
    args.extend(["--title".into(), "Warm calls on shm".into()]);
    for (kind, base) in [("raw", 1000), ("native", 1100), ("wasm", 1200)] {
        for size in [1u64, 4096, 1 << 20] {
            let ns: Vec<u64> = (0..100).map(|i| base + size / 100 + i).collect();
            let csv = write(&dir, &format!("{kind}_{size}.csv"), &round_trips(size, &ns));
            args.push(format!("{kind}={csv}"));
        }
    }
    let run = figure(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        out.display().to_string()
    );
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
    let texts = texts(&svg);
    for text in [
        "Warm calls on shm",
        "raw",
        "native",
        "wasm",
        "1 B",
        "4 KiB",
        "1 MiB",
    ] {
        assert!(
            texts.iter().any(|t| t == text),
            "the figure lacks {text:?}: {texts:?}"
        );
    }
    assert!(texts.iter().any(|t| t.contains("p99")), "{texts:?}");
    // One line through the medians per series.
    assert!(svg.matches("<polyline").count() >= 3, "{svg}");
}

#[test]
fn cold_figure_stacks_the_phases_and_writes_the_total() {
    let dir = scratch("cold");
    let header = "repetition,lease_ns,connect_ns,submit_ns,spawn_connect_ns,initialize_ns,execute_ns,total_ns";
    let native = write(
        &dir,
        "cold_native.csv",
        &format!("{header}\n0,1000000,300000,600000,2300000,2000000,40000,7600000\n"),
    );
    let wasm = write(
        &dir,
        "cold_wasm.csv",
        &format!("{header}\n0,1000000,300000,600000,2000000,1500000,50000,6800000\n"),
    );
    let out = dir.join("cold.svg");
    let run = figure(&[
        "cold",
        "-o",
        out.to_str().unwrap(),
        &format!("native={native}"),
        &format!("wasm, warm cache={wasm}"),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let texts = texts(&std::fs::read_to_string(&out).unwrap());
    for text in [
        "native (n=1)",
        "wasm, warm cache (n=1)",
        "total 7.60 ms",
        "total 6.80 ms",
        "spawn_connect",
        "initialize",
    ] {
        assert!(
            texts.iter().any(|t| t == text),
            "the figure lacks {text:?}: {texts:?}"
        );
    }
}

#[test]
fn wrong_files_and_arguments_are_one_clear_line() {
    let dir = scratch("errors");
    let warm = write(&dir, "warm.csv", &round_trips(1, &[1000]));
    let out = format!("{}", dir.join("x.svg").display());
    let native = format!("native={warm}");
    for (args, needle) in [
        (
            vec!["cold", "-o", &out, &native],
            "has no column \"lease_ns\"",
        ),
        (
            vec!["latency", "-o", &out, "raw=/nonexistent/raw.csv"],
            "reading /nonexistent/raw.csv",
        ),
        (vec!["latency", "-o", &out, "raw.csv"], "is not LABEL=CSV"),
    ] {
        let run = figure(&args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    assert!(
        !dir.join("x.svg").exists(),
        "nothing is written on an error"
    );
}
