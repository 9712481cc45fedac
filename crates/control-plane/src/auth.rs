//! Authentication: who is calling. For now an API key (`Authorization: Bearer <key>`) checked
//! against the hashed keys in the store; the auth issue adds OIDC sessions and roles behind the
//! same extractor, so handlers that take [`Authenticated`] cannot forget to authenticate.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::store::{MetadataStore, User};

/// The caller, authenticated.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: User,
}

impl<S> FromRequestParts<S> for Authenticated
where
    MetadataStore: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers).map_err(ApiError::Unauthenticated)?;
        let store = MetadataStore::from_ref(state);
        let user = store
            .user_for_api_key(token)
            .await?
            .ok_or(ApiError::Unauthenticated("invalid API key"))?;
        Ok(Authenticated { user })
    }
}

/// The API key of an `Authorization: Bearer <key>` header, or why there is none. Shared by the
/// management API's extractor and the inference gateway's directory, so both accept and refuse
/// exactly the same headers.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Result<&str, &'static str> {
    let header = headers
        .get(AUTHORIZATION)
        .ok_or("missing credentials: send Authorization: Bearer <api key>")?;
    header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or("malformed Authorization header: expected Bearer <api key>")
}
