//! The results file: one `key<TAB>value` line per number, appended by each phase and
//! read by `report`. Keys are `<guests>.<what>` for the per-size numbers,
//! `mem.<label>.<daemon>.<rss|hwm>_kib`, `changes.<what>` and `soak.<what>`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::Result;

pub fn record(file: &Path, key: &str, value: f64) -> Result<()> {
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    writeln!(out, "{key}\t{value}")?;
    Ok(())
}

/// Every number recorded; a key recorded twice keeps its last value.
pub fn load(file: &Path) -> Result<BTreeMap<String, f64>> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the results {}: {e}", file.display()))?;
    text.lines()
        .map(|line| {
            let (key, value) = line
                .split_once('\t')
                .ok_or_else(|| format!("bad results line {line:?}"))?;
            Ok((key.to_owned(), value.parse()?))
        })
        .collect()
}
