//! Sizes as people read them.

/// `1.50 MiB` style sizes: bytes below 1 KiB, else two decimals of the largest binary unit
/// (the same text indicatif's `BinaryBytes` draws on the progress bars).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 8] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"];
    let mut v = n as f64;
    if v < 1024.0 {
        return format!("{v:.0} B");
    }
    let mut unit = 0;
    v /= 1024.0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2} {}B", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_as_the_progress_bars() {
        let mut n = 1u64;
        let mut samples = vec![0, 1, 1023, 1024, 1025, 1536, u64::MAX];
        while let Some(m) = n.checked_mul(3) {
            samples.extend([m - 1, m, m + 1]);
            n = m;
        }
        for s in samples {
            assert_eq!(human_bytes(s), indicatif::BinaryBytes(s).to_string(), "{s}");
        }
        assert_eq!(human_bytes(1536), "1.50 KiB");
    }
}
