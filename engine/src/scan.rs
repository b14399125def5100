//! Sequential scanning of one segment's records with large reads, for recovery and compaction.
//!
//! It decides what is a valid record of the segment's current life: a parseable header with the
//! current life seq, a matching header checksum, an LSN above every earlier accepted one and a
//! matching record checksum. A bad record checksum under a good header is skipped by its trusted
//! length; anything else resynchronises at the next 4 KiB boundary (every batch starts on one).
//! Definite corruption (see [`SegmentScanner::corrupt_records`]) followed by a valid record is
//! counted and logged; what is left at the end is reported as the tail.

use std::path::PathBuf;
use std::rc::Rc;

use monoio::fs::File;

use crate::EngineError;
use crate::aligned::{AlignedBuf, BLOCK_BYTES, align_down, align_up};
use crate::record::{
    HEADER_BYTES, RECORD_MAGIC, RecordHeader, le_u32, le_u64, verify_header, verify_record,
};
use crate::segment::{SEGMENT_HEADER_BYTES, Segment};

/// Bytes read at a time while scanning.
pub(crate) const SCAN_WINDOW_BYTES: usize = 4 * 1024 * 1024;

/// A record found by the scanner; its bytes are available through [`SegmentScanner::bytes`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Found {
    pub offset: u64,
    pub header: RecordHeader,
}

/// A background read of the chunk after the scan window.
struct ReadAhead {
    start: u64,
    len: usize,
    read: monoio::task::JoinHandle<(Result<(), EngineError>, AlignedBuf)>,
}

/// Scans one segment from a start offset.
pub(crate) struct SegmentScanner {
    file: Rc<File>,
    path: PathBuf,
    life_seq: u64,
    salt: u64,
    /// Where the segment's records end (before the header mirror).
    end: u64,
    pos: u64,
    last_lsn: u64,
    window: AlignedBuf,
    window_start: u64,
    /// The chunk after the window, being read.
    prefetch: Option<ReadAhead>,
    /// A retired window kept for the next read-ahead: fresh 4 MiB buffers cost a page fault
    /// per page when the kernel pins them for the read.
    spare: Option<AlignedBuf>,
    /// Offsets of definitely corrupt records not yet followed by a valid one.
    pending_corrupt: Vec<u64>,
    corrupt_records: u64,
    valid_end: u64,
}

impl SegmentScanner {
    /// A scanner over `seg` starting at `start` (block aligned), accepting LSNs above `last_lsn`.
    pub(crate) fn new(seg: &Segment, start: u64, last_lsn: u64) -> Self {
        let start = align_up(start.max(SEGMENT_HEADER_BYTES));
        Self {
            file: seg.file.clone(),
            path: seg.path.clone(),
            life_seq: seg.life_seq,
            salt: seg.salt,
            end: seg.records_end(),
            pos: start,
            last_lsn,
            window: AlignedBuf::new(BLOCK_BYTES),
            window_start: 0,
            prefetch: None,
            spare: None,
            pending_corrupt: Vec::new(),
            corrupt_records: 0,
            valid_end: start,
        }
    }

    /// The highest LSN accepted so far (or the floor given at creation).
    pub(crate) fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    /// End of the last valid record (or the start offset), rounded up to a block: where the
    /// next batch would go.
    pub(crate) fn valid_end_block(&self) -> u64 {
        align_up(self.valid_end)
    }

    /// Corrupt records found before a later valid record (already logged).
    pub(crate) fn corrupt_records(&self) -> u64 {
        self.corrupt_records
    }

    /// Offsets of corrupt records after the last valid one (the tail); the caller decides
    /// whether that is a torn tail (head segment) or corruption (sealed segment).
    pub(crate) fn tail_corrupt(&self) -> &[u64] {
        &self.pending_corrupt
    }

    /// The bytes of a record returned by [`SegmentScanner::next`] (valid until the next call).
    pub(crate) fn bytes(&self, found: &Found) -> &[u8] {
        let at = (found.offset - self.window_start) as usize;
        &self.window[at..at + found.header.len() as usize]
    }

    /// Makes `[a, b)` available in the window; false if it extends past the segment.
    /// Sequential scanning reads ahead: the chunk after the window is read while the window
    /// is parsed.
    async fn ensure(&mut self, a: u64, b: u64) -> Result<bool, EngineError> {
        if b > self.end {
            return Ok(false);
        }
        let window_end = self.window_start + self.window.len() as u64;
        if a >= self.window_start && b <= window_end {
            return Ok(true);
        }
        if let Some(p) = self.prefetch.take() {
            let p_end = p.start + p.len as u64;
            if a >= p.start && b <= p_end {
                let (res, buf) = p.read.await;
                self.install(res, buf, p.start)?;
                self.read_ahead();
                return Ok(true);
            }
            if a < p.start && b <= p_end {
                // A record straddling the window's end: read just its blocks, keep the read-ahead.
                self.prefetch = Some(p);
                let start = align_down(a);
                let len = (align_up(b) - start) as usize;
                let buf = AlignedBuf::new(len);
                let (res, buf) =
                    crate::io::read_exact_at(&self.file, buf, len, start, &self.path).await;
                self.install(res, buf, start)?;
                return Ok(true);
            }
        }
        let start = align_down(a);
        let len = (SCAN_WINDOW_BYTES as u64)
            .max(align_up(b) - start)
            .min(self.end - start) as usize;
        let buf = std::mem::replace(&mut self.window, AlignedBuf::new(BLOCK_BYTES));
        let buf = if buf.capacity() >= len {
            buf
        } else {
            match self.spare.take() {
                Some(spare) if spare.capacity() >= len => spare,
                _ => AlignedBuf::new(len),
            }
        };
        let (res, buf) = crate::io::read_exact_at(&self.file, buf, len, start, &self.path).await;
        self.install(res, buf, start)?;
        self.read_ahead();
        Ok(true)
    }

    fn install(
        &mut self,
        res: Result<(), EngineError>,
        buf: AlignedBuf,
        start: u64,
    ) -> Result<(), EngineError> {
        let retired = std::mem::replace(&mut self.window, buf);
        if retired.capacity() >= SCAN_WINDOW_BYTES {
            self.spare = Some(retired);
        }
        self.window_start = start;
        if res.is_err() {
            self.window.set_len(0);
        }
        res
    }

    /// Starts reading the chunk after the window in the background.
    fn read_ahead(&mut self) {
        let start = self.window_start + self.window.len() as u64;
        if start >= self.end {
            return;
        }
        let len = (SCAN_WINDOW_BYTES as u64).min(self.end - start) as usize;
        let (file, path) = (self.file.clone(), self.path.clone());
        let spare = self.spare.take().filter(|b| b.capacity() >= len);
        let read = monoio::spawn(async move {
            let buf = spare.unwrap_or_else(|| AlignedBuf::new(len));
            crate::io::read_exact_at(&file, buf, len, start, &path).await
        });
        self.prefetch = Some(ReadAhead { start, len, read });
    }

    fn slice(&self, a: u64, len: usize) -> &[u8] {
        let at = (a - self.window_start) as usize;
        &self.window[at..at + len]
    }

    fn note_corrupt(&mut self, offset: u64, what: &str) {
        tracing::debug!(path = %self.path.display(), offset, what, "bad record while scanning");
        self.pending_corrupt.push(offset);
    }

    /// The next valid record, or None at the end of the segment.
    pub(crate) async fn next(&mut self) -> Result<Option<Found>, EngineError> {
        loop {
            let pos = self.pos;
            if pos + HEADER_BYTES as u64 > self.end
                || !self.ensure(pos, pos + HEADER_BYTES as u64).await?
            {
                return Ok(None);
            }
            let hbytes = self.slice(pos, HEADER_BYTES);
            let aligned = pos.is_multiple_of(BLOCK_BYTES as u64);
            let parsed = RecordHeader::parse(hbytes);
            let earlier_life = parsed.is_some_and(|h| h.life_seq < self.life_seq);
            let header = parsed.filter(|h| h.life_seq == self.life_seq);
            let Some(h) = header else {
                if aligned {
                    // A batch (or a hole) starts here: only our magic or our life seq marks
                    // damage; a well-formed record of an earlier life is a leftover of a
                    // reused segment (a hole, or the tail after the last batch of this life).
                    if !earlier_life
                        && (le_u32(hbytes, 0) == RECORD_MAGIC
                            || le_u64(hbytes, 56) == self.life_seq)
                    {
                        self.note_corrupt(pos, "unparseable header");
                    }
                } else {
                    // Inside a batch records are back to back, then zero padding runs to the
                    // next block boundary (the bytes after it belong to the next batch).
                    let to_boundary = (align_up(pos) - pos) as usize;
                    if hbytes[..to_boundary.min(HEADER_BYTES)]
                        .iter()
                        .any(|&b| b != 0)
                    {
                        self.note_corrupt(pos, "garbage inside a batch");
                    }
                }
                self.pos = align_up(pos + 1);
                continue;
            };
            let len = h.len();
            let km_end = pos + HEADER_BYTES as u64 + h.key_meta_len() as u64;
            if pos + len > self.end || !self.ensure(pos, km_end).await? {
                self.note_corrupt(pos, "record extends past the segment");
                self.pos = align_up(pos + 1);
                continue;
            }
            if !verify_header(self.salt, self.slice(pos, (km_end - pos) as usize), &h) {
                self.note_corrupt(pos, "header checksum mismatch");
                self.pos = align_up(pos + 1);
                continue;
            }
            if h.lsn <= self.last_lsn {
                tracing::warn!(path = %self.path.display(), offset = pos, lsn = h.lsn, "record with an old LSN ignored");
                self.pos = pos + len;
                continue;
            }
            self.ensure(pos, pos + len).await?;
            if !verify_record(self.salt, self.slice(pos, len as usize), &h) {
                self.note_corrupt(pos, "record checksum mismatch");
                self.pos = pos + len;
                continue;
            }
            for offset in self.pending_corrupt.drain(..) {
                tracing::warn!(path = %self.path.display(), offset, "corrupt record skipped");
                self.corrupt_records += 1;
            }
            self.last_lsn = h.lsn;
            self.valid_end = pos + len;
            self.pos = pos + len;
            return Ok(Some(Found {
                offset: pos,
                header: h,
            }));
        }
    }
}
