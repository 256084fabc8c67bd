//! Benchmark records: one JSON object per line on stdout, and a section of
//! `docs/benchmarks.md` rewritten with the machine, date and commit of the run.

use std::path::Path;

use linattn_tensor::{Error, Result};
use serde_json::Value;

/// Prints one record as a JSON line.
pub fn emit(record: &Value) {
    println!("{record}");
}

/// `uname`-style machine description: CPU model and thread count.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpu}, {} threads", rayon::current_num_threads())
}

/// The git commit of the working tree, if any.
pub fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock.
pub fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Civil-from-days (proleptic Gregorian), Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Replaces (or appends) the section `## {title}` of `path` with `body`, keeping the
/// rest of the file.
pub fn update_markdown_section(path: &Path, title: &str, body: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let heading = format!("## {title}");
    let mut out = String::new();
    let mut lines = old.lines().peekable();
    let mut replaced = false;
    while let Some(line) = lines.next() {
        if line.trim_end() == heading {
            replaced = true;
            out.push_str(&heading);
            out.push('\n');
            out.push_str(body.trim_end());
            out.push_str("\n\n");
            while let Some(next) = lines.peek() {
                if next.starts_with("## ") {
                    break;
                }
                lines.next();
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        if !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str(&heading);
        out.push('\n');
        out.push_str(body.trim_end());
        out.push('\n');
    }
    std::fs::write(path, out).map_err(|e| Error::io(path, e))
}

/// A markdown table from records: one column per key, in `columns` order.
pub fn markdown_table(records: &[Value], columns: &[&str]) -> String {
    let mut s = format!("| {} |\n|{}\n", columns.join(" | "), "---|".repeat(columns.len()));
    for r in records {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match r.get(*c) {
                Some(Value::Number(n)) => {
                    let f = n.as_f64().unwrap_or(0.0);
                    if n.is_i64() || n.is_u64() {
                        n.to_string()
                    } else if f.abs() >= 100.0 {
                        format!("{f:.1}")
                    } else {
                        format!("{f:.3}")
                    }
                }
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => "-".into(),
                Some(v) => v.to_string(),
            })
            .collect();
        s.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_is_replaced_and_others_kept() {
        let dir = std::env::temp_dir().join(format!("linattn-bench-md-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("b.md");
        std::fs::write(&path, "# Benchmarks\n\n## a\nold a\n\n## b\nold b\n").unwrap();
        update_markdown_section(&path, "a", "new a").unwrap();
        update_markdown_section(&path, "c", "new c").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("## a\nnew a") && !text.contains("old a"), "{text}");
        assert!(text.contains("## b\nold b") && text.contains("## c\nnew c"), "{text}");
    }

    #[test]
    fn date_is_plausible() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"), "{d}");
    }
}
