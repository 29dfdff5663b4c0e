//! The write side: a raw event read (`records`) and checked (`event`), stored idempotently per
//! organization from HTTP batches (`store`, `voids`, `idempotency`) or files of any size
//! (`bulk`), into monthly partitions created on demand (`partitions`), its (account, month)
//! marked dirty for the rollup in the same transaction.

pub mod batch;
pub mod bulk;
pub mod event;
pub mod idempotency;
pub mod ledger;
pub mod partitions;
pub mod records;
pub mod store;
pub mod voids;
