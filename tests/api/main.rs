//! The integration tests: the real server, the real Postgres (a schema per test), real tokens
//! against a real JWKS over loopback.

// A failed unwrap in a test is a failed test: the lints against panicking are for src/.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod corrections;
mod crash;
mod daily;
mod decimals;
mod error_bodies;
mod events;
mod exports;
mod faults;
mod filters;
mod hardening;
mod ingest;
mod limits;
mod migration;
mod money;
mod observability;
mod openapi_schema;
mod ownership;
mod pagination;
mod params;
mod pull;
mod raw;
mod read_path;
mod records;
mod rollup;
mod support;
mod tenancy;
mod triggers;
