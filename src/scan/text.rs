//! The human summary of a scan.

use super::{ScanReport, Verdict};

/// One file: a headline, then the findings (all of them with `verbose`, else the first few).
pub fn report(r: &ScanReport, verbose: bool) -> String {
    let mut out = format!("{}: {} ({})\n", r.path, r.verdict.name().to_uppercase(), r.format);
    if let Some(e) = &r.error {
        if r.verdict != Verdict::NotCheckpoint || verbose {
            out.push_str(&format!("  error: {e}\n"));
        }
    }
    let shown = if verbose {
        r.findings.len()
    } else {
        r.findings.len().min(8)
    };
    for f in &r.findings[..shown] {
        let at = f.offset.map(|o| format!(" @{o}")).unwrap_or_default();
        out.push_str(&format!("  [{}] {}{}: {}\n", f.verdict, f.record, at, f.message));
    }
    if r.findings.len() > shown {
        out.push_str(&format!(
            "  ... {} more (--verbose or --json)\n",
            r.findings.len() - shown
        ));
    }
    if verbose {
        for p in &r.pickles {
            let names: Vec<String> = p
                .globals
                .iter()
                .map(|g| format!("{} [{}]", g.name, g.usage.join("+")))
                .collect();
            out.push_str(&format!(
                "  pickle {} ({} bytes): {}: {}\n",
                p.record,
                p.size,
                p.verdict,
                if names.is_empty() {
                    "no globals".into()
                } else {
                    names.join(", ")
                }
            ));
            if !p.opcodes_outside_weights_only.is_empty() {
                out.push_str(&format!(
                    "    opcodes torch's weights_only loader does not implement: {}\n",
                    p.opcodes_outside_weights_only.join(", ")
                ));
            }
        }
        for c in &r.code {
            out.push_str(&format!("  code: {c}\n"));
        }
        for n in &r.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
    }
    out
}

/// Every file, then a count per verdict. Files that are not checkpoints are only counted unless
/// `verbose`.
#[cfg(feature = "cli")] // only the commands use it
pub fn summary(reports: &[ScanReport], verbose: bool) -> String {
    let mut out = String::new();
    for r in reports {
        if r.verdict == Verdict::NotCheckpoint && !verbose {
            continue;
        }
        out.push_str(&report(r, verbose));
    }
    let count = |v: Verdict| reports.iter().filter(|r| r.verdict == v).count();
    let parts: Vec<String> = [
        Verdict::Dangerous,
        Verdict::Unreadable,
        Verdict::NeedsCode,
        Verdict::Safe,
        Verdict::NotCheckpoint,
    ]
    .into_iter()
    .filter(|&v| count(v) > 0)
    .map(|v| format!("{} {}", count(v), v))
    .collect();
    out.push_str(&format!(
        "{} file(s): {}\n",
        reports.len(),
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    ));
    out
}
