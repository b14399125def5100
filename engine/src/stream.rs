//! Large records: a body streamed into a reserved region of the head segment in bounded pieces.
//!
//! The writer reserves a block-aligned region (and the record's LSN); this task fills
//! [`PIECE_BYTES`] aligned buffers and writes each as it fills, except the FIRST piece, which
//! holds the header: it is kept in memory and written last (together with the last piece),
//! once the checksum over the whole body is known. Then a fdatasync that starts after all those writes completed (shared through
//! the writer, [`Request::Sync`]) makes the record durable, and only then is it put in the index.
//! A crash before the first piece is written leaves a hole that recovery skips. Memory per
//! stream: two pieces.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;
use futures_util::{Stream, StreamExt};

use crate::aligned::{AlignedBuf, align_up};
use crate::engine::Inner;
use crate::index::Entry;
use crate::io::write_all_at;
use crate::record::{HEADER_BYTES, Kind, RecordHasher, RecordHeader, record_len};
use crate::writer::{AppendReq, Request, Reservation};
use crate::{EngineError, Hlc, PartitionId, PutValue};

/// Bytes of one streamed piece (one write).
pub(crate) const PIECE_BYTES: usize = 1024 * 1024;
/// Streamed records up to this size are gathered in memory and group-committed instead.
pub(crate) const STREAM_INLINE_BYTES_MAX: u64 = 64 * 1024;

/// Removes a reservation's LSN from the unapplied set when the write ends, however it ends.
struct UnappliedGuard<'a> {
    inner: &'a Inner,
    lsn: u64,
}

impl Drop for UnappliedGuard<'_> {
    fn drop(&mut self) {
        self.inner.state.borrow_mut().unapplied.remove(&self.lsn);
    }
}

/// Stores a record whose body arrives from `body`; see the module docs.
pub(crate) async fn put_stream<S>(
    inner: &Rc<Inner>,
    partition: PartitionId,
    key: &[u8],
    header: PutValue,
    hlc: Hlc,
    body_len: u64,
    mut body: S,
) -> Result<Hlc, EngineError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    let len = record_len(key.len(), header.meta.len(), body_len);
    if len <= STREAM_INLINE_BYTES_MAX.min(inner.config.batch_bytes_max as u64) {
        let mut whole = BytesMut::with_capacity(body_len as usize);
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| EngineError::Body(e.to_string()))?;
            if whole.len() as u64 + piece.len() as u64 > body_len {
                return Err(EngineError::Body(format!(
                    "body longer than the declared {body_len} bytes"
                )));
            }
            whole.extend_from_slice(&piece);
        }
        if (whole.len() as u64) < body_len {
            return Err(EngineError::Body(format!(
                "body ended after {} of {body_len} bytes",
                whole.len()
            )));
        }
        let (reply, rx) = oneshot::channel();
        let req = AppendReq {
            kind: Kind::Put,
            partition,
            key: key.into(),
            meta: header.meta,
            body: whole.freeze(),
            hlc,
            summary: header.summary,
            use_spare: false,
            relocates: None,
            reply,
        };
        return Ok(inner.append(req, rx).await?.hlc);
    }
    let (reply, rx) = oneshot::channel();
    let new_entry_bytes = if inner.state.borrow().index.get(partition, key).is_some() {
        0
    } else {
        crate::checkpoint::entry_bytes(key.len())
    };
    inner.send(Request::Reserve {
        len,
        new_entry_bytes,
        use_spare: false,
        reply,
    })?;
    let reservation = rx.await.map_err(|_| EngineError::Closed)??;
    let _guard = UnappliedGuard {
        inner,
        lsn: reservation.lsn,
    };
    let record = RecordHeader {
        kind: Kind::Put,
        flags: 0,
        partition,
        key_len: key.len() as u32,
        meta_len: header.meta.len() as u32,
        body_len,
        hlc,
        lsn: reservation.lsn,
        life_seq: reservation.life_seq,
        summary: header.summary,
        record_checksum: 0,
    };
    write_record(inner, &reservation, &record, key, &header.meta, &mut body).await?;
    let (reply, rx) = oneshot::channel();
    inner.send(Request::Sync {
        segment: reservation.segment,
        reply,
    })?;
    rx.await.map_err(|_| EngineError::Closed)??;
    let entry = Entry {
        segment: reservation.segment as u32,
        offset: reservation.offset as u32,
        len: len as u32,
        tombstone: false,
        hlc,
        lsn: reservation.lsn,
        summary: header.summary,
        body_len,
    };
    inner
        .state
        .borrow_mut()
        .apply(&inner.cache, partition, key, entry);
    Ok(hlc)
}

/// Fills and writes the pieces of one record; the first piece (with the header) goes last.
async fn write_record<S>(
    inner: &Inner,
    r: &Reservation,
    record: &RecordHeader,
    key: &[u8],
    meta: &[u8],
    body: &mut S,
) -> Result<(), EngineError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    let mut header = [0u8; HEADER_BYTES];
    record.write_fields(&mut header);
    let mut hasher = RecordHasher::new(r.salt, &header, key, meta);
    let mut pieces = Pieces {
        inner,
        r,
        first: None,
        cur: inner.pool.get(PIECE_BYTES),
        index: 0,
    };
    pieces.push(&header).await?;
    pieces.push(key).await?;
    pieces.push(meta).await?;
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| EngineError::Body(e.to_string()))?;
        received += chunk.len() as u64;
        if received > record.body_len {
            return Err(EngineError::Body(format!(
                "body longer than the declared {} bytes",
                record.body_len
            )));
        }
        hasher.update_body(&chunk);
        pieces.push(&chunk).await?;
    }
    if received < record.body_len {
        return Err(EngineError::Body(format!(
            "body ended after {received} of {} bytes",
            record.body_len
        )));
    }
    let written = (HEADER_BYTES + key.len() + meta.len()) as u64 + received;
    let region = align_up(record.len());
    pieces.pad((region - written) as usize).await?;
    let (mut first, last) = pieces.finish()?;
    hasher.finish(&mut first.spare_mut()[..HEADER_BYTES], key, meta);
    // The checksum now covers every byte, so the last piece and the first one (with the
    // header) can be written together: a crash that lands only some of them fails the checksum.
    let write_first = write_all_at(&r.file, first, r.offset, &r.path);
    let ((first_result, first), last_result) = match last {
        Some((buf, pos)) => {
            let write_last = write_all_at(&r.file, buf, pos, &r.path);
            let (a, (b, buf)) = futures_util::future::join(write_first, write_last).await;
            inner.pool.put(buf);
            (a, b)
        }
        None => (write_first.await, Ok(())),
    };
    inner.pool.put(first);
    first_result.and(last_result)
}

/// Sequential filling of piece buffers for one reserved region.
struct Pieces<'a> {
    inner: &'a Inner,
    r: &'a Reservation,
    first: Option<AlignedBuf>,
    cur: AlignedBuf,
    index: u64,
}

impl Pieces<'_> {
    async fn push(&mut self, mut bytes: &[u8]) -> Result<(), EngineError> {
        while !bytes.is_empty() {
            let at = self.cur.len();
            let n = bytes.len().min(PIECE_BYTES - at);
            self.cur.spare_mut()[at..at + n].copy_from_slice(&bytes[..n]);
            self.cur.set_len(at + n);
            bytes = &bytes[n..];
            if self.cur.len() == PIECE_BYTES {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn pad(&mut self, mut zeros: usize) -> Result<(), EngineError> {
        while zeros > 0 {
            let at = self.cur.len();
            let n = zeros.min(PIECE_BYTES - at);
            self.cur.spare_mut()[at..at + n].fill(0);
            self.cur.set_len(at + n);
            zeros -= n;
            if self.cur.len() == PIECE_BYTES {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Writes the current piece (or keeps it, if it is the first) and starts the next.
    async fn flush(&mut self) -> Result<(), EngineError> {
        let next = self.inner.pool.get(PIECE_BYTES);
        let cur = std::mem::replace(&mut self.cur, next);
        if self.index == 0 {
            self.first = Some(cur);
        } else {
            let pos = self.r.offset + self.index * PIECE_BYTES as u64;
            let (result, buf) = write_all_at(&self.r.file, cur, pos, &self.r.path).await;
            self.inner.pool.put(buf);
            result?;
        }
        self.index += 1;
        Ok(())
    }

    /// The first piece, and the last partial piece with its offset if it is not the first
    /// (both block-aligned in length, not yet written).
    fn finish(mut self) -> Result<(AlignedBuf, Option<(AlignedBuf, u64)>), EngineError> {
        if self.index == 0 {
            return Ok((self.cur, None));
        }
        let first = self.first.take().ok_or(EngineError::Closed)?;
        if self.cur.is_empty() {
            self.inner.pool.put(self.cur);
            return Ok((first, None));
        }
        let pos = self.r.offset + self.index * PIECE_BYTES as u64;
        Ok((first, Some((self.cur, pos))))
    }
}
