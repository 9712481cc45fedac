//! The caller's effective permissions, computed once per user and cached.
//!
//! Rule (reference §2.2): a user belongs to teams with one role per team. Roles held in the
//! reserved [`ADMIN_TEAM`] apply everywhere (global operations and every project); a role held
//! in any other team applies to the projects shared with that team. A project's permissions for
//! a user are the union over the ways the user reaches it.

use std::collections::HashMap;

use super::permissions::{Permission, PermissionSet, ADMIN_TEAM};
use crate::store::{MetadataStore, StoreError, User};

#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    /// Permissions that hold everywhere.
    pub global: PermissionSet,
    /// Per project, keyed by both id and key (clients name projects either way).
    projects: HashMap<String, PermissionSet>,
    /// Every permission held on something.
    anywhere: PermissionSet,
    /// The user's teams (by key) and the permissions of its role in each.
    pub teams: Vec<(String, PermissionSet)>,
}

impl Principal {
    pub async fn load(store: &MetadataStore, user: User) -> Result<Principal, StoreError> {
        let memberships = store.user_memberships(&user.id).await?;
        let grants = store.user_project_grants(&user.id).await?;
        let mut global = PermissionSet::EMPTY;
        let mut by_team = HashMap::new();
        let mut teams = Vec::new();
        for membership in &memberships {
            let permissions = PermissionSet::from_names(&membership.role.permissions);
            if membership.team.key == ADMIN_TEAM {
                global = global.union(permissions);
            }
            by_team.insert(membership.team.id.clone(), permissions);
            teams.push((membership.team.key.clone(), permissions));
        }
        let mut projects: HashMap<String, PermissionSet> = HashMap::new();
        for grant in grants {
            let permissions = by_team
                .get(&grant.team_id)
                .copied()
                .unwrap_or(PermissionSet::EMPTY);
            for name in [grant.project_id, grant.project_key] {
                let entry = projects.entry(name).or_default();
                *entry = entry.union(permissions);
            }
        }
        let anywhere = projects
            .values()
            .fold(global, |union, permissions| union.union(*permissions));
        Ok(Principal {
            user,
            global,
            projects,
            anywhere,
            teams,
        })
    }

    /// Whether the caller holds `permission` globally or, when `project` (id or key) is given,
    /// on that project.
    pub fn can(&self, permission: Permission, project: Option<&str>) -> bool {
        self.global.contains(permission)
            || project
                .and_then(|project| self.projects.get(project))
                .is_some_and(|permissions| permissions.contains(permission))
    }

    /// Whether the caller holds `permission` on at least one thing (list queries show what the
    /// caller can see; this decides whether the list may be asked for at all).
    pub fn can_anywhere(&self, permission: Permission) -> bool {
        self.anywhere.contains(permission)
    }

    /// Every permission on `project` (for the UI's `project.permissions`).
    pub fn project_permissions(&self, project_id: &str) -> PermissionSet {
        self.global.union(
            self.projects
                .get(project_id)
                .copied()
                .unwrap_or(PermissionSet::EMPTY),
        )
    }
}
