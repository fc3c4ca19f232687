//! The tar format of torch < 0.4, which `torch.load(weights_only=False)` still reads: it tries
//! `tarfile.open` on every file that is not a zip before unpickling it, so a file whose first
//! block is a valid tar header is read as a tar, whatever else it looks like.
//!
//! Members: `storages` (a pickled count, then per storage a pickled `(key, location,
//! storage_type)` followed by an 8-byte element count and the raw bytes, then a pickled list of
//! views), `tensors` (a pickled count, then per tensor a pickled `(key, storage_id, type)`
//! followed by ndim, sizes, strides and offset in binary), `pickle` (the object), and
//! `sys_info`.

/// A tar member: its name (after PAX / GNU long-name records) and where its bytes lie.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

const BLOCK: usize = 512;

/// Whether `bytes` starts with a block Python's `tarfile` accepts as a header (its checksum
/// matches, signed or unsigned, as `tarfile.calc_chksums` computes it).
pub fn is_tar(bytes: &[u8]) -> bool {
    let Some(block) = bytes.get(..BLOCK) else { return false };
    if block.iter().all(|&b| b == 0) {
        return false;
    }
    let Some(want) = number(&block[148..156]) else {
        return false;
    };
    let mut unsigned: i64 = 256;
    let mut signed: i64 = 256;
    for (i, &b) in block.iter().enumerate() {
        if (148..156).contains(&i) {
            continue;
        }
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    want == unsigned || want == signed
}

/// tarfile's `nti`: base-256 when the first byte is 0x80/0xff, else octal text up to the first
/// NUL, with Python's `int(s.strip() or "0", 8)` leniency (sign, 0o prefix, underscores).
fn number(field: &[u8]) -> Option<i64> {
    let first = *field.first()?;
    if first == 0x80 || first == 0xff {
        let mut n: i64 = 0;
        for &b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(i64::from(b))?;
        }
        if first == 0xff {
            n = n.checked_sub(256i64.checked_pow(field.len() as u32 - 1)?)?;
        }
        return Some(n);
    }
    let text = field.split(|&b| b == 0).next().unwrap_or_default();
    if !text.is_ascii() {
        return None;
    }
    let s = std::str::from_utf8(text).ok()?;
    let s = s.trim_matches(|c: char| c.is_ascii_whitespace() || ('\x1c'..='\x1f').contains(&c) || c == '\x0b');
    if s.is_empty() {
        return Some(0);
    }
    let (neg, s) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let s = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")).unwrap_or(s);
    if s.is_empty() || s.starts_with('_') || s.ends_with('_') || s.contains("__") {
        return None;
    }
    let mut n: i64 = 0;
    for c in s.chars().filter(|&c| c != '_') {
        let d = c.to_digit(8)?;
        n = n.checked_mul(8)?.checked_add(i64::from(d))?;
    }
    Some(if neg { -n } else { n })
}

/// The members of a tar archive, in order. Errors name the block at fault.
pub fn members(bytes: &[u8]) -> Result<Vec<Member>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut long_name: Option<String> = None;
    let mut pax_path: Option<String> = None;
    while let Some(block) = bytes.get(pos..pos + BLOCK) {
        if block.iter().all(|&b| b == 0) {
            break;
        }
        if !is_tar(block) {
            return Err(format!("bad tar header checksum at byte {pos}"));
        }
        let size = number(&block[124..136])
            .filter(|&n| n >= 0)
            .ok_or_else(|| format!("bad member size at byte {pos}"))?;
        let size = usize::try_from(size).map_err(|_| format!("member size at byte {pos} too large"))?;
        let data = pos + BLOCK;
        let end = data
            .checked_add(size)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| format!("member at byte {pos} runs past the end of the file"))?;
        let cstr = |f: &[u8]| String::from_utf8_lossy(f.split(|&b| b == 0).next().unwrap_or_default()).into_owned();
        let mut name = cstr(&block[0..100]);
        if &block[257..262] == b"ustar" {
            let prefix = cstr(&block[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let payload = &bytes[data..end];
        match block[156] {
            b'L' => long_name = Some(cstr(payload)),
            b'x' => pax_path = pax_value(payload, "path").or(pax_path),
            b'g' | b'K' => {}
            flag => {
                let name = pax_path.take().or(long_name.take()).unwrap_or(name);
                if matches!(flag, 0 | b'0' | b'7') {
                    out.push(Member {
                        name,
                        offset: data,
                        size,
                    });
                }
            }
        }
        pos = end.div_ceil(BLOCK) * BLOCK;
        if out.len() > 1 << 20 {
            return Err("more than a million tar members".into());
        }
    }
    Ok(out)
}

/// A value of a PAX extended header (`"%d %s=%s\n"` records).
fn pax_value(mut data: &[u8], key: &str) -> Option<String> {
    let mut found = None;
    while !data.is_empty() {
        let sp = data.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&data[..sp]).ok()?.parse().ok()?;
        let record = data.get(sp + 1..len)?;
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(eq) = record.iter().position(|&b| b == b'=') {
            if &record[..eq] == key.as_bytes() {
                found = Some(String::from_utf8_lossy(&record[eq + 1..]).into_owned());
            }
        }
        data = data.get(len..)?;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_fields_like_python() {
        assert_eq!(number(b"0000644\0"), Some(0o644));
        assert_eq!(number(b"  644 \0\0"), Some(0o644));
        assert_eq!(number(b"\0\0\0\0"), Some(0));
        assert_eq!(number(b"0o1_7\0"), Some(0o17));
        assert_eq!(number(b"89\0"), None);
        assert_eq!(number(&[0x80, 0, 0, 1, 0]), Some(256));
    }

    #[test]
    fn garbage_is_not_tar() {
        assert!(!is_tar(&[0u8; 512]));
        assert!(!is_tar(&[0x80; 600]));
        assert!(members(&[1u8; 1024]).is_err());
    }
}
