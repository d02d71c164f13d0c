//! The admin listener: operations endpoints, off the public port.
//!
//! Owns serving the admin routes on `admin.listen`. Each concern is a self-contained router
//! fragment (`instances`); this module only mounts them.

pub mod instances;

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::Gateway;

/// All admin routes.
pub fn routes(gw: Arc<Gateway>) -> axum::Router {
    instances::routes(gw)
}

/// Binds `admin.listen`.
pub async fn bind(config: &crate::Config) -> std::io::Result<TcpListener> {
    TcpListener::bind(config.admin.listen).await
}

/// Serves the admin routes until the runtime stops.
pub async fn serve(listener: TcpListener, gw: Arc<Gateway>) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(listen = %addr, "admin listener up");
    axum::serve(listener, routes(gw)).await
}
