//! MD5, the digest behind every S3 ETag, tuned for the PUT path.
//!
//! Every byte a client uploads is hashed once, on the core that receives it, and for large
//! objects MD5 is the largest CPU cost of a PUT. MD5 is one long chain of dependent steps, so its
//! speed is the length of that chain. In each step `a = b + rotl(a + F(b, c, d) + word + k, s)`
//! only `F(b, …)` and what follows it wait for `b`, the previous step's result; `a + word + k`
//! can be computed in its shadow. The md-5 crate's portable code lets LLVM reassociate the sum so
//! the constant is added after `F`, which puts one more addition on the chain of every step.
//! Here the early part of the sum goes through [`opaque`], which the optimiser cannot see into,
//! and the round functions are written in the forms with the shortest dependence on `b`.
//! Measured in BENCHMARKS.md: about 1.23× the md-5 crate on this project's machines (x86_64;
//! elsewhere the barrier is absent and the code is plain portable Rust).

/// The sine-derived additive constants of RFC 1321, one per step.
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

/// The initial chaining value of RFC 1321.
const INITIAL_STATE: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// Bytes per compression block.
const BLOCK_BYTES: usize = 64;

/// An incremental MD5 hasher: feed it with [`Md5::update`], read the digest with
/// [`Md5::finalize`].
#[derive(Clone)]
pub struct Md5 {
    /// The chaining value after every complete block so far.
    state: [u32; 4],
    /// The start of a block that `update` has not completed yet.
    partial: [u8; BLOCK_BYTES],
    /// How many bytes of `partial` are in use (always less than a block between calls).
    partial_len: usize,
    /// Bytes hashed so far, for the length that closes the padding.
    total_bytes: u64,
}

impl Default for Md5 {
    fn default() -> Self {
        Self::new()
    }
}

impl Md5 {
    /// A hasher that has seen no bytes.
    pub fn new() -> Self {
        Self {
            state: INITIAL_STATE,
            partial: [0; BLOCK_BYTES],
            partial_len: 0,
            total_bytes: 0,
        }
    }

    /// The digest of `data` in one call.
    pub fn digest(data: &[u8]) -> [u8; 16] {
        let mut hasher = Self::new();
        hasher.update(data);
        hasher.finalize()
    }

    /// Hashes `data` after everything seen so far.
    pub fn update(&mut self, mut data: &[u8]) {
        self.total_bytes = self.total_bytes.wrapping_add(data.len() as u64);
        if self.partial_len > 0 {
            let take = (BLOCK_BYTES - self.partial_len).min(data.len());
            self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&data[..take]);
            self.partial_len += take;
            data = &data[take..];
            if self.partial_len < BLOCK_BYTES {
                return;
            }
            let block = self.partial;
            compress(&mut self.state, std::slice::from_ref(&block));
            self.partial_len = 0;
        }
        let (blocks, rest) = data.as_chunks::<BLOCK_BYTES>();
        compress(&mut self.state, blocks);
        self.partial[..rest.len()].copy_from_slice(rest);
        self.partial_len = rest.len();
    }

    /// Pads the message as RFC 1321 specifies and returns its digest.
    pub fn finalize(mut self) -> [u8; 16] {
        let length_bits = self.total_bytes.wrapping_mul(8);
        let mut tail = [0u8; 2 * BLOCK_BYTES];
        tail[..self.partial_len].copy_from_slice(&self.partial[..self.partial_len]);
        tail[self.partial_len] = 0x80;
        // The 8-byte length must fit after the 0x80 byte, in this block or the next.
        let tail_len = if self.partial_len < BLOCK_BYTES - 8 {
            BLOCK_BYTES
        } else {
            2 * BLOCK_BYTES
        };
        tail[tail_len - 8..tail_len].copy_from_slice(&length_bits.to_le_bytes());
        let (blocks, _) = tail[..tail_len].as_chunks::<BLOCK_BYTES>();
        compress(&mut self.state, blocks);
        let mut digest = [0u8; 16];
        for (out, word) in digest.chunks_exact_mut(4).zip(self.state) {
            out.copy_from_slice(&word.to_le_bytes());
        }
        digest
    }
}

/// Returns `x` unchanged, but the optimiser cannot see that, so it cannot move later additions
/// into the sum that produced `x`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn opaque(mut x: u32) -> u32 {
    // SAFETY: the template is only a comment naming the register: no instruction runs, no memory,
    // stack or flag is touched, and `x` leaves exactly as it came in.
    unsafe {
        std::arch::asm!(
            "/* {0:e} */",
            inout(reg) x,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    x
}

/// Elsewhere the barrier is absent: the value passes through and the code is portable Rust.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn opaque(x: u32) -> u32 {
    x
}

/// Round 1 step; F = (b AND c) OR (NOT b AND d), written as ((c XOR d) AND b) XOR d.
#[inline(always)]
fn step_f(a: u32, b: u32, c: u32, d: u32, word: u32, k: u32, shift: u32) -> u32 {
    let early = opaque(a.wrapping_add(word).wrapping_add(k));
    early
        .wrapping_add(((c ^ d) & b) ^ d)
        .rotate_left(shift)
        .wrapping_add(b)
}

/// Round 2 step; G = (b AND d) OR (c AND NOT d). The two terms share no bits, so the OR is an
/// addition and the term without `b` joins the early sum.
#[inline(always)]
fn step_g(a: u32, b: u32, c: u32, d: u32, word: u32, k: u32, shift: u32) -> u32 {
    let early = opaque(a.wrapping_add(word).wrapping_add(k).wrapping_add(c & !d));
    early.wrapping_add(b & d).rotate_left(shift).wrapping_add(b)
}

/// Round 3 step; H = b XOR c XOR d.
#[inline(always)]
fn step_h(a: u32, b: u32, c: u32, d: u32, word: u32, k: u32, shift: u32) -> u32 {
    let early = opaque(a.wrapping_add(word).wrapping_add(k));
    early
        .wrapping_add(b ^ (c ^ d))
        .rotate_left(shift)
        .wrapping_add(b)
}

/// Round 4 step; I = c XOR (b OR NOT d).
#[inline(always)]
fn step_i(a: u32, b: u32, c: u32, d: u32, word: u32, k: u32, shift: u32) -> u32 {
    let early = opaque(a.wrapping_add(word).wrapping_add(k));
    early
        .wrapping_add(c ^ (b | !d))
        .rotate_left(shift)
        .wrapping_add(b)
}

/// Runs the MD5 compression function over `blocks`, updating `state`.
fn compress(state: &mut [u32; 4], blocks: &[[u8; BLOCK_BYTES]]) {
    let [mut a, mut b, mut c, mut d] = *state;
    for block in blocks {
        let mut w = [0u32; 16];
        for (word, bytes) in w.iter_mut().zip(block.as_chunks::<4>().0) {
            *word = u32::from_le_bytes(*bytes);
        }
        let (a0, b0, c0, d0) = (a, b, c, d);
        for i in (0..16).step_by(4) {
            a = step_f(a, b, c, d, w[i], K[i], 7);
            d = step_f(d, a, b, c, w[i + 1], K[i + 1], 12);
            c = step_f(c, d, a, b, w[i + 2], K[i + 2], 17);
            b = step_f(b, c, d, a, w[i + 3], K[i + 3], 22);
        }
        for i in (0..16).step_by(4) {
            a = step_g(a, b, c, d, w[(1 + 5 * i) % 16], K[16 + i], 5);
            d = step_g(d, a, b, c, w[(6 + 5 * i) % 16], K[17 + i], 9);
            c = step_g(c, d, a, b, w[(11 + 5 * i) % 16], K[18 + i], 14);
            b = step_g(b, c, d, a, w[(5 * i) % 16], K[19 + i], 20);
        }
        for i in (0..16).step_by(4) {
            a = step_h(a, b, c, d, w[(5 + 3 * i) % 16], K[32 + i], 4);
            d = step_h(d, a, b, c, w[(8 + 3 * i) % 16], K[33 + i], 11);
            c = step_h(c, d, a, b, w[(11 + 3 * i) % 16], K[34 + i], 16);
            b = step_h(b, c, d, a, w[(14 + 3 * i) % 16], K[35 + i], 23);
        }
        for i in (0..16).step_by(4) {
            a = step_i(a, b, c, d, w[(7 * i) % 16], K[48 + i], 6);
            d = step_i(d, a, b, c, w[(7 + 7 * i) % 16], K[49 + i], 10);
            c = step_i(c, d, a, b, w[(14 + 7 * i) % 16], K[50 + i], 15);
            b = step_i(b, c, d, a, w[(5 + 7 * i) % 16], K[51 + i], 21);
        }
        a = a.wrapping_add(a0);
        b = b.wrapping_add(b0);
        c = c.wrapping_add(c0);
        d = d.wrapping_add(d0);
    }
    *state = [a, b, c, d];
}

#[cfg(test)]
mod tests {
    use super::Md5;
    use ::md5::Digest;

    #[test]
    fn matches_the_rfc_1321_test_suite() {
        let suite = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, want) in suite {
            assert_eq!(
                hex::encode(Md5::digest(input.as_bytes())),
                want,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn agrees_with_the_md5_crate_on_every_length_and_split() {
        let data: Vec<u8> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in 0..data.len() {
            let want: [u8; 16] = ::md5::Md5::digest(&data[..len]).into();
            assert_eq!(Md5::digest(&data[..len]), want, "length {len}");
        }
        // Every split point of a message spanning several blocks, and uneven feeding.
        let message = &data[..300];
        let want: [u8; 16] = ::md5::Md5::digest(message).into();
        for split in 0..=message.len() {
            let mut hasher = Md5::new();
            hasher.update(&message[..split]);
            hasher.update(&message[split..]);
            assert_eq!(hasher.finalize(), want, "split at {split}");
        }
        let mut hasher = Md5::new();
        for piece in message.chunks(7) {
            hasher.update(piece);
            hasher.update(&[]);
        }
        assert_eq!(hasher.finalize(), want);
    }
}
