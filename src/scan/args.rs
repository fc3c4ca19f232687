//! The arguments of a recorded call, written for a person reading a scan: `('echo pwned')` is
//! what `os.system` would have run. Only literals are shown (strings, bytes, numbers, None,
//! bools, and lists/tuples of them one level deep); anything else is `...`. Characters that could
//! act on a terminal or hide text (control characters, escape sequences, bidirectional overrides,
//! zero-width marks) are escaped, and the whole is cut at [`MAX_CHARS`]. Nothing is evaluated.

use crate::pickle::{Heap, Obj, Value};

/// The longest rendering, in characters (a command line is recognisable well before this).
pub(crate) const MAX_CHARS: usize = 120;

/// The argument list as a Python call writes it: `('a', 1)`, `('a')`, `()`.
pub(crate) fn render(heap: &Heap, args: &[Value]) -> String {
    let mut out = sequence(heap, args, ('(', ')'), true);
    if out.chars().count() > MAX_CHARS {
        out = out.chars().take(MAX_CHARS - 3).collect::<String>() + "...";
    }
    out
}

/// Items between brackets. A one-item tuple inside the arguments keeps its comma as in Python;
/// the top level (`nested`) is the call's own parentheses and has none.
fn sequence(heap: &Heap, items: &[Value], (open, close): (char, char), nested: bool) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut len = 0;
    for v in items {
        // Enough for the cut: never render more of a huge list than can be shown.
        if len > MAX_CHARS {
            parts.push("...".into());
            break;
        }
        let part = literal(heap, v, nested);
        len += part.len() + 2;
        parts.push(part);
    }
    let comma = if open == '(' && items.len() == 1 && !nested {
        ","
    } else {
        ""
    };
    format!("{open}{}{comma}{close}", parts.join(", "))
}

/// One value; containers only when `nested` allows one more level.
fn literal(heap: &Heap, v: &Value, nested: bool) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(_) => "<int>".into(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) => quoted("", s.chars()),
        Value::Bytes(b) => quoted("b", b.iter().map(|&c| char::from(c))),
        Value::Obj(id) if nested => match heap.get(*id) {
            Obj::Tuple(items) => sequence(heap, items, ('(', ')'), false),
            Obj::List(items) => sequence(heap, items, ('[', ']'), false),
            _ => "...".into(),
        },
        Value::Obj(_) => "...".into(),
    }
}

/// A quoted string with anything unsafe to print escaped. Bytes arrive as chars U+0000-U+00FF,
/// so every byte above 0x7f is escaped as `\xNN`.
fn quoted(prefix: &str, chars: impl Iterator<Item = char>) -> String {
    let mut out = format!("{prefix}'");
    for c in chars {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            c if prefix == "b" || !visible(c) => {
                let n = c as u32;
                if n <= 0xff {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n <= 0xffff {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
        if out.len() > MAX_CHARS * 4 {
            break;
        }
    }
    out.push('\'');
    out
}

/// Letters and digits of any script show as themselves; everything else outside ASCII (control
/// and format characters such as U+202E, combining marks, spaces of other widths, symbols) is
/// escaped, since it can reorder, hide or fake what a terminal shows.
fn visible(c: char) -> bool {
    c.is_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn s(text: &str) -> Value {
        Value::Str(Arc::from(text))
    }

    #[test]
    fn python_tuples_escaped_and_cut() {
        let heap = Heap::new();
        assert_eq!(render(&heap, &[s("echo hi")]), "('echo hi')");
        assert_eq!(render(&heap, &[]), "()");
        assert_eq!(render(&heap, &[s("a"), Value::Int(-3), Value::None]), "('a', -3, None)");
        assert_eq!(
            render(&heap, &[s("x\u{1b}[2J\n'q'\u{202e}é")]),
            "('x\\x1b[2J\\n\\'q\\'\\u202eé')"
        );
        assert_eq!(
            render(&heap, &[Value::Bytes(Arc::from(&b"rm\xff\x00"[..]))]),
            "(b'rm\\xff\\x00')"
        );
        let long = render(&heap, &[s(&"y".repeat(500))]);
        assert_eq!(long.chars().count(), MAX_CHARS);
        assert!(long.starts_with("('yyy") && long.ends_with("..."));
    }

    #[test]
    fn lists_one_level_deep() {
        let mut heap = Heap::new();
        let inner = heap.alloc(Obj::List(vec![s("deep")]));
        let list = heap.alloc(Obj::List(vec![s("echo"), Value::Obj(inner)]));
        let one = heap.alloc(Obj::Tuple(vec![Value::Int(1)]));
        assert_eq!(
            render(&heap, &[Value::Obj(list), Value::Obj(one)]),
            "(['echo', ...], (1,))"
        );
    }
}
