//! Database access: the connection pool, TLS, the embedded migrations, and the schema diesel
//! generates.

pub mod cancel;
pub mod connect;
pub mod cursor;
pub mod migrate;
pub mod pool;
pub mod schema;

pub use pool::{DbPool, PoolOptions};
