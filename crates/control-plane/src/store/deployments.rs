//! Model services: a model attached to a project, deployed (desired online) or not, with its
//! placement on compute pools. This is the desired state harmony replicas converge to
//! ([`MetadataStore::desired_models_for_pool`]) and what the gateway resolves requests against
//! ([`MetadataStore::resolve_model_service`]).

use super::models::MODEL_COLUMNS;
use super::{
    flag, looks_like_id, new_id, now_ms, MetadataStore, Model, ModelService, Placement,
    ResolvedModelService, StoreError,
};

/// Input of [`MetadataStore::deploy_model`].
#[derive(Debug, Clone, Default)]
pub struct DeployRequest {
    pub project: String,
    pub model: String,
    /// `None` keeps the current placement (every pool for a new service).
    pub placement: Option<Placement>,
}

/// Input of [`MetadataStore::update_model_service`]; `None` leaves a field unchanged.
#[derive(Debug, Clone, Default)]
pub struct ModelServiceUpdate {
    pub project: String,
    /// The model service's id or key (its key is the model's key).
    pub model_service: String,
    pub is_default: Option<bool>,
    pub desired_online: Option<bool>,
    pub name: Option<String>,
    pub system_prompt_template: Option<String>,
    pub placement: Option<Placement>,
}

const SERVICE_COLUMNS: &str = "id, project_id, model_id, key, name, is_default, desired_online, \
     placement_pools, max_ttft_ms, system_prompt_template, created_at";

impl MetadataStore {
    /// Attach a model to a project (idempotent). The first model of a project becomes its
    /// default. Attaching does not deploy.
    pub async fn attach_model(
        &self,
        project_id_or_key: &str,
        model_id_or_key: &str,
    ) -> Result<ModelService, StoreError> {
        let project = self.get_project(project_id_or_key).await?;
        let model = self.get_model(model_id_or_key).await?;
        if let Some(existing) = self.find_service_for_model(&project.id, &model.id).await? {
            return Ok(existing);
        }
        let has_default = self
            .list_model_services(&project.id)
            .await?
            .iter()
            .any(|service| service.is_default);
        let service = ModelService {
            id: new_id(),
            project_id: project.id.clone(),
            model_id: model.id.clone(),
            key: model.key.clone(),
            name: model.name.clone(),
            is_default: !has_default,
            desired_online: false,
            placement: Placement::default(),
            system_prompt_template: None,
            created_at: now_ms(),
        };
        let inserted = sqlx::query(&format!(
            "INSERT INTO model_services ({SERVICE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (project_id, model_id) DO NOTHING"
        ))
        .bind(&service.id)
        .bind(&service.project_id)
        .bind(&service.model_id)
        .bind(&service.key)
        .bind(&service.name)
        .bind(flag(service.is_default))
        .bind(flag(service.desired_online))
        .bind(serde_json::to_string(&service.placement.compute_pools)?)
        .bind(service.placement.max_ttft_ms)
        .bind(&service.system_prompt_template)
        .bind(service.created_at)
        .execute(self.pool())
        .await?;
        if inserted.rows_affected() == 0 {
            // A concurrent attach won; return its row.
            return self
                .find_service_for_model(&project.id, &model.id)
                .await?
                .ok_or_else(|| StoreError::not_found("model service", &model.key));
        }
        Ok(service)
    }

    /// Attach if needed, then mark the service desired online with the given placement.
    pub async fn deploy_model(&self, request: DeployRequest) -> Result<ModelService, StoreError> {
        let service = self.attach_model(&request.project, &request.model).await?;
        if let Some(placement) = &request.placement {
            self.validate_placement(placement).await?;
        }
        let placement = request.placement.unwrap_or(service.placement.clone());
        sqlx::query(
            "UPDATE model_services SET desired_online = 1, placement_pools = $1, max_ttft_ms = $2 \
             WHERE id = $3",
        )
        .bind(serde_json::to_string(&placement.compute_pools)?)
        .bind(placement.max_ttft_ms)
        .bind(&service.id)
        .execute(self.pool())
        .await?;
        Ok(ModelService {
            desired_online: true,
            placement,
            ..service
        })
    }

    async fn validate_placement(&self, placement: &Placement) -> Result<(), StoreError> {
        if let Some(max_ttft_ms) = placement.max_ttft_ms {
            if max_ttft_ms <= 0 {
                return Err(StoreError::Invalid(
                    "placement.maxTtftMs must be positive".to_owned(),
                ));
            }
        }
        for pool in &placement.compute_pools {
            if self.find_compute_pool(pool).await?.is_none() {
                return Err(StoreError::not_found("compute pool", pool));
            }
        }
        Ok(())
    }

    pub async fn update_model_service(
        &self,
        update: ModelServiceUpdate,
    ) -> Result<ModelService, StoreError> {
        let project = self.get_project(&update.project).await?;
        let service = self
            .find_model_service(&project.id, &update.model_service)
            .await?
            .ok_or_else(|| StoreError::not_found("model service", &update.model_service))?;
        if let Some(placement) = &update.placement {
            self.validate_placement(placement).await?;
        }
        let updated = ModelService {
            is_default: update.is_default.unwrap_or(service.is_default),
            desired_online: update.desired_online.unwrap_or(service.desired_online),
            name: update.name.unwrap_or(service.name.clone()),
            system_prompt_template: update
                .system_prompt_template
                .or(service.system_prompt_template.clone()),
            placement: update.placement.unwrap_or(service.placement.clone()),
            ..service
        };
        let mut transaction = self.pool().begin().await?;
        if updated.is_default {
            sqlx::query("UPDATE model_services SET is_default = 0 WHERE project_id = $1")
                .bind(&project.id)
                .execute(&mut *transaction)
                .await?;
        }
        sqlx::query(
            "UPDATE model_services SET is_default = $1, desired_online = $2, name = $3, \
             system_prompt_template = $4, placement_pools = $5, max_ttft_ms = $6 WHERE id = $7",
        )
        .bind(flag(updated.is_default))
        .bind(flag(updated.desired_online))
        .bind(&updated.name)
        .bind(&updated.system_prompt_template)
        .bind(serde_json::to_string(&updated.placement.compute_pools)?)
        .bind(updated.placement.max_ttft_ms)
        .bind(&updated.id)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(updated)
    }

    /// Detach a model from a project. Returns whether it was attached.
    pub async fn remove_model_from_project(
        &self,
        project_id_or_key: &str,
        model_id_or_key: &str,
    ) -> Result<bool, StoreError> {
        let project = self.get_project(project_id_or_key).await?;
        let Some(service) = self
            .find_model_service(&project.id, model_id_or_key)
            .await?
        else {
            return Ok(false);
        };
        let result = sqlx::query("DELETE FROM model_services WHERE id = $1")
            .bind(&service.id)
            .execute(self.pool())
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Take a model offline everywhere. Refused without `force` when more than one project has
    /// it deployed. Returns how many services were turned off.
    pub async fn terminate_model(&self, id_or_key: &str, force: bool) -> Result<u64, StoreError> {
        let model = self.get_model(id_or_key).await?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM model_services WHERE model_id = $1 AND desired_online = 1",
        )
        .bind(&model.id)
        .fetch_one(self.pool())
        .await?;
        let deployed_in = super::rows::int(&row, "n")?;
        if deployed_in > 1 && !force {
            return Err(StoreError::Conflict(format!(
                "model '{}' is deployed in {deployed_in} projects; pass force to terminate it everywhere",
                model.key
            )));
        }
        let result =
            sqlx::query("UPDATE model_services SET desired_online = 0 WHERE model_id = $1")
                .bind(&model.id)
                .execute(self.pool())
                .await?;
        Ok(result.rows_affected())
    }

    pub async fn list_model_services(
        &self,
        project_id: &str,
    ) -> Result<Vec<ModelService>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SERVICE_COLUMNS} FROM model_services WHERE project_id = $1 ORDER BY created_at, key"
        ))
        .bind(project_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(ModelService::from_row).collect()
    }

    /// A project's model service by its id, its key or its model's key.
    pub async fn find_model_service(
        &self,
        project_id: &str,
        id_or_key: &str,
    ) -> Result<Option<ModelService>, StoreError> {
        let column = if looks_like_id(id_or_key) {
            "id"
        } else {
            "key"
        };
        let row = sqlx::query(&format!(
            "SELECT {SERVICE_COLUMNS} FROM model_services WHERE project_id = $1 AND {column} = $2"
        ))
        .bind(project_id)
        .bind(id_or_key)
        .fetch_optional(self.pool())
        .await?;
        if let Some(row) = row {
            return Ok(Some(ModelService::from_row(&row)?));
        }
        let Some(model) = self.find_model(id_or_key).await? else {
            return Ok(None);
        };
        self.find_service_for_model(project_id, &model.id).await
    }

    async fn find_service_for_model(
        &self,
        project_id: &str,
        model_id: &str,
    ) -> Result<Option<ModelService>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SERVICE_COLUMNS} FROM model_services WHERE project_id = $1 AND model_id = $2"
        ))
        .bind(project_id)
        .bind(model_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(ModelService::from_row).transpose()
    }

    pub async fn get_model_service_by_id(&self, id: &str) -> Result<ModelService, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SERVICE_COLUMNS} FROM model_services WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::not_found("model service", id))?;
        ModelService::from_row(&row)
    }

    /// Resolve the `model` field of an inference request: `"project"` (the project's default
    /// model service) or `"project/model"` (the service with that key, or of that model).
    pub async fn resolve_model_service(
        &self,
        target: &str,
    ) -> Result<ResolvedModelService, StoreError> {
        let (project_key, service_key) = match target.split_once('/') {
            Some((project, service)) => (project, Some(service)),
            None => (target, None),
        };
        if project_key.is_empty() || service_key == Some("") {
            return Err(StoreError::Invalid(format!(
                "model '{target}' must be 'project' or 'project/model'"
            )));
        }
        let project = self.get_project(project_key).await?;
        let service = match service_key {
            Some(key) => self
                .find_model_service(&project.id, key)
                .await?
                .ok_or_else(|| StoreError::not_found("model", format!("{project_key}/{key}")))?,
            None => self
                .list_model_services(&project.id)
                .await?
                .into_iter()
                .find(|service| service.is_default)
                .ok_or_else(|| StoreError::NotFound {
                    what: "default model of project",
                    id: project_key.to_owned(),
                })?,
        };
        let model = self.get_model(&service.model_id).await?;
        Ok(ResolvedModelService {
            project_id: project.id,
            project_key: project.key,
            model_service_id: service.id,
            model_service_key: service.key,
            model_id: model.id,
            model_key: model.key,
            model_path: model.path,
            placement: service.placement,
            desired_online: service.desired_online,
            is_default: service.is_default,
            system_prompt_template: service.system_prompt_template,
            compute_config: model.compute_config,
        })
    }

    /// Models deployed (desired online) to any project whose placement includes `pool`
    /// (an empty placement means every pool), each once.
    pub async fn desired_models_for_pool(&self, pool: &str) -> Result<Vec<Model>, StoreError> {
        let rows = sqlx::query(
            "SELECT model_id, placement_pools FROM model_services WHERE desired_online = 1",
        )
        .fetch_all(self.pool())
        .await?;
        let mut model_ids: Vec<String> = Vec::new();
        for row in &rows {
            let pools: Vec<String> = super::rows::json(row, "placement_pools")?;
            let placement = Placement {
                compute_pools: pools,
                max_ttft_ms: None,
            };
            let model_id = super::rows::text(row, "model_id")?;
            if placement.includes_pool(pool) && !model_ids.contains(&model_id) {
                model_ids.push(model_id);
            }
        }
        let mut models = Vec::with_capacity(model_ids.len());
        for model_id in model_ids {
            let row = sqlx::query(&format!("SELECT {MODEL_COLUMNS} FROM models WHERE id = $1"))
                .bind(&model_id)
                .fetch_one(self.pool())
                .await?;
            models.push(Model::from_row(&row)?);
        }
        models.sort_by(|left, right| left.key.cmp(&right.key));
        Ok(models)
    }
}
