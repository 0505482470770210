//! The memory behind the table: one anonymous mapping, asked for transparent huge pages
//! before it is first touched, so that a large table costs few TLB entries.
//!
//! The kernel hands out zeroed pages, and an all-zero bucket is an empty bucket, so the
//! mapping needs no initialisation pass (which would also fault every page in as 4 KiB).

use std::ptr::NonNull;

/// An owned, zero-initialised, page-aligned array of `T` in its own mapping.
pub(super) struct Region<T> {
    ptr: NonNull<T>,
    len: usize,
    bytes: usize,
}

// SAFETY: a Region is an owned allocation like a Box<[T]>; it is Send/Sync exactly when T is.
unsafe impl<T: Send> Send for Region<T> {}
// SAFETY: as above; shared access only hands out `&[T]`.
unsafe impl<T: Sync> Sync for Region<T> {}

impl<T> Region<T> {
    /// Maps `len` zeroed elements. `T` must be valid when all-zero (the caller's contract,
    /// checked by [`super::engine`] for its bucket type) and its alignment at most a page.
    pub(super) fn zeroed(len: usize) -> Option<Region<T>> {
        assert!(std::mem::align_of::<T>() <= 4096);
        let bytes = len.checked_mul(std::mem::size_of::<T>())?.max(1);
        // SAFETY: an anonymous private mapping of `bytes` bytes; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        // Huge pages if the system allows them on request; a refusal is harmless.
        // SAFETY: `p..p+bytes` is the mapping just created.
        unsafe { libc::madvise(p, bytes, libc::MADV_HUGEPAGE) };
        let ptr = NonNull::new(p.cast::<T>())?;
        Some(Region { ptr, len, bytes })
    }
}

impl<T> std::ops::Deref for Region<T> {
    type Target = [T];
    #[inline(always)]
    fn deref(&self) -> &[T] {
        // SAFETY: the mapping holds `len` elements, zero-initialised (valid for T by the
        // contract of `zeroed`) and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for Region<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `zeroed`; no reference into it
        // outlives `self` (deref borrows `self`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.bytes) };
    }
}
