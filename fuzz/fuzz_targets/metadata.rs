//! The metadata parser on arbitrary bytes: parse, validate, and walk every
//! accessor. Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_format::blob::{parse_footer, parse_tables};
use skiff_format::layout::BLOB_FOOTER_SIZE;
use skiff_format::Metadata;

fuzz_target!(|data: &[u8]| {
    if let Ok(md) = Metadata::parse(data) {
        let _ = md.validate();
        let _ = md.walk(|_, e| {
            let _ = md.attributes(e.ino);
            let _ = md.xattrs(e.ino);
            let _ = md.symlink_target(e.ino);
            let _ = md.chunk_refs_in(e.ino, 1, 1 << 20);
            if let Ok(refs) = md.chunk_refs(e.ino) {
                for r in refs.iter().take(16) {
                    if let Some(c) = r.chunk {
                        let _ = md.chunk(c).map(|c| md.blob(c.blob));
                    }
                }
            }
            Ok(())
        });
        let n = md.inode_count().min(256);
        for ino in 0..=n + 1 {
            let _ = md.lookup(ino, b"a");
            let _ = md.parent(ino);
            let _ = md.dir_len(ino);
        }
        let _ = md.resolve(b"/usr/bin/python3");
        let _ = md.prefetch();
    }
    // The same bytes as a blob tail.
    if data.len() >= BLOB_FOOTER_SIZE {
        let (tables, foot) = data.split_at(data.len() - BLOB_FOOTER_SIZE);
        if let Ok(f) = parse_footer(foot, f_size(data)) {
            let start = tables.len().saturating_sub(f.tables_len() as usize);
            let _ = parse_tables(&tables[start..], &f);
        }
    }
});

fn f_size(data: &[u8]) -> u64 {
    data.len() as u64
}
