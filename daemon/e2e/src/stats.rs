//! Small helpers: percentiles, a seeded random generator, random secrets, formatting.

use std::time::Duration;

/// The `p`-th percentile (0..=100) of `sorted` (ascending), nearest rank.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Microseconds as milliseconds with two decimals.
pub fn ms(us: u32) -> String {
    format!("{:.2} ms", f64::from(us) / 1000.0)
}

/// Seconds with one or two decimals.
pub fn secs(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// KiB as MiB.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// xorshift64*: cheap, seeded from the OS, good enough to pick users and delays.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).expect("getrandom");
        Rng(u64::from_le_bytes(seed) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[lo, hi)`.
    pub fn range_f64(&mut self, lo: f64, hi: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * unit
    }
}

/// `len` random bytes as lowercase hex.
pub fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("getrandom");
    hex::encode(bytes)
}

/// A random base32 TOTP secret (20 bytes, 32 characters, no padding).
pub fn random_totp_secret() -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).expect("getrandom");
    let mut out = String::with_capacity(32);
    for chunk in bytes.chunks(5) {
        let mut buf = 0u64;
        for b in chunk {
            buf = (buf << 8) | u64::from(*b);
        }
        for i in (0..8).rev() {
            out.push(ALPHABET[((buf >> (i * 5)) & 31) as usize] as char);
        }
    }
    out
}

/// Now, Unix seconds.
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Now, Unix milliseconds.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `min / median / max` of durations.
pub fn spread(values: &[Duration]) -> String {
    sorted_summary(values, |v| {
        format!(
            "{} / {} / {}",
            secs(v[0]),
            secs(v[v.len() / 2]),
            secs(v[v.len() - 1])
        )
    })
}

/// `median X, max Y` of durations.
pub fn median_max(values: &[Duration]) -> String {
    sorted_summary(values, |v| {
        format!(
            "median {}, max {}",
            secs(v[v.len() / 2]),
            secs(v[v.len() - 1])
        )
    })
}

/// `show` of the values sorted, or `-` when there are none.
fn sorted_summary(values: &[Duration], show: impl FnOnce(&[Duration]) -> String) -> String {
    if values.is_empty() {
        return "-".into();
    }
    let mut v = values.to_vec();
    v.sort();
    show(&v)
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(super::percentile(&v, 99.0), 99);
        assert_eq!(super::percentile(&v, 50.0), 50);
        assert_eq!(super::percentile(&v, 100.0), 100);
        assert_eq!(super::percentile::<u32>(&[], 99.0), 0);
    }

    #[test]
    fn totp_secrets_are_base32_of_twenty_bytes() {
        let s = super::random_totp_secret();
        assert_eq!(s.len(), 32);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        );
    }
}
