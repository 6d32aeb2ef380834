//! Behaviour at cluster scale: the tutorial's deployment across hosts, leases spread by fit, a
//! request larger than any node, parallel calls over leases on several nodes, billing per lease
//! and per node, and nodes that are cut off or killed and come back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rfaas::{AllocationSpec, Endpoint, Error, Executor, Lease, Wait};
use rfaas_protocol::control::HEARTBEAT_TIMEOUT;

use crate::fixture::*;
use crate::harness::*;

fn code() -> Vec<u8> {
    std::fs::read(native_library()).unwrap()
}

/// Warm executors and sleeping clients: nothing spins on the test machine's two cores.
fn spec(cores: u16, call_timeout: Duration) -> AllocationSpec {
    AllocationSpec {
        cores,
        hot_timeout_ms: 0,
        wait: Wait::Sleep,
        call_timeout,
        ..AllocationSpec::default()
    }
}

fn lease(endpoint: &Endpoint, cluster: &Cluster, cores: u16) -> rfaas::Result<Lease> {
    Lease::from_resource_manager(
        endpoint,
        cluster.rm_rdma,
        cores,
        256,
        Duration::from_secs(5),
    )
}

/// `sleep` for `ms` on thread 0, submitted; the buffers live as long as the call.
struct SleepCall {
    _input: rfaas::InputBuffer,
    _output: rfaas::OutputBuffer,
    call: rfaas::Invocation,
}

fn submit_sleep(executor: &Executor, ms: u32) -> SleepCall {
    let sleep = executor.function("sleep").unwrap();
    let input = executor.input_buffer(4).unwrap();
    let output = executor.output_buffer(4).unwrap();
    input.write(&ms.to_le_bytes()).unwrap();
    let call = executor.submit(0, sleep, &input, 4, &output).unwrap();
    SleepCall {
        _input: input,
        _output: output,
        call,
    }
}

#[test]
#[ignore = "needs root: network namespaces"]
fn the_tutorials_deployment_runs_across_hosts() {
    let _serial = serial();
    let cluster = Cluster::deployed("tutorial");
    let out = cluster.run_client(
        "warm_benchmarker",
        serde_json::json!({ "repetitions": 100 }),
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{}", cluster.logs());
    assert!(stderr.contains("Executed 100 repetitions"), "{stderr}");
    assert!(
        stderr.contains(&format!("on n1 ({}:{MANAGER_PORT})", addr("n1"))),
        "one core fits n1 best: {stderr}"
    );
    assert!(
        cluster
            .wait_lease_state(1, "closed", Duration::from_secs(10))
            .is_some(),
        "{}",
        cluster.logs()
    );
    let lease = &cluster.leases()[&1];
    assert_eq!(lease["node"], "n1", "{lease}");
    assert_eq!(lease["billing"]["invocations"], 100, "{lease}");
    let nodes = cluster.executors();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let n1 = &nodes["n1"]["billed"];
    assert_eq!(
        (n1["closed_leases"].as_u64(), n1["invocations"].as_u64()),
        (Some(1), Some(100))
    );
    assert_eq!(n1["execution_ns"], lease["billing"]["execution_ns"]);
    for node in ["n2", "n3"] {
        assert_eq!(
            nodes[node]["billed"]["closed_leases"], 0,
            "{:?}",
            nodes[node]
        );
        assert_eq!(nodes[node]["manager_connected"], true);
    }
}

#[test]
#[ignore = "needs root: network namespaces"]
fn leases_spread_by_fit_and_a_request_larger_than_any_node_is_a_clear_error() {
    let _serial = serial();
    let cluster = Cluster::deployed("fit");
    on_host("cl", || {
        let endpoint = Endpoint::open(&device("cl")).unwrap();
        match lease(&endpoint, &cluster, 5) {
            Err(Error::NoExecutor(msg)) => assert!(
                msg.contains(
                    "no executor server has 5 cores and 256 MiB (largest: 4 cores, 4096 MiB, node \"n3\")"
                ),
                "{msg}"
            ),
            other => panic!("5 cores fit no node: {other:?}"),
        }
        // Best fit: the node with the fewest free cores that still fit.
        let two = lease(&endpoint, &cluster, 2).unwrap();
        let one = lease(&endpoint, &cluster, 1).unwrap();
        let four = lease(&endpoint, &cluster, 4).unwrap();
        assert_eq!(
            [two.node.as_str(), one.node.as_str(), four.node.as_str()],
            ["n2", "n1", "n3"]
        );
        assert_eq!(
            four.address.to_string(),
            format!("{}:{MANAGER_PORT}", addr("n3"))
        );
        // Full now: busy (transient), not too large.
        match lease(&endpoint, &cluster, 1) {
            Err(e @ Error::NoResources(_)) => assert!(e.is_transient()),
            other => panic!("every core is leased: {other:?}"),
        }
        // Still too large, whatever is free.
        assert!(matches!(
            lease(&endpoint, &cluster, 5),
            Err(Error::NoExecutor(_))
        ));
        let nodes = cluster.executors();
        for (node, cores) in NODES {
            assert_eq!(nodes[node]["leased_cores"], cores, "{:?}", nodes[node]);
            assert_eq!(nodes[node]["free_cores"], 0, "{:?}", nodes[node]);
            assert_eq!(
                nodes[node]["billed"]["active_leases"], 1,
                "{:?}",
                nodes[node]
            );
        }
    });
}

/// Leases on every node, an executor on each, all called at once from one client, every
/// executor thread in parallel; then the billing per lease, per node and in total against what
/// the client did.
#[test]
#[ignore = "needs root: network namespaces"]
fn parallel_calls_over_leases_on_several_nodes_and_billing_adds_up() {
    const ROUNDS: usize = 25;
    let _serial = serial();
    let cluster = Cluster::deployed("parallel");
    let code = code();
    // lease id -> (node, invocations the client made)
    let done: BTreeMap<u32, (String, u64)> = on_host("cl", || {
        let endpoint = Endpoint::open(&device("cl")).unwrap();
        // 2 cores fit n2 first, then n3 twice; 1 core fits n1.
        let leases: Vec<Lease> = [2, 2, 2, 1]
            .into_iter()
            .map(|cores| lease(&endpoint, &cluster, cores).unwrap())
            .collect();
        let nodes: Vec<&str> = leases.iter().map(|l| l.node.as_str()).collect();
        assert_eq!(nodes, ["n2", "n3", "n3", "n1"]);
        let executors: Vec<Executor> = leases
            .iter()
            .map(|l| {
                Executor::allocate(&endpoint, l, &code, &spec(l.cores, Duration::from_secs(20)))
                    .unwrap_or_else(|e| panic!("allocating on {}: {e}\n{}", l.node, cluster.logs()))
            })
            .collect();
        let start = Instant::now();
        let counts: Vec<u64> = std::thread::scope(|s| {
            let runs: Vec<_> = executors
                .iter()
                .enumerate()
                .map(|(i, executor)| {
                    s.spawn(move || {
                        let empty = executor.function("empty").unwrap();
                        let cores = executor.cores();
                        let inputs: Vec<_> = (0..cores)
                            .map(|t| {
                                let input = executor.input_buffer(64).unwrap();
                                input.write(&[(16 * i + t) as u8; 64]).unwrap();
                                input
                            })
                            .collect();
                        let outputs: Vec<_> = (0..cores)
                            .map(|_| executor.output_buffer(64).unwrap())
                            .collect();
                        let calls: Vec<_> = inputs.iter().map(|b| (b, 64)).collect();
                        let outs: Vec<_> = outputs.iter().collect();
                        for _ in 0..ROUNDS {
                            let lens = executor.execute_parallel(empty, &calls, &outs).unwrap();
                            assert_eq!(lens, vec![64; cores]);
                            for (t, out) in outputs.iter().enumerate() {
                                assert_eq!(out.to_vec(64).unwrap(), vec![(16 * i + t) as u8; 64]);
                            }
                        }
                        (ROUNDS * cores) as u64
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        eprintln!(
            "{} parallel calls on {} executors ({} threads) in {:.3} s",
            counts.iter().sum::<u64>(),
            executors.len(),
            executors.iter().map(Executor::cores).sum::<usize>(),
            start.elapsed().as_secs_f64()
        );
        for executor in executors {
            executor.deallocate();
        }
        leases
            .iter()
            .zip(counts)
            .map(|(l, n)| (l.lease_id, (l.node.clone(), n)))
            .collect()
    });
    for id in done.keys() {
        assert!(
            cluster
                .wait_lease_state(*id, "closed", Duration::from_secs(15))
                .is_some(),
            "lease {id} did not close\n{}",
            cluster.logs()
        );
    }
    let leases = cluster.leases();
    let nodes = cluster.executors();
    eprintln!(
        "lease node  cores invocations(client) invocations(billed) execution_ms allocation_ms"
    );
    for (id, (node, calls)) in &done {
        let l = &leases[id];
        assert_eq!(l["node"], node.as_str());
        let billing = &l["billing"];
        eprintln!(
            "{id:>5} {node:<5} {:>5} {calls:>19} {:>19} {:>12.3} {:>13.3}",
            l["cores"].as_u64().unwrap(),
            billing["invocations"].as_u64().unwrap(),
            billing["execution_ns"].as_u64().unwrap() as f64 / 1e6,
            billing["allocation_ns"].as_u64().unwrap() as f64 / 1e6
        );
        assert_eq!(
            billing["invocations"].as_u64(),
            Some(*calls),
            "lease {id}: {l}"
        );
        assert!(billing["execution_ns"].as_u64().unwrap() > 0, "{l}");
        assert!(
            billing["allocation_ns"].as_u64().unwrap() >= billing["execution_ns"].as_u64().unwrap(),
            "{l}"
        );
    }
    eprintln!("node  leases invocations(client) invocations(billed) execution_ms allocation_ms");
    let fields = [
        "invocations",
        "execution_ns",
        "hot_polling_ns",
        "allocation_ns",
    ];
    let mut total_billed = [0u64; 4];
    let mut total_client = 0;
    for (node, _) in NODES {
        let billed = &nodes[node]["billed"];
        let mine: Vec<&serde_json::Value> = done
            .iter()
            .filter(|(_, (n, _))| n == node)
            .map(|(id, _)| &leases[id]["billing"])
            .collect();
        let client: u64 = done
            .values()
            .filter(|(n, _)| n == node)
            .map(|(_, c)| c)
            .sum();
        assert_eq!(
            billed["closed_leases"].as_u64(),
            Some(mine.len() as u64),
            "{node}: {billed}"
        );
        for (k, field) in fields.iter().enumerate() {
            let sum: u64 = mine.iter().map(|b| b[field].as_u64().unwrap()).sum();
            assert_eq!(
                billed[field].as_u64(),
                Some(sum),
                "{node} {field}: {billed}"
            );
            total_billed[k] += sum;
        }
        assert_eq!(
            billed["invocations"].as_u64(),
            Some(client),
            "{node}: {billed}"
        );
        total_client += client;
        eprintln!(
            "{node:<5} {:>6} {client:>19} {:>19} {:>12.3} {:>13.3}",
            mine.len(),
            billed["invocations"].as_u64().unwrap(),
            billed["execution_ns"].as_u64().unwrap() as f64 / 1e6,
            billed["allocation_ns"].as_u64().unwrap() as f64 / 1e6
        );
    }
    let all: u64 = leases
        .values()
        .map(|l| l["billing"]["invocations"].as_u64().unwrap_or(0))
        .sum();
    eprintln!(
        "sum   {:>6} {total_client:>19} {:>19} {:>12.3} {:>13.3}",
        done.len(),
        total_billed[0],
        total_billed[1] as f64 / 1e6,
        total_billed[3] as f64 / 1e6
    );
    assert_eq!(total_billed[0], total_client);
    assert_eq!(all, total_client, "the leases' sum is the nodes' sum");
    assert_eq!(total_client, (ROUNDS * 7) as u64);
}

/// What a failure looked like from the outside.
struct Failure {
    /// The failed node's lease.
    lease_id: u32,
    /// From the failure until `GET /leases` showed the node's lease released.
    released: Duration,
    /// From the failure until the call in flight on the node failed, and how.
    client: Duration,
    error: Error,
}

/// Leases on n3 and n1 with an executor each and a 5 s call in flight on n3 (longer than the
/// clients' 3 s call timeout); `fail` takes n3
/// away; measures what the resource manager and the client see. The executor on n1 goes on.
fn fail_a_node(
    cluster: &mut Cluster,
    node: &str,
    cores: u16,
    fail: impl FnOnce(&mut Cluster),
) -> Failure {
    let code = code();
    let endpoint = on_host("cl", || Endpoint::open(&device("cl")).unwrap());
    let (victim, other, ex_victim, ex_other) = on_host("cl", || {
        let victim = lease(&endpoint, cluster, cores).unwrap();
        let other = lease(&endpoint, cluster, 1).unwrap();
        assert_eq!((victim.node.as_str(), other.node.as_str()), (node, "n1"));
        let timeout = Duration::from_secs(3);
        let ex_victim =
            Executor::allocate(&endpoint, &victim, &code, &spec(cores, timeout)).unwrap();
        let ex_other = Executor::allocate(&endpoint, &other, &code, &spec(1, timeout)).unwrap();
        echo_once(&ex_victim, 1, 64).unwrap();
        echo_once(&ex_other, 2, 64).unwrap();
        (victim, other, ex_victim, ex_other)
    });
    let in_flight = submit_sleep(&ex_victim, 5_000);
    let t0 = Instant::now();
    fail(cluster);
    let (released, (client, error)) = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            // Waits at most the allocation's call timeout (3 s).
            let result = in_flight.call.wait();
            (
                t0.elapsed(),
                result.expect_err("the call on the failed node cannot succeed"),
            )
        });
        let released = cluster
            .wait_lease_state(victim.lease_id, "released", Duration::from_secs(15))
            .map(|_| t0.elapsed());
        (released, waiter.join().unwrap())
    });
    let released = released
        .unwrap_or_else(|| panic!("lease {} not released\n{}", victim.lease_id, cluster.logs()));
    // The rest of the cluster is untouched.
    assert_eq!(cluster.leases()[&other.lease_id]["state"], "active");
    echo_once(&ex_other, 3, 64).unwrap();
    let nodes = cluster.executors();
    assert_eq!(nodes[node]["manager_connected"], false, "{:?}", nodes[node]);
    assert_eq!(
        nodes[node]["free_cores"],
        u64::from(cores),
        "{:?}",
        nodes[node]
    );
    assert_eq!(nodes["n1"]["manager_connected"], true);
    drop(ex_other);
    drop(ex_victim);
    eprintln!(
        "{node}: lease {} released {:.3} s after the failure; the call in flight failed after {:.3} s: {error}",
        victim.lease_id,
        released.as_secs_f64(),
        client.as_secs_f64()
    );
    Failure {
        lease_id: victim.lease_id,
        released,
        client,
        error,
    }
}

/// `node` registered again: it is leased again and serves calls.
fn leased_again(cluster: &Cluster, node: &str, cores: u16) {
    let code = code();
    on_host("cl", || {
        let endpoint = Endpoint::open(&device("cl")).unwrap();
        let again = lease(&endpoint, cluster, cores)
            .unwrap_or_else(|e| panic!("{node} back: {e}\n{}", cluster.logs()));
        assert_eq!(again.node, node);
        let executor = Executor::allocate(
            &endpoint,
            &again,
            &code,
            &spec(cores, Duration::from_secs(10)),
        )
        .unwrap();
        echo_once(&executor, 9, 128).unwrap();
    });
    assert_eq!(cluster.executors()[node]["manager_connected"], true);
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_node_cut_off_loses_its_leases_and_is_leased_again_when_back() {
    let _serial = serial();
    let mut cluster = Cluster::deployed("cut");
    let failure = fail_a_node(&mut cluster, "n3", 4, |_| {
        cluster_sh(&["cut", "n3"]);
    });
    // Released by the heartbeat timeout: no sooner than a heartbeat interval short of it, and
    // within it plus a margin for the loop and the test's polling.
    assert!(
        failure.released >= HEARTBEAT_TIMEOUT - Duration::from_millis(600)
            && failure.released <= HEARTBEAT_TIMEOUT + Duration::from_millis(1500),
        "released after {:?}\n{}",
        failure.released,
        cluster.logs()
    );
    assert!(
        cluster.rm.log().contains("The executor manager of node n3")
            && cluster.rm.log().contains("sent no heartbeat for"),
        "{}",
        cluster.rm.log()
    );
    // Nothing reaches the node: the call's deadline (3 s) is what ends it.
    assert!(
        matches!(failure.error, Error::Timeout(_)),
        "{}",
        failure.error
    );
    assert!(
        failure.client < Duration::from_secs(5),
        "{:?}",
        failure.client
    );
    // While it is away it is not leased, and asking is a transient error.
    on_host("cl", || {
        let endpoint = Endpoint::open(&device("cl")).unwrap();
        assert!(matches!(
            lease(&endpoint, &cluster, 4),
            Err(Error::NoResources(_))
        ));
    });
    let t = Instant::now();
    cluster_sh(&["restore", "n3"]);
    cluster.wait_registered("n3", 2);
    eprintln!(
        "n3 registered again {:.3} s after its link came back",
        t.elapsed().as_secs_f64()
    );
    assert!(
        cluster.managers["n3"]
            .log()
            .contains("acknowledged no heartbeat"),
        "{}",
        cluster.managers["n3"].log()
    );
    leased_again(&cluster, "n3", 4);
    // The executor on n3 ran on while the node was cut off; once its client's disconnect gets
    // through it ends, and its manager bills the released lease late, which closes it.
    let deadline = Instant::now() + Duration::from_secs(15);
    let billed = loop {
        let lease = cluster.leases()[&failure.lease_id].clone();
        if !lease["billing"].is_null() || Instant::now() > deadline {
            break lease;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(billed["state"], "closed", "{billed}");
    let invocations = billed["billing"]["invocations"].as_u64();
    assert!(
        matches!(invocations, Some(1..=2)),
        "one echo and maybe the sleep: {billed}\n{}",
        cluster.logs()
    );
    assert_eq!(
        cluster.executors()["n3"]["billed"]["invocations"].as_u64(),
        Some(invocations.unwrap() + 1),
        "the late bill and the lease after the node came back"
    );
    eprintln!("n3: the released lease billed late: {}", billed["billing"]);
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_node_killed_loses_its_leases_and_is_leased_again_when_back() {
    let _serial = serial();
    let mut cluster = Cluster::deployed("killed");
    let failure = fail_a_node(&mut cluster, "n2", 2, |c| c.kill_node("n2"));
    // The kernel closes the dead processes' connections: both sides know at once.
    assert!(
        failure.released < Duration::from_secs(2),
        "released after {:?}\n{}",
        failure.released,
        cluster.logs()
    );
    assert!(
        matches!(failure.error, Error::ExecutorLost(_)),
        "{}",
        failure.error
    );
    assert!(
        failure.client < Duration::from_secs(2),
        "{:?}",
        failure.client
    );
    cluster.start_manager("n2");
    cluster.wait_registered("n2", 2);
    leased_again(&cluster, "n2", 2);
}
