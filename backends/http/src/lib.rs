//! The GMS adapter: a chat instance that is a Genesys Mobile Services cluster, reached over
//! its Chat API v2 (`/genesys/2/chat/{service}/…`, form-encoded).
//!
//! Layout:
//! - `config`: [`HttpConfig`] (base URL, service names, API key, timeouts), plain data;
//! - `key`: how the GMS alias and service ride inside the key the gateway seals;
//! - `wire`: the GMS reply shape, and what its events mean in the domain types;
//! - `adapter`: [`HttpBackend`], one pooled HTTP client and the mapping of each action to
//!   its GMS call.
//!
//! Errors: GMS statusCode 1/2 and its `errors` pass through as [`BackendError::Remote`];
//! connection refused is `Unreachable` (never arrived); timeouts, lost connections and 5xx
//! without a GMS reply are `Interrupted` (may have arrived: never re-sent). This crate never
//! retries a request.
//!
//! It must not know the Web API's JSON shapes, credentials MACs or routing.
//!
//! [`BackendError::Remote`]: backend_api::BackendError::Remote

mod adapter;
mod config;
mod key;
mod webapi;
mod wire;

pub use adapter::{BuildError, HttpBackend};
pub use config::{Dialect, HttpConfig};
