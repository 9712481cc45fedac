//! Users, teams, roles, memberships, API keys and OIDC identities.
//!
//! API keys are `ak_` + 64 hex characters (32 random bytes). Only their SHA-256 is stored; the
//! plaintext is returned once, at creation. Looking a key up hashes the presented key and
//! matches the hash (a unique index), so no plaintext key ever sits in the database. Keys may
//! expire (`expires_at`) and are revoked (`revoked_at`) when their user is deleted; a deleted
//! user keeps its row (interactions name it) with `deleted_at` set.

use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{
    new_id, now_ms, unique_violation, MetadataStore, Role, StoreError, Team, TeamMembership, User,
};
use crate::config::SecretString;

pub(crate) fn hash_api_key(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

pub(crate) fn generate_api_key() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::new(format!("ak_{}", hex::encode(bytes)))
}

const USER_COLUMNS: &str = "u.id, u.email, u.name, u.user_type, u.created_at, u.deleted_at";

pub const USER_TYPE_HUMAN: &str = "HUMAN";
pub const USER_TYPE_SYSTEM: &str = "SYSTEM";

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub name: String,
    /// [`USER_TYPE_HUMAN`] or [`USER_TYPE_SYSTEM`].
    pub user_type: String,
}

/// What a valid API key grants: its owner, until `expires_at` (ms) if set.
#[derive(Debug, Clone)]
pub struct ApiKeyGrant {
    pub key_id: String,
    pub user: User,
    pub expires_at: Option<i64>,
}

/// A project a user reaches through one of its teams.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectGrant {
    pub team_id: String,
    pub project_id: String,
    pub project_key: String,
}

/// A created API key: its record, and the plaintext shown once.
#[derive(Debug, Clone)]
pub struct IssuedApiKey {
    pub id: String,
    pub plaintext: SecretString,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

impl MetadataStore {
    /// A team by key, created if it does not exist.
    pub async fn ensure_team(&self, key: &str, name: &str) -> Result<Team, StoreError> {
        sqlx::query(
            "INSERT INTO teams (id, key, name, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(new_id())
        .bind(key)
        .bind(name)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        self.get_team(key).await
    }

    /// A role by key with exactly `permissions`: created, or its permissions reset (built-in
    /// roles are kept equal to this build's definition).
    pub async fn ensure_role(
        &self,
        key: &str,
        name: &str,
        permissions: &[String],
    ) -> Result<Role, StoreError> {
        sqlx::query(
            "INSERT INTO roles (id, key, name, permissions, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (key) DO UPDATE SET permissions = excluded.permissions",
        )
        .bind(new_id())
        .bind(key)
        .bind(name)
        .bind(serde_json::to_string(permissions)?)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        self.get_role(key).await
    }

    pub async fn create_team(&self, key: &str, name: &str) -> Result<Team, StoreError> {
        sqlx::query("INSERT INTO teams (id, key, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(new_id())
            .bind(key)
            .bind(name)
            .bind(now_ms())
            .execute(self.pool())
            .await
            .map_err(|error| unique_violation(error, "team", key))?;
        self.get_team(key).await
    }

    pub async fn create_role(
        &self,
        key: &str,
        name: &str,
        permissions: &[String],
    ) -> Result<Role, StoreError> {
        sqlx::query(
            "INSERT INTO roles (id, key, name, permissions, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(new_id())
        .bind(key)
        .bind(name)
        .bind(serde_json::to_string(permissions)?)
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(|error| unique_violation(error, "role", key))?;
        self.get_role(key).await
    }

    pub async fn update_role(
        &self,
        id_or_key: &str,
        name: Option<&str>,
        permissions: Option<&[String]>,
    ) -> Result<Role, StoreError> {
        let role = self.get_role(id_or_key).await?;
        let name = name.unwrap_or(&role.name);
        let permissions = match permissions {
            Some(permissions) => permissions.to_vec(),
            None => role.permissions.clone(),
        };
        sqlx::query("UPDATE roles SET name = $1, permissions = $2 WHERE id = $3")
            .bind(name)
            .bind(serde_json::to_string(&permissions)?)
            .bind(&role.id)
            .execute(self.pool())
            .await?;
        self.get_role(&role.id).await
    }

    pub async fn get_team(&self, id_or_key: &str) -> Result<Team, StoreError> {
        let row = sqlx::query(
            "SELECT id AS t_id, key AS t_key, name AS t_name, created_at AS t_created_at \
             FROM teams WHERE key = $1 OR id = $1",
        )
        .bind(id_or_key)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::not_found("team", id_or_key))?;
        Team::from_prefixed(&row, "t_")
    }

    pub async fn list_teams(&self) -> Result<Vec<Team>, StoreError> {
        let rows = sqlx::query(
            "SELECT id AS t_id, key AS t_key, name AS t_name, created_at AS t_created_at \
             FROM teams ORDER BY key",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Team::from_prefixed(row, "t_"))
            .collect()
    }

    pub async fn get_role(&self, id_or_key: &str) -> Result<Role, StoreError> {
        let row = sqlx::query(
            "SELECT id AS r_id, key AS r_key, name AS r_name, permissions AS r_permissions, \
             created_at AS r_created_at FROM roles WHERE key = $1 OR id = $1",
        )
        .bind(id_or_key)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::not_found("role", id_or_key))?;
        Role::from_prefixed(&row, "r_")
    }

    pub async fn list_roles(&self) -> Result<Vec<Role>, StoreError> {
        let rows = sqlx::query(
            "SELECT id AS r_id, key AS r_key, name AS r_name, permissions AS r_permissions, \
             created_at AS r_created_at FROM roles ORDER BY key",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Role::from_prefixed(row, "r_"))
            .collect()
    }

    pub async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        if !new.email.contains('@') {
            return Err(StoreError::Invalid(format!(
                "'{}' is not an email address",
                new.email
            )));
        }
        let user = User {
            id: new_id(),
            email: new.email.to_lowercase(),
            name: new.name,
            user_type: new.user_type,
            created_at: now_ms(),
            deleted_at: None,
        };
        sqlx::query(
            "INSERT INTO users (id, email, name, user_type, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.name)
        .bind(&user.user_type)
        .bind(user.created_at)
        .execute(self.pool())
        .await
        .map_err(|error| unique_violation(error, "user", &user.email))?;
        Ok(user)
    }

    /// A user by id (deleted ones included: interactions name them).
    pub async fn get_user(&self, id: &str) -> Result<User, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::not_found("user", id))?;
        User::from_row(&row)
    }

    /// An active (not deleted) user by id or email.
    pub async fn find_user(&self, id_or_email: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u \
             WHERE (u.id = $1 OR u.email = $2) AND u.deleted_at IS NULL"
        ))
        .bind(id_or_email)
        .bind(id_or_email.to_lowercase())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(User::from_row).transpose()
    }

    pub async fn get_active_user(&self, id_or_email: &str) -> Result<User, StoreError> {
        self.find_user(id_or_email)
            .await?
            .ok_or_else(|| StoreError::not_found("user", id_or_email))
    }

    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.deleted_at IS NULL ORDER BY u.email"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(User::from_row).collect()
    }

    pub async fn count_users(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(self.pool())
            .await?;
        super::rows::int(&row, "n")
    }

    /// Soft-delete a user: it can no longer log in, its keys are revoked, its memberships end.
    pub async fn delete_user(&self, id_or_email: &str) -> Result<User, StoreError> {
        let user = self.get_active_user(id_or_email).await?;
        let now = now_ms();
        let mut transaction = self.pool().begin().await?;
        sqlx::query("UPDATE users SET deleted_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&user.id)
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(&user.id)
        .execute(&mut *transaction)
        .await?;
        sqlx::query("DELETE FROM team_members WHERE user_id = $1")
            .bind(&user.id)
            .execute(&mut *transaction)
            .await?;
        sqlx::query("DELETE FROM user_identities WHERE user_id = $1")
            .bind(&user.id)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        self.get_user(&user.id).await
    }

    /// Put a user in a team with a role (replacing a previous role in that team).
    pub async fn set_team_member(
        &self,
        user_id: &str,
        team_id: &str,
        role_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO team_members (user_id, team_id, role_id) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, team_id) DO UPDATE SET role_id = excluded.role_id",
        )
        .bind(user_id)
        .bind(team_id)
        .bind(role_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn remove_team_member(&self, user_id: &str, team_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM team_members WHERE user_id = $1 AND team_id = $2")
            .bind(user_id)
            .bind(team_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn user_memberships(&self, user_id: &str) -> Result<Vec<TeamMembership>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.id AS t_id, t.key AS t_key, t.name AS t_name, t.created_at AS t_created_at, \
                    r.id AS r_id, r.key AS r_key, r.name AS r_name, r.permissions AS r_permissions, \
                    r.created_at AS r_created_at \
             FROM team_members m JOIN teams t ON t.id = m.team_id JOIN roles r ON r.id = m.role_id \
             WHERE m.user_id = $1 ORDER BY t.key",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TeamMembership {
                    team: Team::from_prefixed(row, "t_")?,
                    role: Role::from_prefixed(row, "r_")?,
                })
            })
            .collect()
    }

    /// The projects shared with the user's teams, one row per (team, project).
    pub async fn user_project_grants(
        &self,
        user_id: &str,
    ) -> Result<Vec<ProjectGrant>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.team_id, p.id AS project_id, p.key AS project_key \
             FROM team_members m JOIN project_shares s ON s.team_id = m.team_id \
             JOIN projects p ON p.id = s.project_id WHERE m.user_id = $1",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ProjectGrant {
                    team_id: super::rows::text(row, "team_id")?,
                    project_id: super::rows::text(row, "project_id")?,
                    project_key: super::rows::text(row, "project_key")?,
                })
            })
            .collect()
    }

    /// Create an API key for a user: a random one, or `plaintext` when given (bootstrap from
    /// configuration). Returns the plaintext, which is not stored.
    pub async fn create_api_key(
        &self,
        user_id: &str,
        plaintext: Option<SecretString>,
    ) -> Result<SecretString, StoreError> {
        Ok(self
            .issue_api_key(user_id, plaintext, None)
            .await?
            .plaintext)
    }

    /// Create an API key valid until `expires_at` (ms since the epoch) if given.
    pub async fn issue_api_key(
        &self,
        user_id: &str,
        plaintext: Option<SecretString>,
        expires_at: Option<i64>,
    ) -> Result<IssuedApiKey, StoreError> {
        let key = plaintext.unwrap_or_else(generate_api_key);
        if key.expose().len() < 16 {
            return Err(StoreError::Invalid(
                "an API key must be at least 16 characters".to_owned(),
            ));
        }
        let issued = IssuedApiKey {
            id: new_id(),
            plaintext: key,
            created_at: now_ms(),
            expires_at,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, key_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&issued.id)
        .bind(user_id)
        .bind(hash_api_key(issued.plaintext.expose()))
        .bind(issued.created_at)
        .bind(issued.expires_at)
        .execute(self.pool())
        .await
        .map_err(|error| unique_violation(error, "api key", "(redacted)"))?;
        Ok(issued)
    }

    /// Make the user's current keys expire at `at` (ms) at the latest; returns how many changed.
    pub async fn expire_api_keys(&self, user_id: &str, at: i64) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE api_keys SET expires_at = $1 WHERE user_id = $2 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $1)",
        )
        .bind(at)
        .bind(user_id)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected())
    }

    /// Revoke every key of a user now; returns how many were revoked.
    pub async fn revoke_api_keys(&self, user_id: &str) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(user_id)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected())
    }

    /// What a presented key grants, if it is a known, unrevoked key of an active user. Expiry
    /// is returned rather than checked, so callers that cache the grant check it on every use.
    pub async fn api_key_grant(&self, plaintext: &str) -> Result<Option<ApiKeyGrant>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT k.id AS key_id, k.expires_at AS key_expires_at, {USER_COLUMNS} \
             FROM api_keys k JOIN users u ON u.id = k.user_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND u.deleted_at IS NULL"
        ))
        .bind(hash_api_key(plaintext))
        .fetch_optional(self.pool())
        .await?;
        row.as_ref()
            .map(|row| {
                Ok(ApiKeyGrant {
                    key_id: super::rows::text(row, "key_id")?,
                    expires_at: super::rows::opt_int(row, "key_expires_at")?,
                    user: User::from_row(row)?,
                })
            })
            .transpose()
    }

    /// The user a valid, unexpired API key belongs to.
    pub async fn user_for_api_key(&self, plaintext: &str) -> Result<Option<User>, StoreError> {
        let now = now_ms();
        Ok(self
            .api_key_grant(plaintext)
            .await?
            .filter(|grant| grant.expires_at.is_none_or(|at| at > now))
            .map(|grant| grant.user))
    }

    /// The active user linked to an OIDC identity.
    pub async fn user_for_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM user_identities i JOIN users u ON u.id = i.user_id \
             WHERE i.provider = $1 AND i.subject = $2 AND u.deleted_at IS NULL"
        ))
        .bind(provider)
        .bind(subject)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(User::from_row).transpose()
    }

    pub async fn link_identity(
        &self,
        provider: &str,
        subject: &str,
        user_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO user_identities (provider, subject, user_id, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (provider, subject) DO NOTHING",
        )
        .bind(provider)
        .bind(subject)
        .bind(user_id)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
