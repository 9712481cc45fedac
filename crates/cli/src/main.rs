//! `adaptive`: one binary for every role.
//!
//! Each subcommand lives in its own module under `commands/` with an `Args` struct and a `run`
//! function. Server roles follow the same boot order: tracing → config → build → spawn → wait for
//! a signal → drain with a grace timeout.

mod commands;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "adaptive",
    version,
    about = "Serve, evaluate and tune LLMs on your own GPUs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process: control plane, an in-process harmony replica, embedded stores.
    Serve(commands::serve::Args),
    /// The stateless control plane (API, UI, routing).
    ControlPlane(commands::control_plane::Args),
    /// A harmony worker (inference engine) that registers with a control plane.
    Harmony(commands::harmony::Args),
    /// Engine benchmarks (prompt processing, decode, TTFT), optionally against llama.cpp.
    Bench(commands::bench::Args),
    /// Projects on a running control plane.
    #[command(subcommand)]
    Projects(commands::client::ProjectsCommand),
    /// Models on a running control plane (list, add, deploy, import into the registry).
    #[command(subcommand)]
    Models(commands::client::ModelsCommand),
    /// Chat with a deployed model through the OpenAI-compatible API.
    Chat(commands::client::ChatArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => commands::serve::run(args).await,
            Command::ControlPlane(args) => commands::control_plane::run(args).await,
            Command::Harmony(args) => commands::harmony::run(args).await,
            Command::Bench(args) => commands::bench::run(args).await,
            Command::Projects(command) => commands::client::run_projects(command).await,
            Command::Models(command) => commands::client::run_models(command).await,
            Command::Chat(args) => commands::client::run_chat(args).await,
        }
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => commands::report_fatal(&error),
    }
}
