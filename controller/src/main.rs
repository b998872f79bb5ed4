//! The `lxd-operator` command.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Runs LXD containers declaratively, on a Kubernetes cluster or standalone.
#[derive(Debug, Parser)]
#[command(name = "lxd-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions of every kind as YAML.
    Crds,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crds => print_crds(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lxd-operator: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_crds() -> anyhow::Result<()> {
    let yaml = lxd_operator_crds::generate::crd_yaml()?;
    std::io::stdout().lock().write_all(yaml.as_bytes())?;
    Ok(())
}
