//! The pull's access token: OAuth2 client credentials (the `oauth2` crate), renewed before it
//! expires (at four fifths of its life) and on demand after a `401`.

use std::time::{Duration, Instant};

use oauth2::basic::BasicClient;
use oauth2::{
    ClientId, ClientSecret, EndpointNotSet, EndpointSet, RequestTokenError, Scope, TokenResponse,
    TokenUrl,
};

use super::Failure;

type Client =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// Attempts at the token endpoint when it cannot be reached.
const ATTEMPTS: u32 = 5;

pub struct Tokens {
    client: Client,
    http: reqwest::Client,
    scopes: Vec<String>,
    current: Option<(String, Option<Instant>)>,
    /// Tokens obtained so far (the first and every renewal).
    pub obtained: u32,
}

impl Tokens {
    pub fn new(
        token_url: &str,
        client_id: &str,
        secret: String,
        scopes: Vec<String>,
    ) -> Result<Tokens, Failure> {
        let token_url = TokenUrl::new(token_url.to_owned())
            .map_err(|e| Failure::Usage(format!("--token-url: {e}")))?;
        let client = BasicClient::new(ClientId::new(client_id.to_owned()))
            .set_client_secret(ClientSecret::new(secret))
            .set_token_uri(token_url);
        // The token endpoint's redirects are not followed (RFC 6749 §3.2: the client must not
        // send its credentials anywhere else).
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Failure::Network(format!("building the HTTP client: {e}")))?;
        Ok(Tokens {
            client,
            http,
            scopes,
            current: None,
            obtained: 0,
        })
    }

    /// A token valid for a while yet: the current one, or a new one.
    pub async fn get(&mut self) -> Result<String, Failure> {
        match &self.current {
            Some((token, Some(renew_at))) if Instant::now() < *renew_at => Ok(token.clone()),
            Some((token, None)) => Ok(token.clone()),
            _ => self.renew().await,
        }
    }

    /// Forgets the current token (the server refused it) and gets a new one.
    pub async fn renew(&mut self) -> Result<String, Failure> {
        self.current = None;
        let mut pause = Duration::from_millis(500);
        for attempt in 1..=ATTEMPTS {
            let mut request = self.client.exchange_client_credentials();
            for scope in &self.scopes {
                request = request.add_scope(Scope::new(scope.clone()));
            }
            let asked = Instant::now();
            match request.request_async(&self.http).await {
                Ok(response) => {
                    let token = response.access_token().secret().clone();
                    let renew_at = response.expires_in().map(|life| asked + life * 4 / 5);
                    self.current = Some((token.clone(), renew_at));
                    self.obtained += 1;
                    return Ok(token);
                }
                Err(RequestTokenError::Request(err)) if attempt < ATTEMPTS => {
                    eprintln!("the token endpoint cannot be reached ({err}); retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(RequestTokenError::Request(err)) => {
                    return Err(Failure::Network(format!("the token endpoint: {err}")))
                }
                Err(RequestTokenError::ServerResponse(refusal)) => {
                    return Err(Failure::Auth(format!(
                        "the authorization server refused the client credentials: {refusal}"
                    )))
                }
                Err(other) => {
                    return Err(Failure::Auth(format!(
                        "no access token from the authorization server: {other}"
                    )))
                }
            }
        }
        Err(Failure::Network(
            "the token endpoint cannot be reached".to_owned(),
        ))
    }
}
