//! The feedback routes `adaptive-sdk` 0.14 calls over REST (reference §2.3), under `/api/v1`
//! and `/v1` like the inference routes:
//!
//! - `POST /interactions` (`client.interactions.create`): import a logged interaction with its
//!   feedback. Needs `model:use` on the project, the right that logs interactions through the
//!   gateway, and `metric:score` as well when feedback comes with it.
//! - `POST /comparison` (`client.feedback.log_preference`): a preference between two
//!   completions, stored ones or texts recorded with it. Needs `metric:score`.
//! - `POST /outcome`: the outcome of a session. Needs `metric:score`.
//!
//! Each answers 201 once everything is stored; nothing is stored when it answers 4xx.

mod dto;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use uuid::Uuid;

use super::{AppJson, AppState};
use crate::auth::{Authenticated, Permission};
use crate::error::ApiError;
use crate::store::{
    ChatMessage, ComparedCompletion, Label, MetadataStore, NewComparison, NewInteraction,
    NewOutcome, NewScore, Project, ScoreValue,
};
use dto::{
    AddComparisonRequest, AddInteractionsRequest, AddInteractionsResponse, AddOutcomeRequest,
    ComparisonOutput, CompletionIdOrText, InteractionFeedback, OutcomeOutput,
};

/// Completions recorded by these routes were produced elsewhere.
const IMPORTED_SOURCE: &str = "OFFLINE";

pub fn router() -> Router<AppState> {
    let routes = Router::new()
        .route("/interactions", post(add_interaction))
        .route("/comparison", post(add_comparison))
        .route("/outcome", post(add_outcome));
    Router::new()
        .nest("/api/v1", routes.clone())
        .nest("/v1", routes)
}

async fn add_interaction(
    State(store): State<MetadataStore>,
    caller: Authenticated,
    AppJson(request): AppJson<AddInteractionsRequest>,
) -> Result<(StatusCode, Json<AddInteractionsResponse>), ApiError> {
    caller.require(Permission::ModelUse, &request.project)?;
    let feedbacks = request.feedbacks.unwrap_or_default();
    if !feedbacks.is_empty() {
        caller.require(Permission::MetricScore, &request.project)?;
    }
    let project = store.get_project(&request.project).await?;
    let model = model_of(&store, &project, request.model_service.as_deref()).await?;
    let interaction = NewInteraction {
        session_id: Some(request.session_id.unwrap_or_else(Uuid::new_v4).to_string()),
        created_by: Some(end_user(&caller, request.user)),
        labels: request
            .labels
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| Label { key, value })
            .collect(),
        created_at: optional_timestamp(request.created_at.as_deref())?
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis()),
        ..imported_completion(
            &project,
            model,
            chat_messages(request.messages),
            request.completion,
        )?
    };
    let scores = feedbacks
        .into_iter()
        .map(|feedback| to_new_score(&caller, &interaction.id, feedback))
        .collect::<Result<Vec<_>, _>>()?;
    let recorded = store.record_interaction(&interaction, &scores).await?;
    let response = AddInteractionsResponse {
        completion_id: interaction.id,
        session_id: interaction.session_id.unwrap_or_default(),
        feedback_ids: recorded.into_iter().map(|score| score.id).collect(),
    };
    Ok((StatusCode::CREATED, Json(response)))
}

async fn add_comparison(
    State(store): State<MetadataStore>,
    caller: Authenticated,
    AppJson(request): AppJson<AddComparisonRequest>,
) -> Result<(StatusCode, Json<ComparisonOutput>), ApiError> {
    caller.require(Permission::MetricScore, &request.project)?;
    let project = store.get_project(&request.project).await?;
    let created_by = end_user(&caller, request.user_id);
    let sides = ComparisonSides {
        store: &store,
        project: &project,
        messages: request.messages.map(chat_messages),
        created_by: &created_by,
    };
    let comparison = NewComparison {
        project_id: project.id.clone(),
        metric: request.metric,
        preferred: sides.resolve(request.preferred_completion).await?,
        other: sides.resolve(request.other_completion).await?,
        tied: request.tied.map(|tied| tied.as_str().to_owned()),
        created_by: Some(created_by.clone()),
    };
    let recorded = store.record_comparison(comparison).await?;
    let output = ComparisonOutput {
        comparison_id: recorded.id,
    };
    Ok((StatusCode::CREATED, Json(output)))
}

async fn add_outcome(
    State(store): State<MetadataStore>,
    caller: Authenticated,
    AppJson(request): AppJson<AddOutcomeRequest>,
) -> Result<(StatusCode, Json<OutcomeOutput>), ApiError> {
    caller.require(Permission::MetricScore, &request.project_id)?;
    let outcome = NewOutcome {
        value: ScoreValue::from_json(&request.value)?,
        project: request.project_id,
        metric: request.metric,
        session_id: request.session_id.to_string(),
        user_id: request.user_id.map(|user| user.to_string()),
        created_by: Some(caller.principal.user.id.clone()),
    };
    let recorded = store.record_outcome(outcome).await?;
    let output = OutcomeOutput {
        outcome_id: recorded.id,
    };
    Ok((StatusCode::CREATED, Json(output)))
}

/// The user an interaction or comparison is attributed to: the end user the client names, or
/// else the caller.
fn end_user(caller: &Authenticated, user: Option<Uuid>) -> String {
    user.map_or_else(|| caller.principal.user.id.clone(), |user| user.to_string())
}

/// The model service of `model_key` in the project (the model must be attached to it).
async fn model_of(
    store: &MetadataStore,
    project: &Project,
    model_key: Option<&str>,
) -> Result<Option<(String, String)>, ApiError> {
    let Some(model_key) = model_key else {
        return Ok(None);
    };
    let service = store
        .resolve_model_service(&format!("{}/{model_key}", project.key))
        .await?;
    Ok(Some((service.model_service_id, service.model_id)))
}

/// A new completion of `project` produced elsewhere, with a fresh id, now, and no session.
fn imported_completion(
    project: &Project,
    model: Option<(String, String)>,
    chat_messages: Vec<ChatMessage>,
    completion: String,
) -> Result<NewInteraction, ApiError> {
    if chat_messages.is_empty() {
        return Err(ApiError::InvalidRequest(
            "messages must hold at least one message".to_owned(),
        ));
    }
    let (model_service_id, model_id) = model.unzip();
    Ok(NewInteraction {
        id: Uuid::new_v4().to_string(),
        project_id: project.id.clone(),
        model_service_id,
        model_id,
        chat_messages,
        completion: Some(completion),
        source: IMPORTED_SOURCE.to_owned(),
        session_id: None,
        created_by: None,
        labels: Vec::new(),
        metadata: serde_json::json!({}),
        prompt_tokens: 0,
        completion_tokens: 0,
        created_at: chrono::Utc::now().timestamp_millis(),
    })
}

fn to_new_score(
    caller: &Authenticated,
    completion_id: &str,
    feedback: InteractionFeedback,
) -> Result<NewScore, ApiError> {
    Ok(NewScore {
        completion_id: completion_id.to_owned(),
        value: ScoreValue::from_json(&feedback.value)?,
        metric: feedback.metric,
        reason: feedback.reason,
        details: feedback.details,
        created_by: Some(caller.principal.user.id.clone()),
        created_at: optional_timestamp(feedback.created_at.as_deref())?,
    })
}

fn chat_messages(messages: Vec<dto::ChatMessageInput>) -> Vec<ChatMessage> {
    messages.into_iter().map(ChatMessage::from).collect()
}

/// Milliseconds since the epoch of an RFC 3339 timestamp (`2024-05-01T12:00:00Z`), or of one
/// without an offset, taken as UTC.
fn optional_timestamp(text: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(text) = text else {
        return Ok(None);
    };
    if let Ok(with_offset) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(Some(with_offset.timestamp_millis()));
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|naive| Some(naive.and_utc().timestamp_millis()))
        .map_err(|_| {
            ApiError::InvalidRequest(format!(
                "created_at must be an RFC 3339 timestamp such as 2024-05-01T12:00:00Z, got '{text}'"
            ))
        })
}

/// Turns the two sides of a comparison request into completions.
struct ComparisonSides<'a> {
    store: &'a MetadataStore,
    project: &'a Project,
    /// The prompt of sides given as text.
    messages: Option<Vec<ChatMessage>>,
    created_by: &'a str,
}

impl ComparisonSides<'_> {
    async fn resolve(&self, side: CompletionIdOrText) -> Result<ComparedCompletion, ApiError> {
        let (text, model_key) = match side {
            CompletionIdOrText::Id(id) => return Ok(ComparedCompletion::Stored(id.to_string())),
            CompletionIdOrText::Text { text, model } => (text, model),
        };
        let Some(messages) = &self.messages else {
            return Err(ApiError::InvalidRequest(
                "messages are required when a compared completion is given as text".to_owned(),
            ));
        };
        let model = model_of(self.store, self.project, Some(&model_key)).await?;
        let interaction = NewInteraction {
            created_by: Some(self.created_by.to_owned()),
            ..imported_completion(self.project, model, messages.clone(), text)?
        };
        Ok(ComparedCompletion::New(Box::new(interaction)))
    }
}
