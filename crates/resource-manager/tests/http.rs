//! The HTTP interface over real HTTP/1.1: the router is served on `127.0.0.1:0` by a real tokio
//! listener in a background runtime, and requests are written by hand on a `std::net::TcpStream`
//! so that what goes over the wire is exactly what the test says (no client library).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use resource_manager::{Billing, HttpState, Registry, router};
use serde_json::{Value, json};

/// The router served in a background runtime; dropping it stops the server.
struct Server {
    addr: SocketAddr,
    registry: Registry,
    _runtime: tokio::runtime::Runtime,
}

fn serve(token: Option<&str>) -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let registry = Registry::new();
    let app = router(HttpState {
        registry: registry.clone(),
        token: token.map(str::to_owned),
    });
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move { axum::serve(listener, app).await });
    Server {
        addr,
        registry,
        _runtime: runtime,
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// Asserts the status and an `{"error": "..."}` JSON body; returns the message.
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{self:?}");
        let v = self.json();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 1, "{v}");
        let msg = obj["error"].as_str().unwrap().to_owned();
        assert!(!msg.is_empty());
        msg
    }
}

/// Sends `raw` as is and reads one response (by its `Content-Length`, or to EOF).
fn send_raw(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(raw).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed before the headers ended: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status: u16 = parts.next().unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let mut body = buf[head_end + 4..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse::<usize>().unwrap());
    match length {
        Some(len) => {
            while body.len() < len {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "connection closed inside the body");
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        }
        None => {
            stream.read_to_end(&mut body).unwrap();
        }
    }
    Reply {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

/// A request with `Connection: close`, a `Content-Length` and the given extra header lines.
fn send(addr: SocketAddr, method: &str, target: &str, headers: &[&str], body: &str) -> Reply {
    let mut raw = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    send_raw(addr, raw.as_bytes())
}

const TUTORIAL_BODY: &str =
    r#"{"ip_address": "192.168.0.29", "port": 10005, "cores": 1, "memory": 512}"#;

fn tutorial_node() -> Value {
    json!({
        "node": "exec-mgr-node", "ip_address": "192.168.0.29", "port": 10005,
        "cores": 1, "memory": 512, "free_cores": 1, "free_memory": 512,
        "leased_cores": 0, "leased_memory": 0, "manager_connected": false,
        "billed": {"active_leases": 0, "in_doubt_leases": 0, "closed_leases": 0, "released_leases": 0,
            "allocation_ns": 0, "hot_polling_ns": 0, "execution_ns": 0, "invocations": 0}
    })
}

fn add(s: &Server, node: &str, body: &str, headers: &[&str]) -> Reply {
    send(s.addr, "POST", &format!("/add?node={node}"), headers, body)
}

#[test]
fn the_tutorial_request_byte_for_byte() {
    let s = serve(None);
    // What `curl http://127.0.0.1:5000/add\?node\=exec-mgr-node -X POST -d '{...}'` (curl
    // 7.88.1) puts on the wire, Host header included: a form content type and a keep-alive
    // connection.
    // Captured from curl with a plain listener (only the Host port differed).
    let raw = concat!(
        "POST /add?node=exec-mgr-node HTTP/1.1\r\n",
        "Host: 127.0.0.1:5000\r\n",
        "User-Agent: curl/7.88.1\r\n",
        "Accept: */*\r\n",
        "Content-Length: 72\r\n",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        "\r\n",
        r#"{"ip_address": "192.168.0.29", "port": 10005, "cores": 1, "memory": 512}"#,
    );
    assert!(raw.ends_with(TUTORIAL_BODY) && TUTORIAL_BODY.len() == 72);
    let r = send_raw(s.addr, raw.as_bytes());
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json(), tutorial_node());

    let r = send(s.addr, "GET", "/executors", &[], "");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), json!({ "executors": [tutorial_node()] }));
    assert_eq!(s.registry.nodes().len(), 1);
}

#[test]
fn the_tutorial_curl_line_literally() {
    let curl = std::process::Command::new("curl").arg("--version").output();
    assert!(
        curl.is_ok_and(|o| o.status.success()),
        "curl is missing: the tutorial's line needs it (tools/setup.sh tutorial installs it)"
    );
    let s = serve(None);
    let line = r#"curl http://127.0.0.1:5000/add\?node\=exec-mgr-node -X POST -d '{"ip_address": "192.168.0.29", "port": 10005, "cores": 1, "memory": 512}'"#
        .replace(":5000/", &format!(":{}/", s.addr.port()));
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&line)
        .output()
        .unwrap();
    assert!(out.status.success(), "{line}: {out:?}");
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body, tutorial_node());
    assert_eq!(s.registry.nodes()[0].node, "exec-mgr-node");
}

#[test]
fn remove_returns_the_node_and_unknown_nodes_are_404() {
    let s = serve(None);
    assert_eq!(add(&s, "n1", TUTORIAL_BODY, &[]).status, 201);
    let r = send(s.addr, "POST", "/remove?node=n1", &[], "");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["node"], "n1");
    assert!(s.registry.nodes().is_empty());

    let msg = send(s.addr, "POST", "/remove?node=n1", &[], "").error(404);
    assert!(msg.contains("\"n1\""), "{msg}");
}

#[test]
fn duplicate_nodes_are_409() {
    let s = serve(None);
    assert_eq!(add(&s, "n1", TUTORIAL_BODY, &[]).status, 201);
    let msg = add(&s, "n1", TUTORIAL_BODY, &[]).error(409);
    assert!(
        msg.contains("\"n1\"") && msg.contains("already exists"),
        "{msg}"
    );
}

#[test]
fn a_missing_or_empty_node_parameter_is_400() {
    let s = serve(None);
    let msg = send(s.addr, "POST", "/add", &[], TUTORIAL_BODY).error(400);
    assert!(msg.contains("\"node\""), "{msg}");
    send(s.addr, "POST", "/add?nod=x", &[], TUTORIAL_BODY).error(400);
    let msg = send(s.addr, "POST", "/add?node=", &[], TUTORIAL_BODY).error(400);
    assert!(msg.contains("empty"), "{msg}");
    send(s.addr, "POST", "/remove", &[], "").error(400);
    assert!(s.registry.nodes().is_empty());
}

#[test]
fn malformed_json_is_400_and_quotes_serde() {
    let s = serve(None);
    for body in [
        r#"{"ip_address": "192.168.0.29", "port": 10005,"#,
        "",
        "not json",
        "{,}",
    ] {
        let msg = add(&s, "n1", body, &[]).error(400);
        let serde_msg = serde_json::from_str::<resource_manager::NodeSpec>(body)
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("malformed JSON body"), "{msg}");
        assert!(msg.contains(&serde_msg), "{msg} / {serde_msg}");
    }
    assert!(s.registry.nodes().is_empty());
}

#[test]
fn json_that_is_not_a_node_spec_is_422() {
    let s = serve(None);
    let msg = add(
        &s,
        "n1",
        r#"{"ip_address": "192.168.0.29", "port": 10005, "cores": 1}"#,
        &[],
    )
    .error(422);
    assert!(msg.contains("missing field `memory`"), "{msg}");
    let msg = add(
        &s,
        "n1",
        r#"{"ip_address": "192.168.0.29", "port": 10005, "cores": 1, "memory": 512, "adress": 1}"#,
        &[],
    )
    .error(422);
    assert!(msg.contains("adress"), "{msg}");
    let msg = add(
        &s,
        "n1",
        r#"{"ip_address": "192.168.0.29", "port": "10005", "cores": 1, "memory": 512}"#,
        &[],
    )
    .error(422);
    assert!(msg.contains("invalid type"), "{msg}");
    add(&s, "n1", "[]", &[]).error(422);
    // Well-formed but refused values.
    let msg = add(
        &s,
        "n1",
        r#"{"ip_address": "nowhere", "port": 10005, "cores": 1, "memory": 512}"#,
        &[],
    )
    .error(422);
    assert!(msg.contains("\"nowhere\""), "{msg}");
    let msg = add(
        &s,
        "n1",
        r#"{"ip_address": "10.0.0.1", "port": 10005, "cores": 0, "memory": 512}"#,
        &[],
    )
    .error(422);
    assert!(msg.contains("cores"), "{msg}");
    let msg = add(&s, &"n".repeat(65), TUTORIAL_BODY, &[]).error(422);
    assert!(msg.contains("at most 64"), "{msg}");
    assert!(s.registry.nodes().is_empty());
}

#[test]
fn wrong_methods_are_405_json_with_allow() {
    let s = serve(None);
    let r = send(s.addr, "GET", "/add?node=x", &[], "");
    let msg = r.error(405);
    assert!(msg.contains("GET") && msg.contains("/add"), "{msg}");
    assert_eq!(r.header("allow"), Some("POST"));
    let r = send(s.addr, "POST", "/executors", &[], "");
    r.error(405);
    assert!(r.header("allow").unwrap().contains("GET"), "{r:?}");
    send(s.addr, "DELETE", "/leases", &[], "").error(405);
    send(s.addr, "PUT", "/remove?node=x", &[], "").error(405);
}

#[test]
fn unknown_paths_are_404_json() {
    let s = serve(None);
    let msg = send(s.addr, "GET", "/nope", &[], "").error(404);
    assert!(msg.contains("/nope"), "{msg}");
    send(s.addr, "POST", "/add/extra?node=x", &[], TUTORIAL_BODY).error(404);
    send(s.addr, "GET", "/", &[], "").error(404);
}

#[test]
fn the_token_guards_add_and_remove() {
    let s = serve(Some("s3cret"));
    let r = add(&s, "n1", TUTORIAL_BODY, &[]);
    r.error(401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    add(&s, "n1", TUTORIAL_BODY, &["Authorization: Bearer wrong"]).error(401);
    add(&s, "n1", TUTORIAL_BODY, &["Authorization: Bearer s3cret2"]).error(401);
    add(&s, "n1", TUTORIAL_BODY, &["Authorization: Basic czNjcmV0"]).error(401);
    add(&s, "n1", TUTORIAL_BODY, &["Authorization: s3cret"]).error(401);
    // Checked before anything else: no hint whether the request was otherwise valid.
    send(s.addr, "POST", "/add", &[], "junk").error(401);
    assert!(s.registry.nodes().is_empty());

    let r = add(&s, "n1", TUTORIAL_BODY, &["Authorization: Bearer s3cret"]);
    assert_eq!(r.status, 201, "{r:?}");
    // The scheme is case-insensitive (RFC 9110).
    let r = add(&s, "n2", TUTORIAL_BODY, &["authorization: bearer s3cret"]);
    assert_eq!(r.status, 201, "{r:?}");

    // Reading needs no token.
    let r = send(s.addr, "GET", "/executors", &[], "");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["executors"].as_array().unwrap().len(), 2);
    assert_eq!(send(s.addr, "GET", "/leases", &[], "").status, 200);

    send(s.addr, "POST", "/remove?node=n1", &[], "").error(401);
    let r = send(
        s.addr,
        "POST",
        "/remove?node=n1",
        &["Authorization: Bearer s3cret"],
        "",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(s.registry.nodes().len(), 1);
}

#[test]
fn leases_are_listed() {
    let s = serve(None);
    let r = send(s.addr, "GET", "/leases", &[], "");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({ "leases": [] }));

    assert_eq!(
        add(
            &s,
            "n1",
            r#"{"ip_address": "10.0.0.1", "port": 10005, "cores": 4, "memory": 2048}"#,
            &[]
        )
        .status,
        201
    );
    s.registry.set_manager_connected("n1", true).unwrap();
    let g1 = s.registry.grant(2, 1024).unwrap();
    let g2 = s.registry.grant(1, 256).unwrap();
    let billing = Billing {
        allocation_ns: 1,
        hot_polling_ns: 2,
        execution_ns: 3,
        invocations: 4,
    };
    s.registry.close(g1.lease_id, billing).unwrap();

    let v = send(s.addr, "GET", "/leases", &[], "").json();
    let leases = v["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 2);
    assert_eq!(leases[0]["lease_id"], 1);
    assert_eq!(leases[0]["state"], "closed");
    assert_eq!(
        leases[0]["billing"],
        json!({"allocation_ns": 1, "hot_polling_ns": 2, "execution_ns": 3, "invocations": 4})
    );
    assert_eq!(leases[1]["lease_id"], g2.lease_id);
    assert_eq!(leases[1]["node"], "n1");
    assert_eq!(leases[1]["state"], "active");
    assert_eq!(leases[1]["billing"], Value::Null);
    assert!(leases[1]["granted_at_ms"].as_u64().unwrap() > 0);

    let v = send(s.addr, "GET", "/executors", &[], "").json();
    let n = &v["executors"][0];
    assert_eq!(
        (n["free_cores"].as_u64(), n["leased_cores"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(n["manager_connected"], true);

    // Removing the node over HTTP releases its active lease.
    let r = send(s.addr, "POST", "/remove?node=n1", &[], "");
    assert_eq!(r.json()["leased_cores"], 1);
    let v = send(s.addr, "GET", "/leases", &[], "").json();
    assert_eq!(v["leases"][1]["state"], "released");
}

#[test]
fn billing_reports_as_json_and_csv() {
    let s = serve(None);
    let spec = r#"{"ip_address": "10.0.0.1", "port": 10005, "cores": 8, "memory": 2048}"#;
    assert_eq!(add(&s, "n1", spec, &[]).status, 201);
    assert_eq!(add(&s, "n2", spec, &[]).status, 201);
    s.registry.set_manager_connected("n1", true).unwrap();
    let bill = |n: u64| Billing {
        allocation_ns: 1000 * n,
        hot_polling_ns: 100 * n,
        execution_ns: 10 * n,
        invocations: n,
    };
    for n in 1..=3 {
        let g = s.registry.grant(1, 1).unwrap();
        s.registry.close(g.lease_id, bill(n)).unwrap();
    }
    s.registry.grant(1, 1).unwrap(); // open: no bill

    let v = send(s.addr, "GET", "/billing", &[], "").json();
    assert_eq!(v["bills"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(
        v["totals"],
        json!({"bills": 3, "allocation_ns": 6000, "hot_polling_ns": 600, "execution_ns": 60, "invocations": 6})
    );
    assert_eq!(v["nodes"]["n1"], v["totals"]);
    let empty = send(s.addr, "GET", "/billing?node=n2", &[], "").json();
    assert_eq!(empty["bills"], json!([]));
    assert_eq!(empty["totals"]["invocations"], 0);
    let first = v["bills"][0]["closed_at_ms"].as_u64().unwrap();
    let none = send(s.addr, "GET", &format!("/billing?to={first}"), &[], "").json();
    assert_eq!(none["bills"], json!([]));

    let r = send(s.addr, "GET", "/billing?node=n1&format=csv", &[], "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    let lines: Vec<&str> = r.body.lines().collect();
    assert_eq!(lines.len(), 5, "{}", r.body);
    assert!(lines[0].starts_with("lease_id,node,"));
    assert_eq!(lines[4], "total,n1,,,,,6000,600,60,6");

    assert!(
        send(s.addr, "GET", "/billing?format=xml", &[], "")
            .error(400)
            .contains("json or csv")
    );
    assert!(
        send(s.addr, "GET", "/billing?from=5&to=4", &[], "")
            .error(400)
            .contains("after")
    );
    send(s.addr, "GET", "/billing?from=yesterday", &[], "").error(400);
}

#[test]
fn one_keep_alive_connection_serves_several_requests() {
    let s = serve(None);
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let req = format!(
        "GET /executors HTTP/1.1\r\nHost: {}\r\n\r\nGET /nope HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        s.addr, s.addr
    );
    stream.write_all(req.as_bytes()).unwrap();
    let mut all = String::new();
    stream.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(all.contains("{\"executors\":[]}"), "{all}");
    assert!(all.contains("HTTP/1.1 404 Not Found\r\n"), "{all}");
    assert!(
        all.ends_with("{\"error\":\"no route for GET /nope\"}"),
        "{all}"
    );
}
