//! Session cookies: encrypted and authenticated (AES-256-GCM, the `cookie` crate's private
//! jar) with a key derived from the cookies secret, so every replica configured with the same
//! secret accepts every session and nothing else can mint, read or alter one. The cookie's name
//! is bound into the ciphertext, so a login-state cookie cannot be replayed as a session.
//!
//! Sessions carry their own expiry (checked on every request, independent of the browser
//! honouring Max-Age) and a CSRF token: cookie-authenticated requests that change something
//! must echo it in `X-CSRF-Token` (the UI reads it from the non-HttpOnly `adaptive_csrf`
//! cookie, which a cross-site page cannot).

use std::time::Duration;

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use cookie::{Cookie, CookieJar, Key, SameSite};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

use crate::config::{SecretString, SessionConfig};

pub const SESSION_COOKIE: &str = "adaptive_session";
pub const CSRF_COOKIE: &str = "adaptive_csrf";
pub const LOGIN_COOKIE: &str = "adaptive_login";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The cookies secret must be at least this long (reference §2.1).
pub const MIN_SECRET_LEN: usize = 64;

/// A logged-in session, as sealed in [`SESSION_COOKIE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub user_id: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub csrf: String,
}

/// Seals and opens the control plane's cookies.
pub struct SessionCodec {
    key: Key,
    secure: bool,
    lifetime: Duration,
}

impl std::fmt::Debug for SessionCodec {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SessionCodec")
            .field("key", &"[redacted]")
            .field("secure", &self.secure)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl SessionCodec {
    pub fn new(secret: &SecretString, config: &SessionConfig) -> Result<SessionCodec, String> {
        if secret.expose().chars().count() < MIN_SECRET_LEN {
            return Err(format!(
                "the cookies secret (app.secret) must be at least {MIN_SECRET_LEN} characters"
            ));
        }
        // SHA-512 gives exactly the 64 bytes of key material the private jar needs, the same
        // on every replica for the same secret.
        let material = Sha512::digest(secret.expose().as_bytes());
        Ok(SessionCodec {
            key: Key::from(&material),
            secure: config.secure,
            lifetime: Duration::from_secs(config.expiration_seconds),
        })
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A new session for `user_id`: the session cookie and the CSRF cookie to set.
    pub fn issue(&self, user_id: &str) -> (Session, [HeaderValue; 2]) {
        let session = Session {
            user_id: user_id.to_owned(),
            expires_at: chrono::Utc::now().timestamp() + self.lifetime.as_secs() as i64,
            csrf: random_token(),
        };
        let sealed = self.seal(SESSION_COOKIE, &session, self.lifetime);
        let mut csrf = self.base_cookie(CSRF_COOKIE, session.csrf.clone(), self.lifetime);
        csrf.set_http_only(false);
        (session, [sealed, header_value(&csrf)])
    }

    /// The session in the request's cookies, if one is present, genuine and unexpired.
    pub fn session(&self, headers: &HeaderMap) -> Result<Option<Session>, &'static str> {
        let Some(session) = self.open::<Session>(SESSION_COOKIE, headers)? else {
            return Ok(None);
        };
        if session.expires_at <= chrono::Utc::now().timestamp() {
            return Err("the session has expired: log in again");
        }
        Ok(Some(session))
    }

    /// `Set-Cookie` for `value`, encrypted under `name`, living `max_age`.
    pub fn seal<T: Serialize>(
        &self,
        name: &'static str,
        value: &T,
        max_age: Duration,
    ) -> HeaderValue {
        let json = serde_json::to_string(value).expect("cookie payloads serialize");
        let mut jar = CookieJar::new();
        jar.private_mut(&self.key)
            .add(self.base_cookie(name, json, max_age));
        let sealed = jar.get(name).expect("just added").clone();
        header_value(&sealed)
    }

    /// The value sealed under `name`: `Ok(None)` when the cookie is absent, an error when it is
    /// present but was not made by this secret, was altered, or does not parse.
    pub fn open<T: DeserializeOwned>(
        &self,
        name: &'static str,
        headers: &HeaderMap,
    ) -> Result<Option<T>, &'static str> {
        let Some(raw) = request_cookie(headers, name) else {
            return Ok(None);
        };
        let parsed = Cookie::parse_encoded(format!("{name}={raw}"))
            .map_err(|_| "invalid session cookie: log in again")?;
        let mut jar = CookieJar::new();
        jar.add_original(parsed.into_owned());
        let opened = jar
            .private(&self.key)
            .get(name)
            .ok_or("invalid session cookie: log in again")?;
        serde_json::from_str(opened.value())
            .map(Some)
            .map_err(|_| "invalid session cookie: log in again")
    }

    /// `Set-Cookie` that removes `name`.
    pub fn clear(&self, name: &'static str) -> HeaderValue {
        let mut cookie = self.base_cookie(name, String::new(), Duration::ZERO);
        cookie.make_removal();
        header_value(&cookie)
    }

    fn base_cookie(&self, name: &'static str, value: String, max_age: Duration) -> Cookie<'static> {
        Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .max_age(cookie::time::Duration::seconds(max_age.as_secs() as i64))
            .build()
    }
}

/// Append `Set-Cookie` headers.
pub fn set_cookies(headers: &mut HeaderMap, cookies: impl IntoIterator<Item = HeaderValue>) {
    for cookie in cookies {
        headers.append(SET_COOKIE, cookie);
    }
}

/// A cookie's raw value from the request's `Cookie` headers.
pub fn request_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// 32 random bytes, URL-safe.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn header_value(cookie: &Cookie<'_>) -> HeaderValue {
    HeaderValue::from_str(&cookie.encoded().to_string()).expect("encoded cookies are header-safe")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(secret: &str) -> SessionCodec {
        SessionCodec::new(
            &SecretString::new(secret),
            &SessionConfig {
                secure: true,
                expiration_seconds: 3600,
            },
        )
        .expect("codec")
    }

    fn request_with(set_cookie: &HeaderValue) -> HeaderMap {
        let pair = set_cookie
            .to_str()
            .expect("test value")
            .split(';')
            .next()
            .expect("test value")
            .to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(&pair).expect("test value"));
        headers
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_short_secret_is_refused() {
        let config = SessionConfig {
            secure: true,
            expiration_seconds: 60,
        };
        assert!(SessionCodec::new(&SecretString::new("short"), &config).is_err());
    }

    #[test]
    fn sessions_round_trip_with_the_same_secret_only() {
        let (session, [cookie, csrf]) = codec(SECRET).issue("user-1");
        let text = cookie.to_str().expect("test value");
        assert!(
            text.contains("HttpOnly") && text.contains("Secure") && text.contains("SameSite=Lax")
        );
        assert!(!text.contains("user-1"), "the session is encrypted");
        assert!(
            !csrf.to_str().expect("test value").contains("HttpOnly"),
            "the UI reads the CSRF cookie"
        );
        let headers = request_with(&cookie);
        assert_eq!(
            codec(SECRET).session(&headers).expect("test value"),
            Some(session)
        );
        let other = codec(&SECRET.replace('0', "1"));
        assert!(other.session(&headers).is_err());
    }

    #[test]
    fn tampered_and_renamed_cookies_are_rejected() {
        let codec = codec(SECRET);
        let (_, [cookie, _]) = codec.issue("user-1");
        let text = cookie
            .to_str()
            .expect("test value")
            .split(';')
            .next()
            .expect("test value")
            .to_owned();
        let (_, value) = text.split_once('=').expect("test value");
        let mut bytes = value.as_bytes().to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
        let mut headers = HeaderMap::new();
        let tampered = format!(
            "{SESSION_COOKIE}={}",
            String::from_utf8(bytes).expect("test value")
        );
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&tampered).expect("test value"),
        );
        assert!(codec.session(&headers).is_err());
        // The same ciphertext under another cookie name does not open.
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("{LOGIN_COOKIE}={value}")).expect("test value"),
        );
        assert!(codec.open::<Session>(LOGIN_COOKIE, &headers).is_err());
    }

    #[test]
    fn expired_sessions_are_rejected() {
        let codec = codec(SECRET);
        let expired = Session {
            user_id: "user-1".into(),
            expires_at: chrono::Utc::now().timestamp() - 1,
            csrf: "x".into(),
        };
        let cookie = codec.seal(SESSION_COOKIE, &expired, Duration::from_secs(60));
        assert!(codec.session(&request_with(&cookie)).is_err());
        assert_eq!(codec.session(&HeaderMap::new()).expect("test value"), None);
    }
}
