//! MD5 throughput of the gateway's ETag hasher against the md-5 crate, alternating runs in one
//! process: `cargo bench -p leofs-gateway --bench md5 [-- --rounds N --mib M]`.
//!
//! Prints MB/s (10^6 bytes/s) of both for each round and the median ratio. A measurement hashes
//! one 1 MiB buffer M times, fed in 64 KiB pieces the way a PUT body arrives; the buffer stays in
//! the CPU cache, so this is the hash alone, without memory traffic.

use std::hint::black_box;
use std::time::Instant;

use ::md5::Digest as _;
use leofs_gateway::md5::Md5;

/// Rounds when `--rounds` is not given.
const DEFAULT_ROUNDS: usize = 7;
/// MiB hashed per measurement when `--mib` is not given.
const DEFAULT_MIB: usize = 256;
/// Bytes in a MiB.
const MIB: usize = 1024 * 1024;
/// Size of each `update` call, about what one read from a socket hands the hasher.
const PIECE_BYTES: usize = 64 * 1024;

fn main() {
    let mut rounds = DEFAULT_ROUNDS;
    let mut mib = DEFAULT_MIB;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|v| *v > 0)
                .unwrap_or_else(|| panic!("{arg} needs a positive integer"))
        };
        match arg.as_str() {
            "--rounds" => rounds = value(),
            "--mib" => mib = value(),
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => panic!("unknown argument {other}; use --rounds N --mib M"),
        }
    }
    let buffer: Vec<u8> = (0..MIB)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let reference: [u8; 16] = ::md5::Md5::digest(&buffer).into();
    assert_eq!(Md5::digest(&buffer), reference, "digests differ");

    let mb_per_s = |hash: &dyn Fn(&[u8]) -> [u8; 16]| {
        let start = Instant::now();
        for _ in 0..mib {
            black_box(hash(black_box(&buffer)));
        }
        (mib * MIB) as f64 / start.elapsed().as_secs_f64() / 1e6
    };
    let ours = |data: &[u8]| {
        let mut hasher = Md5::new();
        for piece in data.chunks(PIECE_BYTES) {
            hasher.update(piece);
        }
        hasher.finalize()
    };
    let crate_md5 = |data: &[u8]| {
        let mut hasher = ::md5::Md5::new();
        for piece in data.chunks(PIECE_BYTES) {
            hasher.update(piece);
        }
        hasher.finalize().into()
    };
    let mut ratios = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        // Alternate which goes first, so neither always runs on a warmer or cooler CPU.
        let (mine, theirs) = if round % 2 == 1 {
            let theirs = mb_per_s(&crate_md5);
            (mb_per_s(&ours), theirs)
        } else {
            let mine = mb_per_s(&ours);
            (mine, mb_per_s(&crate_md5))
        };
        ratios.push(mine / theirs);
        println!(
            "round {round}: leofs md5 {mine:.0} MB/s, md-5 crate {theirs:.0} MB/s, ratio {:.3}",
            mine / theirs
        );
    }
    ratios.sort_by(f64::total_cmp);
    let middle = ratios.len() / 2;
    let median = if ratios.len() % 2 == 1 {
        ratios[middle]
    } else {
        (ratios[middle - 1] + ratios[middle]) / 2.0
    };
    println!("median ratio {median:.3}");
}
