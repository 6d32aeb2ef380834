//! Slurm: munged, slurmctld on `rm` and one `slurmd -N nX` per node namespace
//! (`tools/slurm/slurm_cluster.sh`); the job `tools/slurm/rfaas_managers.sbatch` starts an
//! executor manager on every node of its allocation and registers it over HTTP; a client leases
//! through the resource manager; `scancel` removes the nodes again.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::fixture::*;
use crate::harness::*;

/// The Slurm daemons of one test, stopped on drop.
struct Slurm {
    dir: std::path::PathBuf,
}

impl Slurm {
    fn up(dir: std::path::PathBuf) -> Slurm {
        let out = Command::new(repo().join("tools/slurm/slurm_cluster.sh"))
            .arg("up")
            .arg(&dir)
            .output()
            .expect("slurm_cluster.sh runs");
        assert!(
            out.status.success(),
            "slurm_cluster.sh up: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        eprintln!("{}", text(&out.stdout));
        Slurm { dir }
    }

    /// A Slurm command run on the client host.
    fn command(&self, program: &str) -> Command {
        let mut command = on("cl", program);
        command.env("SLURM_CONF", self.dir.join("slurm.conf"));
        command
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("tools/slurm/slurm_cluster.sh"))
            .arg("down")
            .arg(&self.dir)
            .output();
    }
}

fn listed(cluster: &Cluster) -> Vec<String> {
    cluster.executors().into_keys().collect()
}

#[test]
#[ignore = "needs root: network namespaces, and Slurm (tools/setup.sh cluster)"]
fn a_slurm_job_starts_registers_and_removes_the_managers() {
    let _serial = serial();
    let cluster = Cluster::up("slurm");
    let slurm = Slurm::up(cluster.dir.path("slurm"));
    assert!(listed(&cluster).is_empty());

    let log = cluster.dir.path("rfaas-managers-%j.log");
    let submitted = Instant::now();
    let out = slurm
        .command("sbatch")
        .args([
            "-N",
            "3",
            "--chdir",
            arg(&cluster.dir.0),
            "--output",
            arg(&log),
        ])
        .arg(repo().join("tools/slurm/rfaas_managers.sbatch"))
        .env("RFAAS_TOOLS_DIR", repo().join("tools/slurm"))
        .env("RFAAS_BIN_DIR", bin_dir())
        .env("RFAAS_WORK_DIR", &cluster.dir.0)
        .env("RFAAS_RM_ADDRESS", addr("rm"))
        .env("RFAAS_RM_PORT", RM_PORT.to_string())
        .env("RFAAS_RM_HTTP", &cluster.http)
        .env("RFAAS_SECRET", SECRET)
        .env("RFAAS_HTTP_TOKEN", TOKEN)
        .output()
        .unwrap();
    let said = text(&out.stdout);
    assert!(out.status.success(), "sbatch: {said}{}", text(&out.stderr));
    let job = said
        .trim()
        .strip_prefix("Submitted batch job ")
        .unwrap_or_else(|| panic!("{said}"))
        .to_string();
    let log = cluster.dir.path(&format!("rfaas-managers-{job}.log"));
    let job_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Every node of the allocation registers: over HTTP (/add), then over the RDMA layer.
    let deadline = Instant::now() + Duration::from_secs(30);
    let all_up = || {
        let nodes = cluster.executors();
        nodes.len() == 3 && nodes.values().all(|n| n["manager_connected"] == true)
    };
    while !all_up() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = cluster.get("/executors");
    assert!(
        all_up(),
        "{before}\njob log:\n{}\n{}",
        job_log(),
        cluster.logs()
    );
    for (node, cores) in NODES {
        let n = before["executors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == node)
            .unwrap();
        assert_eq!(n["cores"], cores, "Slurm's cores for {node}: {n}");
        assert_eq!(n["ip_address"], addr(node).as_str());
    }
    eprintln!(
        "the job's {} managers registered {:.3} s after sbatch",
        NODES.len(),
        submitted.elapsed().as_secs_f64()
    );
    let squeue = slurm.command("squeue").output().unwrap();
    eprintln!("{}", text(&squeue.stdout));

    // A client through the resource manager: the tutorial's benchmark on the client host.
    let client = cluster.run_client(
        "parallel_invocations",
        serde_json::json!({ "repetitions": 20, "numcores": 4, "hot_timeout": 0 }),
    );
    let client_log = text(&client.stderr);
    assert!(
        client.status.success(),
        "{client_log}\njob log:\n{}\n{}",
        job_log(),
        cluster.logs()
    );
    assert!(client_log.contains("on n3 ("), "4 cores: n3 {client_log}");
    assert!(
        client_log.contains("Executed 20 repetitions on 4 cores"),
        "{client_log}"
    );
    assert!(
        cluster
            .wait_lease_state(1, "closed", Duration::from_secs(10))
            .is_some(),
        "{}",
        cluster.logs()
    );
    let during = cluster.get("/executors");

    let cancel = slurm.command("scancel").arg(&job).output().unwrap();
    assert!(cancel.status.success(), "{}", text(&cancel.stderr));
    let t = Instant::now();
    let deadline = t + Duration::from_secs(30);
    while !listed(&cluster).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = cluster.get("/executors");
    let removed_after = t.elapsed();
    eprintln!("== job log\n{}", job_log());
    eprintln!("== GET /executors before the client:\n{before}");
    eprintln!("== GET /executors after the client:\n{during}");
    eprintln!(
        "== GET /executors {:.3} s after scancel:\n{after}",
        removed_after.as_secs_f64()
    );
    assert_eq!(
        after["executors"].as_array().map(Vec::len),
        Some(0),
        "{after}\njob log:\n{}\n{}",
        job_log(),
        cluster.logs()
    );
    let lines = job_log();
    for (node, _) in NODES {
        assert!(
            lines.contains(&format!("rfaas[{node}]: added to the resource manager at"))
                && lines.contains(&format!(
                    "rfaas[{node}]: removing the node from the resource manager"
                )),
            "{lines}"
        );
    }
    // The lease on n3 was billed before the node left.
    let lease = &cluster.leases()[&1];
    assert_eq!(lease["node"], "n3");
    assert_eq!(
        lease["billing"]["invocations"], 80,
        "20 rounds on 4 cores: {lease}"
    );
}
