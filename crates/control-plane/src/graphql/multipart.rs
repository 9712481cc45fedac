//! The body of `POST /api/graphql`: a JSON request, or a GraphQL multipart request
//! (<https://github.com/jaydenseric/graphql-multipart-request-spec>: `operations`, `map`, then
//! the files), which the SDK sends for `createDataset(input, file)`.
//!
//! async-graphql receives multipart requests (files go to anonymous temporary files) and
//! stands a file in for its variable as the string `#__graphql_file__:<index>`. Its `Upload`
//! type trusts that string (it panics on an index that is not a number, or names no file), and
//! a client could write one itself, in the variables of a JSON request or in the query text. So
//! such strings are refused in the query text and, unless they hold a number, in the variables;
//! resolvers taking an `Upload` check its index against [`UploadsReceived`], the number of files
//! the request really carried, before reading it.

use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use futures::{StreamExt, TryStreamExt};

use crate::error::ApiError;
use crate::http::AppJson;

/// async-graphql's stand-in for a file in the variables.
const FILE_REFERENCE_PREFIX: &str = "#__graphql_file__:";

/// The largest GraphQL multipart request accepted (the SDK sends files up to 5 MB this way and
/// larger ones as chunked uploads).
pub const MAX_MULTIPART_BYTES: usize = 128 << 20;
/// The most files one request may carry.
const MAX_FILES: usize = 4;

/// How many files the request carried (the highest valid `Upload` index plus one).
#[derive(Debug, Clone, Copy)]
pub struct UploadsReceived(pub usize);

/// A GraphQL request from a JSON or a multipart body; malformed input gets our 400 body.
pub struct GraphqlRequest(pub async_graphql::Request);

impl<S> FromRequest<S> for GraphqlRequest
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let is_multipart = content_type.as_deref().is_some_and(|value| {
            value
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
        let graphql_request = if is_multipart {
            receive_multipart(content_type, request).await?
        } else {
            let AppJson(graphql_request) =
                AppJson::<async_graphql::Request>::from_request(request, state).await?;
            graphql_request
        };
        check_file_references(&graphql_request)?;
        let received = UploadsReceived(graphql_request.uploads.len());
        Ok(GraphqlRequest(graphql_request.data(received)))
    }
}

async fn receive_multipart(
    content_type: Option<String>,
    request: Request,
) -> Result<async_graphql::Request, ApiError> {
    let too_large =
        || format!("a GraphQL multipart request may hold at most {MAX_MULTIPART_BYTES} bytes");
    let mut received_bytes = 0usize;
    let body = request
        .into_body()
        .into_data_stream()
        .map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            received_bytes = received_bytes.saturating_add(chunk.len());
            if received_bytes > MAX_MULTIPART_BYTES {
                return Err(std::io::Error::other(too_large()));
            }
            Ok(chunk)
        })
        .into_async_read();
    let options = async_graphql::http::MultipartOptions::default()
        .max_file_size(MAX_MULTIPART_BYTES)
        .max_num_files(MAX_FILES);
    async_graphql::http::receive_body(content_type, body, options)
        .await
        .map_err(|error| match error {
            async_graphql::ParseRequestError::PayloadTooLarge => {
                ApiError::InvalidRequest(too_large())
            }
            other => {
                ApiError::InvalidRequest(format!("malformed GraphQL multipart request: {other}"))
            }
        })
}

/// Refuses file references the request did not earn (see the module docs).
fn check_file_references(request: &async_graphql::Request) -> Result<(), ApiError> {
    let variables = serde_json::to_value(&request.variables).unwrap_or_default();
    let mut forged = None;
    visit_strings(&variables, &mut |text| {
        let Some(index) = text.strip_prefix(FILE_REFERENCE_PREFIX) else {
            return;
        };
        if index.parse::<usize>().is_err() {
            forged = Some(text.to_owned());
        }
    });
    if let Some(reference) = forged {
        return Err(ApiError::InvalidRequest(format!(
            "'{reference}' is not a file reference: send files as a GraphQL multipart request"
        )));
    }
    // The query's string literals, unescaped: a parsed document's debug form shows them as
    // they are (only quotes and backslashes are escaped, and the prefix has neither).
    if let Ok(document) = async_graphql::parser::parse_query(&request.query) {
        if format!("{document:?}").contains(FILE_REFERENCE_PREFIX) {
            return Err(ApiError::InvalidRequest(
                "files are passed as variables of a GraphQL multipart request, not in the query"
                    .to_owned(),
            ));
        }
    }
    Ok(())
}

fn visit_strings(value: &serde_json::Value, visit: &mut impl FnMut(&str)) {
    match value {
        serde_json::Value::String(text) => visit(text),
        serde_json::Value::Array(items) => items.iter().for_each(|item| visit_strings(item, visit)),
        serde_json::Value::Object(fields) => fields
            .values()
            .for_each(|field| visit_strings(field, visit)),
        _ => {}
    }
}
