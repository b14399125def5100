//! 4 KiB-aligned heap buffers for O_DIRECT I/O, and a small per-engine pool of them.
//!
//! O_DIRECT needs the memory address, the file offset and the length of every transfer to be
//! multiples of the logical block size; [`AlignedBuf`] guarantees the address and rounds its
//! capacity up to [`BLOCK_BYTES`]. It implements monoio's `IoBuf`/`IoBufMut` so it can be passed
//! by value to `write_at`/`read_at`, and `AsRef<[u8]>` + `Send` so a read buffer can become the
//! owner of a [`bytes::Bytes`] without copying.

use std::alloc::Layout;
use std::cell::RefCell;
use std::ptr::NonNull;

/// The I/O block size: alignment of every O_DIRECT buffer, offset and length.
pub(crate) const BLOCK_BYTES: usize = 4096;

/// Rounds `n` up to a multiple of [`BLOCK_BYTES`].
pub(crate) const fn align_up(n: u64) -> u64 {
    n.div_ceil(BLOCK_BYTES as u64) * BLOCK_BYTES as u64
}

/// Rounds `n` down to a multiple of [`BLOCK_BYTES`].
pub(crate) const fn align_down(n: u64) -> u64 {
    n / BLOCK_BYTES as u64 * BLOCK_BYTES as u64
}

/// Buffers at least this large are mapped with `mmap` (page aligned, already zero).
const MMAP_BYTES_MIN: usize = 256 * 1024;

/// A zero-initialised, 4 KiB-aligned heap buffer of fixed capacity with a length of valid bytes.
pub(crate) struct AlignedBuf {
    ptr: NonNull<u8>,
    capacity: usize,
    len: usize,
}

// SAFETY: `AlignedBuf` exclusively owns its heap allocation (like `Vec<u8>`); nothing else holds
// the pointer, so moving it to or sharing `&AlignedBuf` with another thread is sound.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only allow reads of initialised memory (see `Send` above).
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates a zeroed buffer of at least `capacity` bytes (rounded up to a block), length 0.
    /// Large buffers come straight from `mmap` (zero pages, no memset), small ones from the heap.
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = align_up(capacity.max(1) as u64) as usize;
        let raw = if capacity >= MMAP_BYTES_MIN {
            // SAFETY: an anonymous private mapping of `capacity` bytes; no file, no fixed address.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    capacity,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                std::ptr::null_mut()
            } else {
                p.cast::<u8>()
            }
        } else {
            // SAFETY: `layout` has a non-zero size (capacity ≥ BLOCK_BYTES) and a valid alignment.
            unsafe { std::alloc::alloc_zeroed(Self::layout(capacity)) }
        };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(Self::layout(capacity))
        };
        Self {
            ptr,
            capacity,
            len: 0,
        }
    }

    fn layout(capacity: usize) -> Layout {
        match Layout::from_size_align(capacity, BLOCK_BYTES) {
            Ok(layout) => layout,
            // A capacity this large cannot be allocated anyway.
            Err(_) => std::alloc::handle_alloc_error(Layout::new::<[u8; BLOCK_BYTES]>()),
        }
    }

    /// Allocated bytes (a multiple of [`BLOCK_BYTES`]).
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Valid bytes (what a write sends, what a read filled).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Sets the number of valid bytes; the memory is always initialised (zeroed at allocation).
    pub(crate) fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity, "AlignedBuf::set_len beyond capacity");
        self.len = len;
    }

    /// The whole allocation, for filling before a write.
    pub(crate) fn spare_mut(&mut self) -> &mut [u8] {
        // SAFETY: the allocation is `capacity` bytes, initialised (zeroed at allocation, then only
        // written with initialised bytes), and `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.capacity >= MMAP_BYTES_MIN {
            // SAFETY: `ptr` is the start of a mapping of `capacity` bytes made in `new`, unmapped
            // only here. munmap cannot fail for a valid mapping; nothing to do if it did.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.capacity) };
        } else {
            // SAFETY: `ptr` was allocated in `new` with exactly this layout and is freed only here.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.capacity)) }
        }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len ≤ capacity` and the whole allocation is initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

// SAFETY: `read_ptr` points to `bytes_init()` initialised bytes that stay at the same address
// while the runtime holds the buffer (the heap allocation never moves with the struct).
unsafe impl monoio::buf::IoBuf for AlignedBuf {
    fn read_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
}

// SAFETY: `write_ptr` points to `bytes_total()` writable bytes of a stable heap allocation;
// `set_init` only records a length within the capacity.
unsafe impl monoio::buf::IoBufMut for AlignedBuf {
    fn write_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn bytes_total(&mut self) -> usize {
        self.capacity
    }
    unsafe fn set_init(&mut self, pos: usize) {
        self.len = pos.min(self.capacity);
    }
}

/// Most buffers a pool keeps for reuse (the rest are freed).
const POOL_BUFFERS_MAX: usize = 32;

/// A per-engine free list of equally sized aligned buffers (the engine is single-threaded).
pub(crate) struct BufPool {
    buf_bytes: usize,
    free: RefCell<Vec<AlignedBuf>>,
}

impl BufPool {
    /// A pool of buffers of `buf_bytes` (rounded up to a block).
    pub(crate) fn new(buf_bytes: usize) -> Self {
        Self {
            buf_bytes: align_up(buf_bytes as u64) as usize,
            free: RefCell::new(Vec::new()),
        }
    }

    /// A buffer of at least `bytes` (from the pool when it fits a pooled buffer), length 0.
    pub(crate) fn get(&self, bytes: usize) -> AlignedBuf {
        if bytes <= self.buf_bytes
            && let Some(mut buf) = self.free.borrow_mut().pop()
        {
            buf.set_len(0);
            return buf;
        }
        AlignedBuf::new(bytes.max(self.buf_bytes))
    }

    /// Returns a buffer for reuse (odd-sized ones and the surplus are freed).
    pub(crate) fn put(&self, buf: AlignedBuf) {
        let mut free = self.free.borrow_mut();
        if buf.capacity() == self.buf_bytes && free.len() < POOL_BUFFERS_MAX {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_rounded() {
        let buf = AlignedBuf::new(10);
        assert_eq!(buf.capacity(), BLOCK_BYTES);
        assert_eq!(buf.ptr.as_ptr() as usize % BLOCK_BYTES, 0);
        assert_eq!(align_up(4097), 8192);
        assert_eq!(align_down(4097), 4096);
    }

    #[test]
    fn large_buffers_are_mapped_and_zeroed() {
        let mut buf = AlignedBuf::new(MMAP_BYTES_MIN + 1);
        assert_eq!(buf.capacity() % BLOCK_BYTES, 0);
        assert_eq!(buf.ptr.as_ptr() as usize % BLOCK_BYTES, 0);
        assert!(buf.spare_mut().iter().all(|&b| b == 0));
        buf.spare_mut()[MMAP_BYTES_MIN] = 1;
        buf.set_len(MMAP_BYTES_MIN + 1);
        assert_eq!(buf[MMAP_BYTES_MIN], 1);
    }

    #[test]
    fn pool_reuses_buffers() {
        let pool = BufPool::new(8192);
        let mut buf = pool.get(100);
        buf.spare_mut()[0] = 7;
        buf.set_len(1);
        let addr = buf.ptr.as_ptr();
        pool.put(buf);
        let again = pool.get(10);
        assert_eq!(again.ptr.as_ptr(), addr);
        assert_eq!(again.len(), 0);
        assert!(pool.get(100_000).capacity() >= 100_000);
    }
}
