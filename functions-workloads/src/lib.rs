//! Workloads of the kinds rFaaS serves, as functions: each built from this one source as the
//! native library `libworkloads.so` and as the WASI module `workloads.wasm`
//! (`cargo build -p workloads --target wasm32-wasip1`), with the [`rfaas_function`] SDK.
//!
//! | function | input | output |
//! |---|---|---|
//! | `matmul` | `u32 n`, then two `n × n` row-major `f32` matrices | their product, `n × n` `f32` |
//! | `black_scholes` | options of five `f32`: spot, strike, rate, volatility, years | the call price of each, `f32` |
//! | `thumbnail` | `u16 width`, `u16 height`, 8-bit grey pixels | `u16 width / 4`, `u16 height / 4`, the 4 × 4 box-filtered pixels |
//! | `sha256` | any bytes | their SHA-256 digest, 32 bytes |
//! | `greet` | a UTF-8 name | a greeting, also printed to stdout (the executor's log) |
//! | `reserve` | `u32` MiB | nothing; an error when that much memory cannot be had |
//! | `hog` | `u32` MiB | allocates and touches that much with infallible allocation |
//!
//! All numbers are little-endian. Malformed input is an error for the caller, never a panic.
//! [`kernels`] holds the same computations as plain Rust functions.

pub mod kernels;

rfaas_function::function! {
    /// `n × n` matrix product in `f32`.
    fn matmul(input: &[u8], output: &mut [u8]) -> Result<usize, String> {
        kernels::matmul(input, output)
    }
}

rfaas_function::function! {
    /// Black-Scholes call prices.
    fn black_scholes(input: &[u8], output: &mut [u8]) -> Result<usize, String> {
        kernels::black_scholes(input, output)
    }
}

rfaas_function::function! {
    /// A 4 × 4 box-filtered thumbnail of a grey image.
    fn thumbnail(input: &[u8], output: &mut [u8]) -> Result<usize, String> {
        kernels::thumbnail(input, output)
    }
}

rfaas_function::function! {
    /// The SHA-256 digest of the input.
    fn sha256(input: &[u8], output: &mut [u8]) -> Result<usize, String> {
        kernels::sha256(input, output)
    }
}

rfaas_function::function! {
    /// A greeting built with `format!`, printed with `println!` and returned.
    fn greet(input: &[u8], output: &mut [u8]) -> Result<usize, String> {
        let name = std::str::from_utf8(input).map_err(|e| format!("the name is not UTF-8: {e}"))?;
        let words: Vec<&str> = name.split_whitespace().collect();
        let greeting = format!("Hello, {}! ({} words)", words.join(" "), words.len());
        println!("{greeting}");
        kernels::put(output, greeting.as_bytes())
    }
}

rfaas_function::function! {
    /// Asks for `u32` MiB with fallible allocation and gives it back: an error when the
    /// allocation's memory does not have it.
    fn reserve(input: &[u8], _output: &mut [u8]) -> Result<usize, String> {
        let mib = kernels::read_u32(input, 0)? as usize;
        let mut v: Vec<u8> = Vec::new();
        v.try_reserve_exact(mib << 20)
            .map_err(|e| format!("cannot allocate {mib} MiB: {e}"))?;
        Ok(0)
    }
}

rfaas_function::function! {
    /// Allocates `u32` MiB with infallible allocation and touches every page: past the
    /// allocation's memory this aborts.
    fn hog(input: &[u8], output: &mut [u8]) -> Result<usize, String> {
        let mib = kernels::read_u32(input, 0)? as usize;
        let v = vec![1u8; mib << 20];
        let touched: u64 = v.iter().step_by(4096).map(|&b| u64::from(b)).sum();
        kernels::put(output, &touched.to_le_bytes())
    }
}
