//! `usage-api rollup`: bring usage_monthly up to date with usage_events.

use clap::Args;

use crate::config::DatabaseArgs;
use crate::usage::rollup;

#[derive(Debug, Args)]
pub struct RollupArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Rebuild every aggregate from all events instead of only the groups marked dirty.
    #[arg(long)]
    pub full: bool,
}

pub async fn run(args: RollupArgs) -> anyhow::Result<()> {
    let mut conn = super::connect(&args.db).await?;
    let stats = if args.full {
        rollup::run_full(&mut conn).await?
    } else {
        rollup::run_until_clean(&mut conn).await?
    };
    println!(
        "aggregates: {}, changed: {}, removed: {}",
        stats.groups, stats.changed, stats.removed
    );
    Ok(())
}
