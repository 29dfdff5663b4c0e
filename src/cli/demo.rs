//! `usage-api demo`: everything a newcomer needs in one command — the database (created when
//! missing), migrations, a realistic demo organization (several accounts, every usage type, a
//! year of events), the rollup, a printed token and curl line, and the server.
//!
//! The demo data is deterministic, so running the demo again adds nothing twice.

use std::net::TcpListener;

use anyhow::Context;
use chrono::{Datelike, Duration, TimeZone, Utc};
use clap::Args;
use rust_decimal::Decimal;

use super::serve;
use crate::auth::{dev, READ_SCOPE};
use crate::config::{
    AuthArgs, DatabaseArgs, EventArgs, HttpArgs, IdempotencyArgs, RollupArgs, WebhookArgs,
};
use crate::usage::accounts::{self, NewAccount};
use crate::usage::model::{Direction, Resolution, Unit, UsageType};
use crate::usage::rollup;
use crate::usage::write::event::NewEvent;
use crate::usage::write::store;

pub const DEMO_ORG: &str = "demo-org";
pub const OTHER_ORG: &str = "other-org";

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub rollup: RollupArgs,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
    /// Load the data and print the token, but do not start the server.
    #[arg(long)]
    pub no_serve: bool,
}

/// (type, product, aggregated product, description, unit, direction, resolution, unit price, wallet)
type Product = (
    UsageType,
    &'static str,
    &'static str,
    &'static str,
    Unit,
    Option<Direction>,
    Option<Resolution>,
    &'static str,
    &'static str,
);

// One product a line: a table reads better than rustfmt's one field a line.
#[rustfmt::skip]
const PRODUCTS: &[Product] = &[
    (UsageType::Number, "TD-LIC-APP-RC-101910", "TD-USG-TEL-UG-102213", "SIP Number", Unit::Numbers, Some(Direction::Inbound), None, "1", "contact center"),
    (UsageType::Call, "TD-USG-TEL-IN-100100", "TD-USG-TEL-UG-102213", "Inbound call", Unit::Minutes, Some(Direction::Inbound), Some(Resolution::Answered), "0.0085", "contact center"),
    (UsageType::Call, "TD-USG-TEL-OUT-100200", "TD-USG-TEL-UG-102213", "Outbound call", Unit::Minutes, Some(Direction::Outbound), Some(Resolution::Answered), "0.014", "contact center"),
    (UsageType::Call, "TD-USG-TEL-IN-100100", "TD-USG-TEL-UG-102213", "Inbound call", Unit::Minutes, Some(Direction::Inbound), Some(Resolution::Missed), "0.0085", "contact center"),
    (UsageType::Amd, "TD-USG-AMD-100300", "TD-USG-TEL-UG-102213", "Answering machine detection", Unit::Requests, Some(Direction::Outbound), Some(Resolution::Machine), "0.0025", "contact center"),
    (UsageType::ApiRequest, "TD-USG-API-100400", "TD-USG-PLAT-UG-102300", "API request", Unit::Requests, None, None, "0.0001", "platform"),
    (UsageType::CallService, "TD-USG-REC-100500", "TD-USG-TEL-UG-102213", "Call recording", Unit::Minutes, Some(Direction::Inbound), None, "0.002", "contact center"),
    (UsageType::CreditCommit, "TD-LIC-COMMIT-100600", "TD-LIC-COMMIT-100600", "Monthly credit commitment", Unit::Other, None, None, "500", "billing"),
    (UsageType::Dialer, "TD-USG-DIAL-100700", "TD-USG-TEL-UG-102213", "Predictive dialer", Unit::Sessions, Some(Direction::Outbound), Some(Resolution::Abandoned), "0.05", "outbound"),
    (UsageType::Message, "TD-USG-SMS-100800", "TD-USG-MSG-UG-102400", "SMS", Unit::Segments, Some(Direction::Outbound), None, "0.0079", "digital"),
    (UsageType::ProductService, "TD-LIC-SEAT-100900", "TD-LIC-SEAT-100900", "Agent seat", Unit::Other, None, None, "75", "licenses"),
    (UsageType::Recharge, "TD-WAL-RCH-101000", "TD-WAL-RCH-101000", "Wallet recharge", Unit::Other, None, None, "1", "contact center"),
    (UsageType::SpeechTranscription, "TD-USG-STT-101100", "TD-USG-AI-UG-102500", "Speech transcription", Unit::Seconds, Some(Direction::Inbound), None, "0.0004", "ai"),
    (UsageType::VoicemailTranscription, "TD-USG-VMT-101200", "TD-USG-AI-UG-102500", "Voicemail transcription", Unit::Minutes, Some(Direction::Inbound), Some(Resolution::Voicemail), "0.02", "ai"),
    (UsageType::Other, "TD-USG-STO-101300", "TD-USG-PLAT-UG-102300", "Recording storage", Unit::Gb, None, None, "0.023", "platform"),
];

/// The demo's accounts: five in the demo organization, two in another one (to show the 403).
pub fn demo_accounts() -> Vec<NewAccount> {
    let account = |id: &str, org: &str, name: &str| NewAccount {
        id: id.to_owned(),
        organization_id: org.to_owned(),
        name: name.to_owned(),
    };
    vec![
        account("5ea75fe7aa224700012eae40", DEMO_ORG, "Acme Support"),
        account("5ea75fe7aa224700012eae41", DEMO_ORG, "Acme Sales"),
        account("5ea75fe7aa224700012eae42", DEMO_ORG, "Acme Collections"),
        account("5ea75fe7aa224700012eae43", DEMO_ORG, "Acme Europe"),
        account("5ea75fe7aa224700012eae44", DEMO_ORG, "Acme Labs"),
        account("6fb86af8bb335811123fbf50", OTHER_ORG, "Globex Helpdesk"),
        account("6fb86af8bb335811123fbf51", OTHER_ORG, "Globex Billing"),
    ]
}

/// A small deterministic generator (no randomness: re-running the demo yields the same events).
fn mix(seed: u64) -> u64 {
    let mut x = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A year of events: for each account, each of the last twelve months and each product, a few
/// events with exact decimal quantities spread over the month.
pub fn demo_events(now: chrono::DateTime<Utc>) -> Vec<NewEvent> {
    let mut events = Vec::new();
    for (a, account) in demo_accounts().iter().enumerate() {
        for back in 0..12u32 {
            // Ids and quantities depend on the calendar month, not on how far back it is, so a
            // later run finds the same events and adds only what is new.
            let month = now.year() * 12 + now.month0() as i32 - back as i32;
            let (year, month0) = (month.div_euclid(12), month.rem_euclid(12) as u32);
            let Some(start) = Utc.with_ymd_and_hms(year, month0 + 1, 1, 0, 0, 0).single() else {
                continue;
            };
            for (p, product) in PRODUCTS.iter().enumerate() {
                let (
                    usage_type,
                    product_id,
                    aggr,
                    description,
                    unit,
                    direction,
                    resolution,
                    price,
                    wallet,
                ) = *product;
                for n in 0..3u64 {
                    let seed =
                        mix(((a as u64) << 40) ^ ((month as u64) << 16) ^ ((p as u64) << 8) ^ n);
                    let occurred_at = start + Duration::seconds((seed % (27 * 86_400)) as i64);
                    if occurred_at > now {
                        continue;
                    }
                    let quantity = match unit {
                        Unit::Numbers | Unit::Other => Decimal::from(1 + seed % 5),
                        Unit::Gb => Decimal::new((seed % 100_000) as i64, 3),
                        _ => Decimal::new((seed % 5_000_000) as i64 + 1, 2),
                    };
                    events.push(NewEvent {
                        event_id: format!("demo-{}-{year}-{:02}-{p}-{n}", account.id, month0 + 1),
                        account_id: account.id.as_str().into(),
                        product_id: product_id.to_owned(),
                        aggr_product_id: aggr.to_owned(),
                        usage_type,
                        description: description.to_owned(),
                        currency: "USD".to_owned(),
                        direction,
                        resolution,
                        unit,
                        unit_price: price.parse().unwrap_or_default(),
                        wallet_name: wallet.to_owned(),
                        quantity,
                        occurred_at,
                        category: None,
                    });
                }
            }
        }
    }
    events
}

/// Loads the demo data and rolls it up; answers (events new, events already there).
pub async fn load(conn: &mut diesel_async::AsyncPgConnection) -> anyhow::Result<(usize, usize)> {
    accounts::upsert(conn, &demo_accounts()).await?;
    let events = demo_events(Utc::now());
    let mut new = 0;
    for chunk in events.chunks(store::BATCH_SIZE) {
        let outcomes = store::insert_events(conn, chunk).await?;
        new += outcomes
            .iter()
            .filter(|o| **o == store::Outcome::Accepted)
            .count();
    }
    rollup::run_until_clean(conn).await?;
    Ok((new, events.len() - new))
}

fn random_secret() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..48)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

pub async fn run(mut args: DemoArgs) -> anyhow::Result<()> {
    if args.auth.dev_secret.as_deref().is_none_or(str::is_empty) {
        // A secret for this run only: tokens die with the process.
        args.auth.dev_secret = Some(random_secret());
    }
    let mut conn = super::connect(&args.db).await?;
    let (new, existing) = load(&mut conn).await?;
    drop(conn);
    let config = args.auth.config()?;
    let token = dev::mint(&config, DEMO_ORG, &[READ_SCOPE.to_owned()], 24 * 3600)?;
    let state = serve::state(
        &args.db,
        &args.http,
        &args.auth,
        &EventArgs::default(),
        &IdempotencyArgs::default(),
        &args.webhooks,
    )?;
    let base = state.public_url.clone();
    println!("usage-api demo: organization '{DEMO_ORG}' with 5 accounts, a year of usage ({new} new events, {existing} already loaded).");
    println!();
    println!("Token for '{DEMO_ORG}' (valid 24 hours, scope {READ_SCOPE}):");
    println!("  export TOKEN={token}");
    println!();
    println!("Try:");
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/express/usage/month?per_page=3'"
    );
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/express/usage/month?filter=type%20eq%20%27CALL%27%20and%20account_id%20eq%20%275ea75fe7aa224700012eae40%27&order_by=month:desc'");
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/express/usage/month?filter=account_id%20eq%20%276fb86af8bb335811123fbf50%27'   # another organization's account: 403");
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/2010-04-01/Accounts/{DEMO_ORG}/Usage/Records/Monthly.json?Category=calls&StartDate=-365days'   # usage records, Twilio's format");
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" -o records.csv '{base}/2010-04-01/Accounts/{DEMO_ORG}/Usage/Records/Daily.csv?StartDate=-30days'");
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/express/usage/categories'");
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/express/usage/events?per_page=5&category=calls'   # the raw events behind the totals");
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" -o usage-events.csv '{base}/express/usage/events?start_date=-30days&format=csv'   # all of them, as a file");
    if args.no_serve {
        return Ok(());
    }
    let listener = TcpListener::bind(&args.http.bind)
        .with_context(|| format!("binding {}", args.http.bind))?;
    println!();
    println!("Serving on {base} (Ctrl-C to stop).");
    serve::start_rollup(&state, &args.rollup);
    serve::start(state, listener, 2)?.await?;
    Ok(())
}
