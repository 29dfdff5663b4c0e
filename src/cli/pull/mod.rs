//! `usage-api pull`: the reseller's client (DESIGN §4). Gets a token by OAuth2 client
//! credentials, follows `next` from the first page to the last, writes every row once with its
//! decimals as sent, retries what can be retried, and makes the file one consistent version of
//! the organization's data: a pull that sees the data change starts over (at most 3 times), and
//! `--resume` continues from the last complete page of an interrupted one.
//!
//! Exit codes: 0 done, 2 usage (a wrong option, a `400`), 3 authentication (credentials refused,
//! `401`/`403` after a fresh token), 4 server or network after retries.

mod auth;
mod output;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;
use serde_json::value::RawValue;

use self::auth::Tokens;
use self::output::{state_path, Fields, Sink, State};
use crate::cli::FileFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Resource {
    /// `GET /express/usage/month`: the monthly aggregates.
    Month,
    /// `GET /express/usage/events`: the raw events.
    Events,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The API's base URL (e.g. https://usage.example.com). Every page is read from it: `next`
    /// links are followed by their path and query, so the token never goes to another host.
    #[arg(long, env = "USAGE_API_URL")]
    pub url: String,
    /// The authorization server's token endpoint (client-credentials grant).
    #[arg(long, env = "USAGE_API_TOKEN_URL")]
    pub token_url: String,
    /// The OAuth2 client id (its secret comes from USAGE_API_CLIENT_SECRET, never a flag).
    #[arg(long, env = "USAGE_API_CLIENT_ID")]
    pub client_id: String,
    /// Scopes to ask for (repeat or space-separate). Default: the read scope.
    #[arg(long = "scope", num_args = 1..)]
    pub scopes: Vec<String>,
    /// `filter` of the list (DESIGN's filter language; the month resource only).
    #[arg(long)]
    pub filter: Option<String>,
    /// `order_by` of the list (the month resource only).
    #[arg(long)]
    pub order_by: Option<String>,
    /// Rows per page (the month resource takes at most 250, the events 1000).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub per_page: u32,
    #[arg(long, value_enum, default_value_t = Resource::Month)]
    pub resource: Resource,
    /// csv or ndjson; default: from the output's extension, else csv.
    #[arg(long, value_enum)]
    pub format: Option<FileFormat>,
    /// Where to write (`-`: stdout).
    #[arg(long, default_value = "-")]
    pub output: String,
    /// Continue an interrupted pull into the same --output from its last complete page.
    #[arg(long)]
    pub resume: bool,
    /// Times a request is retried after a 429, 502, 503, 504 or a connection error (waits
    /// double from 0.5 s up to a minute, or follow Retry-After).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub retries: u32,
}

/// Why a pull stopped, and its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    Server(String),
    #[error("{0}")]
    Network(String),
    #[error("{0}")]
    Output(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Auth(_) => 3,
            Failure::Server(_) | Failure::Network(_) | Failure::Output(_) => 4,
        }
    }
}

/// The longest wait between two tries of a request.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Times a pull starts over because the data changed under it.
const MAX_RESTARTS: u32 = 3;

/// A page of either list, as far as the pull reads it.
#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow, default)]
    _embedded: std::collections::HashMap<&'a str, Vec<&'a RawValue>>,
    _links: Links,
    #[serde(default)]
    total: Option<u64>,
    #[serde(default)]
    as_of: Option<String>,
}

#[derive(Deserialize)]
struct Links {
    next: Option<Href>,
}

#[derive(Deserialize)]
struct Href {
    href: String,
}

struct Client {
    base: url::Url,
    http: reqwest::Client,
    tokens: Tokens,
    /// Tries of one request (1 + --retries).
    attempts: u32,
}

impl Client {
    /// GETs `path_and_query` from the base URL: the body of a `200`, after retries and at most
    /// one renewal of the token.
    async fn get(&mut self, path_and_query: &str) -> Result<String, Failure> {
        let url = self
            .base
            .join(path_and_query)
            .map_err(|e| Failure::Usage(format!("{path_and_query}: {e}")))?;
        let mut renewed = false;
        let mut wait = Duration::from_millis(500);
        let attempts = self.attempts;
        for attempt in 1..=attempts {
            let token = self.tokens.get().await?;
            let sent = self.http.get(url.clone()).bearer_auth(&token).send().await;
            let response = match sent {
                Ok(response) => response,
                Err(err) if attempt < attempts => {
                    pause(&url, &err, wait).await;
                    wait = (wait * 2).min(MAX_WAIT);
                    continue;
                }
                Err(err) => return Err(Failure::Network(format!("{url}: {err}"))),
            };
            let status = response.status().as_u16();
            match status {
                200 => {
                    return response
                        .text()
                        .await
                        .map_err(|e| Failure::Network(format!("{url}: {e}")))
                }
                401 if !renewed => {
                    renewed = true;
                    self.tokens.renew().await?;
                    continue;
                }
                429 | 502 | 503 | 504 if attempt < attempts => {
                    let asked = retry_after(&response).unwrap_or(wait).min(MAX_WAIT);
                    // A little jitter, so that many clients told the same delay do not return
                    // in step.
                    pause(
                        &url,
                        &status,
                        asked + asked.mul_f64(rand::random::<f64>() * 0.1),
                    )
                    .await;
                    wait = (wait * 2).min(MAX_WAIT);
                    continue;
                }
                _ => {}
            }
            let body = response.text().await.unwrap_or_default();
            return Err(refusal(status, &url, &body));
        }
        Err(Failure::Server(format!(
            "{url}: no answer after {attempts} attempts"
        )))
    }
}

/// Says why a request is tried again, and waits `wait`.
async fn pause(url: &url::Url, why: &dyn std::fmt::Display, wait: Duration) {
    eprintln!(
        "{}: {why}; retrying in {:.1} s",
        url.path(),
        wait.as_secs_f64()
    );
    tokio::time::sleep(wait).await;
}

/// What a final answer other than `200` means for the pull (and its exit code).
fn refusal(status: u16, url: &url::Url, body: &str) -> Failure {
    let reason = error_reason(body);
    match status {
        400 => Failure::Usage(format!("the server refused the request: {reason}")),
        401 | 403 => Failure::Auth(format!("{status}: {reason}")),
        _ => Failure::Server(format!("{url}: {status} {reason}")),
    }
}

/// `Retry-After` in seconds (the API sends seconds).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    let seconds: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

/// The error body's description (or code), for a message.
fn error_reason(body: &str) -> String {
    #[derive(Deserialize)]
    struct Error {
        code: Option<String>,
        description: Option<String>,
    }
    match serde_json::from_str::<Error>(body) {
        Ok(Error {
            description: Some(d),
            ..
        }) => d,
        Ok(Error { code: Some(c), .. }) => c,
        _ => body.chars().take(200).collect(),
    }
}

/// The first page's path and query.
fn start(args: &PullArgs) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("per_page", &args.per_page.to_string());
    if let Some(filter) = &args.filter {
        query.append_pair("filter", filter);
    }
    if let Some(order_by) = &args.order_by {
        query.append_pair("order_by", order_by);
    }
    let path = match args.resource {
        Resource::Month => "/express/usage/month",
        Resource::Events => "/express/usage/events",
    };
    format!("{path}?{}", query.finish())
}

/// The path and query of a link (followed on the base URL).
fn path_of(href: &str) -> Result<String, Failure> {
    let url = url::Url::parse(href)
        .map_err(|e| Failure::Server(format!("a next link that is not a URL ({href}): {e}")))?;
    Ok(match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    })
}

/// The embedded rows of a page body.
fn rows<'a>(page: &'a Page<'a>, resource: Resource) -> &'a [&'a RawValue] {
    let key = match resource {
        Resource::Month => "usage",
        Resource::Events => "events",
    };
    page._embedded.get(key).map_or(&[], Vec::as_slice)
}

fn version_of(page: &Page<'_>) -> String {
    format!(
        "{}/{}",
        page.as_of.as_deref().unwrap_or(""),
        page.total.map(|t| t.to_string()).unwrap_or_default()
    )
}

/// How one pass over the pages ended.
enum Pass {
    Done(u64),
    /// The data changed: from this version to that.
    Changed(String, String),
}

struct Run {
    args: PullArgs,
    format: FileFormat,
    output: Option<PathBuf>,
    progress: indicatif::ProgressBar,
}

impl Run {
    fn columns(&self) -> &'static [&'static str] {
        match self.args.resource {
            Resource::Month => crate::http::monthly::CSV_HEADER.as_slice(),
            Resource::Events => crate::http::raw::CSV_HEADER.as_slice(),
        }
    }

    /// Opens the output: truncated to `keep` bytes (a resume), or new.
    fn sink(&self, keep: Option<u64>) -> Result<Sink, Failure> {
        let out: Box<dyn std::io::Write> = match &self.output {
            None => Box::new(std::io::stdout().lock()),
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(keep.is_none())
                    .open(path)
                    .map_err(|e| Failure::Output(format!("{}: {e}", path.display())))?;
                if let Some(bytes) = keep {
                    file.set_len(bytes)
                        .map_err(|e| Failure::Output(format!("{}: {e}", path.display())))?;
                }
                let mut file = std::io::BufWriter::with_capacity(1 << 16, file);
                std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0))
                    .map_err(|e| Failure::Output(format!("{}: {e}", path.display())))?;
                Box::new(file)
            }
        };
        let sink = Sink::new(out, self.format, self.columns());
        Ok(match keep {
            Some(bytes) => sink.resumed(bytes),
            None => sink,
        })
    }

    fn save(&self, state: &State) -> Result<(), Failure> {
        match &self.output {
            Some(path) => state.save(&state_path(path)),
            None => Ok(()),
        }
    }

    /// One pass from `state` (a fresh one: its `next` is the first page) to the last page.
    async fn pass(
        &mut self,
        client: &mut Client,
        mut state: State,
        mut sink: Sink,
    ) -> Result<Pass, Failure> {
        let resuming = state.rows > 0 || state.bytes > 0;
        if !resuming {
            sink.header()?;
        }
        let mut first = !resuming;
        while let Some(next) = state.next.clone() {
            let body = client.get(&next).await?;
            let page: Page = serde_json::from_str(&body)
                .map_err(|e| Failure::Server(format!("{next}: not a page of the list ({e})")))?;
            let version = version_of(&page);
            if first {
                state.version = version;
                first = false;
                if let Some(total) = page.total {
                    self.progress.set_length(total);
                }
            } else if version != state.version {
                return Ok(Pass::Changed(state.version, version));
            }
            for raw in rows(&page, self.args.resource) {
                let fields: Fields = serde_json::from_str(raw.get()).map_err(|e| {
                    Failure::Server(format!("{next}: a row that is not an object ({e})"))
                })?;
                sink.row(&fields)?;
                state.rows += 1;
            }
            self.progress.set_position(state.rows);
            sink.flush()?;
            state.bytes = sink.bytes;
            state.next = page
                ._links
                .next
                .as_ref()
                .map(|l| path_of(&l.href))
                .transpose()?;
            self.save(&state)?;
        }
        Ok(Pass::Done(state.rows))
    }
}

/// The HTTP client of the API: no redirects (the token stays on one host), bounded in time.
fn api_client(args: &PullArgs, secret: String) -> Result<Client, Failure> {
    let base = url::Url::parse(&args.url).map_err(|e| Failure::Usage(format!("--url: {e}")))?;
    let mut scopes = crate::cli::scopes(&args.scopes);
    if scopes.is_empty() {
        scopes.push(crate::auth::READ_SCOPE.to_owned());
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| Failure::Network(format!("building the HTTP client: {e}")))?;
    Ok(Client {
        base,
        http,
        tokens: Tokens::new(&args.token_url, &args.client_id, secret, scopes)?,
        attempts: args.retries + 1,
    })
}

/// Rows of the total, rate and ETA on a terminal; nothing on a pipe.
fn progress_bar() -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rows  {per_sec}  ETA {eta}")
    {
        bar.set_style(style);
    }
    bar
}

/// Where `--resume` starts: the saved state and the output's length to keep, or `None` when the
/// saved pull was already complete. No state: the first page, and the file made anew.
fn resumed(run: &Run, fresh: State) -> Result<Option<(State, Option<u64>)>, Failure> {
    let path = run
        .output
        .as_ref()
        .map(|p| state_path(p))
        .unwrap_or_default();
    match State::load(&path)? {
        Some(saved) if saved.start != fresh.start || saved.format != fresh.format => {
            Err(Failure::Usage(format!(
                "{} is the state of another pull ({}, {}): remove it or pull the same",
                path.display(),
                saved.start,
                saved.format
            )))
        }
        Some(saved) if saved.next.is_none() => {
            eprintln!("the pull into {} was already complete", run.args.output);
            Ok(None)
        }
        Some(saved) => {
            eprintln!("resuming after {} rows", saved.rows);
            let keep = Some(saved.bytes);
            Ok(Some((saved, keep)))
        }
        None => {
            eprintln!("nothing to resume: starting from the first page");
            Ok(Some((fresh, None)))
        }
    }
}

/// The pull; its failure carries the exit code.
pub async fn run(args: PullArgs) -> Result<(), Failure> {
    let secret = std::env::var("USAGE_API_CLIENT_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Failure::Usage("USAGE_API_CLIENT_SECRET must hold the client secret".to_owned())
        })?;
    let output = (args.output != "-").then(|| PathBuf::from(&args.output));
    if args.resume && output.is_none() {
        return Err(Failure::Usage("--resume needs --output FILE".to_owned()));
    }
    let format = match args.format {
        Some(format) => format,
        None => FileFormat::resolve(None, &args.output).unwrap_or(FileFormat::Csv),
    };
    let mut client = api_client(&args, secret)?;
    let first = start(&args);
    let fresh = || State {
        start: first.clone(),
        format: format!("{format:?}"),
        version: String::new(),
        next: Some(first.clone()),
        rows: 0,
        bytes: 0,
    };
    let mut run = Run {
        args,
        format,
        output,
        progress: progress_bar(),
    };
    let (mut state, mut keep) = (fresh(), None);
    if run.args.resume {
        match resumed(&run, fresh())? {
            Some(from) => (state, keep) = from,
            None => return Ok(()),
        }
    }
    run.until_done(&mut client, state, keep, fresh).await
}

impl Run {
    /// Passes until one completes, starting over (into a new file) when the data changed under a
    /// pass, at most `MAX_RESTARTS` times.
    async fn until_done(
        &mut self,
        client: &mut Client,
        mut state: State,
        mut keep: Option<u64>,
        fresh: impl Fn() -> State,
    ) -> Result<(), Failure> {
        let mut restarts = 0;
        loop {
            let sink = self.sink(keep)?;
            match self.pass(client, state, sink).await? {
                Pass::Done(rows) => {
                    self.progress.finish_and_clear();
                    if let Some(path) = &self.output {
                        let _ = std::fs::remove_file(state_path(path));
                    }
                    eprintln!("{rows} rows");
                    return Ok(());
                }
                Pass::Changed(from, to) if restarts < MAX_RESTARTS && self.output.is_some() => {
                    restarts += 1;
                    eprintln!(
                        "the organization's data changed during the pull ({from} → {to}): starting \
                         over so that the file is one version ({restarts} of {MAX_RESTARTS})"
                    );
                    (state, keep) = (fresh(), None);
                    self.progress.set_position(0);
                }
                Pass::Changed(..) if self.output.is_none() => {
                    return Err(Failure::Server(
                        "the data changed during a pull to stdout, which cannot start over: pull \
                         into --output FILE"
                            .to_owned(),
                    ))
                }
                Pass::Changed(..) => {
                    return Err(Failure::Server(format!(
                        "the organization's data kept changing: {MAX_RESTARTS} restarts and no \
                         consistent version; try again later"
                    )))
                }
            }
        }
    }
}
