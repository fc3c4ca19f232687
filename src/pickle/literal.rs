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

/// INT's argument (without its newline), as CPython's unpickler reads it: C's `strtol` in
/// base 0 (decimal, `0x` hex, a leading `0` for octal) when that reads the whole argument and
/// fits in a C long, and then a two-character argument that reads as 0 or 1 (`00`, `01`, `+1`,
/// ` 0`...) is protocol 0's False or True; otherwise `int(text, 0)` ([`python_int`]).
pub fn int_arg(line: &[u8]) -> Result<Value, String> {
    // CPython hands both parsers a C string: a NUL ends it.
    let text = line.split(|&b| b == 0).next().unwrap_or_default();
    match c_strtol(text) {
        Some(v @ (0 | 1)) if line.len() == 2 => Ok(Value::Bool(v == 1)),
        Some(v) => Ok(Value::Int(v)),
        None => python_int(text),
    }
}

/// LONG's argument (without its newline): one trailing `L` dropped, the rest read by
/// `int(text, 0)` ([`python_int`]).
pub fn long_arg(line: &[u8]) -> Result<Value, String> {
    let text = line.strip_suffix(b"L").unwrap_or(line);
    python_int(text.split(|&b| b == 0).next().unwrap_or_default())
}

/// C's `strtol(text, &end, 0)` for a 64-bit long, when it reads all of `text`: leading
/// whitespace, a sign, then `0x` and hex digits, `0` and octal digits, or decimal digits.
fn c_strtol(text: &[u8]) -> Option<i64> {
    let start = text.iter().position(|&b| !is_c_space(b)).unwrap_or(text.len());
    let text = &text[start..];
    let (negative, text) = split_sign(text);
    let (base, digits) = match text {
        [b'0', b'x' | b'X', rest @ ..] if rest.first().is_some_and(u8::is_ascii_hexdigit) => (16, rest),
        [b'0', ..] => (8, text),
        _ => (10, text),
    };
    if digits.is_empty() {
        return None;
    }
    let mut magnitude: u64 = 0;
    for &d in digits {
        let d = char::from(d).to_digit(base)?;
        magnitude = magnitude.checked_mul(u64::from(base))?.checked_add(u64::from(d))?;
    }
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn split_sign(text: &[u8]) -> (bool, &[u8]) {
    match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    }
}

/// Python's `int(text, 0)` of bytes: surrounding whitespace (C's), a sign, then `0x`/`0o`/`0b` and digits of
/// that base, or decimal digits without leading zeros (unless all are zeros); single
/// underscores between digits, and one after a prefix.
pub fn python_int(text: &[u8]) -> Result<Value, String> {
    let bad = || format!("{:?} is not an integer literal", String::from_utf8_lossy(text));
    let start = text.iter().position(|&b| !is_c_space(b)).unwrap_or(text.len());
    let end = text.iter().rposition(|&b| !is_c_space(b)).map_or(start, |i| i + 1);
    let (negative, body) = split_sign(&text[start..end.max(start)]);
    let (base, digits) = match body {
        [b'0', b'x' | b'X', rest @ ..] => (16, rest.strip_prefix(b"_").unwrap_or(rest)),
        [b'0', b'o' | b'O', rest @ ..] => (8, rest.strip_prefix(b"_").unwrap_or(rest)),
        [b'0', b'b' | b'B', rest @ ..] => (2, rest.strip_prefix(b"_").unwrap_or(rest)),
        _ => (10, body),
    };
    let mut values = Vec::with_capacity(digits.len());
    for (i, &d) in digits.iter().enumerate() {
        match char::from(d).to_digit(base) {
            Some(v) => values.push(v as u8),
            // An underscore only between two digits.
            None if d == b'_' && i > 0 && digits.get(i + 1).is_some_and(|&n| n != b'_') => {}
            None => return Err(bad()),
        }
    }
    if values.is_empty() || (base == 10 && values[0] == 0 && values.iter().any(|&v| v != 0)) {
        return Err(bad());
    }
    let magnitude = match base {
        10 => {
            if values.len() > MAX_DIGITS {
                return Err(format!(
                    "integer literal has {} digits, more than {MAX_DIGITS}",
                    values.len()
                ));
            }
            decimal_magnitude(&values)
        }
        _ => binary_magnitude(&values, base.trailing_zeros()),
    };
    Ok(signed(magnitude, negative))
}

/// The little-endian bytes of a number given by its decimal digits, most significant first.
fn decimal_magnitude(digits: &[u8]) -> Vec<u8> {
    // Base 2^32 limbs, least significant first, fed nine digits at a time.
    let mut limbs: Vec<u32> = Vec::new();
    for chunk in digits.chunks(9) {
        let mut scale: u64 = 1;
        let mut carry: u64 = 0;
        for &d in chunk {
            scale *= 10;
            carry = carry * 10 + u64::from(d);
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
    limbs.iter().flat_map(|l| l.to_le_bytes()).collect()
}

/// The little-endian bytes of a number given by digits of `bits` bits each (hex, octal,
/// binary), most significant first: linear in the digits, however many.
fn binary_magnitude(digits: &[u8], bits: u32) -> Vec<u8> {
    let mut bytes = vec![0u8; (digits.len() * bits as usize).div_ceil(8)];
    for (i, &d) in digits.iter().rev().enumerate() {
        for b in 0..bits as usize {
            if d >> b & 1 == 1 {
                let at = i * bits as usize + b;
                bytes[at / 8] |= 1 << (at % 8);
            }
        }
    }
    bytes
}

/// The integer of a little-endian magnitude and a sign.
fn signed(mut bytes: Vec<u8>, negative: bool) -> Value {
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
    int_from_le(&bytes)
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
