//! The `webapi-gateway` binary: command line, logging, start-up.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use webapi_gateway::config::LogFormat;
use webapi_gateway::{reload, server, Config, Gateway};

/// `--version`: the crate's version and the commit it was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("GIT_VERSION"), ")");

/// The Genesys Web API Server REST API in front of chat and e-mail backends.
#[derive(Parser)]
#[command(version = VERSION)]
struct Args {
    /// Configuration file (TOML). Every key can be overridden as GATEWAY__SECTION__KEY.
    #[arg(long, default_value = "gateway.toml")]
    config: PathBuf,
    /// Validate the configuration and exit (non-zero with the bad key named).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("{}: configuration is valid", args.config.display());
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    fit_open_files(&mut config);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if config.server.worker_threads > 0 {
        runtime.worker_threads(config.server.worker_threads);
    }
    let runtime = match runtime.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match server::bind(&config.server).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", config.server.listen);
                return ExitCode::FAILURE;
            }
        };
        let admin = match server::bind_admin(&config.admin).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", config.admin.listen);
                return ExitCode::FAILURE;
            }
        };
        let gw = match Gateway::new(config) {
            Ok(gw) => gw,
            Err(e) => {
                eprintln!("error: cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(reload::watch(
            Arc::clone(&gw),
            args.config.clone(),
            reload::POLL,
        ));
        match server::serve_with(listener, admin, gw, server::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Raises the open-files limit for the connection cap, or lowers the cap to fit it, so
/// connections past the cap get their 503 rather than failing `accept` (EMFILE).
fn fit_open_files(config: &mut Config) {
    #[cfg(unix)]
    {
        let wanted = config.limits.max_connections.get();
        match server::fit_open_files(wanted) {
            Ok(fit) => {
                if fit.soft > fit.soft_before {
                    tracing::info!(
                        from = fit.soft_before,
                        to = fit.soft,
                        hard = fit.hard,
                        "open-files limit raised"
                    );
                }
                if fit.lowered() {
                    tracing::warn!(
                        configured = fit.wanted,
                        max_connections = fit.max_connections,
                        open_files = fit.soft,
                        hard = fit.hard,
                        "limits.max_connections lowered to fit the open-files limit (raise the hard limit, e.g. LimitNOFILE= or ulimit -Hn)"
                    );
                    if let Some(fits) = std::num::NonZeroUsize::new(fit.max_connections) {
                        config.limits.max_connections = fits;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the open-files limit"),
        }
    }
}

fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
