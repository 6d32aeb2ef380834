//! `POST /add` as a batch system (or anybody) could send it: the first line of the input is
//! the node name, the rest the body. Every answer must be a JSON status of the documented set,
//! and the registry must hold only valid nodes.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use resource_manager::{HttpState, Registry, router};
use tower::ServiceExt;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let (name, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let name: String = name.iter().map(|&b| format!("%{b:02X}")).collect();
    let registry = Registry::new();
    let state = HttpState {
        registry: registry.clone(),
        token: None,
    };
    let request = Request::post(format!("/add?node={name}"))
        .body(Body::from(body.to_vec()))
        .expect("a request");
    let response = runtime()
        .block_on(router(state).oneshot(request))
        .expect("the router answers");
    let status = response.status();
    assert!(
        [
            StatusCode::CREATED,
            StatusCode::BAD_REQUEST,
            StatusCode::UNPROCESSABLE_ENTITY,
        ]
        .contains(&status),
        "{status}"
    );
    assert_eq!(
        registry.nodes().len(),
        usize::from(status == StatusCode::CREATED)
    );
    for node in registry.nodes() {
        assert!(rfaas_protocol::control::check_node_name(&node.node).is_ok());
    }
});
