//! `usage-api token`: mint a development token (HS256 with OAUTH_DEV_SECRET).

use clap::Args;

use crate::auth::{dev, READ_SCOPE};
use crate::config::AuthArgs;

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The organization the token speaks for.
    #[arg(long)]
    pub org: String,
    /// Scopes to grant (repeat or space-separate). Default: the read scope.
    #[arg(long = "scope", num_args = 1..)]
    pub scopes: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub ttl: u64,
    #[command(flatten)]
    pub auth: AuthArgs,
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let config = args.auth.config()?;
    let mut scopes = super::scopes(&args.scopes);
    if scopes.is_empty() {
        scopes.push(READ_SCOPE.to_owned());
    }
    anyhow::ensure!(!args.org.trim().is_empty(), "--org must not be empty");
    println!("{}", dev::mint(&config, &args.org, &scopes, args.ttl)?);
    Ok(())
}
