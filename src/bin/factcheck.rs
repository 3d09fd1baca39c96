//! The `factcheck` binary: `factcheck serve` runs the server; every other
//! subcommand is a client of a running server (see `factcheck --help`).
//!
//! Client exit codes: 0 success, 1 other failure (e.g. an unreadable file),
//! 2 usage error or bad input, 3 the server refused the request, 4 the
//! server could not be reached.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use factcheck::auth::Tokens;
use factcheck::config::{Cli, Command, ServeArgs};
use factcheck::store::{Store, StoreConfig};
use tracing_subscriber::EnvFilter;

/// mimalloc, not glibc's malloc: the committer, sled's IO threads and the
/// async workers allocate at once, and glibc's arena locks were ~15% of the
/// committer's time in a profile of creates at 64 in flight (futex wakes
/// inside `malloc`), its arenas holding memory long after a load
/// (`docs/BENCHMARKS.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Test builds only: `FACTCHECK_CRASH_AT=name[:n]` ends the process the
/// n-th time (default 1) failpoint `name` is passed, with `abort`: no
/// destructor runs, no buffer is flushed, as with kill -9, but at exactly
/// that point (a log rotation, a checkpoint) instead of wherever a signal
/// happens to land.
#[cfg(feature = "failpoints")]
fn crash_at_failpoint() {
    let Ok(spec) = std::env::var("FACTCHECK_CRASH_AT") else {
        return;
    };
    // Failpoint names hold `::`: the count is what follows the last `:`,
    // if it is a number.
    let (name, nth) = match spec.rsplit_once(':').map(|(name, n)| (name, n.parse::<u64>())) {
        Some((name, Ok(n))) => (name.to_owned(), n),
        _ => (spec, 1),
    };
    let passed = std::sync::atomic::AtomicU64::new(0);
    let at = name.clone();
    fail::cfg_callback(name, move || {
        if passed.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == nth {
            eprintln!("crashing at failpoint {at} (pass {nth})");
            std::process::abort();
        }
    })
    .expect("a failpoint callback");
}

fn main() -> ExitCode {
    // Test builds only: failpoints from the FAILPOINTS environment variable.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    #[cfg(feature = "failpoints")]
    crash_at_failpoint();
    let cli = Cli::parse();
    // The server logs at info by default; client commands only warn.
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `--output json` asks for errors as JSON too (on stderr).
    let json_output = {
        let args: Vec<String> = std::env::args().collect();
        args.windows(2).any(|w| w[0] == "--output" && w[1] == "json")
            || args.iter().any(|a| a == "--output=json")
    };
    match cli.command {
        Command::Serve(args) => match runtime.block_on(serve(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        },
        command => match runtime.block_on(factcheck::cli::run(command)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                if json_output {
                    eprintln!("{}", e.to_json());
                } else {
                    eprintln!("error: {}", e.message());
                }
                ExitCode::from(e.exit_code())
            }
        },
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    // SIGHUP's default action ends the process: listen for it before
    // anything slow (opening a large store takes seconds).
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("cannot listen for SIGHUP: {e}"))?;
    factcheck::config::private_data_dir(&args.data_dir)?;
    let engine = args.store.engine()?;
    // On etcd, the tokens live in the cluster beside the store, so every
    // replica sees the same ones (unless a file is named).
    let tokens = match (&engine, args.tokens.as_deref()) {
        (factcheck::store::EngineConfig::Etcd(etcd), None) => {
            let file = args.data_dir.join(factcheck::auth::DEFAULT_TOKENS_FILE);
            if file.exists() {
                tracing::warn!(
                    file = %file.display(),
                    "on etcd the tokens live in the cluster, not in this file: move them with \
                     `factcheck token add --store etcd ...`, or pass --tokens to keep using the file"
                );
            }
            factcheck::auth_etcd::serve(etcd, &args.data_dir)
                .await
                .map_err(|e| e.to_string())?
        }
        (_, explicit) => {
            let (tokens, tokens_path) =
                Tokens::load_or_init(explicit, &args.data_dir).map_err(|e| e.to_string())?;
            tracing::info!(tokens = tokens.len(), file = %tokens_path.display(), "loaded tokens");
            Arc::new(tokens)
        }
    };
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(tokens.clone(), hup));
    tracing::info!(data_dir = %args.data_dir.display(), "opening the store");

    let mut config = StoreConfig::new(&args.data_dir);
    config.seeds_dir = Some(args.seeds.clone());
    config.cache_capacity_bytes = args.cache_mb * 1024 * 1024;
    config.sync = args.sync;
    let max_response_bytes = (args.max_response_mb * 1024 * 1024) as usize;
    config.max_result_bytes = max_response_bytes;
    config.review_min_analysts = args.review_min_analysts;
    config.wal_segment_bytes = args.wal_segment_bytes;
    config.reanchor_chunk = args.reanchor_chunk as usize;
    if let Some(retention) = args.changelog_retention {
        config.retention = retention;
    }
    config.engine = engine;
    let store = tokio::task::spawn_blocking(move || Store::open(&config))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    tracing::info!(
        articles = store.articles().len(),
        revision = store.revision(),
        data_dir = %args.data_dir.display(),
        "store open"
    );

    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            Some((read(cert)?, read(key)?))
        }
        _ => None,
    };
    if tls.is_none() && !args.listen.ip().is_loopback() && !args.insecure {
        return Err(format!(
            "refusing to listen on {} without TLS: bearer tokens would cross the network in clear text; \
             give --tls-cert and --tls-key, or --insecure to accept the risk",
            args.listen
        ));
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    // `kill -HUP "$(cat <data-dir>/factcheck.pid)"` reloads this server's
    // tokens and no other's (`pidof` names every factcheck on the machine).
    // The store's lock already keeps a second server off this data dir.
    let pid_file = args.data_dir.join("factcheck.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .map_err(|e| format!("cannot write {}: {e}", pid_file.display()))?;
    let options = factcheck::server::Options {
        tls,
        call_timeout: std::time::Duration::from_secs(args.call_timeout_secs),
        max_response_bytes,
        connections: factcheck::listener::Limits {
            max_connections: args.max_connections,
            handshake_timeout: std::time::Duration::from_secs(args.handshake_timeout_secs),
        },
        max_streams_per_connection: args.max_streams_per_connection,
        web: !args.no_web,
        cors_origins: args.cors_origins.clone(),
        watch: factcheck::watch::WatchOptions {
            max_per_analyst: args.max_watchers_per_analyst,
            ..Default::default()
        },
        ..Default::default()
    };
    let served = factcheck::server::run_with(listener, store, tokens, options, shutdown_signal()).await;
    let _ = std::fs::remove_file(&pid_file);
    served.map_err(|e| format!("server failed: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

/// Rereads the tokens file on each SIGHUP; connections stay up, and a file
/// that does not parse leaves the tokens as they were.
#[cfg(unix)]
async fn reload_on_sighup(tokens: Arc<Tokens>, mut hup: tokio::signal::unix::Signal) {
    while hup.recv().await.is_some() {
        match tokens.reload() {
            Ok(n) => tracing::info!(tokens = n, "reloaded tokens"),
            Err(e) => tracing::error!(error = %e, "tokens not reloaded: keeping the previous ones"),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    // The server has its grace period to finish calls, then the store closes.
    // Should closing hang (sled waiting on a disk that failed), the process
    // ends anyway: the write-ahead log holds everything acknowledged.
    std::thread::spawn(|| {
        std::thread::sleep(factcheck::server::SHUTDOWN_GRACE + std::time::Duration::from_secs(5));
        tracing::error!("the store did not close in time after the grace period: exiting without it");
        std::process::exit(1);
    });
}
