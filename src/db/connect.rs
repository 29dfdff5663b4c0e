//! Connecting to Postgres, over TLS when `DATABASE_URL` asks for it, with libpq's meaning of
//! `sslmode` (diesel-async and tokio-postgres alone only know `disable`, `prefer` and `require`,
//! and would connect without TLS whatever the URL says):
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` (the default) | when the server offers it | not checked |
//! | `require` | always | not checked |
//! | `verify-ca` | always | signed by a trusted CA |
//! | `verify-full` | always | signed by a trusted CA and naming the host |
//!
//! Trusted CAs: the PEM file `sslrootcert` names, else the Mozilla root set (`sslrootcert=system`
//! says the same explicitly). Every connection of the product comes through here: the server's
//! pools, the migrations, the bulk loaders.

use std::sync::Arc;

use anyhow::Context;
use diesel::{ConnectionError, ConnectionResult};
use diesel_async::AsyncPgConnection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How a connection must be protected, from the URL's `sslmode` and `sslrootcert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa { root_cert: Option<String> },
    VerifyFull { root_cert: Option<String> },
}

/// `url` split into what tokio-postgres can read and how to protect the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL without the parameters only this module understands.
    pub url: String,
    pub mode: SslMode,
}

impl Target {
    /// Reads `sslmode`/`sslrootcert` from a `postgres://` URL. Text that is not a URL (a
    /// `key=value` string) is passed on as it is, with tokio-postgres' own TLS rules.
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let Ok(mut parsed) = url::Url::parse(url) else {
            return Ok(Target {
                url: url.to_owned(),
                mode: SslMode::Prefer,
            });
        };
        let mut mode = None;
        let mut root_cert = None;
        let mut kept: Vec<(String, String)> = Vec::new();
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "sslmode" => mode = Some(value.into_owned()),
                "sslrootcert" => root_cert = Some(value.into_owned()),
                _ => kept.push((key.into_owned(), value.into_owned())),
            }
        }
        let root_cert = root_cert.filter(|path| path != "system");
        let mode = match mode.as_deref().unwrap_or("prefer") {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa { root_cert },
            "verify-full" => SslMode::VerifyFull { root_cert },
            other => anyhow::bail!(
                "DATABASE_URL: sslmode '{other}' is not one of disable, allow, prefer, require, \
                 verify-ca, verify-full"
            ),
        };
        // tokio-postgres itself then insists on TLS, or never tries it.
        let negotiated = match mode {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            _ => "require",
        };
        kept.push(("sslmode".to_owned(), negotiated.to_owned()));
        parsed.query_pairs_mut().clear().extend_pairs(kept);
        Ok(Target {
            url: parsed.to_string(),
            mode,
        })
    }

    pub(crate) fn tls(&self) -> anyhow::Result<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let config = match &self.mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth(),
            SslMode::VerifyFull { root_cert } => builder
                .with_root_certificates(roots(root_cert.as_deref())?)
                .with_no_client_auth(),
            SslMode::VerifyCa { root_cert } => {
                let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots(root_cert.as_deref())?),
                    provider,
                )
                .build()
                .context("TLS certificate verifier")?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyName(verifier)))
                    .with_no_client_auth()
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

/// The trusted CAs: a PEM file's, or the Mozilla set.
fn roots(path: Option<&str>) -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match path {
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading sslrootcert {path}"))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                store
                    .add(cert.with_context(|| format!("sslrootcert {path}"))?)
                    .with_context(|| format!("sslrootcert {path}"))?;
            }
            anyhow::ensure!(!store.is_empty(), "sslrootcert {path} holds no certificate");
        }
    }
    Ok(store)
}

/// `require`: encrypted, but like libpq, whoever answers is trusted. The handshake's own
/// signatures are still checked.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted CA; the name in it does not matter.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked before the name: a name error means the chain passed.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A tokio-postgres client for `url`, its connection driven on the current runtime (for COPY,
/// which diesel does not offer).
pub async fn client(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let target = Target::parse(url)?;
    let (client, connection) = tokio_postgres::connect(&target.url, target.tls()?).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "database connection ended");
        }
    });
    Ok(client)
}

/// A diesel connection to `url`.
pub async fn establish(url: &str) -> ConnectionResult<AsyncPgConnection> {
    let target =
        Target::parse(url).map_err(|err| ConnectionError::BadConnection(err.to_string()))?;
    let tls = target
        .tls()
        .map_err(|err| ConnectionError::BadConnection(format!("{err:#}")))?;
    let (client, connection) = tokio_postgres::connect(&target.url, tls)
        .await
        .map_err(|err| ConnectionError::BadConnection(err.to_string()))?;
    AsyncPgConnection::try_from_client_and_connection(client, connection).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_read_with_libpqs_meaning() {
        let t = Target::parse(
            "postgres://u@h:5432/db?sslmode=verify-full&sslrootcert=%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(
            t.mode,
            SslMode::VerifyFull {
                root_cert: Some("/ca.pem".into())
            }
        );
        assert_eq!(
            t.url,
            "postgres://u@h:5432/db?application_name=x&sslmode=require"
        );
        let t = Target::parse("postgres://u@h/db").unwrap();
        assert_eq!(
            (t.mode, t.url.as_str()),
            (SslMode::Prefer, "postgres://u@h/db?sslmode=prefer")
        );
        let t = Target::parse("postgres://u@h/db?sslmode=verify-ca&sslrootcert=system").unwrap();
        assert_eq!(t.mode, SslMode::VerifyCa { root_cert: None });
        assert!(Target::parse("postgres://u@h/db?sslmode=bogus").is_err());
        let dsn = Target::parse("host=h dbname=db").unwrap();
        assert_eq!(dsn.url, "host=h dbname=db");
    }
}
