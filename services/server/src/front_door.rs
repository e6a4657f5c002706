//! The front door of a process that serves main: which services its JSON routes reach, and
//! how — locally, or forwarded to the peer that serves them (auth at `auth.endpoint`, the
//! worker's admin API at `frontDoor.workerEndpoint`), so publishing main alone publishes the
//! whole client API.

use std::collections::{BTreeSet, HashMap, HashSet};

use anyhow::Context as _;
use appstack_config::StackConfig;
use appstack_gateway::routes::RouteTable;
use appstack_gateway::{FrontDoor, FrontDoorParts, Pages, Peer, openapi};
use tonic::transport::Endpoint;
use tower::ServiceExt as _;

/// The auth service's full name.
const AUTH: &str = "appstack.auth.v1.AuthService";
/// The worker's admin API's full name.
const WORKER_ADMIN: &str = "appstack.worker.v1.WorkerAdmin";

/// The services the HTTP/JSON API publishes, in the document's order.
pub const PUBLISHED: [&str; 3] = ["appstack.main.v1.RequestService", AUTH, WORKER_ADMIN];

/// The OpenAPI document of the whole published API (what `proto/openapi.json` holds).
///
/// # Errors
///
/// When the contract's rules do not parse (a build of a broken contract).
pub fn published_document() -> anyhow::Result<serde_json::Value> {
    let table = RouteTable::new(appstack_proto::FILE_DESCRIPTOR_SET, &PUBLISHED)
        .context("reading the contract's HTTP rules")?;
    Ok(openapi::document(
        &table,
        &public_set(appstack_auth::ANONYMOUS_PATHS),
    ))
}

fn public_set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| (*p).to_owned()).collect()
}

/// The door for a process serving `served` (full names), whose rpcs open without a token are
/// `public_methods`.
///
/// # Errors
///
/// When a peer's endpoint does not parse or the contract's rules do not.
pub fn build(
    config: &StackConfig,
    served: &[&str],
    public_methods: &[&str],
) -> anyhow::Result<FrontDoor> {
    let mut remote: HashMap<String, Peer> = HashMap::new();
    if !served.contains(&AUTH) {
        remote.insert(
            AUTH.to_owned(),
            peer(&config.auth.endpoint, "auth.endpoint")?,
        );
    }
    if let Some(worker) = &config.front_door.worker_endpoint
        && !served.contains(&WORKER_ADMIN)
    {
        remote.insert(
            WORKER_ADMIN.to_owned(),
            peer(worker, "frontDoor.workerEndpoint")?,
        );
    }
    let routed: Vec<&str> = PUBLISHED
        .into_iter()
        .filter(|name| served.contains(name) || remote.contains_key(*name))
        .collect();
    let routes = RouteTable::new(appstack_proto::FILE_DESCRIPTOR_SET, &routed)
        .context("reading the contract's HTTP rules")?;
    // The auth service's open rpcs are open here too, wherever auth runs.
    let mut public: HashSet<String> = public_methods.iter().map(|p| (*p).to_owned()).collect();
    public.extend(
        appstack_auth::ANONYMOUS_PATHS
            .iter()
            .map(|p| (*p).to_owned()),
    );
    let document = openapi::document(&routes, &public.iter().cloned().collect());
    let openapi = serde_json::to_vec_pretty(&document).context("writing the OpenAPI document")?;
    Ok(FrontDoor::new(FrontDoorParts {
        routes,
        openapi: openapi.into(),
        remote,
        public_methods: public,
        pages: config.front_door.console.then(console_pages),
        config: config.front_door.clone(),
        max_message_bytes: config.server.max_message_bytes,
    }))
}

/// The web console, embedded in the binary.
fn console_pages() -> Pages {
    Pages::new(tower::service_fn(
        |request: http::Request<tonic::body::Body>| async move {
            let page = appstack_console::page(request.method(), request.uri().path());
            Ok::<_, std::convert::Infallible>(
                page.map(|bytes| tonic::body::Body::new(http_body_util::Full::new(bytes))),
            )
        },
    ))
}

/// A lazily connected channel to `endpoint` (the setting `name`), boxed.
fn peer(endpoint: &str, name: &str) -> anyhow::Result<Peer> {
    let channel = Endpoint::from_shared(endpoint.to_owned())
        .with_context(|| format!("{name} {endpoint:?}"))?
        .connect_lazy();
    Ok(Peer::new(channel.map_err(Into::into)))
}
