//! `usage-api migrate`: create the database if missing and apply pending migrations.

use clap::Args;

use crate::config::DatabaseArgs;
use crate::db;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    if db::migrate::ensure_database(&args.db.database_url).await? {
        println!("created the database");
    }
    let applied = db::migrate::run(&args.db.database_url).await?;
    println!("applied {applied} migration(s)");
    Ok(())
}
