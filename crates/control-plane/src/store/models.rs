//! The model registry: models as global entries (key, path, family, compute config).
//! Attaching and deploying them to projects is in `deployments.rs`.

use super::{
    flag, looks_like_id, new_id, now_ms, slugify, unique_violation, validate_key, ComputeConfig,
    MetadataStore, Model, Project, StoreError,
};

/// Input of [`MetadataStore::add_model`].
#[derive(Debug, Clone, Default)]
pub struct NewModel {
    /// `model_registry://<key>`, a local directory or a `.gguf` file.
    pub path: String,
    pub name: String,
    /// Defaults to the name turned into a key.
    pub key: Option<String>,
    pub family: Option<String>,
    pub size_bytes: Option<i64>,
    /// Defaults to `["TextGeneration"]`.
    pub capabilities: Vec<String>,
    pub compute_config: Option<ComputeConfig>,
}

/// Input of [`MetadataStore::update_model_compute_config`]; `None` keeps the current value.
#[derive(Debug, Clone, Copy, Default)]
pub struct ComputeConfigUpdate {
    pub tp: Option<i64>,
    pub kv_cache_len: Option<i64>,
    pub max_seq_len: Option<i64>,
}

pub(crate) const MODEL_COLUMNS: &str =
    "id, key, name, path, family, size_bytes, capabilities, tp, \
     kv_cache_len, max_seq_len, published, stable, created_at";

impl MetadataStore {
    pub async fn add_model(&self, input: NewModel) -> Result<Model, StoreError> {
        if input.path.trim().is_empty() {
            return Err(StoreError::Invalid("a model needs a path".to_owned()));
        }
        if input.name.trim().is_empty() {
            return Err(StoreError::Invalid("a model needs a name".to_owned()));
        }
        let key = input.key.clone().unwrap_or_else(|| slugify(&input.name));
        validate_key("model", &key)?;
        let capabilities = if input.capabilities.is_empty() {
            vec!["TextGeneration".to_owned()]
        } else {
            input.capabilities
        };
        let model = Model {
            id: new_id(),
            key,
            name: input.name,
            path: input.path,
            family: input.family,
            size_bytes: input.size_bytes,
            capabilities,
            compute_config: input.compute_config.unwrap_or_default(),
            published: false,
            stable: false,
            created_at: now_ms(),
        };
        validate_compute_config(&model.compute_config)?;
        sqlx::query(&format!(
            "INSERT INTO models ({MODEL_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(&model.id)
        .bind(&model.key)
        .bind(&model.name)
        .bind(&model.path)
        .bind(&model.family)
        .bind(model.size_bytes)
        .bind(serde_json::to_string(&model.capabilities)?)
        .bind(model.compute_config.tp)
        .bind(model.compute_config.kv_cache_len)
        .bind(model.compute_config.max_seq_len)
        .bind(flag(model.published))
        .bind(flag(model.stable))
        .bind(model.created_at)
        .execute(self.pool())
        .await
        .map_err(|error| unique_violation(error, "model", &model.key))?;
        Ok(model)
    }

    pub async fn find_model(&self, id_or_key: &str) -> Result<Option<Model>, StoreError> {
        let column = if looks_like_id(id_or_key) {
            "id"
        } else {
            "key"
        };
        let row = sqlx::query(&format!(
            "SELECT {MODEL_COLUMNS} FROM models WHERE {column} = $1"
        ))
        .bind(id_or_key)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(Model::from_row).transpose()
    }

    pub async fn get_model(&self, id_or_key: &str) -> Result<Model, StoreError> {
        self.find_model(id_or_key)
            .await?
            .ok_or_else(|| StoreError::not_found("model", id_or_key))
    }

    pub async fn list_models(&self) -> Result<Vec<Model>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {MODEL_COLUMNS} FROM models ORDER BY created_at, key"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(Model::from_row).collect()
    }

    pub async fn update_model_compute_config(
        &self,
        id_or_key: &str,
        update: ComputeConfigUpdate,
    ) -> Result<Model, StoreError> {
        let model = self.get_model(id_or_key).await?;
        let compute_config = ComputeConfig {
            tp: update.tp.unwrap_or(model.compute_config.tp),
            kv_cache_len: update
                .kv_cache_len
                .unwrap_or(model.compute_config.kv_cache_len),
            max_seq_len: update
                .max_seq_len
                .unwrap_or(model.compute_config.max_seq_len),
        };
        validate_compute_config(&compute_config)?;
        sqlx::query("UPDATE models SET tp = $1, kv_cache_len = $2, max_seq_len = $3 WHERE id = $4")
            .bind(compute_config.tp)
            .bind(compute_config.kv_cache_len)
            .bind(compute_config.max_seq_len)
            .bind(&model.id)
            .execute(self.pool())
            .await?;
        Ok(Model {
            compute_config,
            ..model
        })
    }

    /// Deletes a model and the services that attach it to projects, refusing with
    /// [`StoreError::Conflict`] (naming the projects) while any project has it deployed
    /// (desired online). The check and the deletion are one transaction, and the final delete
    /// only succeeds when no service is left, so a concurrent deploy cannot be lost.
    pub async fn delete_model(&self, id_or_key: &str) -> Result<Model, StoreError> {
        let model = self.get_model(id_or_key).await?;
        let mut transaction = self.pool().begin().await?;
        refuse_if_deployed(&mut *transaction, &model).await?;
        sqlx::query("DELETE FROM model_services WHERE model_id = $1 AND desired_online = 0")
            .bind(&model.id)
            .execute(&mut *transaction)
            .await?;
        let deleted = sqlx::query(
            "DELETE FROM models WHERE id = $1 \
             AND NOT EXISTS (SELECT 1 FROM model_services WHERE model_id = $1)",
        )
        .bind(&model.id)
        .execute(&mut *transaction)
        .await?;
        if deleted.rows_affected() == 0 {
            return Err(deployed_conflict(
                &model.key,
                "a project (deployed meanwhile)",
            ));
        }
        transaction.commit().await?;
        Ok(model)
    }

    /// [`StoreError::Conflict`], naming the projects, while any project has the model deployed.
    pub async fn ensure_model_not_deployed(&self, model: &Model) -> Result<(), StoreError> {
        refuse_if_deployed(self.pool(), model).await
    }

    /// How many models load from `path` (several may share one registry entry).
    pub async fn count_models_with_path(&self, path: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM models WHERE path = $1")
            .bind(path)
            .fetch_one(self.pool())
            .await?;
        super::rows::int(&row, "n")
    }

    /// Projects the model is attached to.
    pub async fn model_projects(&self, model_id: &str) -> Result<Vec<Project>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.id, p.key, p.name, p.description, p.archived, p.created_at \
             FROM model_services s JOIN projects p ON p.id = s.project_id \
             WHERE s.model_id = $1 ORDER BY p.key",
        )
        .bind(model_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(Project::from_row).collect()
    }
}

async fn refuse_if_deployed<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    model: &Model,
) -> Result<(), StoreError> {
    let rows = sqlx::query(
        "SELECT p.key FROM model_services s JOIN projects p ON p.id = s.project_id \
         WHERE s.model_id = $1 AND s.desired_online = 1 ORDER BY p.key",
    )
    .bind(&model.id)
    .fetch_all(executor)
    .await?;
    let deployed_in = rows
        .iter()
        .map(|row| super::rows::text(row, "key"))
        .collect::<Result<Vec<_>, _>>()?;
    if deployed_in.is_empty() {
        return Ok(());
    }
    let projects = format!("project(s) {}", deployed_in.join(", "));
    Err(deployed_conflict(&model.key, &projects))
}

fn deployed_conflict(model_key: &str, where_deployed: &str) -> StoreError {
    StoreError::Conflict(format!(
        "model '{model_key}' is deployed in {where_deployed}; take it offline there first \
         (terminateModel, or updateModelService with desiredOnline: false)"
    ))
}

fn validate_compute_config(config: &ComputeConfig) -> Result<(), StoreError> {
    for (name, value) in [
        ("tp", config.tp),
        ("kvCacheLen", config.kv_cache_len),
        ("maxSeqLen", config.max_seq_len),
    ] {
        if value <= 0 {
            return Err(StoreError::Invalid(format!(
                "{name} must be a positive number, got {value}"
            )));
        }
    }
    Ok(())
}
