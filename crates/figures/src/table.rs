//! The CSV files the benchmarks write (`--output-stats`): a header line, then rows of
//! unsigned integers (sizes, repetition numbers, nanoseconds).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// One CSV file, read whole.
#[derive(Debug)]
pub struct Table {
    path: PathBuf,
    header: Vec<String>,
    rows: Vec<Vec<u64>>,
}

impl Table {
    /// Reads `path`; every row must have the header's width and only unsigned integers.
    pub fn read(path: &Path) -> Result<Table> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Table::parse(path, &text)
    }

    /// Parses the text of a CSV file; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Table> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            bail!(
                "{} is empty: a CSV file with a header was expected",
                path.display()
            );
        };
        let header: Vec<String> = header.split(',').map(|c| c.trim().to_owned()).collect();
        let mut rows = Vec::new();
        for (i, line) in lines {
            let row = line
                .split(',')
                .map(|v| v.trim().parse::<u64>())
                .collect::<Result<Vec<u64>, _>>()
                .with_context(|| {
                    format!(
                        "{} line {}: not a row of unsigned integers",
                        path.display(),
                        i + 1
                    )
                })?;
            if row.len() != header.len() {
                bail!(
                    "{} line {}: {} values for {} columns",
                    path.display(),
                    i + 1,
                    row.len(),
                    header.len()
                );
            }
            rows.push(row);
        }
        Ok(Table {
            path: path.to_owned(),
            header,
            rows,
        })
    }

    /// The file this table was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The values of column `name`, in row order.
    pub fn column(&self, name: &str) -> Result<Vec<u64>> {
        let Some(i) = self.header.iter().position(|c| c == name) else {
            bail!(
                "{} has no column {name:?} (its columns: {})",
                self.path.display(),
                self.header.join(", ")
            );
        };
        Ok(self.rows.iter().map(|r| r[i]).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_by_name_and_clear_errors() {
        let t = Table::parse(
            Path::new("a.csv"),
            "size,round_trip_ns\n1,1500\n4096,2500\n",
        )
        .unwrap();
        assert_eq!(t.column("round_trip_ns").unwrap(), [1500, 2500]);
        let e = t.column("total_ns").unwrap_err().to_string();
        assert_eq!(
            e,
            "a.csv has no column \"total_ns\" (its columns: size, round_trip_ns)"
        );
        let e = Table::parse(Path::new("b.csv"), "a,b\n1,2\n3\n").unwrap_err();
        assert_eq!(e.to_string(), "b.csv line 3: 1 values for 2 columns");
        let e = Table::parse(Path::new("c.csv"), "a\n-1\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.csv line 2: not a row of unsigned integers"
        );
        assert!(Table::parse(Path::new("d.csv"), "").is_err());
    }
}
