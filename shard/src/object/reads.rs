//! Read planning: the chunk pieces that cover a byte range of a chunked body.

use std::ops::Range;
use std::rc::Rc;

use super::ChunkRun;

/// One piece of a read plan: a (sub-)range of one chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRead {
    /// Index of the run in the layout.
    pub run: usize,
    /// Chunk index within the run.
    pub chunk: u32,
    /// Byte range within the chunk.
    pub range: Range<u64>,
    /// Full length of the chunk.
    pub chunk_len: u64,
}

/// Lists the chunk pieces that cover `range` of a chunked body, in order, lazily (a huge object
/// never materializes its whole plan).
pub fn plan_reads(
    runs: Rc<[ChunkRun]>,
    range: Range<u64>,
) -> impl Iterator<Item = ChunkRead> + 'static {
    let mut seg_start = 0u64;
    (0..runs.len()).flat_map(move |seg_index| {
        let seg = runs[seg_index].clone();
        let this_start = seg_start;
        seg_start += seg.size_bytes;
        let lo = range.start.max(this_start);
        let hi = range.end.min(this_start + seg.size_bytes);
        let (first, last) = if lo < hi && seg.chunk_size_bytes > 0 {
            (
                (lo - this_start) / seg.chunk_size_bytes,
                (hi - this_start - 1) / seg.chunk_size_bytes + 1,
            )
        } else {
            (0, 0)
        };
        (first..last).map(move |chunk| {
            let chunk_start = this_start + chunk * seg.chunk_size_bytes;
            let chunk_len = seg.chunk_len(chunk);
            let from = lo.max(chunk_start) - chunk_start;
            let to = hi.min(chunk_start + chunk_len) - chunk_start;
            ChunkRead {
                run: seg_index,
                chunk: u32::try_from(chunk).unwrap_or(u32::MAX),
                range: from..to,
                chunk_len,
            }
        })
    })
}
