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

/// `1 image`, `2 images`: a count and its noun (`noun` is the singular; the plural adds `s`).
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A size as people write it: `4294967295`, `700M`, `2G`, `512KiB` (binary units; `B` and `iB`
/// are optional).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size: write bytes, or a number with K, M or G"))?;
    let shift = match unit.trim().trim_end_matches('B').trim_end_matches('i') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use K, M, G or T")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_takes_the_plural_unless_one() {
        assert_eq!(count(0, "image"), "0 images");
        assert_eq!(count(1, "image"), "1 image");
        assert_eq!(count(28, "file"), "28 files");
    }

    #[test]
    fn sizes_are_read_in_binary_units() {
        assert_eq!(parse_bytes("4294967295"), Ok(4294967295));
        assert_eq!(parse_bytes("700M"), Ok(700 << 20));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert!(parse_bytes("ten").is_err() && parse_bytes("5X").is_err());
    }

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
