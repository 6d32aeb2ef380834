//! Inputs for the workloads of `functions-workloads` and the results they must give: what the
//! workload benchmark sends and the end-to-end tests check, native and wasm alike.

use workloads::kernels;

/// The workloads that compute something, in the order the benchmark prints them.
pub const WORKLOADS: [&str; 4] = ["matmul", "black_scholes", "thumbnail", "sha256"];

/// A deterministic pseudo-random stream (xorshift64*), so inputs are the same in every run.
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A float in `[low, high)`.
    fn uniform(&mut self, low: f32, high: f32) -> f32 {
        low + (high - low) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// The input of `workload` at `scale` (0: small, 1: large) and a description of it.
pub fn input(workload: &str, scale: usize) -> (Vec<u8>, String) {
    let mut rng = Stream(0x9e37_79b9_7f4a_7c15 ^ (scale as u64 + 1));
    let large = scale > 0;
    match workload {
        "matmul" => {
            let n: u32 = if large { 64 } else { 16 };
            let mut input = n.to_le_bytes().to_vec();
            for _ in 0..2 * n * n {
                input.extend_from_slice(&rng.uniform(-1.0, 1.0).to_le_bytes());
            }
            (input, format!("{n} x {n} f32"))
        }
        "black_scholes" => {
            let options = if large { 16384 } else { 256 };
            let mut input = Vec::with_capacity(options * 20);
            for _ in 0..options {
                let spot = rng.uniform(50.0, 150.0);
                for v in [
                    spot,
                    spot * rng.uniform(0.8, 1.2),
                    rng.uniform(0.01, 0.05),
                    rng.uniform(0.1, 0.5),
                    rng.uniform(0.25, 2.0),
                ] {
                    input.extend_from_slice(&v.to_le_bytes());
                }
            }
            (input, format!("{options} options"))
        }
        "thumbnail" => {
            let (w, h): (u16, u16) = if large { (512, 512) } else { (64, 64) };
            let mut input = [w.to_le_bytes(), h.to_le_bytes()].concat();
            input.extend((0..usize::from(w) * usize::from(h)).map(|_| rng.next() as u8));
            (input, format!("{w} x {h} pixels"))
        }
        "sha256" => {
            let len = if large { 256 << 10 } else { 4 << 10 };
            let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            (input, format!("{} KiB", len >> 10))
        }
        other => panic!("no workload {other}"),
    }
}

/// What `workload` returns for `input`, computed here by the same kernels.
pub fn reference(workload: &str, input: &[u8]) -> Vec<u8> {
    let kernel = match workload {
        "matmul" => kernels::matmul,
        "black_scholes" => kernels::black_scholes,
        "thumbnail" => kernels::thumbnail,
        "sha256" => kernels::sha256,
        other => panic!("no workload {other}"),
    };
    let mut output = vec![0u8; 1 << 20];
    let len = kernel(input, &mut output).expect("the reference input is well-formed");
    output.truncate(len);
    output
}

/// Whether `got` is the reference result: bit for bit, except Black-Scholes, whose `exp` and
/// `ln` come from the platform's maths library (glibc natively, Rust's libm in wasm) and may
/// differ in the last bits.
pub fn matches(workload: &str, got: &[u8], expected: &[u8]) -> bool {
    if workload != "black_scholes" {
        return got == expected;
    }
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    got.len() == expected.len()
        && f32s(got)
            .iter()
            .zip(f32s(expected))
            .all(|(g, e)| (g - e).abs() <= 1e-4 * e.abs().max(1.0))
}
