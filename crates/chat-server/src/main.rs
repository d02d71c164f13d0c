//! `chat-server`: parses the configuration, starts the server, prints the bound address on
//! stdout (so scripts and tests can start it on port 0), and stops on SIGTERM or Ctrl-C. A
//! SIGHUP (an operator's reflex, `systemctl kill -s HUP`) is logged and otherwise ignored: the
//! chat server has nothing to reload, and SIGHUP's default action would end it like a crash.

use std::process::ExitCode;

use chat_server::{Args, Config};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::load(Args::parse()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("chat-server: {error}");
            return ExitCode::from(2);
        }
    };
    let alias = config.alias.clone();
    let grace = config.shutdown_grace;
    let authenticated = config.secret.is_some();
    let signalled = shutdown_signal();
    ignore_hangups();
    let shutdown = CancellationToken::new();
    let running = match chat_server::start(config, shutdown.clone()).await {
        Ok(running) => running,
        Err(error) => {
            eprintln!("chat-server: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("chat-server {alias} listening on {}", running.local_addr);
    tracing::info!(%alias, address = %running.local_addr,
        peers = if authenticated { "shared secret required" } else { "unauthenticated" },
        "listening");
    signalled.await;
    shutdown.cancel();
    // Connections get the grace to finish their calls; past twice that, exit regardless.
    if tokio::time::timeout(grace * 2, running.stopped())
        .await
        .is_err()
    {
        tracing::warn!("calls still in flight after the shutdown grace; exiting");
    }
    ExitCode::SUCCESS
}

/// Registers for SIGHUP now and logs each one: its default action would end the process, and
/// with it every chat held here (they would move, as after a crash), for a signal that asks a
/// daemon to reload. Settings change with a restart (docs/deployment.md).
fn ignore_hangups() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hangups) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    tracing::warn!(
                        "SIGHUP ignored: the chat server has nothing to reload; \
                         its settings change with a restart"
                    );
                }
            });
        }
    }
}

/// Registers for SIGTERM now (before the address is announced, so a supervisor that stops
/// the server right after start-up gets a graceful stop, not the default kill) and returns
/// the future that resolves on SIGTERM or Ctrl-C.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::terminate()).ok()
    };
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
