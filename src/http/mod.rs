//! The HTTP surface: routes, handlers, HAL shapes, and the middleware every response passes.

pub mod cursor;
pub mod events;
pub mod hal;
pub mod health;
pub mod monthly;
pub mod request_id;
pub mod routes;
