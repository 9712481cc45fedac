//! Users, teams, roles, memberships and API keys.
//!
//! API keys are `ak_` + 64 hex characters (32 random bytes). Only their SHA-256 is stored; the
//! plaintext is returned once, at creation. Looking a key up hashes the presented key and
//! matches the hash (a unique index), so no plaintext key ever sits in the database.

use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{
    new_id, now_ms, unique_violation, MetadataStore, Role, StoreError, Team, TeamMembership, User,
};
use crate::config::SecretString;

/// Every permission the built-in `admin` role holds.
pub const ADMIN_PERMISSIONS: &[&str] = &[
    "project:read",
    "project:create",
    "project:adapt",
    "model:read",
    "model:manage",
    "metric:read",
    "metric:create",
    "admin:manage_roles",
    "admin:manage_teams",
    "admin:manage_users",
];

pub(crate) fn hash_api_key(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

pub(crate) fn generate_api_key() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::new(format!("ak_{}", hex::encode(bytes)))
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

    /// A role by key, created with `permissions` if it does not exist.
    pub async fn ensure_role(
        &self,
        key: &str,
        name: &str,
        permissions: &[&str],
    ) -> Result<Role, StoreError> {
        sqlx::query(
            "INSERT INTO roles (id, key, name, permissions, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (key) DO NOTHING",
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

    pub async fn create_user(&self, email: &str, name: &str) -> Result<User, StoreError> {
        if !email.contains('@') {
            return Err(StoreError::Invalid(format!(
                "'{email}' is not an email address"
            )));
        }
        let user = User {
            id: new_id(),
            email: email.to_owned(),
            name: name.to_owned(),
            created_at: now_ms(),
        };
        sqlx::query("INSERT INTO users (id, email, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&user.id)
            .bind(&user.email)
            .bind(&user.name)
            .bind(user.created_at)
            .execute(self.pool())
            .await
            .map_err(|error| unique_violation(error, "user", email))?;
        Ok(user)
    }

    pub async fn get_user(&self, id: &str) -> Result<User, StoreError> {
        let row = sqlx::query("SELECT id, email, name, created_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::not_found("user", id))?;
        User::from_row(&row)
    }

    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query("SELECT id, email, name, created_at FROM users ORDER BY email")
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

    /// Create an API key for a user: a random one, or `plaintext` when given (bootstrap from
    /// configuration). Returns the plaintext, which is not stored.
    pub async fn create_api_key(
        &self,
        user_id: &str,
        plaintext: Option<SecretString>,
    ) -> Result<SecretString, StoreError> {
        let key = plaintext.unwrap_or_else(generate_api_key);
        if key.expose().len() < 16 {
            return Err(StoreError::Invalid(
                "an API key must be at least 16 characters".to_owned(),
            ));
        }
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, key_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(new_id())
        .bind(user_id)
        .bind(hash_api_key(key.expose()))
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(|error| unique_violation(error, "api key", "(redacted)"))?;
        Ok(key)
    }

    /// The user an API key belongs to, if the key is valid.
    pub async fn user_for_api_key(&self, plaintext: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT u.id, u.email, u.name, u.created_at FROM api_keys k \
             JOIN users u ON u.id = k.user_id WHERE k.key_hash = $1",
        )
        .bind(hash_api_key(plaintext))
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(User::from_row).transpose()
    }
}
