//! The auth service's part of a process (`appstack auth`, `dev`, later `all`).

use appstack_auth::Auth;
use futures_util::FutureExt as _;

use crate::runner::{Context, Parts, ServiceBuilder};

/// The auth service, for [`crate::runner::run`].
pub fn builder() -> ServiceBuilder {
    ServiceBuilder::new("auth", |ctx| async move {
        let auth = start(&ctx).await?;
        Ok(parts(&auth, &ctx))
    })
}

/// Starts the auth service (signing keys registered, hashing pool built) without serving
/// it: for a builder that does more with it first (`dev` creates its admin).
///
/// # Errors
///
/// When the signing keys cannot be loaded or registered.
pub async fn start(ctx: &Context) -> anyhow::Result<Auth> {
    Ok(Auth::new(ctx.config.auth.clone(), ctx.pool.clone(), &ctx.metrics).await?)
}

/// What the auth service adds to the process: its gRPC service and public rpcs, the JWKS
/// and discovery document on the admin port (plain HTTP for gateways and JWT libraries),
/// its background work, and the verifier of the tokens it signs (by its own key ring).
pub fn parts(auth: &Auth, ctx: &Context) -> Parts {
    let mut parts = Parts::new()
        .grpc_service(auth.server(ctx.config.server.max_message_bytes))
        .public_methods(appstack_auth::ANONYMOUS_PATHS)
        .admin_routes(appstack_auth::well_known::router(auth))
        .verifier(auth.verifier());
    for (name, task) in auth.background_tasks(&ctx.shutdown) {
        parts = parts.task(name, task.map(Ok));
    }
    parts
}
