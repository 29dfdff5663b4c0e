//! OAuth2 resource server: bearer JWTs verified against the issuer's JWKS.

pub mod admission;
pub mod dev;
pub mod jwks;
pub mod principal;
pub mod verifier;

pub use principal::{READ_SCOPE, TRIGGERS_SCOPE, WRITE_SCOPE};
pub use verifier::{Principal, Verifier};
