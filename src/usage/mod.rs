//! The domain: usage vocabulary, the filter language, paged org-scoped reads, ingestion and the
//! rollup. Nothing here knows about HTTP.

pub mod accounts;
pub mod amount;
pub mod bulk;
pub mod cache;
pub mod event;
pub mod filter;
pub mod ingest;
pub mod model;
pub mod monthly;
pub mod page;
pub mod partitions;
pub mod rollup;
pub mod seek;
