//! docs/configuration.md is checked against the key table (which a unit test checks against
//! the config structs): every key is documented with its environment name, and nothing else is.

use std::collections::BTreeSet;

use adaptive_control_plane::config::keys::{env_name, KEYS};

fn reference() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    std::fs::read_to_string(path).expect("docs/configuration.md exists")
}

#[test]
fn every_key_is_documented_with_its_environment_name_and_default() {
    let document = reference();
    for spec in KEYS {
        let row = document
            .lines()
            .find(|line| line.starts_with(&format!("| `{}` ", spec.path)))
            .unwrap_or_else(|| panic!("docs/configuration.md has no row for `{}`", spec.path));
        assert!(row.contains(&format!("`{}`", env_name(spec.path))), "{row}");
        if !spec.default.is_empty() {
            assert!(
                row.contains(&format!("`{}`", spec.default)),
                "default of {}: {row}",
                spec.path
            );
        }
        if spec.secret {
            assert!(row.contains("secret"), "{} is a secret: {row}", spec.path);
        }
    }
}

#[test]
fn the_reference_documents_no_unknown_key() {
    let known: BTreeSet<&str> = KEYS.iter().map(|spec| spec.path).collect();
    for line in reference().lines().filter(|line| line.starts_with("| `")) {
        let key = line
            .trim_start_matches("| `")
            .split('`')
            .next()
            .unwrap_or_default();
        assert!(
            known.contains(key),
            "docs/configuration.md documents unknown key `{key}`"
        );
    }
}
