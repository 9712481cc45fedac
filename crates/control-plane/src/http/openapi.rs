//! The OpenAPI document of the REST routes, written by hand and kept honest by a test that
//! requests every documented path on a running server and checks that every route answers.

use axum::Json;
use serde_json::{json, Value};

/// `(method, path, port)` of every REST route, in the order of the document.
pub const REST_ROUTES: &[(&str, &str, &str)] = &[
    ("get", "/health", "public"),
    ("get", "/ready", "public"),
    ("get", "/api/openapi.json", "public"),
    ("post", "/api/graphql", "public"),
    ("post", "/api/v1/chat/completions", "public"),
    ("post", "/api/v1/completions", "public"),
    ("get", "/api/v1/models", "public"),
    ("get", "/api/v1/auth/login/{provider}", "public"),
    ("get", "/api/v1/auth/login/{provider}/callback", "public"),
    ("post", "/api/v1/auth/logout", "public"),
    ("post", "/api/v1/interactions", "public"),
    ("post", "/api/v1/comparison", "public"),
    ("post", "/api/v1/outcome", "public"),
    ("post", "/api/v1/upload/init", "public"),
    ("post", "/api/v1/upload/part", "public"),
    ("post", "/api/v1/upload/status", "public"),
    ("delete", "/api/v1/upload/abort", "public"),
    (
        "get",
        "/api/v1/projects/{project}/datasets/{dataset}/download",
        "public",
    ),
    ("get", "/metrics", "internal"),
    ("post", "/internal/harmony/register", "internal"),
    ("post", "/internal/harmony/deregister", "internal"),
];

pub fn document() -> Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    let uuid = json!({"type": "string", "format": "uuid"});
    let score_value = json!({"type": ["number", "boolean"], "description": "BOOL metrics: true, false, 0 or 1; SCALAR metrics: a number"});
    let compared = json!({"oneOf": [uuid.clone(), {"type": "object", "required": ["text", "model"], "properties": {"text": {"type": "string"}, "model": {"type": "string"}}}]});
    let mut document = json!({
        "openapi": "3.1.0",
        "info": {"title": "adaptive control plane", "version": env!("CARGO_PKG_VERSION")},
        "paths": {
            "/health": {"get": {
                "summary": "liveness: the process is up",
                "responses": {"200": {"description": "ok"}}
            }},
            "/ready": {"get": {
                "summary": "readiness: the metadata store answers",
                "responses": {"200": {"description": "ready"}, "503": {"description": "store unreachable", "content": {"application/json": {"schema": error}}}}
            }},
            "/api/openapi.json": {"get": {
                "summary": "this document",
                "responses": {"200": {"description": "OpenAPI 3.1"}}
            }},
            "/api/graphql": {"post": {
                "summary": "the management API (GraphQL); Authorization: Bearer <api key>, or the session cookie with X-CSRF-Token; without credentials only `meta` answers",
                "security": [{"bearer": []}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["query"], "properties": {"query": {"type": "string"}, "variables": {"type": "object"}, "operationName": {"type": "string"}}}}}},
                "responses": {"200": {"description": "GraphQL response"}, "401": {"description": "missing or invalid API key", "content": {"application/json": {"schema": error}}}}
            }},
            "/api/v1/chat/completions": {"post": {
                "summary": "OpenAI-compatible chat completions (also at /v1/chat/completions); `model` is \"project\" or \"project/model\"; SSE when `stream`; needs model:use on the project",
                "security": [{"bearer": []}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["model", "messages"]}}}},
                "responses": {
                    "200": {"description": "ChatResponse, or text/event-stream chunks ending with data: [DONE]"},
                    "400": {"description": "bad parameters", "content": {"application/json": {"schema": error}}},
                    "401": {"description": "missing or invalid credentials", "content": {"application/json": {"schema": error}}},
                    "403": {"description": "no model:use on the project", "content": {"application/json": {"schema": error}}},
                    "404": {"description": "unknown project or model", "content": {"application/json": {"schema": error}}},
                    "429": {"description": "overloaded; see Retry-After", "content": {"application/json": {"schema": error}}},
                    "503": {"description": "the model is not online", "content": {"application/json": {"schema": error}}}
                }
            }},
            "/api/v1/completions": {"post": {
                "summary": "OpenAI-compatible text completions (also at /v1/completions)",
                "security": [{"bearer": []}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["model", "prompt"]}}}},
                "responses": {"200": {"description": "completion, or SSE chunks"}, "4XX": {"description": "as for chat completions", "content": {"application/json": {"schema": error}}}}
            }},
            "/api/v1/models": {"get": {
                "summary": "the project/model names the caller may call (also at /v1/models)",
                "security": [{"bearer": []}],
                "responses": {"200": {"description": "{object: list, data: [{id, created, owned_by}]}"}}
            }},
            "/api/v1/auth/login/{provider}": {"get": {
                "summary": "start an OIDC login with a configured provider: 303 to the provider, with the encrypted login cookie",
                "parameters": [{"name": "provider", "in": "path", "required": true, "schema": {"type": "string"}},
                               {"name": "return_to", "in": "query", "schema": {"type": "string"}}],
                "responses": {"303": {"description": "to the provider"}, "404": {"description": "unknown provider", "content": {"application/json": {"schema": error}}}}
            }},
            "/api/v1/auth/login/{provider}/callback": {"get": {
                "summary": "the provider's redirect: verifies state, code (PKCE) and ID token (nonce, JWKS), then sets the session cookies",
                "parameters": [{"name": "provider", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"303": {"description": "logged in; to return_to"}, "401": {"description": "the login failed", "content": {"application/json": {"schema": error}}}, "403": {"description": "not allowed to log in (sign-up, domain, unverified email)", "content": {"application/json": {"schema": error}}}}
            }},
            "/api/v1/auth/logout": {"post": {
                "summary": "clear the session cookies",
                "responses": {"204": {"description": "logged out"}}
            }},
            "/api/v1/interactions": {"post": {
                "summary": "import a logged interaction with its feedback (also under /v1); needs model:use on the project, and metric:score with feedbacks",
                "security": [{"bearer": []}],
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/AddInteractionsRequest"}}}},
                "responses": {
                    "201": {"description": "stored", "content": {"application/json": {"schema": {"type": "object", "properties": {"completion_id": uuid, "session_id": uuid, "feedback_ids": {"type": "array", "items": uuid}}}}}},
                    "400": {"description": "malformed request or a value that does not fit its metric", "content": {"application/json": {"schema": error}}},
                    "403": {"description": "missing permission", "content": {"application/json": {"schema": error}}},
                    "404": {"description": "unknown project, model or metric, or a metric not linked to the project", "content": {"application/json": {"schema": error}}}
                }
            }},
            "/api/v1/comparison": {"post": {
                "summary": "a preference between two completions of a project (also under /v1); needs metric:score on the project",
                "security": [{"bearer": []}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["metric", "preferred_completion", "other_completion", "project"], "properties": {
                    "metric": {"type": "string"}, "project": {"type": "string"},
                    "preferred_completion": compared, "other_completion": compared,
                    "messages": {"type": "array", "items": {"$ref": "#/components/schemas/ChatMessageInput"}, "description": "required when a completion is given as text"},
                    "tied": {"enum": ["good", "bad"]}, "user_id": uuid
                }}}}},
                "responses": {
                    "201": {"description": "stored", "content": {"application/json": {"schema": {"type": "object", "properties": {"comparison_id": uuid}}}}},
                    "400": {"description": "malformed request", "content": {"application/json": {"schema": error}}},
                    "403": {"description": "missing permission", "content": {"application/json": {"schema": error}}},
                    "404": {"description": "unknown project, metric, model or completion", "content": {"application/json": {"schema": error}}}
                }
            }},
            "/api/v1/outcome": {"post": {
                "summary": "the outcome of a session (also under /v1); needs metric:score on the project",
                "security": [{"bearer": []}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["value", "project_id", "metric", "session_id"], "properties": {
                    "value": score_value, "project_id": {"type": "string"}, "metric": {"type": "string"}, "session_id": uuid, "user_id": uuid
                }}}}},
                "responses": {
                    "201": {"description": "stored", "content": {"application/json": {"schema": {"type": "object", "properties": {"outcome_id": uuid}}}}},
                    "400": {"description": "malformed request or a value that does not fit its metric", "content": {"application/json": {"schema": error}}},
                    "403": {"description": "missing permission", "content": {"application/json": {"schema": error}}},
                    "404": {"description": "unknown project or metric", "content": {"application/json": {"schema": error}}}
                }
            }},
            "/metrics": {"get": {
                "summary": "internal port: Prometheus metrics",
                "responses": {"200": {"description": "OpenMetrics text"}}
            }},
            "/internal/harmony/register": {"post": {
                "summary": "internal port: a harmony replica registers or heartbeats",
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/RegisterReplica"}}}},
                "responses": {"200": {"description": "RegisterReplicaResponse"}, "400": {"description": "malformed registration", "content": {"application/json": {"schema": error}}}}
            }},
            "/internal/harmony/deregister": {"post": {
                "summary": "internal port: a harmony replica leaves",
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["partition_key", "ordinal"], "properties": {"partition_key": {"type": "string"}, "ordinal": {"type": "integer"}}}}}},
                "responses": {"200": {"description": "{removed: bool}"}}
            }}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "message": {"type": "string"}, "type": {"type": "string"}, "param": {"type": ["string", "null"]}, "code": {"type": "string"}
                }}}},
                "ChatMessageInput": {"type": "object", "required": ["role", "content"], "properties": {
                    "role": {"type": "string"},
                    "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object", "properties": {"type": {"type": "string"}, "text": {"type": "string"}}}}]}
                }},
                "AddInteractionsRequest": {"type": "object", "required": ["project", "messages", "completion"], "properties": {
                    "project": {"type": "string"}, "model_service": {"type": "string", "description": "key of a model attached to the project"},
                    "messages": {"type": "array", "items": {"$ref": "#/components/schemas/ChatMessageInput"}},
                    "completion": {"type": "string"},
                    "feedbacks": {"type": "array", "items": {"type": "object", "required": ["metric", "value"], "properties": {
                        "metric": {"type": "string"}, "value": score_value, "reason": {"type": "string"}, "details": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"}
                    }}},
                    "user": uuid, "session_id": uuid, "created_at": {"type": "string", "format": "date-time"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}}
                }},
                "RegisterReplica": {"type": "object", "required": ["group", "partition_key", "ordinal", "gpu_count", "advertised_url", "status"], "properties": {
                    "group": {"type": "string"}, "partition_key": {"type": "string"}, "ordinal": {"type": "integer"},
                    "gpu_count": {"type": "integer"}, "gpu_types": {"type": "array", "items": {"type": "string"}},
                    "advertised_url": {"type": "string"}, "capabilities": {"type": "array", "items": {"type": "string"}},
                    "status": {"enum": ["ONLINE", "DRAINING"]}, "online_models": {"type": "array"}, "load": {"type": "object"},
                    "capacity_ends_at": {"type": ["string", "null"]}
                }}
            }
        }
    });
    if let (Some(paths), Value::Object(upload_paths)) =
        (document["paths"].as_object_mut(), upload_paths(&error))
    {
        paths.extend(upload_paths);
    }
    if let (Some(paths), Value::Object(dataset_paths)) =
        (document["paths"].as_object_mut(), dataset_paths(&error))
    {
        paths.extend(dataset_paths);
    }
    if let Some(graphql_body) =
        document.pointer_mut("/paths/~1api~1graphql/post/requestBody/content")
    {
        graphql_body["multipart/form-data"] = json!({"schema": {
            "type": "object",
            "required": ["operations", "map"],
            "description": "GraphQL multipart request spec: files for `Upload` arguments (createDataset's `file`), at most 128 MiB in all",
            "properties": {"operations": {"type": "string"}, "map": {"type": "string"}}
        }});
    }
    document
}

/// The dataset routes ([`super::datasets`]); datasets are created and listed through GraphQL.
fn dataset_paths(error: &Value) -> Value {
    json!({
        "/api/v1/projects/{project}/datasets/{dataset}/download": {"get": {
            "summary": "a READY dataset's file as JSONL (also under /v1); the dataset's downloadUrl; needs dataset:read on the project",
            "security": [{"bearer": []}],
            "parameters": [{"name": "project", "in": "path", "required": true, "schema": {"type": "string"}, "description": "project id or key"},
                           {"name": "dataset", "in": "path", "required": true, "schema": {"type": "string"}, "description": "dataset id or key"},
                           {"name": "format", "in": "query", "schema": {"enum": ["original", "recipe"], "default": "original"}, "description": "original: the file as uploaded; recipe: one {prompt, completion | good_completion/bad_completion, metrics, metadata} per record"}],
            "responses": {
                "200": {"description": "the file", "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
                "400": {"description": "unknown format", "content": {"application/json": {"schema": error}}},
                "403": {"description": "no dataset:read on the project", "content": {"application/json": {"schema": error}}},
                "404": {"description": "unknown project or dataset", "content": {"application/json": {"schema": error}}},
                "409": {"description": "the dataset is not READY (still processing, or failed)", "content": {"application/json": {"schema": error}}}
            }
        }}
    })
}

/// The chunked upload routes ([`super::uploads`]), kept apart from [`document`] to stay within
/// `json!`'s recursion limit.
fn upload_paths(error: &Value) -> Value {
    json!({
            "/api/v1/upload/init": {"post": {
                "summary": "open a chunked upload session (also under /v1); needs dataset:create; sessions with no part received for 24 hours are removed",
                "security": [{"bearer": []}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["total_parts_count"], "properties": {
                    "content_type": {"type": ["string", "null"]}, "metadata": {"type": ["object", "null"]}, "total_parts_count": {"type": "integer", "minimum": 1, "maximum": 10000}
                }}}}},
                "responses": {
                    "200": {"description": "opened", "content": {"application/json": {"schema": {"type": "object", "properties": {"session_id": {"type": "string"}}}}}},
                    "400": {"description": "malformed request or too many parts", "content": {"application/json": {"schema": error}}},
                    "403": {"description": "no dataset:create", "content": {"application/json": {"schema": error}}}
                }
            }},
            "/api/v1/upload/part": {"post": {
                "summary": "one part of a session, as the raw body (at most 128 MiB); sending a part again replaces it",
                "security": [{"bearer": []}],
                "parameters": [{"name": "session_id", "in": "query", "required": true, "schema": {"type": "string"}},
                               {"name": "part_number", "in": "query", "required": true, "schema": {"type": "integer", "minimum": 1}}],
                "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {
                    "200": {"description": "stored", "content": {"application/json": {"schema": {"type": "object", "properties": {"session_id": {"type": "string"}, "part_number": {"type": "integer"}, "size_bytes": {"type": "integer"}}}}}},
                    "400": {"description": "part number out of range, empty or oversized part, or the file over its size limit", "content": {"application/json": {"schema": error}}},
                    "404": {"description": "unknown session, or another user's", "content": {"application/json": {"schema": error}}},
                    "409": {"description": "the session is already completed", "content": {"application/json": {"schema": error}}}
                }
            }},
            "/api/v1/upload/status": {"post": {
                "summary": "the parts received so far; session_id in the JSON body or the query",
                "security": [{"bearer": []}],
                "parameters": [{"name": "session_id", "in": "query", "schema": {"type": "string"}}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {"session_id": {"type": "string"}}}}}},
                "responses": {
                    "200": {"description": "status", "content": {"application/json": {"schema": {"type": "object", "properties": {
                        "completed_parts": {"type": "array", "items": {"type": "integer"}}, "total_parts_count": {"type": "integer"},
                        "uploaded_bytes": {"type": "integer"}, "content_type": {"type": ["string", "null"]}, "metadata": {"type": ["object", "null"]},
                        "completed": {"type": "boolean"}, "created_at": {"type": "integer"}, "updated_at": {"type": "integer"}
                    }}}}},
                    "404": {"description": "unknown session, or another user's", "content": {"application/json": {"schema": error}}}
                }
            }},
            "/api/v1/upload/abort": {"delete": {
                "summary": "remove a session and its parts; session_id in the JSON body or the query",
                "security": [{"bearer": []}],
                "parameters": [{"name": "session_id", "in": "query", "schema": {"type": "string"}}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {"session_id": {"type": "string"}}}}}},
                "responses": {
                    "204": {"description": "removed"},
                    "404": {"description": "unknown session, or another user's", "content": {"application/json": {"schema": error}}},
                    "409": {"description": "a dataset still pending or processing reads its parts (delete the dataset to stop it)", "content": {"application/json": {"schema": error}}}
                }
            }}
    })
}

pub async fn serve() -> Json<Value> {
    Json(document())
}
