//! A small CSV reader (RFC 4180 quoting: `"a, b"` and `""` inside quotes) with errors that name
//! the file and line.

use crate::error::{PrepareError, Result};
use std::path::Path;

/// One parsed row with its 1-based line number.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub line: usize,
    pub fields: Vec<String>,
}

/// Splits one line on `sep`, honouring double quotes.
pub fn split_line(line: &str, sep: char) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' && cur.trim().is_empty() && !was_quoted {
            cur.clear();
            quoted = true;
            was_quoted = true;
        } else if c == sep {
            out.push(if was_quoted {
                std::mem::take(&mut cur)
            } else {
                cur.trim().to_string()
            });
            cur.clear();
            was_quoted = false;
        } else {
            cur.push(c);
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    out.push(if was_quoted {
        cur
    } else {
        cur.trim().to_string()
    });
    Ok(out)
}

/// Reads `path` as rows separated by `sep`, skipping blank lines and a UTF-8 BOM.
pub fn read_rows(path: &Path, sep: char) -> Result<Vec<Row>> {
    let text = std::fs::read_to_string(path).map_err(|e| PrepareError::io(path, e))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let fields =
            split_line(line, sep).map_err(|m| PrepareError::layout(path, Some(i + 1), m))?;
        rows.push(Row {
            line: i + 1,
            fields,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_separators() {
        assert_eq!(split_line("a, b ,c", ',').unwrap(), vec!["a", "b", "c"]);
        assert_eq!(
            split_line(r#"x1,30,"male speech, man speaking",train"#, ',').unwrap(),
            vec!["x1", "30", "male speech, man speaking", "train"]
        );
        assert_eq!(
            split_line(r#""say ""hi""",2"#, ',').unwrap(),
            vec![r#"say "hi""#, "2"]
        );
        assert_eq!(
            split_line("Church bell&RUhOCu3LNXM&good&0&10", '&')
                .unwrap()
                .len(),
            5
        );
        assert!(split_line(r#"a,"open"#, ',').is_err());
    }
}
