//! The layer reader on arbitrary bytes: the bounded tar parser, entry
//! normalisation, and the layer merge, as `skiff convert` runs them on an
//! uncompressed layer. Any panic, hang or unbounded allocation is a bug.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use skiff_builder::layer::convert_entry;
use skiff_builder::tarstream::TarReader;
use skiff_builder::tree::{Action, MergeTree};

fuzz_target!(|data: &[u8]| {
    // Two "layers": the input, then the input again below it, so whiteouts,
    // opaque markers and cross-layer hardlinks all meet something.
    let mut tree = MergeTree::new();
    for layer in [2u16, 1] {
        tree.begin_layer(layer, "fuzz");
        let mut tar = TarReader::new(data);
        let mut entries = 0;
        loop {
            let Ok(Some(t)) = tar.next_entry() else { break };
            entries += 1;
            if entries > 10_000 {
                break;
            }
            let Ok(Some(e)) = convert_entry(t, "fuzz") else {
                continue;
            };
            match tree.add_entry(&e) {
                Ok(Action::Capture(inode)) => {
                    let mut sink = Vec::new();
                    let _ = tar.data().take(1 << 20).read_to_end(&mut sink);
                    tree.set_file(inode, Vec::new());
                }
                Ok(Action::Done) => {}
                Err(_) => return,
            }
        }
        let _ = tree.end_layer();
    }
    let _ = tree.finish();
});
