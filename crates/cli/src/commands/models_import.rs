//! `adaptive models import <dir|file.gguf>`: upload a model into the registry, then
//! (optionally) register it with a control plane.
//!
//! The upload is [`adaptive_registry::import_model`]: multipart, parts in parallel, resumable
//! by re-running the same command (files already uploaded are verified and skipped). With
//! `--control-plane-url` and an API key the model is then added through GraphQL `addModel`
//! with its registry path `model_registry://<key>`, as the SDK does. The registry is reached
//! with the credentials of the AWS environment (see `adaptive_registry::location`).

use std::fmt;
use std::path::{Path, PathBuf};

use adaptive_registry::{
    import_model, ImportOptions, ImportRequest, ImportSummary, Manifest, ModelKey, Registry,
    RegistryError, RegistryStore, StoreEnv,
};
use anyhow::Context;

use super::UsageError;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// An HF-layout model directory (config.json + *.safetensors) or a single .gguf file.
    pub source: PathBuf,
    /// Display name (defaults to the key).
    #[arg(long)]
    pub name: Option<String>,
    /// Registry key (defaults to the file or directory name, lowercased).
    #[arg(long)]
    pub key: Option<String>,
    /// Registry root: s3://bucket/prefix, file:///path or a local path.
    #[arg(long, env = "MODEL_REGISTRY")]
    pub registry: String,
    /// Register the model with this control plane after the upload.
    #[arg(long, env = "ADAPTIVE_CONTROL_PLANE_URL")]
    pub control_plane_url: Option<String>,
    /// API key for the control plane.
    #[arg(long, env = "ADAPTIVE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Multipart part size in MiB (S3 requires at least 5).
    #[arg(long, default_value_t = 16)]
    pub part_size_mib: usize,
    /// Parts uploaded in parallel.
    #[arg(long, default_value_t = 8)]
    pub parallel_parts: usize,
    /// Do not draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

impl fmt::Debug for ImportArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportArgs")
            .field("source", &self.source)
            .field("name", &self.name)
            .field("key", &self.key)
            .field("registry", &self.registry)
            .field("control_plane_url", &self.control_plane_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("part_size_mib", &self.part_size_mib)
            .field("parallel_parts", &self.parallel_parts)
            .field("no_progress", &self.no_progress)
            .finish()
    }
}

pub async fn run_import(args: ImportArgs) -> anyhow::Result<()> {
    let key = match &args.key {
        Some(key) => ModelKey::parse(key).map_err(|error| UsageError(error.to_string()))?,
        None => derive_key(&args.source)?,
    };
    if args.part_size_mib < 5 {
        return Err(UsageError("--part-size-mib must be at least 5".to_owned()).into());
    }
    if args.control_plane_url.is_some() && args.api_key.is_none() {
        return Err(UsageError(
            "--control-plane-url needs an API key (ADAPTIVE_API_KEY or --api-key)".to_owned(),
        )
        .into());
    }
    let store = RegistryStore::from_url(&args.registry, &StoreEnv::from_process())
        .map_err(|error| UsageError(error.to_string()))?;
    let registry = Registry::new(store);
    let request = ImportRequest {
        source: args.source.clone(),
        key: key.clone(),
        name: args.name.clone(),
    };
    let options = ImportOptions {
        part_size: args.part_size_mib << 20,
        max_concurrent_parts: args.parallel_parts.max(1),
        show_progress: !args.no_progress,
    };
    let started = std::time::SystemTime::now();
    let manifest = match import_model(&registry, &request, &options).await {
        Ok(summary) => {
            let elapsed = started.elapsed().unwrap_or_default();
            print_summary(&summary, registry.store().url(), elapsed);
            summary.manifest
        }
        // A re-run after a failed registration: the upload is done, register what is there.
        Err(RegistryError::ModelAlreadyExists { .. }) if args.control_plane_url.is_some() => {
            println!("{} is already in the registry", key.registry_path());
            registry.manifest(&key).await?
        }
        Err(error) => {
            return Err(anyhow::Error::new(error)
                .context(format!("importing {} as '{key}'", args.source.display())))
        }
    };

    if let (Some(url), Some(api_key)) = (&args.control_plane_url, &args.api_key) {
        register_model(url, api_key, &manifest).await?;
        println!(
            "registered with control plane {url} as {}",
            key.registry_path()
        );
    }
    Ok(())
}

fn derive_key(source: &Path) -> anyhow::Result<ModelKey> {
    let is_file = source.is_file();
    let name = if is_file {
        source.file_stem()
    } else {
        source.file_name()
    };
    let name = name
        .and_then(|name| name.to_str())
        .ok_or_else(|| UsageError(format!("cannot derive a key from {}", source.display())))?;
    ModelKey::derive_from_name(name)
        .map_err(|error| UsageError(format!("{error}; pass --key")).into())
}

fn print_summary(summary: &ImportSummary, registry_url: &str, elapsed: std::time::Duration) {
    let manifest = &summary.manifest;
    let total = manifest.total_size();
    let seconds = elapsed.as_secs_f64().max(1e-3);
    println!(
        "imported {} into {registry_url}",
        manifest.key.registry_path()
    );
    println!("  name:           {}", manifest.name);
    let format = serde_json::to_value(manifest.format).unwrap_or_default();
    println!("  format:         {}", format.as_str().unwrap_or("unknown"));
    let unknown = || "unknown".to_owned();
    println!(
        "  architecture:   {}",
        manifest.architecture.clone().unwrap_or_else(unknown)
    );
    println!(
        "  parameters:     {}",
        manifest
            .parameters
            .map(|count| format!("{:.1}M", count as f64 / 1e6))
            .unwrap_or_else(unknown)
    );
    println!(
        "  context length: {}",
        manifest
            .context_length
            .map(|length| length.to_string())
            .unwrap_or_else(unknown)
    );
    println!(
        "  quantization:   {}",
        manifest.quantization.clone().unwrap_or_else(unknown)
    );
    println!(
        "  files:          {} ({:.1} MiB)",
        manifest.files.len(),
        total as f64 / (1 << 20) as f64
    );
    println!(
        "  uploaded:       {} files, {:.1} MiB in {:.1}s ({:.1} MiB/s)",
        summary.uploaded_files,
        summary.uploaded_bytes as f64 / (1 << 20) as f64,
        seconds,
        summary.uploaded_bytes as f64 / (1 << 20) as f64 / seconds
    );
    if summary.resumed_files > 0 {
        println!(
            "  resumed:        {} files ({:.1} MiB) were already uploaded",
            summary.resumed_files,
            summary.resumed_bytes as f64 / (1 << 20) as f64
        );
    }
}

const ADD_MODEL_MUTATION: &str = "mutation AddModel($input: AddModelInput!) { \
    addModel(input: $input) { id key name } }";

/// GraphQL `addModel {path, name, key}` on `<control plane>/api/graphql`.
async fn register_model(
    control_plane_url: &str,
    api_key: &str,
    manifest: &Manifest,
) -> anyhow::Result<()> {
    let endpoint = format!("{}/api/graphql", control_plane_url.trim_end_matches('/'));
    let body = serde_json::json!({
        "query": ADD_MODEL_MUTATION,
        "variables": {"input": {
            "path": manifest.key.registry_path(),
            "name": manifest.name,
            "key": manifest.key.as_str(),
        }},
    });
    let response = reqwest::Client::new()
        .post(&endpoint)
        .bearer_auth(api_key)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("calling {endpoint}"))?;
    let status = response.status();
    let reply: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("reading the reply of {endpoint} (status {status})"))?;
    if let Some(errors) = reply.get("errors").filter(|errors| !errors.is_null()) {
        anyhow::bail!("control plane refused addModel: {errors}");
    }
    if !status.is_success() {
        anyhow::bail!("control plane answered {status}: {reply}");
    }
    Ok(())
}
