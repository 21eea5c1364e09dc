//! tracing setup shared by every subcommand: logs go to stderr so command
//! output on stdout stays clean for pipes.

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

pub fn init(filter: &str) -> Result<()> {
    let filter =
        EnvFilter::try_new(filter).with_context(|| format!("bad --log filter {filter:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| anyhow::anyhow!("initialising logging: {e}"))
}
