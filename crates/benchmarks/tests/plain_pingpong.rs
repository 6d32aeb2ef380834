//! Runs the `plain_pingpong` binary end to end on both media, one after the other: each run
//! is a hot-polling pair, and two at once would starve each other on two cores.

use std::path::PathBuf;
use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_plain_pingpong");

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("plain_pingpong-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn both_media_fill_the_table_and_the_csv() {
    let dir = scratch("table");
    for (medium, says) in [
        ("memory", "Medium: shared memory"),
        ("tcp", "Medium: TCP over 127.0.0.1"),
    ] {
        let csv = dir.join(format!("{medium}.csv"));
        let out = Command::new(EXE)
            .args(["--medium", medium, "--sizes", "1,64K"])
            .args(["--repetitions", "50", "--warmup", "5", "--output-stats"])
            .arg(&csv)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{medium}: {}\n{stdout}\n{stderr}",
            out.status
        );
        assert!(stdout.contains(says), "{stdout}");

        let rows: Vec<Vec<f64>> = stdout
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|w| w.parse::<u32>().is_ok())
            })
            .map(|l| l.split_whitespace().map(|w| w.parse().unwrap()).collect())
            .collect();
        assert_eq!(rows.len(), 2, "{stdout}");
        for (row, size) in rows.iter().zip([1.0, 65536.0]) {
            let [bytes, iterations, min, median, p99, max, bw] = row[..] else {
                panic!("seven columns: {row:?}")
            };
            assert_eq!((bytes, iterations), (size, 50.0), "{stdout}");
            assert!(
                0.0 < min && min <= median && median <= p99 && p99 <= max,
                "{row:?}"
            );
            let expected_bw = 2.0 * size / median;
            assert!(
                (bw - expected_bw).abs() <= expected_bw * 0.01 + 0.01,
                "{row:?}"
            );
        }

        let text = std::fs::read_to_string(&csv).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("size,repetition,round_trip_ns"));
        let sizes: Vec<u64> = lines
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(sizes.len(), 100, "{text}");
        assert_eq!(sizes.iter().filter(|&&s| s == 65536).count(), 50);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_size_out_of_range_is_one_error_line() {
    let out = Command::new(EXE)
        .args(["--medium", "memory", "--sizes", "1,2G"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("out of range"), "{stderr}");
    assert!(out.stdout.is_empty());
}
