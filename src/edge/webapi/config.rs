//! The `[webapi]` section: settings of the Web API v2 dialect (`/api/v2/…`).
//!
//! Owns these keys and their defaults; must not know the rest of the configuration.

use serde::Deserialize;

use crate::edge::error::ReplyStatus;

/// The Web API v2 dialect front end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebApiConfig {
    /// The HTTP status of replies with statusCode 1 or 2: `rest` (400, 401, 404, 409, 503…;
    /// the default, what Web API integrations and the OpenAPI document expect) or `ok`
    /// (200, for clients that treat any other status as a transport failure). Refusals
    /// made before the request is read keep their status either way (docs/errors.md).
    pub reply_status: ReplyStatus,
}
