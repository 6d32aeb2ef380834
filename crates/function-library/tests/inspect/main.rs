//! Inspection of real and hand-made function libraries: nothing is loaded or run.

mod artifacts;
mod detect;
mod native;
mod support;
mod wasm;
