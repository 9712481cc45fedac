//! Metrics (feedback keys): global entries linked to the projects that use them.

use super::{
    looks_like_id, new_id, now_ms, slugify, validate_key, MetadataStore, Metric, Project,
    StoreError,
};

/// Input of [`MetadataStore::create_metric`].
#[derive(Debug, Clone, Default)]
pub struct NewMetric {
    pub key: Option<String>,
    pub name: String,
    /// `SCALAR` or `BOOL`.
    pub kind: String,
    /// `HIGHER_IS_BETTER` or `LOWER_IS_BETTER`.
    pub scoring_type: String,
    pub description: Option<String>,
    pub unit: Option<String>,
}

const METRIC_COLUMNS: &str = "id, key, name, kind, scoring_type, description, unit, created_at";

impl MetadataStore {
    /// Create a metric in a project. A metric key that exists already (from another project)
    /// is linked to this project; one that this project has already is AlreadyExists.
    pub async fn create_metric(
        &self,
        project_id_or_key: &str,
        input: NewMetric,
    ) -> Result<Metric, StoreError> {
        let project = self.get_project(project_id_or_key).await?;
        let key = input.key.clone().unwrap_or_else(|| slugify(&input.name));
        validate_key("metric", &key)?;
        if !matches!(input.kind.as_str(), "SCALAR" | "BOOL") {
            return Err(StoreError::Invalid(format!(
                "metric kind must be SCALAR or BOOL, got '{}'",
                input.kind
            )));
        }
        if !matches!(
            input.scoring_type.as_str(),
            "HIGHER_IS_BETTER" | "LOWER_IS_BETTER"
        ) {
            return Err(StoreError::Invalid(format!(
                "scoring type must be HIGHER_IS_BETTER or LOWER_IS_BETTER, got '{}'",
                input.scoring_type
            )));
        }
        let metric = match self.find_metric(&key).await? {
            Some(existing) => existing,
            None => {
                let metric = Metric {
                    id: new_id(),
                    key: key.clone(),
                    name: input.name,
                    kind: input.kind,
                    scoring_type: input.scoring_type,
                    description: input.description.unwrap_or_default(),
                    unit: input.unit,
                    created_at: now_ms(),
                };
                sqlx::query(&format!(
                    "INSERT INTO metrics ({METRIC_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (key) DO NOTHING"
                ))
                .bind(&metric.id)
                .bind(&metric.key)
                .bind(&metric.name)
                .bind(&metric.kind)
                .bind(&metric.scoring_type)
                .bind(&metric.description)
                .bind(&metric.unit)
                .bind(metric.created_at)
                .execute(self.pool())
                .await?;
                self.find_metric(&key)
                    .await?
                    .ok_or_else(|| StoreError::not_found("metric", &key))?
            }
        };
        let linked = sqlx::query(
            "INSERT INTO metric_projects (metric_id, project_id) VALUES ($1, $2) \
             ON CONFLICT (metric_id, project_id) DO NOTHING",
        )
        .bind(&metric.id)
        .bind(&project.id)
        .execute(self.pool())
        .await?;
        if linked.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists {
                what: "metric",
                key,
            });
        }
        Ok(metric)
    }

    pub async fn find_metric(&self, id_or_key: &str) -> Result<Option<Metric>, StoreError> {
        let column = if looks_like_id(id_or_key) {
            "id"
        } else {
            "key"
        };
        let row = sqlx::query(&format!(
            "SELECT {METRIC_COLUMNS} FROM metrics WHERE {column} = $1"
        ))
        .bind(id_or_key)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(Metric::from_row).transpose()
    }

    /// A metric as seen from a project: NotFound unless the project uses it.
    pub async fn get_project_metric(
        &self,
        metric: &str,
        project: &str,
    ) -> Result<Metric, StoreError> {
        let project = self.get_project(project).await?;
        let found = self
            .find_metric(metric)
            .await?
            .ok_or_else(|| StoreError::not_found("metric", metric))?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM metric_projects WHERE metric_id = $1 AND project_id = $2",
        )
        .bind(&found.id)
        .bind(&project.id)
        .fetch_one(self.pool())
        .await?;
        if super::rows::int(&row, "n")? == 0 {
            return Err(StoreError::not_found(
                "metric",
                format!("{}/{metric}", project.key),
            ));
        }
        Ok(found)
    }

    pub async fn list_metrics(&self) -> Result<Vec<Metric>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {METRIC_COLUMNS} FROM metrics ORDER BY key"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(Metric::from_row).collect()
    }

    pub async fn list_project_metrics(&self, project_id: &str) -> Result<Vec<Metric>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.id, m.key, m.name, m.kind, m.scoring_type, m.description, m.unit, m.created_at \
             FROM metrics m JOIN metric_projects l ON l.metric_id = m.id WHERE l.project_id = $1 ORDER BY m.key",
        )
        .bind(project_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(Metric::from_row).collect()
    }

    pub async fn metric_projects(&self, metric_id: &str) -> Result<Vec<Project>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.id, p.key, p.name, p.description, p.archived, p.created_at \
             FROM projects p JOIN metric_projects l ON l.project_id = p.id WHERE l.metric_id = $1 ORDER BY p.key",
        )
        .bind(metric_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(Project::from_row).collect()
    }

    pub async fn metric_has_scores(&self, metric_id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM scores WHERE metric_id = $1")
            .bind(metric_id)
            .fetch_one(self.pool())
            .await?;
        Ok(super::rows::int(&row, "n")? > 0)
    }
}
