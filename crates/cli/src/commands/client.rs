//! Client commands over a running control plane. Placeholder: implemented by its owner.

#[derive(Debug, clap::Subcommand)]
pub enum ProjectsCommand {
    /// List projects.
    List,
}

#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// List models.
    List,
}

#[derive(Debug, clap::Args)]
pub struct ChatArgs {}

pub async fn run_projects(_command: ProjectsCommand) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

pub async fn run_models(_command: ModelsCommand) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

pub async fn run_chat(_args: ChatArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
