//! What every binary does around its work: logging, one error line, the exit code.

use std::process::ExitCode;

/// Sets up logging for `verbosity`, runs `body`, and on failure prints `program: <error chain>`
/// once on stderr and exits with 1.
pub fn run(program: &str, verbosity: u8, body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    crate::logging::init(verbosity);
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
