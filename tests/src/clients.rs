//! Small conveniences for calling the auth service in tests and benchmarks.

use appstack_proto::auth::v1::auth_service_client::AuthServiceClient;
use appstack_proto::auth::v1::{LoginRequest, SignUpRequest, TokenResponse};
use tonic::transport::Channel;
use tonic::{Request, Status};

/// A request carrying `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Signs up `email` and logs in; returns the tokens.
pub async fn sign_up_and_login(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
    password: &str,
) -> Result<TokenResponse, Status> {
    client
        .sign_up(SignUpRequest {
            email: email.into(),
            password: password.into(),
        })
        .await?;
    login(client, email, password).await
}

/// Logs in.
pub async fn login(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
    password: &str,
) -> Result<TokenResponse, Status> {
    Ok(client
        .login(LoginRequest {
            email: email.into(),
            password: password.into(),
        })
        .await?
        .into_inner())
}
