//! Process lifecycle for `edge-bridge run`: logging, the async runtime, signals, exit status.

use std::process::ExitCode;
use std::sync::Arc;

use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use crate::stats::Stats;
use crate::Config;

/// Installs the log subscriber from `[log]`.
pub fn init_logging(config: &Config) {
    use tracing_subscriber::filter::filter_fn;
    use tracing_subscriber::prelude::*;

    let filter = EnvFilter::try_new(&config.log.level).unwrap_or_else(|e| {
        eprintln!(
            "warning: log.level {:?} is not a valid filter ({e}); using info",
            config.log.level
        );
        EnvFilter::new("info")
    });
    // rumqttd opens an ERROR-level span per publish with the topic as a Debug field; recording
    // it cost the embedded broker's router a fifth of its CPU under load. Its events still pass.
    let no_broker_spans = filter_fn(|m| !(m.is_span() && m.target().starts_with("rumqttd")));
    let mut fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // Colours only on a terminal: the journal and log files would keep the escape codes. (On a
    // terminal the library's default stands, which honours NO_COLOR.)
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        fmt = fmt.with_ansi(false);
    }
    let fmt = if config.log.format == "json" {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter).with_filter(no_broker_spans))
        .try_init();
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
    }
}

pub fn main(config: Config) -> ExitCode {
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "Cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let stats = Arc::new(Stats::default());
    let result = runtime.block_on(crate::bridge::run(config, stats.clone(), shutdown_signal()));
    let summary = stats.snapshot();
    // The summary goes to stdout: it is the run's result, not a log line.
    println!("{summary}");
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
