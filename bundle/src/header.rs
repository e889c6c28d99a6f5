//! Canonical tar headers of format v1.
//!
//! Every header in a bundle is a pure function of (path, size, mode, mtime): ustar, owner 0:0 with
//! empty names, no link name, no device numbers, fields zero-padded octal with a NUL terminator.
//! A path longer than 100 bytes, or a size of 8 GiB or more, is carried by one PAX extended header
//! (`x`) before the ustar header. Because the bytes are fixed, the reader rebuilds the header it
//! expects and compares bytes: no header field can change without the bundle being refused.
//! The `tar` crate is used only to explain a header that does not match (see `reader`).

pub const BLOCK: usize = 512;
/// Largest size the 11-digit octal size field holds.
pub const USTAR_MAX_SIZE: u64 = 0o77777777777;
const NAME_LEN: usize = 100;
/// Name of the PAX extended header entry (as the `tar` crate and bsdtar write it).
pub const PAX_NAME: &[u8] = b"././@PaxHeader";

/// The canonical header bytes (one or more 512-byte blocks) for a regular-file entry.
pub fn canonical_header(path: &str, size: u64, mode: u32, mtime: u64) -> Vec<u8> {
    let path_b = path.as_bytes();
    let mut records = Vec::new();
    if path_b.len() > NAME_LEN {
        records.extend(pax_record("path", path_b));
    }
    if size > USTAR_MAX_SIZE {
        records.extend(pax_record("size", size.to_string().as_bytes()));
    }
    let mut out = Vec::with_capacity(BLOCK * 3);
    if !records.is_empty() {
        out.extend_from_slice(&ustar_block(
            PAX_NAME,
            records.len() as u64,
            0o644,
            mtime,
            b'x',
        ));
        let pad = padding(records.len() as u64);
        out.extend_from_slice(&records);
        out.resize(out.len() + pad, 0);
    }
    let name = &path_b[..path_b.len().min(NAME_LEN)];
    let field_size = if size > USTAR_MAX_SIZE { 0 } else { size };
    out.extend_from_slice(&ustar_block(name, field_size, mode, mtime, b'0'));
    out
}

/// Zero bytes that follow `size` bytes of content to fill the last 512-byte block.
pub fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

fn ustar_block(name: &[u8], size: u64, mode: u32, mtime: u64, typeflag: u8) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..name.len()].copy_from_slice(name);
    octal(&mut b[100..108], u64::from(mode));
    octal(&mut b[108..116], 0);
    octal(&mut b[116..124], 0);
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], mtime);
    b[156] = typeflag;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    let sum = checksum(&b);
    let s = format!("{sum:06o}");
    b[148..154].copy_from_slice(s.as_bytes());
    b[154] = 0;
    b[155] = b' ';
    b
}

/// The tar header checksum: the byte sum with the checksum field counted as spaces.
pub fn checksum(block: &[u8; BLOCK]) -> u32 {
    block
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(v)
            }
        })
        .sum()
}

/// True when the stored checksum field matches the block's content.
pub fn checksum_ok(block: &[u8; BLOCK]) -> bool {
    let field = &block[148..156];
    let digits: String = field
        .iter()
        .take_while(|&&c| c != 0 && c != b' ')
        .map(|&c| c as char)
        .collect();
    u32::from_str_radix(digits.trim(), 8).is_ok_and(|v| v == checksum(block))
}

/// Parse PAX records (`"<len> <key>=<value>\n"`...) into key/value pairs.
pub fn parse_pax(data: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&c| c == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        if len > rest.len() || len <= sp + 1 || rest[len - 1] != b'\n' {
            return None;
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec.iter().position(|&c| c == b'=')?;
        out.push((
            String::from_utf8(rec[..eq].to_vec()).ok()?,
            rec[eq + 1..].to_vec(),
        ));
        rest = &rest[len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_back(header: &[u8], body: &[u8]) -> Vec<(String, u64, u32, u64)> {
        let mut tar_bytes = header.to_vec();
        tar_bytes.extend_from_slice(body);
        tar_bytes.resize(tar_bytes.len() + padding(body.len() as u64) + 2 * BLOCK, 0);
        let mut a = tar::Archive::new(&tar_bytes[..]);
        let mut out = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mut content = Vec::new();
            e.read_to_end(&mut content).unwrap();
            assert_eq!(content, body);
            out.push((p, e.size(), h.mode().unwrap(), h.mtime().unwrap()));
        }
        out
    }

    #[test]
    fn short_path_is_one_ustar_block_the_tar_crate_reads() {
        let h = canonical_header("oci/oci-layout", 5, 0o644, 1_700_000_000);
        assert_eq!(h.len(), BLOCK);
        let block: &[u8; BLOCK] = h[..].try_into().unwrap();
        assert!(checksum_ok(block));
        let got = read_back(&h, b"hello");
        assert_eq!(
            got,
            vec![("oci/oci-layout".into(), 5, 0o644, 1_700_000_000)]
        );
    }

    #[test]
    fn long_path_goes_through_pax() {
        let path = format!("manifests/{}/deployment.yaml", "a".repeat(120));
        let h = canonical_header(&path, 3, 0o755, 7);
        assert_eq!(h.len(), 3 * BLOCK);
        let got = read_back(&h, b"abc");
        assert_eq!(got, vec![(path, 3, 0o755, 7)]);
    }

    #[test]
    fn pax_record_length_counts_itself() {
        for n in [1usize, 80, 85, 86, 87, 990, 995, 996] {
            let r = pax_record("path", &vec![b'x'; n]);
            let (len, _) = std::str::from_utf8(&r).unwrap().split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), r.len(), "value length {n}");
            assert_eq!(parse_pax(&r).unwrap()[0].1.len(), n);
        }
    }

    #[test]
    fn big_size_goes_through_pax() {
        let h = canonical_header("oci/blobs/sha256/x", USTAR_MAX_SIZE + 1, 0o644, 0);
        let recs = parse_pax(h[BLOCK..2 * BLOCK].split(|&c| c == 0).next().unwrap()).unwrap();
        assert_eq!(
            recs,
            vec![(
                "size".to_string(),
                (USTAR_MAX_SIZE + 1).to_string().into_bytes()
            )]
        );
    }
}
