//! Decoding of the text arguments of protocol 0 and of integer payloads. Errors are messages
//! that the machine wraps in [`PickleError::Invalid`].

use std::sync::Arc;

use super::value::Value;

/// CPython's `int()` refuses longer decimal strings (sys.int_info.default_max_str_digits),
/// which also keeps the quadratic decimal conversion below cheap.
const MAX_DIGITS: usize = 4300;

/// A little-endian two's complement integer: `Int` when it fits in i64, else `BigInt` with
/// redundant sign bytes trimmed (so equal numbers compare equal).
pub fn int_from_le(bytes: &[u8]) -> Value {
    let mut len = bytes.len();
    while len > 1 {
        let (Some(&last), Some(&prev)) = (bytes.get(len - 1), bytes.get(len - 2)) else {
            break;
        };
        let redundant = (last == 0x00 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0);
        if !redundant {
            break;
        }
        len -= 1;
    }
    let bytes = bytes.get(..len).unwrap_or_default();
    if bytes.len() > 8 {
        return Value::BigInt(Arc::from(bytes));
    }
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let mut buf = if negative { [0xff; 8] } else { [0; 8] };
    for (dst, &src) in buf.iter_mut().zip(bytes) {
        *dst = src;
    }
    Value::Int(i64::from_le_bytes(buf))
}

/// A decimal integer literal (INT, LONG): optional sign, digits, surrounding whitespace.
pub fn decimal_int(text: &[u8]) -> Result<Value, String> {
    let bad = || format!("{:?} is not a decimal integer", String::from_utf8_lossy(text));
    let trimmed = text.trim_ascii();
    let (negative, digits) = match trimmed.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, trimmed),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    if digits.len() > MAX_DIGITS {
        return Err(format!(
            "integer literal has {} digits, more than {MAX_DIGITS}",
            digits.len()
        ));
    }
    // Magnitude in base 2^32, least significant limb first, fed nine digits at a time.
    let mut limbs: Vec<u32> = Vec::new();
    for chunk in digits.chunks(9) {
        let mut scale: u64 = 1;
        let mut carry: u64 = 0;
        for &d in chunk {
            scale *= 10;
            carry = carry * 10 + u64::from(d - b'0');
        }
        for limb in &mut limbs {
            let x = u64::from(*limb) * scale + carry;
            *limb = x as u32;
            carry = x >> 32;
        }
        if carry != 0 {
            limbs.push(carry as u32);
        }
    }
    let mut bytes: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
    bytes.push(0); // room for the sign bit
    if negative {
        // Two's complement: invert, add one.
        let mut carry = true;
        for b in &mut bytes {
            let (sum, overflow) = (!*b).overflowing_add(u8::from(carry));
            *b = sum;
            carry = overflow;
        }
    }
    Ok(int_from_le(&bytes))
}

/// A memo key of PUT/GET: a non-negative decimal.
pub fn memo_key(text: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(text.trim_ascii())
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| format!("{:?} is not a memo key", String::from_utf8_lossy(text)))
}

/// FLOAT: Python's float repr ("1.5", "1e+300", "inf", "nan").
pub fn float(text: &[u8]) -> Result<f64, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("{:?} is not a float", String::from_utf8_lossy(text)))
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// STRING: a quoted Python 2 string literal, decoded like `codecs.escape_decode`.
pub fn python_string(line: &[u8]) -> Result<Vec<u8>, String> {
    let inner = match line {
        [q @ (b'\'' | b'"'), inner @ .., last] if last == q => inner,
        _ => return Err("the STRING argument must be quoted".into()),
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while let Some(&b) = inner.get(i) {
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let Some(&c) = inner.get(i) else {
            return Err("trailing \\ in string".into());
        };
        i += 1;
        match c {
            b'\n' => {} // line continuation
            b'\\' | b'\'' | b'"' => out.push(c),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                // Up to three octal digits; CPython keeps the low byte of \400..\777.
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match inner.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            b'x' => {
                let hi = inner.get(i).copied().and_then(hex_digit);
                let lo = inner.get(i + 1).copied().and_then(hex_digit);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(format!("invalid \\x escape at position {}", i - 2));
                };
                out.push(hi << 4 | lo);
                i += 2;
            }
            // Unknown escapes stay as written.
            _ => out.extend_from_slice(&[b'\\', c]),
        }
    }
    Ok(out)
}

/// UNICODE: raw-unicode-escape. Bytes are Latin-1 code points; only `\uXXXX` and
/// `\UXXXXXXXX` are escapes (a backslash pair is taken as written, so `\\u` is literal).
/// Surrogate pairs, which Python 2 narrow builds wrote, are joined; a lone surrogate, which
/// CPython keeps in its str, cannot be held in a Rust string and becomes U+FFFD (a name holding
/// one is no name Python can import, so nothing is lost for the scanner).
pub fn raw_unicode_escape(line: &[u8]) -> Result<String, String> {
    let mut units: Vec<u32> = Vec::with_capacity(line.len());
    let mut i = 0;
    while let Some(&b) = line.get(i) {
        i += 1;
        if b != b'\\' {
            units.push(b.into());
            continue;
        }
        let digits = match line.get(i) {
            Some(b'u') => 4,
            Some(b'U') => 8,
            Some(&c) => {
                units.extend([u32::from(b'\\'), c.into()]);
                i += 1;
                continue;
            }
            None => {
                units.push(b'\\'.into());
                continue;
            }
        };
        let hex = line
            .get(i + 1..i + 1 + digits)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .ok_or_else(|| format!("truncated \\u escape at position {}", i - 1))?;
        let cp = hex
            .iter()
            .try_fold(0u32, |acc, &h| Some(acc << 4 | u32::from(hex_digit(h)?)))
            .unwrap_or(u32::MAX);
        if cp > 0x10ffff {
            return Err(format!("\\U{cp:08x} is out of range"));
        }
        units.push(cp);
        i += 1 + digits;
    }
    let mut out = String::with_capacity(units.len());
    let mut units = units.into_iter().peekable();
    while let Some(u) = units.next() {
        let cp = match (u, units.peek()) {
            (0xd800..=0xdbff, Some(&lo @ 0xdc00..=0xdfff)) => {
                units.next();
                0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00)
            }
            _ => u,
        };
        out.push(char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER));
    }
    Ok(out)
}

/// BINUNICODE, SHORT_BINUNICODE, BINUNICODE8: UTF-8 decoded the way CPython does, with
/// 'surrogatepass': a surrogate encoded as three bytes (ED A0..BF 80..BF) is accepted and, as
/// in [`raw_unicode_escape`], becomes U+FFFD. Any other invalid sequence is an error, as in
/// CPython.
pub fn utf8_surrogatepass(bytes: &[u8]) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(text) => {
                out.push_str(text);
                return Ok(out);
            }
            Err(e) => {
                let (valid, bad) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                match bad {
                    [0xed, 0xa0..=0xbf, 0x80..=0xbf, tail @ ..] => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        rest = tail;
                    }
                    _ => {
                        let at = bytes.len() - bad.len();
                        return Err(format!("invalid UTF-8 at byte {at} of the string"));
                    }
                }
            }
        }
    }
}
