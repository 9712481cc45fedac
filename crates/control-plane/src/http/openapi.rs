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
    ("get", "/metrics", "internal"),
    ("post", "/internal/harmony/register", "internal"),
    ("post", "/internal/harmony/deregister", "internal"),
];

pub fn document() -> Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    json!({
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
                "summary": "the management API (GraphQL); Authorization: Bearer <api key>",
                "security": [{"bearer": []}],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["query"], "properties": {"query": {"type": "string"}, "variables": {"type": "object"}, "operationName": {"type": "string"}}}}}},
                "responses": {"200": {"description": "GraphQL response"}, "401": {"description": "missing or invalid API key", "content": {"application/json": {"schema": error}}}}
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
                "RegisterReplica": {"type": "object", "required": ["group", "partition_key", "ordinal", "gpu_count", "advertised_url", "status"], "properties": {
                    "group": {"type": "string"}, "partition_key": {"type": "string"}, "ordinal": {"type": "integer"},
                    "gpu_count": {"type": "integer"}, "gpu_types": {"type": "array", "items": {"type": "string"}},
                    "advertised_url": {"type": "string"}, "capabilities": {"type": "array", "items": {"type": "string"}},
                    "status": {"enum": ["ONLINE", "DRAINING"]}, "online_models": {"type": "array"}, "load": {"type": "object"},
                    "capacity_ends_at": {"type": ["string", "null"]}
                }}
            }
        }
    })
}

pub async fn serve() -> Json<Value> {
    Json(document())
}
