use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

fn load_env(pairs: &[(&str, &str)]) -> Result<LoadedConfig, ConfigError> {
    Config::load(&ConfigSources {
        file: None,
        env: env(pairs),
    })
}

fn write_file(directory: &tempfile::TempDir, name: &str, contents: &str) -> PathBuf {
    let path = directory.path().join(name);
    std::fs::write(&path, contents).expect("write");
    path
}

#[test]
fn no_sources_give_the_embedded_defaults() {
    let loaded = load_env(&[]).expect("loads");
    assert_eq!(loaded.config, Config::default());
    assert_eq!(loaded.secrets, Secrets::default());
}

#[test]
fn env_overrides_the_file() {
    let directory = tempfile::tempdir().expect("tempdir");
    let file = write_file(
        &directory,
        "config.toml",
        "[server]\nbind = \"127.0.0.1:8000\"\ntimeout_seconds = 10\n[db]\nrun_migrations = true\n",
    );
    let loaded = Config::load(&ConfigSources {
        file: Some(file),
        env: env(&[
            ("ADAPTIVE_SERVER__BIND", "127.0.0.1:9100"),
            ("ADAPTIVE_DB__RUN_MIGRATIONS", "false"),
            ("ADAPTIVE_AUTH__SESSION__EXPIRATION_SECONDS", "42"),
            ("ADAPTIVE_AUTH__ADMINS", "[\"a@example.com\"]"),
            ("ADAPTIVE_MODEL_REGISTRY", "s3://bucket/model_registry"),
            ("ADAPTIVE_API_KEY", "not-a-config-key"),
        ]),
    })
    .expect("loads");
    let config = loaded.config;
    assert_eq!(config.server.bind, "127.0.0.1:9100".parse().expect("addr"));
    assert_eq!(config.server.timeout_seconds, 10);
    assert!(!config.db.run_migrations);
    assert_eq!(config.auth.session.expiration_seconds, 42);
    assert_eq!(config.auth.admins, vec!["a@example.com".to_owned()]);
    assert_eq!(
        config.model_registry.as_deref(),
        Some("s3://bucket/model_registry")
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    let error = load_env(&[("ADAPTIVE_DB__PASWORD", "x")]).expect_err("unknown");
    let message = error.to_string();
    assert!(message.contains("db.pasword"), "{message}");
    assert!(message.contains("ADAPTIVE_DB__PASWORD"), "{message}");

    let directory = tempfile::tempdir().expect("tempdir");
    let file = write_file(&directory, "config.toml", "[server]\nbnd = \"x\"\n");
    let error = Config::load(&ConfigSources {
        file: Some(file),
        env: BTreeMap::new(),
    })
    .expect_err("unknown");
    assert!(error.to_string().contains("server.bnd"), "{error}");
}

#[test]
fn invalid_values_are_rejected_with_the_key() {
    for (name, value, key) in [
        ("ADAPTIVE_DB__RUN_MIGRATIONS", "maybe", "db.run_migrations"),
        ("ADAPTIVE_SERVER__BIND", "not an address", "server.bind"),
        ("ADAPTIVE_DB__MAX_CONNECTIONS", "-3", "db.max_connections"),
        ("ADAPTIVE_AUTH__ADMINS", "a@b.c", "auth.admins"),
    ] {
        let error = load_env(&[(name, value)]).expect_err(name);
        assert!(error.to_string().contains(key), "{name}: {error}");
    }
    let directory = tempfile::tempdir().expect("tempdir");
    let file = write_file(
        &directory,
        "config.toml",
        "[db]\nrun_migrations = \"yes\"\n",
    );
    let error = Config::load(&ConfigSources {
        file: Some(file),
        env: BTreeMap::new(),
    })
    .expect_err("invalid");
    assert!(error.to_string().contains("db.run_migrations"), "{error}");
}

#[test]
fn missing_required_values_are_named() {
    let error = load_env(&[
        ("ADAPTIVE_DB__HOST", "db:5432"),
        ("ADAPTIVE_DB__USERNAME", "u"),
    ])
    .expect_err("missing database");
    assert!(error.to_string().contains("db.database"), "{error}");
}

#[test]
fn secrets_come_from_files_and_stay_out_of_config() {
    let directory = tempfile::tempdir().expect("tempdir");
    let password_file = write_file(&directory, "password", "s3cret-from-file\n");
    let loaded = load_env(&[
        ("ADAPTIVE_DB__HOST", "db:5432"),
        ("ADAPTIVE_DB__USERNAME", "adaptive"),
        ("ADAPTIVE_DB__DATABASE", "adaptive"),
        ("ADAPTIVE_DB__PASSWORD", "inline-password"),
        (
            "ADAPTIVE_DB__PASSWORD_FILE",
            password_file.to_str().expect("utf-8"),
        ),
        ("ADAPTIVE_APP__SECRET", "cookie-secret"),
    ])
    .expect("loads");
    let password = loaded
        .secrets
        .db_password
        .as_ref()
        .expect("password set")
        .read("db.password")
        .expect("reads");
    assert_eq!(password.expose(), "s3cret-from-file");
    let printed = format!("{:?}", loaded);
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(!printed.contains("inline-password"), "{printed}");
    assert!(!printed.contains("cookie-secret"), "{printed}");
}

#[test]
fn file_secrets_are_accepted_in_the_config_file() {
    let directory = tempfile::tempdir().expect("tempdir");
    let password_file = write_file(&directory, "password", "pw");
    let file = write_file(
        &directory,
        "config.toml",
        &format!(
            "[db]\npassword_file = {:?}\n[[auth.oidc.providers]]\nkey = \"google\"\nname = \"Google\"\n",
            password_file.display().to_string()
        ),
    );
    let loaded = Config::load(&ConfigSources {
        file: Some(file),
        env: BTreeMap::new(),
    })
    .expect("loads");
    assert!(matches!(
        loaded.secrets.db_password,
        Some(SecretSource::File(_))
    ));
    let providers = loaded
        .secrets
        .oidc_providers
        .as_ref()
        .expect("providers")
        .read("auth.oidc.providers")
        .expect("reads");
    assert!(providers.expose().contains("google"));
}

#[test]
fn non_secret_keys_cannot_be_read_from_files() {
    let error = load_env(&[("ADAPTIVE_SERVER__BIND_FILE", "/tmp/x")]).expect_err("not a secret");
    assert!(error.to_string().contains("server.bind_file"), "{error}");
}

fn sample_value(spec: &KeySpec) -> &'static str {
    match (spec.kind, spec.path) {
        (_, path) if path.starts_with("server.bind") => "127.0.0.1:1234",
        (ValueKind::String, _) => "sample",
        (ValueKind::Bool, _) => {
            if spec.default == "true" {
                "false"
            } else {
                "true"
            }
        }
        (ValueKind::Integer, _) => "123456",
        (ValueKind::StringList, _) => "[\"sample\"]",
    }
}

#[test]
fn every_key_in_the_table_sets_a_field_or_a_secret() {
    for spec in keys::KEYS {
        let name = keys::env_name(spec.path);
        let mut pairs = vec![(name.clone(), sample_value(spec).to_owned())];
        if spec.path.starts_with("db.host") {
            pairs.push(("ADAPTIVE_DB__DATABASE".to_owned(), "d".to_owned()));
            pairs.push(("ADAPTIVE_DB__USERNAME".to_owned(), "u".to_owned()));
        }
        if spec.path == "harmony.shared_directory.type" {
            // Checked against the url: a free-form sample would be refused.
            pairs[0].1 = "local".to_owned();
        }
        if spec.path == "harmony.heartbeat_interval_ms" {
            pairs.push((
                "ADAPTIVE_HARMONY__REPLICA_TTL_MS".to_owned(),
                "999999".to_owned(),
            ));
        }
        let loaded = Config::load(&ConfigSources {
            file: None,
            env: pairs.into_iter().collect(),
        })
        .unwrap_or_else(|error| panic!("{name}: {error}"));
        let changed = loaded.config != Config::default() || loaded.secrets != Secrets::default();
        assert!(changed, "{name} did not change the configuration");
    }
}

#[test]
fn every_struct_field_is_in_the_key_table() {
    let mut config = Config::default();
    config.server.root_url = Some(String::new());
    config.server.cluster_root_url = Some(String::new());
    config.db.username = Some(String::new());
    config.db.host = Some(String::new());
    config.db.database = Some(String::new());
    config.harmony.url = Some(String::new());
    config.harmony.shared_directory = SharedDirectoryConfig {
        kind: Some(String::new()),
        url: Some(String::new()),
        path: Some(String::new()),
        endpoint: Some(String::new()),
        force_path_style: false,
    };
    config.model_registry = Some(String::new());
    let paths = struct_key_paths(&config);
    assert!(paths.len() > 20, "{paths:?}");
    for path in paths {
        let spec = keys::find(&path).unwrap_or_else(|| panic!("{path} is not in keys::KEYS"));
        assert!(!spec.secret, "{path} is a secret but also a config field");
    }
}

#[test]
fn the_shared_directory_is_a_url_a_path_or_the_data_dir() {
    let loaded = load_env(&[("ADAPTIVE_APP__DATA_DIR", "/srv/adaptive")]).expect("loads");
    assert_eq!(
        loaded.config.shared_directory_location(),
        "/srv/adaptive/shared"
    );
    let loaded = load_env(&[
        ("ADAPTIVE_HARMONY__SHARED_DIRECTORY__TYPE", "s3"),
        (
            "ADAPTIVE_HARMONY__SHARED_DIRECTORY__URL",
            "s3://bucket/shared",
        ),
        (
            "ADAPTIVE_HARMONY__SHARED_DIRECTORY__ENDPOINT",
            "http://127.0.0.1:8333",
        ),
    ])
    .expect("loads");
    assert_eq!(
        loaded.config.shared_directory_location(),
        "s3://bucket/shared"
    );
    let env = loaded
        .config
        .shared_directory_env(&adaptive_registry::StoreEnv::from_pairs([(
            "AWS_ENDPOINT_URL_S3",
            "http://elsewhere",
        )]));
    assert_eq!(
        env.get("AWS_ENDPOINT_URL_S3"),
        Some("http://127.0.0.1:8333")
    );
    let loaded =
        load_env(&[("ADAPTIVE_HARMONY__SHARED_DIRECTORY__PATH", "/mnt/shared")]).expect("loads");
    assert_eq!(loaded.config.shared_directory_location(), "/mnt/shared");

    for (kind, url) in [
        ("s3", "/mnt/shared"),
        ("local", "s3://bucket/x"),
        ("gcs", "gs://b"),
    ] {
        let refused = load_env(&[
            ("ADAPTIVE_HARMONY__SHARED_DIRECTORY__TYPE", kind),
            ("ADAPTIVE_HARMONY__SHARED_DIRECTORY__URL", url),
        ])
        .expect_err("inconsistent type and url");
        assert!(
            refused
                .to_string()
                .contains("harmony.shared_directory.type"),
            "{refused}"
        );
    }
}

#[test]
fn dataset_processing_timings_are_read_checked_and_become_the_policy() {
    let loaded = load_env(&[
        ("ADAPTIVE_DATASETS__CLAIM_TTL_SECONDS", "120"),
        ("ADAPTIVE_DATASETS__SWEEP_INTERVAL_SECONDS", "10"),
        ("ADAPTIVE_DATASETS__MAX_EXPIRED_CLAIMS", "2"),
    ])
    .expect("loads");
    let policy = crate::datasets::DatasetPolicy::from(&loaded.config.datasets);
    assert_eq!(policy.claim_ttl, std::time::Duration::from_secs(120));
    assert_eq!(policy.sweep_interval, std::time::Duration::from_secs(10));
    assert_eq!(policy.max_expired_claims, 2);
    assert_eq!(
        crate::datasets::DatasetPolicy::default(),
        crate::datasets::DatasetPolicy::from(&DatasetsConfig::default())
    );
    for key in ["CLAIM_TTL_SECONDS", "SWEEP_INTERVAL_SECONDS"] {
        let error =
            load_env(&[(&format!("ADAPTIVE_DATASETS__{key}"), "0")]).expect_err("zero is refused");
        assert!(
            error.to_string().contains(&key.to_lowercase()),
            "{key}: {error}"
        );
    }
}
