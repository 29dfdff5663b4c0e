//! The integration tests: the real server, the real Postgres (a schema per test), real tokens
//! against a real JWKS over loopback.

mod auth;
mod corrections;
mod crash;
mod events;
mod filters;
mod hardening;
mod ingest;
mod migration;
mod money;
mod openapi_schema;
mod ownership;
mod pagination;
mod params;
mod read_path;
mod rollup;
mod support;
mod tenancy;
