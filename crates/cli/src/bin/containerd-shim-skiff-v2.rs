//! containerd's shim v2 for skiff (see the `skiff-shim` crate).

fn main() {
    skiff_shim::main();
}
