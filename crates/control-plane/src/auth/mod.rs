//! Authentication and authorization: who is calling, and what they may do.
//!
//! - [`Authenticator`] turns a request's credentials into a [`Principal`]: an API key
//!   (`Authorization: Bearer`, checked against the hashed keys) or an encrypted session cookie
//!   set by the OIDC login ([`oidc`], [`session`]). Answers are cached for a few seconds, so an
//!   inference call pays a hash and a map lookup, not a database query; changes made through
//!   this replica (revoking keys, changing roles) clear the cache at once, other replicas see
//!   them within the TTL.
//! - [`Authenticated`] is the axum extractor: handlers that take it cannot forget to
//!   authenticate. Cookie-authenticated requests that may change state must carry the session's
//!   CSRF token in `X-CSRF-Token`.
//! - [`policy`] is the table of what every GraphQL operation and REST route requires; the
//!   GraphQL schema enforces it for every root field ([`policy::PolicyExtension`]).

pub mod login;
pub mod oidc;
pub mod permissions;
pub mod policy;
pub mod principal;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use sha2::{Digest, Sha256};

pub use permissions::{Permission, PermissionSet, ADMIN_TEAM, BUILTIN_ROLES};
pub use principal::Principal;

use crate::error::ApiError;
use crate::store::{ApiKeyGrant, MetadataStore, StoreError};
use crate::ttl_cache::TtlCache;
use session::{SessionCodec, CSRF_HEADER};

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum Credential {
    ApiKey { key_id: String },
    Session { csrf: String },
}

/// The caller, authenticated.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Arc<Principal>,
    pub credential: Credential,
}

impl Authenticated {
    /// Refuse unless the caller holds `permission` on `project` (id or key) or everywhere.
    pub fn require(&self, permission: Permission, project: &str) -> Result<(), ApiError> {
        if self.principal.can(permission, Some(project)) {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "this request needs the permission {permission} on the project '{project}'"
        )))
    }
}

/// Resolves credentials to principals, with short-lived caches.
pub struct Authenticator {
    store: MetadataStore,
    sessions: Option<Arc<SessionCodec>>,
    ttl: Duration,
    /// By SHA-256 of the key: plaintext keys are never kept.
    keys: TtlCache<Arc<ApiKeyGrant>>,
    /// By user id.
    principals: TtlCache<Arc<Principal>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Authenticator")
            .field("sessions", &self.sessions.is_some())
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// How long an API key's grant and a user's permissions are reused.
pub const DEFAULT_AUTH_CACHE_TTL: Duration = Duration::from_secs(5);

impl Authenticator {
    pub fn new(store: MetadataStore, sessions: Option<Arc<SessionCodec>>, ttl: Duration) -> Self {
        Self {
            store,
            sessions,
            ttl,
            keys: TtlCache::default(),
            principals: TtlCache::default(),
        }
    }

    pub fn sessions(&self) -> Option<&Arc<SessionCodec>> {
        self.sessions.as_ref()
    }

    /// The caller of a request: an API key if an `Authorization` header is present, else a
    /// session cookie.
    pub async fn authenticate(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Authenticated, ApiError> {
        self.authenticate_if_present(method, headers)
            .await?
            .ok_or(ApiError::Unauthenticated(
                "missing credentials: send Authorization: Bearer <api key>, or log in",
            ))
    }

    /// Like [`Authenticator::authenticate`], but a request with no credentials at all is
    /// `Ok(None)` (for the routes that also answer anonymous callers); credentials that are
    /// present but wrong are still an error.
    pub async fn authenticate_if_present(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Option<Authenticated>, ApiError> {
        if headers.contains_key(AUTHORIZATION) {
            let token = bearer_token(headers).map_err(ApiError::Unauthenticated)?;
            return self.api_key(token).await.map(Some);
        }
        if let Some(codec) = &self.sessions {
            if let Some(session) = codec.session(headers).map_err(ApiError::Unauthenticated)? {
                if !is_safe(method) && !csrf_matches(headers, &session.csrf) {
                    return Err(ApiError::Forbidden(
                        "cookie-authenticated requests that change state must send the session's \
                         CSRF token in X-CSRF-Token"
                            .to_owned(),
                    ));
                }
                let principal = self.principal(&session.user_id).await?;
                return Ok(Some(Authenticated {
                    principal,
                    credential: Credential::Session { csrf: session.csrf },
                }));
            }
        }
        Ok(None)
    }

    /// The caller holding API key `token`.
    pub async fn api_key(&self, token: &str) -> Result<Authenticated, ApiError> {
        let digest = hex::encode(Sha256::digest(token.as_bytes()));
        let grant = match self.keys.get(&digest) {
            Some(grant) => grant,
            None => {
                let grant = self
                    .store
                    .api_key_grant(token)
                    .await?
                    .ok_or(ApiError::Unauthenticated("invalid API key"))?;
                let grant = Arc::new(grant);
                self.keys.insert(digest, grant.clone(), self.ttl);
                grant
            }
        };
        // Checked on every use, cached or not: expiry is exact.
        if grant
            .expires_at
            .is_some_and(|at| at <= chrono::Utc::now().timestamp_millis())
        {
            return Err(ApiError::Unauthenticated("the API key has expired"));
        }
        let principal = self.principal(&grant.user.id).await?;
        Ok(Authenticated {
            principal,
            credential: Credential::ApiKey {
                key_id: grant.key_id.clone(),
            },
        })
    }

    /// A user's principal (cached).
    pub async fn principal(&self, user_id: &str) -> Result<Arc<Principal>, ApiError> {
        if let Some(principal) = self.principals.get(user_id) {
            return Ok(principal);
        }
        let user = match self.store.get_user(user_id).await {
            Ok(user) if user.deleted_at.is_none() => user,
            Ok(_) | Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::Unauthenticated("this user no longer exists"))
            }
            Err(error) => return Err(error.into()),
        };
        let principal = Arc::new(Principal::load(&self.store, user).await?);
        self.principals
            .insert(user_id.to_owned(), principal.clone(), self.ttl);
        Ok(principal)
    }

    /// Forget cached grants and permissions after a change to keys, users, roles, teams or
    /// shares, so this replica applies it at once.
    pub fn invalidate(&self) {
        self.keys.clear();
        self.principals.clear();
    }
}

impl<S> FromRequestParts<S> for Authenticated
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let authenticator = Arc::<Authenticator>::from_ref(state);
        authenticator
            .authenticate(&parts.method, &parts.headers)
            .await
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn csrf_matches(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(CSRF_HEADER)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|sent| Sha256::digest(sent.as_bytes()) == Sha256::digest(expected.as_bytes()))
}

/// The API key of an `Authorization: Bearer <key>` header, or why there is none. Shared by the
/// management API and the inference gateway, so both accept and refuse exactly the same headers.
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
