//! `tollgatectl`: see the library for the commands.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tollgate_cli::run(tollgate_cli::Cli::parse()).await
}
