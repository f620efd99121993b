//! Prefetch traces: the reads of a workload, as `skiff mount --record-trace`
//! writes them, turned into the chunk order an image prefetches.
//!
//! A trace is text, one entry per line: `PATH` (the file's first open) or
//! `PATH<TAB>OFFSET` (the first read of the chunk holding that file offset).
//! Paths and offsets, unlike chunk numbers, mean the same in a reconverted
//! image. A trace without any offset lines is a plain list of files, each
//! prefetched whole; in a trace with offsets, a bare path (opened, never
//! read) adds nothing.

use crate::error::{BuildError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// Absolute path in the image.
    pub path: Vec<u8>,
    /// A file offset inside the chunk that was read; `None` for an open.
    pub offset: Option<u64>,
}

/// Parses a trace. Blank lines are skipped; a malformed offset is an error
/// naming the line.
pub fn parse_trace(text: &[u8]) -> Result<Vec<TraceEntry>> {
    let mut out = Vec::new();
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let mut parts = line.splitn(2, |&b| b == b'\t');
        let path = parts.next().unwrap_or_default().to_vec();
        let offset = match parts.next() {
            None => None,
            Some(o) => Some(
                std::str::from_utf8(o)
                    .ok()
                    .and_then(|s| s.trim_end_matches('\r').parse::<u64>().ok())
                    .ok_or_else(|| {
                        BuildError::Invalid(format!(
                            "prefetch trace line {}: {:?} is not PATH or PATH<TAB>OFFSET",
                            n + 1,
                            String::from_utf8_lossy(line)
                        ))
                    })?,
            ),
        };
        if !path.starts_with(b"/") {
            return Err(BuildError::Invalid(format!(
                "prefetch trace line {}: path {:?} is not absolute",
                n + 1,
                String::from_utf8_lossy(&path)
            )));
        }
        out.push(TraceEntry { path, offset });
    }
    Ok(out)
}

/// What a trace asks of one file, in trace order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceRead<'a> {
    /// The chunk holding this offset.
    At(&'a [u8], u64),
    /// Every chunk of the file.
    Whole(&'a [u8]),
}

/// The reads a trace stands for (see the module docs for bare paths).
pub fn trace_reads(entries: &[TraceEntry]) -> Vec<TraceRead<'_>> {
    let has_offsets = entries.iter().any(|e| e.offset.is_some());
    entries
        .iter()
        .filter_map(|e| match (e.offset, has_offsets) {
            (Some(o), _) => Some(TraceRead::At(&e.path, o)),
            (None, false) => Some(TraceRead::Whole(&e.path)),
            (None, true) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_opens_and_chunk_reads() {
        let t = parse_trace(b"/a\n/a\t0\n\n/a\t4096\n/b c\n").unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t[2].offset, Some(4096));
        assert_eq!(t[3].path, b"/b c");
        let reads = trace_reads(&t);
        assert_eq!(
            reads,
            vec![TraceRead::At(b"/a", 0), TraceRead::At(b"/a", 4096)]
        );
    }

    #[test]
    fn a_list_of_paths_means_whole_files() {
        let t = parse_trace(b"/a\n/b\n").unwrap();
        assert_eq!(
            trace_reads(&t),
            vec![TraceRead::Whole(b"/a"), TraceRead::Whole(b"/b")]
        );
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let e = parse_trace(b"/a\n/a\tx\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = parse_trace(b"relative\n").unwrap_err().to_string();
        assert!(e.contains("not absolute"), "{e}");
    }
}
