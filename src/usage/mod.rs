//! The domain, by the data's path (ARCHITECTURE.md): `write` takes raw events in, `rollup`
//! turns them into aggregates, `read` serves the aggregates. Beside them, the vocabulary
//! (`model`), exact amounts (`amount`) and the organizations' accounts (`accounts`). Nothing here
//! knows about HTTP.

pub mod accounts;
pub mod amount;
pub mod digest;
pub mod model;
pub mod raw;
pub mod read;
pub mod records;
pub mod rollup;
pub mod triggers;
pub mod write;
