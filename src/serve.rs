//! `flowscope serve`: opens the pipeline (ports bound, data directory locked, every store
//! replayed into its graph), starts it, runs until SIGINT or SIGTERM, then drains it: stops
//! accepting, flushes memory to Parquet and exits. The stages are in `pipeline`.

use anyhow::Context;

use crate::config::ServeConfig;
use crate::pipeline;

pub fn run(config: ServeConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("flowscope")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let running = pipeline::open(config).await?.start()?;
    shutdown_signal().await;
    running.drain().await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
