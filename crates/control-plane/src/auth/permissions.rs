//! Permissions (`resource:action`, reference §2.2) and the built-in roles.
//!
//! Permissions are a closed set, so a role's permissions fit in one machine word
//! ([`PermissionSet`]) and checking one on the inference path is a bit test. Custom roles may
//! hold any subset; a permission string this build does not know is refused when a role is
//! created and ignored (with a warning) when an old row holds one.

use std::fmt;

macro_rules! permissions {
    ($($variant:ident => $name:literal: $doc:literal,)*) => {
        /// One permission. The string form is what the API shows and roles store.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Permission {
            $(#[doc = $doc] $variant,)*
        }

        impl Permission {
            /// Every permission, in the order `permissions` lists them.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant,)*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Permission::$variant => $name,)*
                }
            }

            pub fn parse(name: &str) -> Option<Permission> {
                match name {
                    $($name => Some(Permission::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

permissions! {
    ProjectRead => "project:read": "see a project, its model services, metrics and interactions",
    ProjectCreate => "project:create": "create projects",
    ProjectUpdate => "project:update": "rename, describe and share a project",
    ProjectAdapt => "project:adapt": "train and evaluate models in a project",
    ModelRead => "model:read": "see the model registry",
    ModelUse => "model:use": "call a project's models for inference",
    ModelDeploy => "model:deploy": "deploy, update and terminate a project's model services",
    ModelManage => "model:manage": "add, update and delete registry models",
    MetricRead => "metric:read": "see metrics and scores",
    MetricCreate => "metric:create": "create, update and link metrics",
    MetricScore => "metric:score": "score and annotate interactions",
    DatasetRead => "dataset:read": "see and download datasets",
    DatasetCreate => "dataset:create": "upload and delete datasets",
    ComputeRead => "compute:read": "see compute pools and harmony replicas",
    ComputeManage => "compute:manage": "resize and restart compute pools",
    ManageRoles => "admin:manage_roles": "create and change roles",
    ManageTeams => "admin:manage_teams": "create teams",
    ManageUsers => "admin:manage_users": "create, delete and assign users; manage other users' API keys",
}

impl fmt::Display for Permission {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A set of permissions, as a bit set over [`Permission::ALL`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PermissionSet(u64);

const _: () = assert!(Permission::ALL.len() <= 64);

impl PermissionSet {
    pub const EMPTY: PermissionSet = PermissionSet(0);

    pub const fn of(permissions: &[Permission]) -> PermissionSet {
        let mut bits = 0u64;
        let mut index = 0;
        while index < permissions.len() {
            bits |= 1 << permissions[index] as u32;
            index += 1;
        }
        PermissionSet(bits)
    }

    pub fn all() -> PermissionSet {
        PermissionSet::of(Permission::ALL)
    }

    pub fn contains(self, permission: Permission) -> bool {
        self.0 & (1 << permission as u32) != 0
    }

    pub fn union(self, other: PermissionSet) -> PermissionSet {
        PermissionSet(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .iter()
            .copied()
            .filter(move |permission| self.contains(*permission))
    }

    /// The set named by stored strings; unknown names are skipped with a warning.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> PermissionSet {
        let mut set = PermissionSet::EMPTY;
        for name in names {
            match Permission::parse(name.as_ref()) {
                Some(permission) => set = set.union(PermissionSet::of(&[permission])),
                None => {
                    tracing::warn!(permission = name.as_ref(), "ignoring an unknown permission")
                }
            }
        }
        set
    }

    /// Parse names given by a client: every one must be known.
    pub fn parse_all<S: AsRef<str>>(names: &[S]) -> Result<PermissionSet, String> {
        let mut set = PermissionSet::EMPTY;
        for name in names {
            let permission = Permission::parse(name.as_ref()).ok_or_else(|| {
                format!(
                    "unknown permission '{}'; the query `permissions` lists them",
                    name.as_ref()
                )
            })?;
            set = set.union(PermissionSet::of(&[permission]));
        }
        Ok(set)
    }

    pub fn names(self) -> Vec<String> {
        self.iter()
            .map(|permission| permission.as_str().to_owned())
            .collect()
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_set()
            .entries(self.iter().map(Permission::as_str))
            .finish()
    }
}

/// A role every installation has (created at start, never deleted).
#[derive(Debug, Clone, Copy)]
pub struct BuiltinRole {
    pub key: &'static str,
    pub name: &'static str,
    pub permissions: PermissionSet,
}

use Permission::*;

const READ: &[Permission] = &[ProjectRead, ModelRead, MetricRead, DatasetRead, ComputeRead];

const fn read_plus<const N: usize>(extra: [Permission; N]) -> PermissionSet {
    PermissionSet(PermissionSet::of(READ).0 | PermissionSet::of(&extra).0)
}

/// The roles of reference §2.2. `admin` holds every permission, including ones added later.
pub const BUILTIN_ROLES: &[BuiltinRole] = &[
    BuiltinRole {
        key: "admin",
        name: "Admin",
        permissions: PermissionSet::of(Permission::ALL),
    },
    BuiltinRole {
        key: "platform_admin",
        name: "Platform Admin",
        permissions: read_plus([ManageRoles, ManageTeams, ManageUsers]),
    },
    BuiltinRole {
        key: "power_user",
        name: "Power User",
        permissions: read_plus([
            ProjectCreate,
            ProjectUpdate,
            ProjectAdapt,
            ModelUse,
            ModelDeploy,
            MetricCreate,
            MetricScore,
            DatasetCreate,
        ]),
    },
    BuiltinRole {
        key: "read-only",
        name: "Read Only",
        permissions: PermissionSet::of(READ),
    },
    BuiltinRole {
        key: "inference",
        name: "Inference",
        permissions: PermissionSet::of(&[ProjectRead, ModelRead, ModelUse]),
    },
    BuiltinRole {
        key: "annotator",
        name: "Annotator",
        permissions: PermissionSet::of(&[
            ProjectRead,
            ModelRead,
            MetricRead,
            MetricScore,
            DatasetRead,
        ]),
    },
];

/// The reserved team whose members' roles apply to every project and to global operations
/// (creating projects, roles, teams, users; the model registry; compute).
pub const ADMIN_TEAM: &str = "admin";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_resource_action() {
        for permission in Permission::ALL {
            assert_eq!(Permission::parse(permission.as_str()), Some(*permission));
            let (resource, action) = permission
                .as_str()
                .split_once(':')
                .expect("resource:action");
            assert!(!resource.is_empty() && !action.is_empty());
        }
    }

    #[test]
    fn sets_hold_exactly_what_was_put_in() {
        let set = PermissionSet::of(&[ModelUse, ManageUsers]);
        for permission in Permission::ALL {
            assert_eq!(
                set.contains(*permission),
                matches!(permission, ModelUse | ManageUsers)
            );
        }
        assert_eq!(PermissionSet::from_names(&set.names()), set);
        assert!(PermissionSet::parse_all(&["model:use", "nope:nope"]).is_err());
    }

    #[test]
    fn admin_holds_everything_and_the_others_less() {
        let admin = BUILTIN_ROLES[0];
        assert_eq!(admin.permissions, PermissionSet::all());
        for role in &BUILTIN_ROLES[1..] {
            assert!(!role.permissions.is_empty());
            assert_ne!(role.permissions, PermissionSet::all(), "{}", role.key);
        }
    }
}
