//! usage-api: month-aggregated usage per product, per account, as a paged HAL+JSON API behind
//! OAuth2. README.md is the tour, openapi.yaml the contract, ARCHITECTURE.md the map of this
//! crate.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod usage;
