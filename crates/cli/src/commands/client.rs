//! Client commands over a running control plane: `adaptive projects ...`, `adaptive models ...`,
//! `adaptive chat`. They use the typed client (`adaptive-client`); the server and key come from
//! `--url`/`ADAPTIVE_URL` and `--api-key`/`ADAPTIVE_API_KEY`.

use adaptive_client::ControlPlaneClient;

/// Where the control plane is and how to authenticate.
#[derive(Debug, clap::Args)]
pub struct Connection {
    /// The control plane's public URL.
    #[arg(long, env = "ADAPTIVE_URL", default_value = "http://127.0.0.1:9000")]
    pub url: String,
    /// An API key (printed by the first start of the control plane).
    #[arg(long, env = "ADAPTIVE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

impl Connection {
    fn client(&self) -> ControlPlaneClient {
        ControlPlaneClient::new(self.url.clone(), self.api_key.clone())
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum ProjectsCommand {
    /// List projects.
    List(Connection),
    /// Create a project.
    Create {
        /// The project key (letters, digits, '-', '_', '.').
        key: String,
        /// Display name (defaults to the key).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// List the models of the registry.
    List(Connection),
    /// Register a model from a registry path (model_registry://key), a directory or a .gguf.
    Add {
        path: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Model key (defaults to the name turned into a key).
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Deploy a model to a project (attaching it if needed).
    Deploy {
        /// The model key.
        model: String,
        #[arg(long)]
        project: String,
        /// A compute pool to place it on (repeatable; default every pool).
        #[arg(long = "pool")]
        pools: Vec<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Upload a model (an HF-layout directory or a .gguf file) into the model registry, with a
    /// manifest of checksums, and register it with the control plane when one is given.
    Import(super::models_import::ImportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// `project` or `project/model`.
    #[arg(long)]
    pub model: String,
    /// The user message.
    pub message: String,
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    #[command(flatten)]
    pub connection: Connection,
}

pub async fn run_projects(command: ProjectsCommand) -> anyhow::Result<()> {
    match command {
        ProjectsCommand::List(connection) => {
            let projects = connection.client().list_projects().await?;
            if projects.is_empty() {
                println!("no projects; create one with `adaptive projects create <key>`");
            }
            for project in projects {
                println!("{}\t{}\t{}", project.key, project.name, project.description);
            }
        }
        ProjectsCommand::Create {
            key,
            name,
            description,
            connection,
        } => {
            let project = connection
                .client()
                .create_project(&key, name.as_deref(), description.as_deref())
                .await?;
            println!("created project {} ({})", project.key, project.id);
        }
    }
    Ok(())
}

pub async fn run_models(command: ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::Import(args) => super::models_import::run_import(args).await?,
        ModelsCommand::List(connection) => {
            let models = connection.client().list_models().await?;
            if models.is_empty() {
                println!("no models; add one with `adaptive models add <path> --name <name>`");
            }
            for model in models {
                println!(
                    "{}\t{}\t{}\t{}",
                    model.key, model.online, model.name, model.harmony_url
                );
            }
        }
        ModelsCommand::Add {
            path,
            name,
            key,
            connection,
        } => {
            let model = connection
                .client()
                .add_model(&path, &name, key.as_deref())
                .await?;
            println!("added model {} from {}", model.key, model.harmony_url);
        }
        ModelsCommand::Deploy {
            model,
            project,
            pools,
            connection,
        } => {
            let deployment = connection
                .client()
                .deploy_model(&project, &model, &pools)
                .await?;
            for warning in &deployment.warnings {
                eprintln!("warning: {warning}");
            }
            let placement = if deployment.compute_pools.is_empty() {
                "every pool".to_owned()
            } else {
                deployment.compute_pools.join(", ")
            };
            println!(
                "deployed {} to {project} on {placement}: {}",
                deployment.key, deployment.status
            );
        }
    }
    Ok(())
}

pub async fn run_chat(args: ChatArgs) -> anyhow::Result<()> {
    let answer = args
        .connection
        .client()
        .chat(&args.model, &args.message, args.max_tokens)
        .await?;
    println!("{answer}");
    Ok(())
}
