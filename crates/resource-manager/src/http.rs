//! The HTTP interface (axum), for batch managers and operators.
//!
//! | Route | Success | Body |
//! |---|---|---|
//! | `POST /add?node=NAME` | 201, the new [`NodeView`] | `{"ip_address","port","cores","memory"}` |
//! | `POST /remove?node=NAME` | 200, the removed [`NodeView`] | ignored |
//! | `GET /executors` | 200, `{"executors": [NodeView...]}`, each with its `billed` sums | |
//! | `GET /leases` | 200, `{"leases": [LeaseView...]}` | |
//! | `GET /billing?node=&from=&to=&format=json\|csv` | 200, a [`billing::Report`] or its CSV | |
//!
//! `/billing` lists the bills of closed leases, optionally of one node and closed in `[from,
//! to)` (ms since the Unix epoch), with their totals; `format=csv` gives one line per bill and a
//! last line `total` ([`billing::Report::to_csv`]).
//!
//! The body of `/add` is read as bytes and parsed as JSON whatever its `Content-Type`, because
//! the tutorial's `curl ... -X POST -d '{...}'` sends `application/x-www-form-urlencoded`.
//!
//! Every error is an [`AppError`]: a status and `{"error": "<message>"}`.
//!
//! | Case | Status |
//! |---|---|
//! | no `node` query parameter, an empty one, or an unparsable query | 400 |
//! | body is not JSON (syntax error, empty, truncated) | 400 |
//! | body is JSON but not a node spec (missing or unknown field, wrong type) | 422 |
//! | spec values refused (not an IP address, port/cores/memory 0) | 422 |
//! | token configured and `Authorization: Bearer <token>` missing or wrong (`/add`, `/remove`) | 401 |
//! | `/billing`: `from`/`to` not a number, `from` after `to`, `format` not `json` or `csv` | 400 |
//! | the database refused the change | 500 |
//! | unknown node (`/remove`) | 404 |
//! | node exists already (`/add`) | 409 |
//! | known path, wrong method (keeps the `Allow` header) | 405 |
//! | unknown path | 404 |
//!
//! 400 against 422 follows axum's own `Json` extractor: 400 when the bytes are not JSON at all,
//! 422 when they are JSON that does not describe a node (the request is well-formed, its content
//! is not acceptable).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::billing;
use crate::registry::{LeaseView, NodeSpec, NodeView, Registry, RegistryError};

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct HttpState {
    /// The servers and leases.
    pub registry: Registry,
    /// When set, `/add` and `/remove` require `Authorization: Bearer <token>`. (Header values
    /// lose surrounding whitespace, so an empty token never matches: refuse it when configuring.)
    pub token: Option<String>,
}

/// The HTTP interface over `state`; see the [module docs](self) for routes and statuses.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/add", post(add))
        .route("/remove", post(remove))
        .route("/executors", get(executors))
        .route("/leases", get(leases))
        .route("/billing", get(billing_report))
        // After the routes: it applies to the routes added so far.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state)
}

/// An error response: a status and `{"error": "<message>"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppError {
    status: StatusCode,
    message: String,
}

impl AppError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// Its status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Its message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: &self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<RegistryError> for AppError {
    fn from(err: RegistryError) -> Self {
        let status = match &err {
            RegistryError::DuplicateNode(_) | RegistryError::LeaseNotActive(_) => {
                StatusCode::CONFLICT
            }
            RegistryError::UnknownNode(_) | RegistryError::UnknownLease(_) => StatusCode::NOT_FOUND,
            RegistryError::NoResources { .. } => StatusCode::SERVICE_UNAVAILABLE,
            RegistryError::InvalidSpec(_) | RegistryError::TooLarge { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            RegistryError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, err.to_string())
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("invalid query string: {}", rejection.body_text()),
        )
    }
}

impl From<BytesRejection> for AppError {
    fn from(rejection: BytesRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

/// The query of `/add` and `/remove`.
#[derive(Deserialize)]
struct NodeQuery {
    node: Option<String>,
}

/// The `node` query parameter, present and non-empty.
fn node_name(query: Result<Query<NodeQuery>, QueryRejection>) -> Result<String, AppError> {
    let Query(NodeQuery { node }) = query?;
    match node {
        None => Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "missing query parameter \"node\" (e.g. /add?node=exec-mgr-node)",
        )),
        Some(n) if n.trim().is_empty() => Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "query parameter \"node\" must not be empty",
        )),
        Some(n) => Ok(n),
    }
}

/// Checks `Authorization: Bearer <token>` when a token is configured.
fn authorize(state: &HttpState, headers: &HeaderMap) -> Result<(), AppError> {
    let Some(token) = &state.token else {
        return Ok(());
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(AppError::new(
            StatusCode::UNAUTHORIZED,
            "missing \"Authorization: Bearer <token>\" header",
        ));
    };
    let presented = value
        .as_bytes()
        .split_at_checked(7)
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"Bearer "))
        .map(|(_, rest)| rest);
    match presented {
        Some(p) if constant_time_eq(p, token.as_bytes()) => Ok(()),
        _ => Err(AppError::new(
            StatusCode::UNAUTHORIZED,
            "invalid bearer token",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses the body of `/add` as JSON, whatever the content type.
fn parse_spec(body: &[u8]) -> Result<NodeSpec, AppError> {
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "body is not a node spec {{\"ip_address\",\"port\",\"cores\",\"memory\"}}: {e}"
                ),
            ),
            Category::Syntax | Category::Eof | Category::Io => {
                AppError::new(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}"))
            }
        }
    })
}

async fn add(
    State(state): State<HttpState>,
    headers: HeaderMap,
    query: Result<Query<NodeQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<NodeView>), AppError> {
    authorize(&state, &headers)?;
    let name = node_name(query)?;
    let spec = parse_spec(&body?)?;
    let view = state.registry.insert_node(&name, spec)?;
    tracing::info!(
        node = %view.node,
        address = %view.ip_address,
        port = view.port,
        cores = view.cores,
        memory = view.memory,
        "executor server added over HTTP"
    );
    Ok((StatusCode::CREATED, Json(view)))
}

async fn remove(
    State(state): State<HttpState>,
    headers: HeaderMap,
    query: Result<Query<NodeQuery>, QueryRejection>,
) -> Result<Json<NodeView>, AppError> {
    authorize(&state, &headers)?;
    let name = node_name(query)?;
    let view = state.registry.remove_node(&name)?;
    tracing::info!(node = %view.node, leased_cores = view.leased_cores, "executor server removed over HTTP");
    Ok(Json(view))
}

#[derive(Serialize)]
struct Executors {
    executors: Vec<NodeView>,
}

async fn executors(State(state): State<HttpState>) -> Json<Executors> {
    Json(Executors {
        executors: state.registry.nodes(),
    })
}

#[derive(Serialize)]
struct Leases {
    leases: Vec<LeaseView>,
}

async fn leases(State(state): State<HttpState>) -> Json<Leases> {
    Json(Leases {
        leases: state.registry.leases(),
    })
}

/// The query of `/billing`.
#[derive(Deserialize)]
struct BillingQuery {
    node: Option<String>,
    from: Option<u64>,
    to: Option<u64>,
    format: Option<String>,
}

async fn billing_report(
    State(state): State<HttpState>,
    query: Result<Query<BillingQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(q) = query?;
    if let (Some(from), Some(to)) = (q.from, q.to)
        && from > to
    {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            format!("from ({from}) is after to ({to})"),
        ));
    }
    let report = billing::Report::of(
        &state.registry,
        &billing::Query {
            node: q.node.filter(|n| !n.is_empty()),
            from: q.from,
            to: q.to,
        },
    );
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(report).into_response()),
        Some("csv") => Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            report.to_csv(),
        )
            .into_response()),
        Some(other) => Err(AppError::new(
            StatusCode::BAD_REQUEST,
            format!("format {other:?}: expected json or csv"),
        )),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

async fn not_found(method: Method, uri: Uri) -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}
