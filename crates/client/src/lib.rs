//! A typed client of the control plane's management API, used by the `adaptive` CLI and the
//! tests.
//!
//! It speaks the same GraphQL operations as the `adaptive-sdk` Python package (projects,
//! models, deployment) over `POST /api/graphql` with `Authorization: Bearer <api key>`, plus
//! the REST health checks. Errors keep the server's stable code ([`ErrorCode`]) so callers can
//! match on it.

use adaptive_api_types::ErrorCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// What went wrong talking to the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the control plane at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error; `code` is its stable error code when it sent one.
    #[error("{message}")]
    Api {
        code: Option<ErrorCode>,
        status: u16,
        message: String,
    },
    #[error("unexpected answer from the control plane: {0}")]
    Decode(String),
}

impl ClientError {
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => *code,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSummary {
    pub id: String,
    pub key: String,
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSummary {
    pub id: String,
    pub key: String,
    pub name: String,
    /// `ONLINE`, `PENDING`, `OFFLINE`, ...
    pub online: String,
    pub harmony_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSummary {
    pub key: String,
    pub is_default: bool,
    pub desired_online: bool,
    pub status: String,
    pub compute_pools: Vec<String>,
    pub warnings: Vec<String>,
}

/// The control plane client.
#[derive(Debug, Clone)]
pub struct ControlPlaneClient {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
}

const PROJECT_FIELDS: &str = "id key name description";
const MODEL_FIELDS: &str = "id key name online harmonyUrl";

impl ControlPlaneClient {
    /// `base_url` is the public root, e.g. `http://127.0.0.1:9000`.
    pub fn new(base_url: impl Into<String>, api_key: Option<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key,
        }
    }

    /// `GET /ready`: Ok when the control plane and its store answer.
    pub async fn ready(&self) -> Result<(), ClientError> {
        let url = format!("{}/ready", self.base_url);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| ClientError::Connect { url, source })?;
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(());
        }
        let body: Value = response.json().await.unwrap_or_default();
        Err(rest_error(status, &body))
    }

    pub async fn list_projects(&self) -> Result<Vec<ProjectSummary>, ClientError> {
        let data: Value = self
            .graphql(
                &format!("query {{ projects {{ {PROJECT_FIELDS} }} }}"),
                json!({}),
            )
            .await?;
        field(data, "projects")
    }

    pub async fn create_project(
        &self,
        key: &str,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<ProjectSummary, ClientError> {
        let query = format!(
            "mutation CreateProject($input: ProjectCreate!) {{ createProject(input: $input) {{ {PROJECT_FIELDS} }} }}"
        );
        let input = json!({"key": key, "name": name.unwrap_or(key), "description": description});
        let data: Value = self.graphql(&query, json!({"input": input})).await?;
        field(data, "createProject")
    }

    pub async fn list_models(&self) -> Result<Vec<ModelSummary>, ClientError> {
        let query = format!("query ListModels($filter: ModelFilter!) {{ models(filter: $filter) {{ {MODEL_FIELDS} }} }}");
        let data: Value = self.graphql(&query, json!({"filter": {}})).await?;
        field(data, "models")
    }

    /// Register a model from a registry path, a local directory or a `.gguf` file.
    pub async fn add_model(
        &self,
        path: &str,
        name: &str,
        key: Option<&str>,
    ) -> Result<ModelSummary, ClientError> {
        let query = format!(
            "mutation AddModel($input: AddModelInput!) {{ addModel(input: $input) {{ {MODEL_FIELDS} }} }}"
        );
        let input = json!({"path": path, "name": name, "key": key});
        let data: Value = self.graphql(&query, json!({"input": input})).await?;
        field(data, "addModel")
    }

    /// Deploy a model to a project; empty `compute_pools` means every pool.
    pub async fn deploy_model(
        &self,
        project: &str,
        model: &str,
        compute_pools: &[String],
    ) -> Result<DeploymentSummary, ClientError> {
        let query = "mutation DeployModel($input: DeployModelInput!) { deployModel(input: $input) { \
             modelService { key isDefault desiredOnline status placement { computePools } } warnings } }";
        let mut input = json!({"project": project, "model": model});
        if !compute_pools.is_empty() {
            input["placement"] = json!({"computePools": compute_pools});
        }
        let data: Value = self.graphql(query, json!({"input": input})).await?;
        let result = data
            .get("deployModel")
            .cloned()
            .ok_or_else(|| ClientError::Decode("missing deployModel".to_owned()))?;
        let service = &result["modelService"];
        Ok(DeploymentSummary {
            key: service["key"].as_str().unwrap_or_default().to_owned(),
            is_default: service["isDefault"].as_bool().unwrap_or_default(),
            desired_online: service["desiredOnline"].as_bool().unwrap_or_default(),
            status: service["status"].as_str().unwrap_or_default().to_owned(),
            compute_pools: decode(service["placement"]["computePools"].clone())?,
            warnings: decode(result["warnings"].clone())?,
        })
    }

    /// One non-streaming chat turn through the OpenAI-compatible API
    /// (`POST /api/v1/chat/completions`); `model` is `project` or `project/model`.
    pub async fn chat(
        &self,
        model: &str,
        message: &str,
        max_tokens: u32,
    ) -> Result<String, ClientError> {
        let url = format!("{}/api/v1/chat/completions", self.base_url);
        let mut request = self.http.post(&url).json(&json!({
            "model": model,
            "messages": [{"role": "user", "content": message}],
            "max_tokens": max_tokens,
        }));
        if let Some(api_key) = &self.api_key {
            request = request.bearer_auth(api_key);
        }
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Connect { url, source })?;
        let status = response.status().as_u16();
        let body: Value = response
            .json()
            .await
            .map_err(|error| ClientError::Decode(error.to_string()))?;
        if status != 200 {
            return Err(rest_error(status, &body));
        }
        body["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Decode("the answer has no message content".to_owned()))
    }

    /// Run a GraphQL document; returns `data`, or the first error with its code.
    pub async fn graphql(&self, query: &str, variables: Value) -> Result<Value, ClientError> {
        let url = format!("{}/api/graphql", self.base_url);
        let mut request = self
            .http
            .post(&url)
            .header(
                "user-agent",
                concat!("adaptive-client/", env!("CARGO_PKG_VERSION")),
            )
            .json(&json!({"query": query, "variables": variables}));
        if let Some(api_key) = &self.api_key {
            request = request.bearer_auth(api_key);
        }
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Connect { url, source })?;
        let status = response.status().as_u16();
        let body: Value = response
            .json()
            .await
            .map_err(|error| ClientError::Decode(error.to_string()))?;
        if status != 200 {
            return Err(rest_error(status, &body));
        }
        if let Some(error) = body["errors"].as_array().and_then(|errors| errors.first()) {
            return Err(ClientError::Api {
                code: error["extensions"]["code"]
                    .as_str()
                    .and_then(|code| serde_json::from_value(json!(code)).ok()),
                status,
                message: error["message"]
                    .as_str()
                    .unwrap_or("request failed")
                    .to_owned(),
            });
        }
        Ok(body["data"].clone())
    }
}

fn rest_error(status: u16, body: &Value) -> ClientError {
    let error = &body["error"];
    ClientError::Api {
        code: error["code"]
            .as_str()
            .and_then(|code| serde_json::from_value(json!(code)).ok()),
        status,
        message: error["message"]
            .as_str()
            .map_or_else(|| format!("HTTP {status}"), str::to_owned),
    }
}

fn field<T: DeserializeOwned>(mut data: Value, name: &str) -> Result<T, ClientError> {
    decode(data[name].take())
}

fn decode<T: DeserializeOwned>(value: Value) -> Result<T, ClientError> {
    serde_json::from_value(value).map_err(|error| ClientError::Decode(error.to_string()))
}
