//! The 51-byte eStargz footer: an empty gzip member whose extra field `SG` holds the TOC's
//! offset as `%016x` followed by `STARGZ`.

use super::{EstargzError, Result};

/// Bytes in the footer.
pub const FOOTER_SIZE: usize = 51;

/// The footer pointing at a TOC at `toc_offset`, byte for byte as upstream's Go writer makes
/// it (gzip header with FEXTRA, a stored empty deflate block, CRC and size 0).
pub fn footer_bytes(toc_offset: u64) -> [u8; FOOTER_SIZE] {
    let mut f = [0u8; FOOTER_SIZE];
    // magic, deflate, FEXTRA, mtime 0, xfl 0, OS unknown
    f[..10].copy_from_slice(&[0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff]);
    f[10..12].copy_from_slice(&26u16.to_le_bytes());
    f[12] = b'S';
    f[13] = b'G';
    f[14..16].copy_from_slice(&22u16.to_le_bytes());
    let sub = format!("{toc_offset:016x}STARGZ");
    f[16..38].copy_from_slice(sub.as_bytes());
    // final stored block of length 0
    f[38..43].copy_from_slice(&[1, 0, 0, 0xff, 0xff]);
    // CRC32 and ISIZE of nothing: zero
    f
}

/// The TOC offset a footer gives. `layer` names the layer in the error.
pub fn parse_footer(layer: &str, f: &[u8]) -> Result<u64> {
    let bad = |reason: &str| EstargzError::Footer {
        layer: layer.to_string(),
        reason: reason.to_string(),
    };
    if f.len() != FOOTER_SIZE {
        return Err(bad(&format!(
            "footer of {} bytes, not {FOOTER_SIZE}",
            f.len()
        )));
    }
    if f[0] != 0x1f || f[1] != 0x8b || f[2] != 8 {
        return Err(bad("the footer is not a gzip member"));
    }
    if f[3] & 4 == 0 {
        return Err(bad("the footer has no gzip extra field"));
    }
    if f[3] & !4 != 0 {
        return Err(bad("the footer's gzip header has unexpected flags"));
    }
    let xlen = u16::from_le_bytes([f[10], f[11]]);
    if xlen != 26 {
        return Err(bad(&format!("gzip extra field of {xlen} bytes, not 26")));
    }
    if &f[12..14] != b"SG" {
        return Err(bad("no SG subfield in the footer"));
    }
    if u16::from_le_bytes([f[14], f[15]]) != 22 {
        return Err(bad("the SG subfield is not 22 bytes"));
    }
    if &f[32..38] != b"STARGZ" {
        return Err(bad("no STARGZ magic in the footer"));
    }
    let hex = std::str::from_utf8(&f[16..32]).map_err(|_| bad("TOC offset is not hex"))?;
    let off = u64::from_str_radix(hex, 16).map_err(|_| bad("TOC offset is not hex"))?;
    // The rest must be an empty deflate stream with CRC and size 0.
    let mut empty = Vec::new();
    let mut d = flate2::read::DeflateDecoder::new(&f[38..43]);
    std::io::Read::read_to_end(&mut d, &mut empty).map_err(|_| bad("bad deflate data"))?;
    if !empty.is_empty() || f[43..].iter().any(|b| *b != 0) {
        return Err(bad("the footer member is not empty"));
    }
    Ok(off)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn footer_round_trip_and_gunzips_to_nothing() -> TestResult {
        let f = footer_bytes(0x1234_5678);
        assert_eq!(parse_footer("l", &f).ok(), Some(0x1234_5678));
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&f[..]), &mut out)
            .map_err(|e| format!("footer is valid gzip: {e}"))?;
        assert!(out.is_empty());
        Ok(())
    }

    #[test]
    fn footer_refusals_name_the_layer() -> TestResult {
        let mut f = footer_bytes(7);
        f[33] = b'X';
        let e = parse_footer("sha256:abc", &f).err().ok_or("bad magic")?;
        assert!(e.to_string().contains("sha256:abc"), "{e}");
        assert!(parse_footer("l", &f[..50]).is_err());
        let mut g = footer_bytes(7);
        g[16] = b'z';
        assert!(parse_footer("l", &g).is_err());
        Ok(())
    }
}
