//! MD5 throughput of the gateway's ETag hasher against the md-5 crate, alternating runs in one
//! process: `cargo bench -p leofs-gateway --bench md5 [-- --rounds N --mib M]`.
//!
//! Prints MB/s (10^6 bytes/s) of both for each round and the median ratio, hashing an M MiB
//! buffer per measurement the way a PUT hashes its body.

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
        let theirs = mb_per_s(&crate_md5);
        let mine = mb_per_s(&ours);
        ratios.push(mine / theirs);
        println!(
            "round {round}: leofs md5 {mine:.0} MB/s, md-5 crate {theirs:.0} MB/s, ratio {:.3}",
            mine / theirs
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!("median ratio {:.3}", ratios[ratios.len() / 2]);
}
