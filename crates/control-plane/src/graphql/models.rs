//! Models and model services: `models(filter)`, `model(idOrKey)`, `addModel`,
//! `addModelsToProject`, `deployModel`, `removeModelFromProject`, `updateModelService`,
//! `updateModelComputeConfig`, `terminateModel`, `deleteModel`.
//!
//! A model's `online` status is derived, not stored: ONLINE when a routable replica serves it,
//! PENDING when some project wants it online but no replica serves it yet, OFFLINE otherwise.

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};

use super::projects::ProjectView;
use super::scalars::{IdOrKey, Timestamp};
use super::{model_storage, optional, registry, store, GqlResult, OrGql};
use crate::registry::routable_replicas_for_model;
use crate::store::{
    ComputeConfig, ComputeConfigUpdate, DeployRequest, Model, ModelService, ModelServiceUpdate,
    NewModel, Placement,
};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ModelOnline {
    Online,
    Degraded,
    Pending,
    Scaling,
    Offline,
    Error,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ModelServiceStatus {
    Pending,
    Online,
    Degraded,
    Scaling,
    Offline,
    TurnedOff,
    Error,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ProviderName {
    OpenAi,
    LegacyOpenAi,
    Harmony,
    Google,
    Anthropic,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(rename_items = "PascalCase")]
pub enum ModelCapabilityFilter {
    Embedding,
    TextGeneration,
    ImageUnderstanding,
    Reasoning,
    Regression,
}

impl ModelCapabilityFilter {
    fn as_str(self) -> &'static str {
        match self {
            ModelCapabilityFilter::Embedding => "Embedding",
            ModelCapabilityFilter::TextGeneration => "TextGeneration",
            ModelCapabilityFilter::ImageUnderstanding => "ImageUnderstanding",
            ModelCapabilityFilter::Reasoning => "Reasoning",
            ModelCapabilityFilter::Regression => "Regression",
        }
    }
}

#[derive(SimpleObject)]
#[graphql(name = "ModelComputeConfig")]
pub struct ComputeConfigView {
    pub tp: i64,
    pub kv_cache_len: i64,
    pub max_seq_len: i64,
}

impl From<ComputeConfig> for ComputeConfigView {
    fn from(config: ComputeConfig) -> Self {
        Self {
            tp: config.tp,
            kv_cache_len: config.kv_cache_len,
            max_seq_len: config.max_seq_len,
        }
    }
}

#[derive(SimpleObject)]
#[graphql(name = "ModelPlacement")]
pub struct PlacementView {
    pub compute_pools: Vec<String>,
    pub max_ttft_ms: Option<i64>,
}

pub struct ModelView(pub Model);

async fn served_by_a_replica(context: &Context<'_>, model_key: &str) -> GqlResult<bool> {
    let registry = registry(context)?;
    let replicas = routable_replicas_for_model(registry.as_ref(), model_key)
        .await
        .gql()?;
    Ok(!replicas.is_empty())
}

async fn deployed_anywhere(context: &Context<'_>, model_id: &str) -> GqlResult<bool> {
    let store = store(context)?;
    for project in store.model_projects(model_id).await.gql()? {
        let services = store.list_model_services(&project.id).await.gql()?;
        if services
            .iter()
            .any(|service| service.model_id == model_id && service.desired_online)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn model_online(context: &Context<'_>, model: &Model) -> GqlResult<ModelOnline> {
    if served_by_a_replica(context, &model.key).await? {
        return Ok(ModelOnline::Online);
    }
    if deployed_anywhere(context, &model.id).await? {
        return Ok(ModelOnline::Pending);
    }
    Ok(ModelOnline::Offline)
}

#[Object(name = "Model")]
impl ModelView {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn key(&self) -> &str {
        &self.0.key
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn created_at(&self) -> Timestamp {
        Timestamp(self.0.created_at)
    }
    async fn online(&self, context: &Context<'_>) -> GqlResult<ModelOnline> {
        model_online(context, &self.0).await
    }
    async fn error(&self) -> Option<String> {
        None
    }
    async fn is_external(&self) -> bool {
        false
    }
    async fn provider_name(&self) -> ProviderName {
        ProviderName::Harmony
    }
    async fn is_adapter(&self) -> bool {
        false
    }
    async fn is_training(&self) -> bool {
        false
    }
    async fn in_storage(&self) -> bool {
        true
    }
    async fn is_published(&self) -> bool {
        self.0.published
    }
    async fn is_stable(&self) -> bool {
        self.0.stable
    }
    async fn size(&self) -> Option<i64> {
        self.0.size_bytes
    }
    async fn family(&self) -> Option<&str> {
        self.0.family.as_deref()
    }
    async fn capabilities(&self) -> &[String] {
        &self.0.capabilities
    }
    /// Where harmony loads the model from.
    async fn harmony_url(&self) -> &str {
        &self.0.path
    }
    async fn compute_config(&self) -> ComputeConfigView {
        self.0.compute_config.into()
    }
    /// Adapters are not supported yet: no model has a backbone.
    async fn backbone(&self) -> Option<ModelView> {
        None
    }
    async fn projects(&self, context: &Context<'_>) -> GqlResult<Vec<ProjectView>> {
        let projects = store(context)?.model_projects(&self.0.id).await.gql()?;
        Ok(projects.into_iter().map(ProjectView).collect())
    }
}

pub struct ModelServiceView(pub ModelService);

#[Object(name = "ModelService")]
impl ModelServiceView {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn project_id(&self) -> ID {
        ID(self.0.project_id.clone())
    }
    async fn key(&self) -> &str {
        &self.0.key
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn model(&self, context: &Context<'_>) -> GqlResult<ModelView> {
        let model = store(context)?.get_model(&self.0.model_id).await.gql()?;
        Ok(ModelView(model))
    }
    async fn is_default(&self) -> bool {
        self.0.is_default
    }
    async fn desired_online(&self) -> bool {
        self.0.desired_online
    }
    async fn created_at(&self) -> Timestamp {
        Timestamp(self.0.created_at)
    }
    async fn placement(&self) -> PlacementView {
        PlacementView {
            compute_pools: self.0.placement.compute_pools.clone(),
            max_ttft_ms: self.0.placement.max_ttft_ms,
        }
    }
    async fn status(&self, context: &Context<'_>) -> GqlResult<ModelServiceStatus> {
        if !self.0.desired_online {
            return Ok(ModelServiceStatus::TurnedOff);
        }
        let model = store(context)?.get_model(&self.0.model_id).await.gql()?;
        if served_by_a_replica(context, &model.key).await? {
            return Ok(ModelServiceStatus::Online);
        }
        Ok(ModelServiceStatus::Pending)
    }
}

#[derive(InputObject)]
pub struct CapabilityFilter {
    pub any: Option<Vec<ModelCapabilityFilter>>,
    pub all: Option<Vec<ModelCapabilityFilter>>,
}

#[derive(InputObject)]
pub struct ModelFilter {
    pub in_storage: Option<bool>,
    pub available: Option<bool>,
    pub trainable: Option<bool>,
    pub capabilities: Option<CapabilityFilter>,
    pub view_all: Option<bool>,
    pub online: Option<Vec<ModelOnline>>,
    pub published: Option<bool>,
}

#[derive(InputObject)]
pub struct AddModelInput {
    pub path: String,
    pub name: String,
    pub key: Option<String>,
}

#[derive(InputObject)]
pub struct AddModelsToProjectInput {
    pub project: String,
    pub models: Vec<String>,
}

#[derive(InputObject)]
pub struct RemoveModelFromProjectInput {
    pub project: String,
    pub model: String,
}

#[derive(InputObject)]
pub struct DeleteModelInput {
    /// The model's id or key.
    pub model: String,
}

#[derive(InputObject)]
pub struct ModelPlacementInput {
    pub compute_pools: Vec<String>,
    pub max_ttft_ms: Option<i64>,
}

impl From<ModelPlacementInput> for Placement {
    fn from(input: ModelPlacementInput) -> Self {
        Placement {
            compute_pools: input.compute_pools,
            max_ttft_ms: input.max_ttft_ms,
        }
    }
}

#[derive(InputObject)]
pub struct SpeculativeDecodingInput {
    pub num_draft_steps: i64,
}

#[derive(InputObject)]
pub struct DeployModelInput {
    pub project: String,
    pub model: String,
    pub placement: Option<ModelPlacementInput>,
    #[graphql(default)]
    pub wait: bool,
    pub speculative_decoding: Option<SpeculativeDecodingInput>,
}

#[derive(InputObject)]
pub struct UpdateModelService {
    pub project: String,
    pub model_service: String,
    pub is_default: Option<bool>,
    pub desired_online: Option<bool>,
    pub name: Option<String>,
    pub system_prompt_template: Option<String>,
    pub placement: Option<ModelPlacementInput>,
    pub tool_providers: Option<Vec<String>>,
    pub speculative_decoding: Option<SpeculativeDecodingInput>,
}

#[derive(InputObject)]
pub struct ModelComputeConfigInput {
    pub tp: Option<i64>,
    pub kv_cache_len: Option<i64>,
    pub max_seq_len: Option<i64>,
}

#[derive(SimpleObject)]
pub struct AddModelsToProjectFailure {
    pub model: String,
    pub reason: String,
}

#[derive(SimpleObject)]
pub struct AddModelsToProjectResult {
    pub success: bool,
    pub failures: Vec<AddModelsToProjectFailure>,
}

#[derive(SimpleObject)]
pub struct DeployModelResult {
    pub model_service: ModelServiceView,
    pub warnings: Vec<String>,
}

#[derive(Default)]
pub struct ModelQueries;

#[Object]
impl ModelQueries {
    async fn models(
        &self,
        context: &Context<'_>,
        filter: ModelFilter,
    ) -> GqlResult<Vec<ModelView>> {
        let models = store(context)?.list_models().await.gql()?;
        let mut selected = Vec::with_capacity(models.len());
        for model in models {
            if !matches_capabilities(&model, filter.capabilities.as_ref()) {
                continue;
            }
            if let Some(wanted) = &filter.online {
                let status = model_online(context, &model).await?;
                if !wanted.contains(&status) {
                    continue;
                }
            }
            selected.push(ModelView(model));
        }
        Ok(selected)
    }

    async fn model(
        &self,
        context: &Context<'_>,
        id_or_key: IdOrKey,
    ) -> GqlResult<Option<ModelView>> {
        let model = optional(store(context)?.get_model(id_or_key.as_str()).await)?;
        Ok(model.map(ModelView))
    }
}

fn matches_capabilities(model: &Model, filter: Option<&CapabilityFilter>) -> bool {
    let Some(filter) = filter else {
        return true;
    };
    let has = |capability: &ModelCapabilityFilter| {
        model
            .capabilities
            .iter()
            .any(|own| own == capability.as_str())
    };
    let any_ok = filter
        .any
        .as_ref()
        .is_none_or(|wanted| wanted.is_empty() || wanted.iter().any(has));
    let all_ok = filter
        .all
        .as_ref()
        .is_none_or(|wanted| wanted.iter().all(has));
    any_ok && all_ok
}

#[derive(Default)]
pub struct ModelMutations;

#[Object]
impl ModelMutations {
    /// Register a model from a registry path (`model_registry://key`, a directory, a `.gguf`).
    async fn add_model(&self, context: &Context<'_>, input: AddModelInput) -> GqlResult<ModelView> {
        let model = store(context)?
            .add_model(NewModel {
                path: input.path,
                name: input.name,
                key: input.key,
                ..NewModel::default()
            })
            .await
            .gql()?;
        Ok(ModelView(model))
    }

    async fn add_models_to_project(
        &self,
        context: &Context<'_>,
        input: AddModelsToProjectInput,
    ) -> GqlResult<AddModelsToProjectResult> {
        let store = store(context)?;
        let project = store.get_project(&input.project).await.gql()?;
        let mut failures = Vec::new();
        for model in input.models {
            if let Err(error) = store.attach_model(&project.id, &model).await {
                let api_error = crate::error::ApiError::from(error);
                if api_error.error_code().http_status() >= 500 {
                    return Err(api_error.into_graphql());
                }
                failures.push(AddModelsToProjectFailure {
                    model,
                    reason: api_error.public_message(),
                });
            }
        }
        Ok(AddModelsToProjectResult {
            success: failures.is_empty(),
            failures,
        })
    }

    async fn deploy_model(
        &self,
        context: &Context<'_>,
        input: DeployModelInput,
    ) -> GqlResult<DeployModelResult> {
        let mut warnings = Vec::new();
        if input.wait {
            warnings.push(
                "wait is not supported yet: the model is deployed and comes online when a replica loads it"
                    .to_owned(),
            );
        }
        if input.speculative_decoding.is_some() {
            warnings.push("speculative decoding is not supported yet and was ignored".to_owned());
        }
        let service = store(context)?
            .deploy_model(DeployRequest {
                project: input.project,
                model: input.model,
                placement: input.placement.map(Placement::from),
            })
            .await
            .gql()?;
        Ok(DeployModelResult {
            model_service: ModelServiceView(service),
            warnings,
        })
    }

    async fn remove_model_from_project(
        &self,
        context: &Context<'_>,
        input: RemoveModelFromProjectInput,
    ) -> GqlResult<bool> {
        store(context)?
            .remove_model_from_project(&input.project, &input.model)
            .await
            .gql()
    }

    /// Delete a model: its project attachments, its entry and, for a `model_registry://`
    /// model, its objects in the registry. Refused (`conflict`) while a project has it
    /// deployed.
    async fn delete_model(
        &self,
        context: &Context<'_>,
        input: DeleteModelInput,
    ) -> GqlResult<bool> {
        crate::model_storage::delete_model(store(context)?, model_storage(context)?, &input.model)
            .await
            .gql()?;
        Ok(true)
    }

    async fn update_model_service(
        &self,
        context: &Context<'_>,
        input: UpdateModelService,
    ) -> GqlResult<ModelServiceView> {
        let service = store(context)?
            .update_model_service(ModelServiceUpdate {
                project: input.project,
                model_service: input.model_service,
                is_default: input.is_default,
                desired_online: input.desired_online,
                name: input.name,
                system_prompt_template: input.system_prompt_template,
                placement: input.placement.map(Placement::from),
            })
            .await
            .gql()?;
        Ok(ModelServiceView(service))
    }

    async fn update_model_compute_config(
        &self,
        context: &Context<'_>,
        id_or_key: IdOrKey,
        input: ModelComputeConfigInput,
    ) -> GqlResult<ModelView> {
        let model = store(context)?
            .update_model_compute_config(
                id_or_key.as_str(),
                ComputeConfigUpdate {
                    tp: input.tp,
                    kv_cache_len: input.kv_cache_len,
                    max_seq_len: input.max_seq_len,
                },
            )
            .await
            .gql()?;
        Ok(ModelView(model))
    }

    async fn terminate_model(
        &self,
        context: &Context<'_>,
        id_or_key: IdOrKey,
        force: bool,
    ) -> GqlResult<String> {
        let turned_off = store(context)?
            .terminate_model(id_or_key.as_str(), force)
            .await
            .gql()?;
        Ok(format!(
            "model '{}' terminated in {turned_off} project(s)",
            id_or_key.as_str()
        ))
    }
}
