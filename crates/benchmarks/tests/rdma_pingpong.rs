//! Runs the `rdma_pingpong` binary end to end: a client that spawns its own server over the
//! tcp provider on 127.0.0.1. One hot-polling pair at a time: only the first test polls.

use std::path::PathBuf;
use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_rdma_pingpong");

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("rdma_pingpong-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn spawned_server_round_trips_fill_the_table_and_the_csv() {
    let dir = scratch("table");
    let devices = dir.join("devices.json");
    std::fs::write(
        &devices,
        r#"{"devices":[{"name":"lo","ip_address":"127.0.0.1","port":0,"max_inline_data":64,
            "default_receive_buffer_size":32,"provider":"tcp"}]}"#,
    )
    .unwrap();
    let csv = dir.join("rtt.csv");
    let out = Command::new(EXE)
        .arg("--device-database")
        .arg(&devices)
        .args([
            "--name",
            "lo",
            "client",
            "--spawn-server",
            "--sizes",
            "1,4096",
        ])
        .args(["--repetitions", "50", "--warmup", "5", "--output-stats"])
        .arg(&csv)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );

    let header = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("#bytes"))
        .expect("a table header");
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        columns,
        [
            "#bytes",
            "#iterations",
            "t_min[usec]",
            "t_median[usec]",
            "t_p99[usec]",
            "t_max[usec]",
            "BW_median[MB/s]"
        ]
    );
    assert!(stdout.contains("FULL round trip"), "{stdout}");
    assert!(stdout.contains("Provider: tcp"), "{stdout}");
    let rows: Vec<Vec<f64>> = stdout
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<u32>().is_ok())
        })
        .map(|l| {
            l.split_whitespace()
                .map(|w| w.parse().expect("numeric columns"))
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    let rule = stdout.lines().filter(|l| l.starts_with("----")).count();
    assert_eq!(rule, 3, "header and table between dashed rules:\n{stdout}");
    for (row, size) in rows.iter().zip([1.0, 4096.0]) {
        assert_eq!(row.len(), 7, "{row:?}");
        let [bytes, iterations, min, median, p99, max, bw] = row[..] else {
            unreachable!()
        };
        assert_eq!((bytes, iterations), (size, 50.0));
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

    // One CSV row per measured round trip; the table's medians follow from it.
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("size,repetition,round_trip_ns"));
    let records: Vec<[u64; 3]> = lines
        .map(|l| {
            let v: Vec<u64> = l.split(',').map(|x| x.parse().unwrap()).collect();
            [v[0], v[1], v[2]]
        })
        .collect();
    assert_eq!(records.len(), 100);
    for (size, row) in [1u64, 4096].into_iter().zip(&rows) {
        let mut ns: Vec<u64> = records
            .iter()
            .filter(|r| r[0] == size)
            .map(|r| r[2])
            .collect();
        let reps: Vec<u64> = records
            .iter()
            .filter(|r| r[0] == size)
            .map(|r| r[1])
            .collect();
        assert_eq!(reps, (0..50).collect::<Vec<_>>());
        ns.sort_unstable();
        let median_us = (ns[24] + ns[25]) as f64 / 2.0 / 1000.0;
        assert!(
            (median_us - row[3]).abs() < 0.006,
            "CSV median {median_us} vs table {}",
            row[3]
        );
        assert!(ns[0] > 0);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_missing_device_database_is_one_error_line() {
    let dir = scratch("missing");
    let out = Command::new(EXE)
        .arg("--device-database")
        .arg(dir.join("nope.json"))
        .args(["client", "--spawn-server"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("nope.json"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}
