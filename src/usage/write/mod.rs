//! The write side: a raw event parsed and checked (`event`), stored idempotently per
//! organization from HTTP batches (`store`) or files of any size (`bulk`), into monthly
//! partitions created on demand (`partitions`).

pub mod bulk;
pub mod event;
pub mod partitions;
pub mod store;
