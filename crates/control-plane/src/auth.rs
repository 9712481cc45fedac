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
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::Unauthenticated(
                "missing credentials: send Authorization: Bearer <api key>",
            ))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(ApiError::Unauthenticated(
                "malformed Authorization header: expected Bearer <api key>",
            ))?;
        let store = MetadataStore::from_ref(state);
        let user = store
            .user_for_api_key(token)
            .await?
            .ok_or(ApiError::Unauthenticated("invalid API key"))?;
        Ok(Authenticated { user })
    }
}
