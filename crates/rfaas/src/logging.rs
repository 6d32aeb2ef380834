//! Logging set-up shared by the binaries: `RUST_LOG` wins, else `-v` picks the level.

/// Installs a `tracing` subscriber that prints timestamps like the seed's logs.
/// `verbosity`: 0 = info (the seed's lines), 1 = debug, 2 or more = trace.
pub fn init(verbosity: u8) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let default = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_thread_ids(true)
        .try_init();
}
