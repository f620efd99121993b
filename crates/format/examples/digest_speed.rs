//! Measures chunk digest throughput for each algorithm at several chunk sizes,
//! on one thread. Run by `bench/digest.sh`; prints a markdown table.

use std::time::Instant;

use skiff_format::DigestAlgorithm;

fn main() {
    let total: usize = 512 << 20;
    // Pseudo-random bytes: digest speed does not depend on content.
    let mut x = 0x9e3779b97f4a7c15u64;
    let data: Vec<u8> = (0..total)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    println!("| chunk size | blake3 MB/s | sha256 MB/s | blake3 / sha256 |");
    println!("|---|---|---|---|");
    for size in [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20] {
        let mut rates = Vec::new();
        for alg in [DigestAlgorithm::Blake3, DigestAlgorithm::Sha256] {
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                let mut acc = 0u8;
                for c in data.chunks(size) {
                    acc ^= alg.digest(c).0[0];
                }
                std::hint::black_box(acc);
                best = best.min(t.elapsed().as_secs_f64());
            }
            rates.push(total as f64 / best / 1e6);
        }
        println!(
            "| {} KiB | {:.0} | {:.0} | {:.2}x |",
            size >> 10,
            rates[0],
            rates[1],
            rates[0] / rates[1]
        );
    }
}
