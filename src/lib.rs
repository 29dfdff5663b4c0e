//! usage-api: month-aggregated usage per product, per account, as a paged HAL+JSON API behind
//! OAuth2. See README.md for the tour and DESIGN (in the repository's docs) for the contract.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod usage;
