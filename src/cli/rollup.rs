//! `usage-api rollup`: bring usage_monthly up to date with usage_events.

use clap::Args;

use crate::config::DatabaseArgs;
use crate::usage::rollup;

#[derive(Debug, Args)]
pub struct RollupArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Rebuild every aggregate from all events instead of only the groups marked dirty (a plain
    /// run does so by itself when most groups are dirty, as after a bulk load).
    #[arg(long)]
    pub full: bool,
}

pub async fn run(args: RollupArgs) -> anyhow::Result<()> {
    let mut conn = super::connect(&args.db).await?;
    let stats = if args.full {
        rollup::run_full(&mut conn).await?
    } else {
        let (strategy, stats) = rollup::run_sized(&mut conn, rollup::SET_BASED_MIN_MARKS).await?;
        if strategy == rollup::Strategy::SetBased {
            eprintln!("most groups were dirty: one set-based pass over every event");
        }
        stats
    };
    println!(
        "aggregates: {}, changed: {}, removed: {}",
        stats.groups, stats.changed, stats.removed
    );
    Ok(())
}
