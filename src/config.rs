//! Configuration, from command-line flags or environment variables (every flag reads one):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DATABASE_URL` | `postgres://localhost/usage_api` | Postgres; created if missing when the role may |
//! | `USAGE_API_DB_POOL_SIZE` | `16` | connections in the server's pool |
//! | `USAGE_API_STATEMENT_TIMEOUT_MS` | `10000` | per-statement timeout on every connection |
//! | `USAGE_API_DB_PARALLEL_WORKERS` | `0` | parallel workers one query of the server may start (`max_parallel_workers_per_gather`) |
//! | `USAGE_API_BIND` | `127.0.0.1:8080` | listen address |
//! | `USAGE_API_PUBLIC_URL` | `http://` + bind | base of every HAL link |
//! | `USAGE_API_ORG_RATE`, `USAGE_API_ORG_BURST` | `100`, `200` | requests a second per organization, and the burst; past it `429 rate_limited` |
//! | `USAGE_API_ORG_CONCURRENCY` | `8` | requests of one organization in flight at once; past it `429 rate_limited` |
//! | `USAGE_API_ORG_EXECUTING` | half the host's cores, ≥ 1 | of those, requests that run at once; the others wait their turn |
//! | `USAGE_API_REQUEST_TIMEOUT_MS` | `10000` | a request's deadline: then `503`, its statements cancelled |
//! | `USAGE_API_ROLLUP_INTERVAL_MS` | `500` | how often `serve` rolls up dirty groups (0: never) |
//! | `OAUTH_JWKS_URL` | — | the issuer's JWKS |
//! | `OAUTH_ISSUER`, `OAUTH_AUDIENCE` | — | required `iss` / `aud` when set |
//! | `OAUTH_ALGORITHMS` | `RS256,ES256,EdDSA` | allowed JWS algorithms (asymmetric only) |
//! | `OAUTH_ORG_CLAIM` | `org_id` | claim naming the caller's organization |
//! | `OAUTH_LEEWAY_SECS` | `30` | clock skew allowed on `exp` / `nbf` |
//! | `OAUTH_JWKS_REFRESHES_PER_MINUTE` | `10` | JWKS fetches that unknown `kid`s may cause (a bucket of as many, refilled evenly) |
//! | `OAUTH_DEV_SECRET` | — | development only: HS256 secret for `token` and `demo`; never beside a JWKS |
//! | `DATABASE_READ_URL` | — | a streaming standby for the read API |
//! | `USAGE_API_MAX_EVENT_AGE_DAYS` | `3650` | oldest `occurred_at` accepted (`serve`, `ingest`) |
//! | `USAGE_API_IDEMPOTENCY_TTL_HOURS` | `24` | how long an `Idempotency-Key` answer is kept |
//! | `USAGE_API_WEBHOOK_ALLOW_HOSTS` | — | callback hosts allowed although loopback/private (then http too) |
//! | `USAGE_API_WEBHOOK_CONCURRENCY` | `16` | webhook deliveries in flight per replica (0: none) |
//! | `USAGE_API_WEBHOOK_TIMEOUT_MS` | `5000` | a delivery's timeout |
//! | `USAGE_API_WEBHOOK_BACKOFF_MS` | `10000` | first retry's delay (then doubling to 1 h, jittered) |
//! | `USAGE_API_WEBHOOK_RETRY_SECS` | `86400` | how long a delivery is retried before it is `failed` |
//! | `USAGE_API_WEBHOOK_POLL_MS` | `1000` | how often the outbox is looked at when nothing wakes the worker |
//!
//! `DATABASE_URL` (and `DATABASE_READ_URL`) take libpq's `sslmode` (`disable`, `prefer`,
//! `require`, `verify-ca`, `verify-full`) and `sslrootcert`: see `db::connect`.

use std::time::Duration;

use clap::Args;
use jsonwebtoken::Algorithm;

use crate::db::PoolOptions;

pub const DEFAULT_DATABASE_URL: &str = "postgres://localhost/usage_api";

/// Half this host's cores, at least one: the default of `USAGE_API_ORG_EXECUTING`.
pub fn default_org_executing() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    u32::try_from(cores / 2).unwrap_or(u32::MAX).max(1)
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Postgres connection URL.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// A read replica for the read API (`GET /express/usage/month…`); the server only. Ingest,
    /// migrations and the rollup always use DATABASE_URL.
    #[arg(long, env = "DATABASE_READ_URL")]
    pub database_read_url: Option<String>,
    /// Connections in the server's pool.
    #[arg(long, env = "USAGE_API_DB_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub db_pool_size: u16,
    /// Per-statement timeout, in milliseconds.
    #[arg(long, env = "USAGE_API_STATEMENT_TIMEOUT_MS", default_value_t = 10_000)]
    pub statement_timeout_ms: u64,
    /// Parallel workers one query of the server may start (Postgres's
    /// `max_parallel_workers_per_gather` on the server's connections). 0: a request's query runs
    /// in one backend, so one organization's heavy reads cannot take every core from the others.
    #[arg(long, env = "USAGE_API_DB_PARALLEL_WORKERS", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub db_parallel_workers: u16,
}

impl DatabaseArgs {
    pub fn pool_options(&self) -> PoolOptions {
        PoolOptions {
            max_size: usize::from(self.db_pool_size),
            statement_timeout: Duration::from_millis(self.statement_timeout_ms),
            parallel_workers: self.db_parallel_workers,
            ..PoolOptions::default()
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Listen address.
    #[arg(long, env = "USAGE_API_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Base URL of every HAL link (scheme, host, optional path prefix). Default: http:// + bind.
    #[arg(long, env = "USAGE_API_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Requests a second one organization may make, sustained (GCRA, per replica).
    #[arg(long, env = "USAGE_API_ORG_RATE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub org_rate: u32,
    /// Requests one organization may make at once above its rate.
    #[arg(long, env = "USAGE_API_ORG_BURST", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub org_burst: u32,
    /// Requests of one organization in flight at once (streaming exports until their last byte).
    #[arg(long, env = "USAGE_API_ORG_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub org_concurrency: u32,
    /// Of those, requests that run at once; the others wait their turn, first come first
    /// served, within their deadline. Default: half this host's cores, at least 1.
    #[arg(long, env = "USAGE_API_ORG_EXECUTING", default_value_t = default_org_executing(), value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub org_executing: u32,
    /// A request's deadline, in milliseconds: past it, `503` and its statements are cancelled.
    #[arg(long, env = "USAGE_API_REQUEST_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub request_timeout_ms: u64,
}

impl HttpArgs {
    pub fn public_url(&self) -> anyhow::Result<String> {
        let base = self
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.bind));
        let parsed = url::Url::parse(&base)
            .map_err(|err| anyhow::anyhow!("USAGE_API_PUBLIC_URL '{base}' is not a URL: {err}"))?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some(),
            "USAGE_API_PUBLIC_URL must be an absolute http(s) URL"
        );
        Ok(base.trim_end_matches('/').to_owned())
    }
}

#[derive(Debug, Clone, Args)]
pub struct EventArgs {
    /// The oldest `occurred_at` accepted, in days before now; older events are rejected
    /// `out_of_range`.
    #[arg(long, env = "USAGE_API_MAX_EVENT_AGE_DAYS", default_value_t = crate::usage::write::event::DEFAULT_MAX_AGE_DAYS, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub max_event_age_days: u32,
}

impl Default for EventArgs {
    fn default() -> Self {
        EventArgs {
            max_event_age_days: crate::usage::write::event::DEFAULT_MAX_AGE_DAYS,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct IdempotencyArgs {
    /// How long an `Idempotency-Key` answer is kept, in hours (then the key is free again and
    /// the answer is deleted).
    #[arg(long, env = "USAGE_API_IDEMPOTENCY_TTL_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=8760))]
    pub idempotency_ttl_hours: u32,
}

impl Default for IdempotencyArgs {
    fn default() -> Self {
        IdempotencyArgs {
            idempotency_ttl_hours: 24,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RollupArgs {
    /// How often the server rolls up dirty groups, in milliseconds (0 disables the worker).
    #[arg(long, env = "USAGE_API_ROLLUP_INTERVAL_MS", default_value_t = 500)]
    pub rollup_interval_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Callback hosts allowed although loopback or private (and then over http too), comma
    /// separated: host names or addresses as written in URLs (development and tests).
    #[arg(long, env = "USAGE_API_WEBHOOK_ALLOW_HOSTS", value_delimiter = ',')]
    pub webhook_allow_hosts: Vec<String>,
    /// Webhook deliveries one replica makes at once (0: this replica delivers none).
    #[arg(long, env = "USAGE_API_WEBHOOK_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub webhook_concurrency: u16,
    /// A delivery's timeout, in milliseconds.
    #[arg(long, env = "USAGE_API_WEBHOOK_TIMEOUT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub webhook_timeout_ms: u64,
    /// The first retry's delay, in milliseconds (each later one doubles, up to an hour, jittered).
    #[arg(long, env = "USAGE_API_WEBHOOK_BACKOFF_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub webhook_backoff_ms: u64,
    /// How long after a firing its delivery is retried, in seconds; then it is `failed`.
    #[arg(long, env = "USAGE_API_WEBHOOK_RETRY_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub webhook_retry_secs: u64,
    /// How often the outbox is looked at when nothing wakes the worker, in milliseconds.
    #[arg(long, env = "USAGE_API_WEBHOOK_POLL_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub webhook_poll_ms: u64,
}

impl WebhookArgs {
    pub fn settings(&self) -> crate::usage::triggers::deliver::Settings {
        crate::usage::triggers::deliver::Settings {
            concurrency: usize::from(self.webhook_concurrency),
            timeout: Duration::from_millis(self.webhook_timeout_ms),
            backoff: Duration::from_millis(self.webhook_backoff_ms),
            retry_window: Duration::from_secs(self.webhook_retry_secs),
            poll: Duration::from_millis(self.webhook_poll_ms),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// The issuer's JWKS URL.
    #[arg(long, env = "OAUTH_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Required `iss` claim.
    #[arg(long, env = "OAUTH_ISSUER")]
    pub issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "OAUTH_AUDIENCE")]
    pub audience: Option<String>,
    /// Allowed JWS algorithms, comma-separated.
    #[arg(long, env = "OAUTH_ALGORITHMS", default_value = "RS256,ES256,EdDSA")]
    pub algorithms: String,
    /// Claim naming the caller's organization.
    #[arg(long, env = "OAUTH_ORG_CLAIM", default_value = "org_id")]
    pub org_claim: String,
    /// Clock skew allowed on exp / nbf, in seconds.
    #[arg(long, env = "OAUTH_LEEWAY_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub leeway_secs: u64,
    /// JWKS fetches that tokens naming unknown key ids may cause per minute (a token bucket of
    /// as many, refilled evenly; one fetch at a time).
    #[arg(long, env = "OAUTH_JWKS_REFRESHES_PER_MINUTE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=600))]
    pub jwks_refreshes_per_minute: u32,
    /// Development only: HS256 secret used by `token` and `demo`, accepted only when set.
    #[arg(long, env = "OAUTH_DEV_SECRET", hide_env_values = true)]
    pub dev_secret: Option<String>,
}

/// Authentication settings, checked.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub org_claim: String,
    pub leeway: Duration,
    /// Fetches per minute that unknown key ids may cause (and the bucket's size).
    pub jwks_refreshes_per_minute: u32,
    pub jwks_max_age: Duration,
    pub dev_secret: Option<String>,
}

impl AuthArgs {
    pub fn config(&self) -> anyhow::Result<AuthConfig> {
        let algorithms = parse_algorithms(&self.algorithms)?;
        let dev_secret = self.dev_secret.clone().filter(|s| !s.is_empty());
        if let Some(secret) = &dev_secret {
            anyhow::ensure!(
                secret.len() >= 32,
                "OAUTH_DEV_SECRET must be at least 32 characters"
            );
        }
        anyhow::ensure!(
            !self.org_claim.is_empty(),
            "OAUTH_ORG_CLAIM must not be empty"
        );
        let jwks_url = self.jwks_url.clone().filter(|s| !s.is_empty());
        let issuer = self.issuer.clone().filter(|s| !s.is_empty());
        let audience = self.audience.clone().filter(|s| !s.is_empty());
        Ok(AuthConfig {
            jwks_url,
            issuer,
            audience,
            algorithms,
            org_claim: self.org_claim.clone(),
            leeway: Duration::from_secs(self.leeway_secs),
            jwks_refreshes_per_minute: self.jwks_refreshes_per_minute,
            jwks_max_age: Duration::from_secs(600),
            dev_secret,
        })
    }
}

impl AuthConfig {
    /// Fail closed: with a JWKS, tokens are accepted only from one issuer for one audience
    /// (a JWKS verifies every token its issuer signs, for any service), and the development
    /// key (which anyone who knows it can mint any organization's tokens with) is never
    /// accepted beside it.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.jwks_url.is_some() {
            anyhow::ensure!(
                self.issuer.is_some() && self.audience.is_some(),
                "OAUTH_JWKS_URL is set, so OAUTH_ISSUER and OAUTH_AUDIENCE must be set too: \
                 tokens are accepted only from that issuer, for that audience"
            );
            anyhow::ensure!(
                self.dev_secret.is_none(),
                "OAUTH_DEV_SECRET must not be set beside OAUTH_JWKS_URL: the development key \
                 is for local use only, never beside a real issuer"
            );
        }
        Ok(())
    }
}

/// Parses `OAUTH_ALGORITHMS`. Only asymmetric algorithms may be listed: HMAC with a key taken
/// from a JWKS (or a public key) must never verify anything.
pub fn parse_algorithms(list: &str) -> anyhow::Result<Vec<Algorithm>> {
    let mut algorithms = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let algorithm = match name {
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "EdDSA" => Algorithm::EdDSA,
            other => anyhow::bail!(
                "OAUTH_ALGORITHMS: '{other}' is not allowed (asymmetric JWS algorithms only)"
            ),
        };
        if !algorithms.contains(&algorithm) {
            algorithms.push(algorithm);
        }
    }
    anyhow::ensure!(!algorithms.is_empty(), "OAUTH_ALGORITHMS is empty");
    Ok(algorithms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_refuse_hmac_and_none() {
        assert_eq!(
            parse_algorithms("RS256, EdDSA").unwrap(),
            vec![Algorithm::RS256, Algorithm::EdDSA]
        );
        assert!(parse_algorithms("HS256").is_err());
        assert!(parse_algorithms("none").is_err());
        assert!(parse_algorithms(" , ").is_err());
    }
}
