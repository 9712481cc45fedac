//! Projects and their shares with teams.

use super::{
    flag, looks_like_id, new_id, now_ms, slugify, unique_violation, validate_key, MetadataStore,
    Project, ProjectShare, Role, StoreError, Team,
};

/// Input of [`MetadataStore::create_project`].
#[derive(Debug, Clone, Default)]
pub struct NewProject {
    /// Defaults to the name turned into a key.
    pub key: Option<String>,
    pub name: String,
    pub description: Option<String>,
}

const PROJECT_COLUMNS: &str = "id, key, name, description, archived, created_at";

impl MetadataStore {
    pub async fn create_project(&self, input: NewProject) -> Result<Project, StoreError> {
        let key = input.key.clone().unwrap_or_else(|| slugify(&input.name));
        validate_key("project", &key)?;
        if input.name.trim().is_empty() {
            return Err(StoreError::Invalid("a project needs a name".to_owned()));
        }
        let project = Project {
            id: new_id(),
            key,
            name: input.name,
            description: input.description.unwrap_or_default(),
            archived: false,
            created_at: now_ms(),
        };
        sqlx::query(
            "INSERT INTO projects (id, key, name, description, archived, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&project.id)
        .bind(&project.key)
        .bind(&project.name)
        .bind(&project.description)
        .bind(flag(project.archived))
        .bind(project.created_at)
        .execute(self.pool())
        .await
        .map_err(|error| unique_violation(error, "project", &project.key))?;
        Ok(project)
    }

    /// A project by id or key; archived projects included.
    pub async fn find_project(&self, id_or_key: &str) -> Result<Option<Project>, StoreError> {
        let column = if looks_like_id(id_or_key) {
            "id"
        } else {
            "key"
        };
        let row = sqlx::query(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE {column} = $1"
        ))
        .bind(id_or_key)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(Project::from_row).transpose()
    }

    pub async fn get_project(&self, id_or_key: &str) -> Result<Project, StoreError> {
        self.find_project(id_or_key)
            .await?
            .ok_or_else(|| StoreError::not_found("project", id_or_key))
    }

    pub async fn list_projects(&self) -> Result<Vec<Project>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE archived = 0 ORDER BY created_at, key"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(Project::from_row).collect()
    }

    pub async fn count_projects(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM projects")
            .fetch_one(self.pool())
            .await?;
        super::rows::int(&row, "n")
    }

    /// Replace a project's shares: `(team key, role key, is_owner)`.
    pub async fn share_project(
        &self,
        project_id: &str,
        shares: &[(String, String, bool)],
    ) -> Result<Vec<ProjectShare>, StoreError> {
        let mut resolved = Vec::with_capacity(shares.len());
        for (team_key, role_key, is_owner) in shares {
            let team = self.get_team(team_key).await?;
            let role = self.get_role(role_key).await?;
            resolved.push((team, role, *is_owner));
        }
        let mut transaction = self.pool().begin().await?;
        sqlx::query("DELETE FROM project_shares WHERE project_id = $1")
            .bind(project_id)
            .execute(&mut *transaction)
            .await?;
        for (team, role, is_owner) in &resolved {
            sqlx::query(
                "INSERT INTO project_shares (project_id, team_id, role_id, is_owner) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(project_id)
            .bind(&team.id)
            .bind(&role.id)
            .bind(flag(*is_owner))
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        self.list_project_shares(project_id).await
    }

    pub async fn list_project_shares(
        &self,
        project_id: &str,
    ) -> Result<Vec<ProjectShare>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.is_owner, \
                    t.id AS t_id, t.key AS t_key, t.name AS t_name, t.created_at AS t_created_at, \
                    r.id AS r_id, r.key AS r_key, r.name AS r_name, r.permissions AS r_permissions, \
                    r.created_at AS r_created_at \
             FROM project_shares s \
             JOIN teams t ON t.id = s.team_id \
             JOIN roles r ON r.id = s.role_id \
             WHERE s.project_id = $1 ORDER BY t.key",
        )
        .bind(project_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ProjectShare {
                    team: Team::from_prefixed(row, "t_")?,
                    role: Role::from_prefixed(row, "r_")?,
                    is_owner: super::rows::boolean(row, "is_owner")?,
                })
            })
            .collect()
    }
}
