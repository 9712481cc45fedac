//! The OIDC login routes: `GET /api/v1/auth/login/{provider}` redirects to the provider,
//! `GET /api/v1/auth/login/{provider}/callback` finishes the login and sets the session, and
//! `POST /api/v1/auth/logout` ends it.

use axum::extract::{Path, Query, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use crate::auth::login::sign_in;
use crate::auth::oidc::{LoginState, LOGIN_TIMEOUT};
use crate::auth::session::{set_cookies, SessionCodec, CSRF_COOKIE, LOGIN_COOKIE, SESSION_COOKIE};
use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    /// Where to go after login: a path on this control plane (anything else is ignored).
    return_to: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    Query(query): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    let codec = sessions(&state)?;
    let return_to = query
        .return_to
        .filter(|path| path.starts_with('/') && !path.starts_with("//"))
        .unwrap_or_else(|| "/".to_owned());
    let (url, login) = state.oidc.begin(&provider, return_to).await?;
    let mut response = redirect(&url);
    set_cookies(
        response.headers_mut(),
        [codec.seal(LOGIN_COOKIE, &login, LOGIN_TIMEOUT)],
    );
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

pub async fn callback(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    Query(query): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let codec = sessions(&state)?;
    if let Some(error) = query.error {
        let description = query.error_description.unwrap_or_default();
        return Err(ApiError::LoginFailed(format!(
            "the identity provider answered {error} {description}"
        )));
    }
    let login: LoginState = codec
        .open(LOGIN_COOKIE, &headers)
        .map_err(|_| {
            ApiError::LoginFailed("the login cookie is not valid: start again".to_owned())
        })?
        .ok_or_else(|| {
            ApiError::LoginFailed(
                "no login in progress (or it took too long): start again".to_owned(),
            )
        })?;
    if login.provider != provider {
        return Err(ApiError::LoginFailed(
            "this callback belongs to another provider's login".to_owned(),
        ));
    }
    let (Some(code), Some(returned_state)) = (query.code, query.state) else {
        return Err(ApiError::InvalidRequest(
            "the callback needs the code and state parameters".to_owned(),
        ));
    };
    let identity = state.oidc.complete(&login, &returned_state, &code).await?;
    let provider_config = &state.oidc.get(&provider)?.config;
    let user = sign_in(&state.store, &state.auth_config, provider_config, &identity).await?;
    tracing::info!(user = %user.id, provider = %provider, "logged in");
    let (_, cookies) = codec.issue(&user.id);
    let mut response = redirect(&login.return_to);
    set_cookies(response.headers_mut(), cookies);
    set_cookies(response.headers_mut(), [codec.clear(LOGIN_COOKIE)]);
    Ok(response)
}

/// Clears the session. The cookies are encrypted and stateless: logout removes them from the
/// browser, and a copy kept elsewhere stays valid until its expiry.
pub async fn logout(State(state): State<AppState>) -> Result<Response, ApiError> {
    let codec = sessions(&state)?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookies(
        response.headers_mut(),
        [codec.clear(SESSION_COOKIE), codec.clear(CSRF_COOKIE)],
    );
    Ok(response)
}

fn sessions(state: &AppState) -> Result<&std::sync::Arc<SessionCodec>, ApiError> {
    state.auth.sessions().ok_or_else(|| {
        ApiError::NotSupported(
            "login is not configured: set the cookies secret (app.secret) and auth.oidc.providers"
                .to_owned(),
        )
    })
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}
