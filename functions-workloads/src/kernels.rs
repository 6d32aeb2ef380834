//! The workloads as plain Rust: `input` in, output written to `output`, its length returned.

use sha2::{Digest, Sha256};

/// Reads the little-endian `u32` at `at`.
pub fn read_u32(input: &[u8], at: usize) -> Result<u32, String> {
    input
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| {
            format!(
                "the input has {} bytes, too few for a u32 at {at}",
                input.len()
            )
        })
}

/// Copies `bytes` to the start of `output`; an error if it does not fit.
pub fn put(output: &mut [u8], bytes: &[u8]) -> Result<usize, String> {
    room(output, bytes.len())?;
    output[..bytes.len()].copy_from_slice(bytes);
    Ok(bytes.len())
}

/// Little-endian `f32`s of `bytes` (a multiple of 4 long).
fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]]))
}

/// Checks that `output` holds `len` bytes.
fn room(output: &[u8], len: usize) -> Result<(), String> {
    if output.len() < len {
        return Err(format!(
            "the output needs {len} bytes, the output buffer holds {}",
            output.len()
        ));
    }
    Ok(())
}

/// `C = A × B` for `n × n` `f32` matrices: `[n: u32][A][B]` in, `C` out.
pub fn matmul(input: &[u8], output: &mut [u8]) -> Result<usize, String> {
    let n = read_u32(input, 0)? as usize;
    let cells = n.checked_mul(n).ok_or("n is too large")?;
    if input.len() != 4 + 8 * cells {
        return Err(format!(
            "n = {n} needs {} input bytes, got {}",
            4 + 8 * cells,
            input.len()
        ));
    }
    room(output, 4 * cells)?;
    let (a, b) = input[4..].split_at(4 * cells);
    let a: Vec<f32> = f32s(a).collect();
    let b: Vec<f32> = f32s(b).collect();
    let mut c = vec![0f32; cells];
    // i-k-j order: the inner loop runs along rows of B and C.
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            let (brow, crow) = (&b[k * n..(k + 1) * n], &mut c[i * n..(i + 1) * n]);
            for (cij, bkj) in crow.iter_mut().zip(brow) {
                *cij += aik * bkj;
            }
        }
    }
    for (out, v) in output.chunks_exact_mut(4).zip(&c) {
        out.copy_from_slice(&v.to_le_bytes());
    }
    Ok(4 * cells)
}

/// Black-Scholes prices of European calls: five `f32` per option in, one `f32` out.
pub fn black_scholes(input: &[u8], output: &mut [u8]) -> Result<usize, String> {
    if !input.len().is_multiple_of(20) {
        return Err(format!(
            "{} input bytes are not a whole number of 20-byte options",
            input.len()
        ));
    }
    let options = input.len() / 20;
    room(output, 4 * options)?;
    for (option, out) in input.chunks_exact(20).zip(output.chunks_exact_mut(4)) {
        let v: Vec<f32> = f32s(option).collect();
        let price = call_price(v[0], v[1], v[2], v[3], v[4]);
        out.copy_from_slice(&price.to_le_bytes());
    }
    Ok(4 * options)
}

fn call_price(spot: f32, strike: f32, rate: f32, volatility: f32, years: f32) -> f32 {
    let sqrt_t = years.sqrt();
    let d1 = ((spot / strike).ln() + (rate + 0.5 * volatility * volatility) * years)
        / (volatility * sqrt_t);
    let d2 = d1 - volatility * sqrt_t;
    spot * normal_cdf(d1) - strike * (-rate * years).exp() * normal_cdf(d2)
}

/// The standard normal distribution function (Abramowitz and Stegun 26.2.17).
fn normal_cdf(x: f32) -> f32 {
    let k = 1.0 / (1.0 + 0.231_641_9 * x.abs());
    let poly = k
        * (0.319_381_53
            + k * (-0.356_563_78 + k * (1.781_477_9 + k * (-1.821_256 + k * 1.330_274_4))));
    let tail = (-0.5 * x * x).exp() * 0.398_942_3 * poly;
    if x >= 0.0 { 1.0 - tail } else { tail }
}

/// A 4 × 4 box-filtered thumbnail: `[width: u16][height: u16][pixels]` in, the same layout out.
pub fn thumbnail(input: &[u8], output: &mut [u8]) -> Result<usize, String> {
    if input.len() < 4 {
        return Err("the image has no header".into());
    }
    let width = usize::from(u16::from_le_bytes([input[0], input[1]]));
    let height = usize::from(u16::from_le_bytes([input[2], input[3]]));
    let pixels = &input[4..];
    if pixels.len() != width * height {
        return Err(format!(
            "a {width} × {height} image has {} pixels, got {}",
            width * height,
            pixels.len()
        ));
    }
    let (tw, th) = (width / 4, height / 4);
    room(output, 4 + tw * th)?;
    output[..2].copy_from_slice(&(tw as u16).to_le_bytes());
    output[2..4].copy_from_slice(&(th as u16).to_le_bytes());
    for ty in 0..th {
        for tx in 0..tw {
            let sum: u32 = (0..4)
                .flat_map(|dy| {
                    let row = (ty * 4 + dy) * width + tx * 4;
                    pixels[row..row + 4].iter().map(|&p| u32::from(p))
                })
                .sum();
            output[4 + ty * tw + tx] = ((sum + 8) / 16) as u8;
        }
    }
    Ok(4 + tw * th)
}

/// The SHA-256 digest of the input.
pub fn sha256(input: &[u8], output: &mut [u8]) -> Result<usize, String> {
    put(output, &Sha256::digest(input))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn matmul_multiplies() {
        let mut input = 2u32.to_le_bytes().to_vec();
        input.extend(le(&[1.0, 2.0, 3.0, 4.0]));
        input.extend(le(&[5.0, 6.0, 7.0, 8.0]));
        let mut out = [0u8; 16];
        assert_eq!(matmul(&input, &mut out), Ok(16));
        assert_eq!(out.to_vec(), le(&[19.0, 22.0, 43.0, 50.0]));
        assert!(
            matmul(&input[..10], &mut out)
                .unwrap_err()
                .contains("needs 36 input bytes")
        );
    }

    #[test]
    fn black_scholes_prices_a_known_call() {
        // S = 100, K = 100, r = 5 %, σ = 20 %, T = 1: 10.45 (Hull, Options, Futures …).
        let mut out = [0u8; 4];
        assert_eq!(
            black_scholes(&le(&[100.0, 100.0, 0.05, 0.2, 1.0]), &mut out),
            Ok(4)
        );
        let price = f32::from_le_bytes(out);
        assert!((price - 10.45).abs() < 0.01, "{price}");
        assert!(black_scholes(&[0; 7], &mut out).is_err());
    }

    #[test]
    fn thumbnail_averages_blocks() {
        let mut input = vec![8, 0, 4, 0];
        input.extend((0..32).map(|i| if i % 8 < 4 { 0 } else { 200 }));
        let mut out = [0u8; 6];
        assert_eq!(thumbnail(&input, &mut out), Ok(6));
        assert_eq!(out, [2, 0, 1, 0, 0, 200]);
        assert!(thumbnail(&input[..20], &mut out).is_err());
    }

    #[test]
    fn sha256_of_abc() {
        let mut out = [0u8; 32];
        assert_eq!(sha256(b"abc", &mut out), Ok(32));
        assert_eq!(out[..4], [0xba, 0x78, 0x16, 0xbf]);
        assert!(sha256(b"abc", &mut [0u8; 16]).is_err());
    }
}
