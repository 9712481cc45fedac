//! OIDC login for people: the authorization-code flow with PKCE, state and nonce, and ID
//! tokens verified against the provider's JWKS (the `openidconnect` crate).
//!
//! Providers are configured as a list (`auth.oidc.providers`): a TOML array of tables in the
//! config file, or the JSON array the EKS guide stores in the `oidcProviders` secret key, or a
//! TOML array in `ADAPTIVE_AUTH__OIDC__PROVIDERS`. Each provider's discovery document is fetched
//! on first use and kept (a provider that is down at start does not stop the control plane).
//!
//! The flow's secrets (state, nonce, PKCE verifier) live in an encrypted, short-lived cookie
//! ([`super::session::LOGIN_COOKIE`]) rather than in server memory, so the callback may land
//! on any replica.

use std::time::Duration;

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::config::SecretString;
use crate::error::ApiError;

/// How long a login may take between the redirect to the provider and the callback.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(600);

/// One provider, as configured.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    pub key: String,
    pub name: String,
    pub issuer_url: String,
    pub client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "yes")]
    pub pkce: bool,
    /// Whether people the control plane does not know yet may log in (and get
    /// `auth.default_role` in `auth.default_team`). `auth.admins` may always sign up.
    #[serde(default)]
    pub allow_sign_up: bool,
    /// Email domains allowed to log in; empty allows every domain.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    #[serde(default = "yes")]
    pub require_email_verified: bool,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(str::to_owned).to_vec()
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for OidcProviderConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OidcProviderConfig")
            .field("key", &self.key)
            .field("name", &self.name)
            .field("issuer_url", &self.issuer_url)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("scopes", &self.scopes)
            .field("pkce", &self.pkce)
            .field("allow_sign_up", &self.allow_sign_up)
            .field("allowed_domains", &self.allowed_domains)
            .field("require_email_verified", &self.require_email_verified)
            .finish()
    }
}

impl OidcProviderConfig {
    pub fn client_secret(&self) -> Option<SecretString> {
        self.client_secret.clone().map(SecretString::new)
    }

    /// Whether an email's domain may log in through this provider.
    pub fn domain_allowed(&self, email: &str) -> bool {
        let domain = email
            .rsplit_once('@')
            .map(|(_, domain)| domain)
            .unwrap_or("");
        self.allowed_domains.is_empty()
            || self
                .allowed_domains
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(domain))
    }
}

/// Parse the providers secret: a JSON array (the Kubernetes secret), a TOML array, or a TOML
/// table holding `providers = [...]` (the config file). Errors never quote the text (it holds
/// client secrets).
pub fn parse_providers(text: &str) -> Result<Vec<OidcProviderConfig>, String> {
    #[derive(Deserialize)]
    struct Wrapper {
        providers: Vec<OidcProviderConfig>,
    }
    let text = text.trim();
    let toml_error =
        |error: toml::de::Error| format!("auth.oidc.providers (TOML): {}", error.message());
    let providers = if serde_json::from_str::<serde_json::Value>(text).is_ok() {
        serde_json::from_str::<Vec<OidcProviderConfig>>(text)
            .map_err(|error| format!("auth.oidc.providers (JSON): {error}"))?
    } else if let Ok(wrapper) = toml::from_str::<Wrapper>(text) {
        wrapper.providers
    } else {
        // An inline TOML array, as ADAPTIVE_AUTH__OIDC__PROVIDERS holds it.
        toml::from_str::<Wrapper>(&format!("providers = {text}"))
            .map_err(toml_error)?
            .providers
    };
    let mut seen = std::collections::HashSet::new();
    for provider in &providers {
        let valid_key = !provider.key.is_empty()
            && provider
                .key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_key {
            return Err(format!(
                "auth.oidc.providers: key '{}' must be letters, digits, '-' or '_'",
                provider.key
            ));
        }
        if !seen.insert(provider.key.clone()) {
            return Err(format!(
                "auth.oidc.providers: key '{}' appears twice",
                provider.key
            ));
        }
        IssuerUrl::new(provider.issuer_url.clone()).map_err(|error| {
            format!(
                "auth.oidc.providers: '{}' issuer_url: {error}",
                provider.key
            )
        })?;
    }
    Ok(providers)
}

/// What the login cookie remembers between the redirect and the callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginState {
    pub provider: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: Option<String>,
    /// A path on this control plane to return to after login.
    pub return_to: String,
}

/// The person an ID token vouches for.
#[derive(Debug, Clone)]
pub struct VerifiedIdentity {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
}

/// A configured provider and its discovery document, fetched on first use.
pub struct Provider {
    pub config: OidcProviderConfig,
    metadata: OnceCell<CoreProviderMetadata>,
}

/// Every configured provider, with the HTTP client that talks to them.
pub struct OidcProviders {
    providers: Vec<Provider>,
    http: reqwest::Client,
    root_url: String,
}

impl OidcProviders {
    pub fn new(configs: Vec<OidcProviderConfig>, root_url: &str) -> OidcProviders {
        let http = reqwest::Client::builder()
            // Following redirects would let a provider make us fetch arbitrary URLs (SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("the HTTP client builds");
        OidcProviders {
            providers: configs
                .into_iter()
                .map(|config| Provider {
                    config,
                    metadata: OnceCell::new(),
                })
                .collect(),
            http,
            root_url: root_url.trim_end_matches('/').to_owned(),
        }
    }

    pub fn list(&self) -> impl Iterator<Item = &OidcProviderConfig> {
        self.providers.iter().map(|provider| &provider.config)
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    pub fn get(&self, key: &str) -> Result<&Provider, ApiError> {
        self.providers
            .iter()
            .find(|provider| provider.config.key == key)
            .ok_or_else(|| {
                ApiError::Store(crate::store::StoreError::not_found("auth provider", key))
            })
    }

    pub fn login_url(&self, key: &str) -> String {
        format!("{}/api/v1/auth/login/{key}", self.root_url)
    }

    fn callback_url(&self, key: &str) -> String {
        format!("{}/api/v1/auth/login/{key}/callback", self.root_url)
    }

    async fn client(
        &self,
        provider: &Provider,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        ApiError,
    > {
        let config = &provider.config;
        let metadata = provider
            .metadata
            .get_or_try_init(|| async {
                let issuer = IssuerUrl::new(config.issuer_url.clone())
                    .map_err(|error| ApiError::InvalidRequest(error.to_string()))?;
                CoreProviderMetadata::discover_async(issuer, &self.http)
                    .await
                    .map_err(|error| {
                        tracing::warn!(provider = %config.key, error = %error, "OIDC discovery failed");
                        ApiError::Unavailable(format!(
                            "the identity provider '{}' cannot be reached; try again later",
                            config.key
                        ))
                    })
            })
            .await?;
        let redirect = RedirectUrl::new(self.callback_url(&config.key))
            .map_err(|error| ApiError::InvalidRequest(format!("server.root_url: {error}")))?;
        Ok(CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(config.client_id.clone()),
            config.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect))
    }

    /// Start a login: the provider URL to send the browser to, and what to remember.
    pub async fn begin(
        &self,
        key: &str,
        return_to: String,
    ) -> Result<(String, LoginState), ApiError> {
        let provider = self.get(key)?;
        let client = self.client(provider).await?;
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in &provider.config.scopes {
            if scope != "openid" {
                request = request.add_scope(Scope::new(scope.clone()));
            }
        }
        let mut pkce_verifier = None;
        if provider.config.pkce {
            let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
            request = request.set_pkce_challenge(challenge);
            pkce_verifier = Some(verifier.secret().clone());
        }
        let (url, state, nonce) = request.url();
        Ok((
            url.to_string(),
            LoginState {
                provider: key.to_owned(),
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                pkce_verifier,
                return_to,
            },
        ))
    }

    /// Finish a login: check the state, exchange the code, verify the ID token (signature,
    /// issuer, audience, expiry, nonce).
    pub async fn complete(
        &self,
        login: &LoginState,
        state: &str,
        code: &str,
    ) -> Result<VerifiedIdentity, ApiError> {
        // Both sides are random tokens we minted; compare digests so timing says nothing.
        use sha2::{Digest, Sha256};
        if Sha256::digest(state.as_bytes()) != Sha256::digest(login.state.as_bytes()) {
            return Err(ApiError::LoginFailed(
                "the login state does not match: start the login again".to_owned(),
            ));
        }
        let provider = self.get(&login.provider)?;
        let client = self.client(provider).await?;
        let mut exchange = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|error| {
                ApiError::LoginFailed(format!("the provider has no token endpoint: {error}"))
            })?;
        if let Some(verifier) = &login.pkce_verifier {
            exchange = exchange.set_pkce_verifier(PkceCodeVerifier::new(verifier.clone()));
        }
        let response = exchange.request_async(&self.http).await.map_err(|error| {
            tracing::info!(provider = %login.provider, error = %error, "OIDC code exchange refused");
            ApiError::LoginFailed("the identity provider refused the authorization code".to_owned())
        })?;
        let id_token = response.id_token().ok_or_else(|| {
            ApiError::LoginFailed("the identity provider sent no ID token".to_owned())
        })?;
        let claims = id_token
            .claims(
                &client.id_token_verifier(),
                &Nonce::new(login.nonce.clone()),
            )
            .map_err(|error| {
                tracing::info!(provider = %login.provider, error = %error, "ID token rejected");
                ApiError::LoginFailed(format!("the ID token is not valid: {error}"))
            })?;
        Ok(VerifiedIdentity {
            subject: claims.subject().as_str().to_owned(),
            email: claims.email().map(|email| email.as_str().to_lowercase()),
            email_verified: claims.email_verified().unwrap_or(false),
            name: claims
                .name()
                .and_then(|name| name.get(None))
                .map(|name| name.as_str().to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guide_json_parses_with_defaults() {
        let json = r#"[{"name": "Cognito", "key": "cognito",
            "issuer_url": "https://cognito-idp.eu-west-1.amazonaws.com/pool",
            "client_id": "id", "client_secret": "very-secret",
            "scopes": ["email", "profile", "openid"], "pkce": true, "allow_sign_up": true}]"#;
        let providers = parse_providers(json).expect("parses");
        assert_eq!(providers.len(), 1);
        assert!(providers[0].require_email_verified);
        assert!(providers[0].allowed_domains.is_empty());
        assert!(!format!("{providers:?}").contains("very-secret"));
    }

    #[test]
    fn toml_arrays_and_tables_parse() {
        let array = r#"[{key = "okta", name = "Okta", issuer_url = "https://example.okta.com", client_id = "c", allowed_domains = ["example.com"], require_email_verified = false}]"#;
        let providers = parse_providers(array).expect("array");
        assert!(providers[0].domain_allowed("a@EXAMPLE.com"));
        assert!(!providers[0].domain_allowed("a@evil.com"));
        assert!(!providers[0].allow_sign_up, "sign-up is opt-in");
        let table = "[[providers]]\nkey = \"k\"\nname = \"K\"\nissuer_url = \"https://k.example\"\nclient_id = \"c\"\n";
        assert_eq!(parse_providers(table).expect("table")[0].key, "k");
    }

    #[test]
    fn bad_provider_lists_are_refused_without_quoting_secrets() {
        let duplicate = r#"[{"key":"a","name":"A","issuer_url":"https://a","client_id":"c"},{"key":"a","name":"B","issuer_url":"https://b","client_id":"c"}]"#;
        assert!(parse_providers(duplicate)
            .expect_err("fails")
            .contains("twice"));
        let unknown = r#"[{"key":"a","name":"A","issuer_url":"https://a","client_id":"c","client_secret":"s3cr3t","typo":1}]"#;
        let error = parse_providers(unknown).expect_err("fails");
        assert!(!error.contains("s3cr3t"), "{error}");
        assert!(parse_providers(
            r#"[{"key":"a b","name":"A","issuer_url":"https://a","client_id":"c"}]"#
        )
        .is_err());
    }
}
