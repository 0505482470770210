//! The memory behind the table: one mapping, either anonymous (asked for transparent huge
//! pages before it is first touched, so that a large table costs few TLB entries) or a
//! shared mapping of a state file, so that a restarted gateway can take over the live
//! translations of the previous process.
//!
//! The kernel hands out zeroed pages and a new file reads as zeros, and an all-zero bucket
//! is an empty bucket, so a fresh mapping needs no initialisation pass (which would also
//! fault every page in as 4 KiB). The gateway still faults every page in before traffic
//! ([`Region::populate`], huge pages kept), so that no worker pays for it mid-batch.

#[cfg(not(loom))]
use std::fs::OpenOptions;
#[cfg(not(loom))]
use std::io::{Read, Write};
#[cfg(not(loom))]
use std::os::fd::AsRawFd;
#[cfg(not(loom))]
use std::path::Path;
#[cfg(not(loom))]
use std::ptr::NonNull;

#[cfg(not(loom))]
use super::Resume;

#[cfg(not(loom))]
/// Size of the state file's header; the array starts after it.
pub(super) const HEADER: usize = 4096;

#[cfg(loom)]
pub(super) use model::Region;

/// Under the model checker the table's atomics are loom's, which cannot be made by zeroing
/// memory: the region is a plain boxed slice, and there are no state files.
#[cfg(loom)]
mod model {
    pub(in crate::table) struct Region<T>(Box<[T]>);

    impl<T> Region<T> {
        pub(in crate::table) fn from_fn(len: usize, f: impl Fn() -> T) -> Region<T> {
            Region((0..len).map(|_| f()).collect())
        }
    }

    impl<T> std::ops::Deref for Region<T> {
        type Target = [T];
        fn deref(&self) -> &[T] {
            &self.0
        }
    }
}

/// An owned, zero-initialised array of `T` in its own mapping.
#[cfg(not(loom))]
pub(super) struct Region<T> {
    base: NonNull<u8>,
    map_bytes: usize,
    /// The first element: `base` plus the header, if any (a multiple of the page size).
    /// Kept rather than recomputed on every access, which the table makes several times
    /// per packet.
    elems: NonNull<T>,
    len: usize,
}

#[cfg(not(loom))]
// SAFETY: a Region is an owned allocation like a Box<[T]>; it is Send/Sync exactly when T is.
unsafe impl<T: Send> Send for Region<T> {}
#[cfg(not(loom))]
// SAFETY: as above; shared access only hands out `&[T]`.
unsafe impl<T: Sync> Sync for Region<T> {}

#[cfg(not(loom))]
fn map(bytes: usize, flags: libc::c_int, fd: libc::c_int) -> Option<NonNull<u8>> {
    // SAFETY: a fresh mapping of `bytes` bytes (of `fd` from offset 0, or anonymous);
    // the result is checked before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    NonNull::new(p.cast())
}

/// The state file's format: bumped whenever the bytes of a bucket mean something else at the
/// same size (2: each way's control word beside its data, no line of control words; 3: a
/// key's second bucket follows from its first and its tag, see `Table::alt`).
#[cfg(not(loom))]
const MAGIC: &[u8; 8] = b"XNATTBL3";
/// The format before [`MAGIC`]: the same buckets, the keys placed otherwise. Its pairs are
/// carried over (see [`Region::previous`]).
#[cfg(not(loom))]
const PREVIOUS_MAGIC: &[u8; 8] = b"XNATTBL2";
/// Bytes of the header's layout fields: magic, length, element size, ways.
#[cfg(not(loom))]
const LAYOUT: usize = 8 + 8 + 8 + 8;
/// Bytes of the header up to the seed: the layout fields and the boot id.
#[cfg(not(loom))]
const PREFIX: usize = LAYOUT + 36;

/// This boot's id as the header holds it (36 bytes, zero-padded).
#[cfg(not(loom))]
fn boot_id() -> [u8; 36] {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let mut b = [0u8; 36];
    let bl = boot.trim().len().min(36);
    b[..bl].copy_from_slice(&boot.trim().as_bytes()[..bl]);
    b
}

/// The header of a state file up to the seed ([`PREFIX`] bytes): `magic`, `len` elements
/// of `T` in buckets of `ways`, written in this boot.
#[cfg(not(loom))]
fn header_prefix<T>(magic: &[u8; 8], len: u64, ways: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(PREFIX + 8);
    h.extend_from_slice(magic);
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(&(std::mem::size_of::<T>() as u64).to_le_bytes());
    h.extend_from_slice(&ways.to_le_bytes());
    h.extend_from_slice(&boot_id());
    h
}

/// The little-endian word at byte `at` of a header (`at + 8` within `h`).
#[cfg(not(loom))]
fn le_word(h: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&h[at..at + 8]);
    u64::from_le_bytes(w)
}

#[cfg(not(loom))]
impl<T> Region<T> {
    /// Maps `len` zeroed elements. `T` must be valid when all-zero (the caller's contract,
    /// checked by [`super::engine`] for its bucket type) and its alignment at most a page.
    pub(super) fn zeroed(len: usize) -> Option<Region<T>> {
        assert!(std::mem::align_of::<T>() <= 4096);
        let bytes = len.checked_mul(std::mem::size_of::<T>())?.max(1);
        let base = map(
            bytes,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
        )?;
        // Huge pages if the system allows them on request; a refusal is harmless.
        // SAFETY: `base..base+bytes` is the mapping just created.
        unsafe { libc::madvise(base.as_ptr().cast(), bytes, libc::MADV_HUGEPAGE) };
        Some(Region {
            base,
            map_bytes: bytes,
            elems: base.cast(),
            len,
        })
    }

    /// Maps `len` elements from the state file at `path`, after a [`HEADER`]-byte header.
    ///
    /// Opens the table state file at `path` for `len` elements of `T` in buckets of `ways`
    /// ways. Its header names the format, the layout (`len`, the element size, `ways`), the
    /// boot (a table never outlives a reboot: the kernel's connections are gone) and the hash
    /// seed. A file whose header matches all but the seed is taken over with its own seed
    /// (a table re-opened with the same seed finds its entries in the same buckets);
    /// anything else is reset to an empty table with `fresh_seed`, and the outcome says why.
    /// Only the header is read to decide (the file holds ~96 MB per million connections).
    pub(super) fn open_state(
        path: &Path,
        len: usize,
        ways: u64,
        fresh_seed: u64,
    ) -> Result<(Region<T>, Resume, u64), String> {
        let mut header = header_prefix::<T>(MAGIC, len as u64, ways);
        // The previous file's header, as far as it goes (empty: no previous table).
        let mut old = Vec::with_capacity(PREFIX + 8);
        if let Ok(f) = std::fs::File::open(path) {
            let _ = f.take((PREFIX + 8) as u64).read_to_end(&mut old);
        }
        let verdict = if old.is_empty() {
            Err(Resume::New)
        } else if old.len() < PREFIX + 8 || old[..MAGIC.len()] != MAGIC[..] {
            Err(Resume::Reset {
                reason: "it does not hold a table of this version of xnat".into(),
            })
        } else if old[..LAYOUT] != header[..LAYOUT] {
            Err(Resume::Reset {
                reason: format!(
                    "it held a table of another size ({} buckets of {} ways; this table takes {len} of {ways}): the table size changed",
                    le_word(&old, 8),
                    le_word(&old, 24)
                ),
            })
        } else if old[LAYOUT..PREFIX] != header[LAYOUT..] {
            Err(Resume::Reset {
                reason: "it was written before the machine rebooted (its connections are gone)"
                    .into(),
            })
        } else {
            Ok(le_word(&old, PREFIX))
        };
        let seed = *verdict.as_ref().unwrap_or(&fresh_seed);
        header.extend_from_slice(&seed.to_le_bytes());
        let (region, resumed) = Self::state_file(path, len, &header)?;
        let outcome = match verdict {
            Ok(_) if resumed => Resume::Resumed,
            Ok(_) => Resume::Reset {
                reason: "it could not be read back".into(),
            },
            Err(o) => o,
        };
        Ok((region, outcome, seed))
    }

    /// The array of the state file at `path` when it cannot be taken over as it is but its
    /// pairs can be carried over into a new table: written since this boot, with elements
    /// of this size in buckets of `ways`, but of another length than `len` (the table size
    /// changed) or in the previous format ([`PREVIOUS_MAGIC`]: the keys placed otherwise).
    /// Read into an anonymous mapping of its own (the file is reset next). `None` when
    /// there is no such file: nothing to carry over, or a file [`Region::open_state`] takes
    /// over or resets, saying why.
    pub(super) fn previous(path: &Path, len: usize, ways: u64) -> Option<Region<T>> {
        let mut f = std::fs::File::open(path).ok()?;
        let mut h = [0u8; PREFIX];
        f.read_exact(&mut h).ok()?;
        let old_len = usize::try_from(le_word(&h, 8)).ok()?;
        // The header this file would have in this format, or in the previous one.
        let mut want = header_prefix::<T>(MAGIC, old_len as u64, ways);
        let current = h[..] == want[..];
        want[..8].copy_from_slice(PREVIOUS_MAGIC);
        if !((current && old_len != len) || h[..] == want[..]) {
            return None;
        }
        let bytes = old_len.checked_mul(std::mem::size_of::<T>())?;
        let file_len = f.metadata().ok()?.len();
        if file_len != (bytes as u64).checked_add(HEADER as u64)? {
            return None;
        }
        let mut region = Region::<T>::zeroed(old_len)?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(HEADER as u64)).ok()?;
        f.read_exact(region.bytes_mut()).ok()?;
        Some(region)
    }

    /// The elements' bytes, to fill a region read from a file.
    fn bytes_mut(&mut self) -> &mut [u8] {
        let bytes = self.len * std::mem::size_of::<T>();
        // SAFETY: the mapping holds `len` elements from `elems`; `&mut self` excludes every
        // other reference into it while the slice lives; any bytes are written, and only
        // element types valid for any bytes of a previous table are read back (the
        // constructors' contract).
        unsafe { std::slice::from_raw_parts_mut(self.elems.as_ptr().cast::<u8>(), bytes) }
    }

    /// If the file exists and its header equals `header`, its contents are kept (the
    /// previous process's table) and `Ok((region, true))` is returned. Otherwise the file
    /// is created or truncated to zeros with `header` written, and `Ok((region, false))`.
    pub(super) fn state_file(
        path: &Path,
        len: usize,
        header: &[u8],
    ) -> Result<(Region<T>, bool), String> {
        assert!(std::mem::align_of::<T>() <= 4096 && header.len() <= HEADER);
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .and_then(|b| b.checked_add(HEADER))
            .ok_or("table too large")?;
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            }
        }
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        let mut old = vec![0u8; header.len()];
        let same_len = f
            .metadata()
            .map(|m| m.len() == bytes as u64)
            .unwrap_or(false);
        let resumed = same_len && f.read_exact(&mut old).is_ok() && old == header;
        if !resumed {
            // A different table (or none): start from zeros with our header.
            f.set_len(0)
                .and_then(|_| f.set_len(bytes as u64))
                .map_err(|e| format!("sizing {}: {e}", path.display()))?;
            std::io::Seek::rewind(&mut f).map_err(|e| format!("{}: {e}", path.display()))?;
            f.write_all(header)
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        let base = map(bytes, libc::MAP_SHARED, f.as_raw_fd()).ok_or_else(|| {
            format!(
                "mapping {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            )
        })?;
        Ok((
            Region {
                base,
                map_bytes: bytes,
                // SAFETY: the mapping is `HEADER` bytes longer than the array (`bytes` above),
                // so `base + HEADER` is inside it (or one past its end for an empty array).
                elems: unsafe { base.add(HEADER) }.cast(),
                len,
            },
            resumed,
        ))
    }
}

#[cfg(not(loom))]
impl<T> Region<T> {
    /// Faults the whole mapping in now, as writes would (`MADV_POPULATE_WRITE`, Linux 5.14):
    /// every page allocated, zeroed (or read from the state file) and mapped, as huge pages
    /// where the mapping asked for them. Otherwise the first write to each page pays for
    /// that, on whichever thread makes it.
    pub(super) fn populate(&self) -> std::io::Result<()> {
        // SAFETY: `base..base+map_bytes` is this region's own mapping; populating changes no
        // byte of it (a page reads the same before and after), so references into it stay
        // valid.
        let rc = unsafe {
            libc::madvise(
                self.base.as_ptr().cast(),
                self.map_bytes,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// The mapping's resident bytes and, of those, the bytes on huge pages, as
    /// `/proc/self/smaps` tells them (see [`smaps_page_use`]); `None` if it cannot be read.
    pub(super) fn page_use(&self) -> Option<PageUse> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let start = self.base.as_ptr() as usize;
        smaps_page_use(&smaps, start, start.checked_add(self.map_bytes)?)
    }

    /// Pages of the mapping that are in memory now (`mincore`).
    #[cfg(test)]
    pub(super) fn resident_pages(&self) -> usize {
        let mut vec = vec![0u8; self.pages()];
        // SAFETY: `base` is page-aligned (a mapping's start) and `vec` has one byte per page
        // of the `map_bytes` bytes asked about.
        let rc =
            unsafe { libc::mincore(self.base.as_ptr().cast(), self.map_bytes, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|&&b| b & 1 != 0).count()
    }

    /// Pages of the mapping.
    #[cfg(test)]
    pub(super) fn pages(&self) -> usize {
        // SAFETY: sysconf only reads a system constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        self.map_bytes
            .div_ceil(usize::try_from(page).unwrap_or(4096).max(1))
    }
}

#[cfg(not(loom))]
impl<T> std::ops::Deref for Region<T> {
    type Target = [T];
    #[inline(always)]
    fn deref(&self) -> &[T] {
        // SAFETY: the mapping holds `len` elements from `elems` (page-aligned, so aligned
        // for T), zero-initialised or written by a previous table of the same layout (valid
        // for T by the contract of the constructors), and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.elems.as_ptr(), self.len) }
    }
}

#[cfg(not(loom))]
impl<T> Drop for Region<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created by a constructor; no reference into it
        // outlives `self` (deref borrows `self`).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_bytes) };
    }
}

/// How a mapping is backed: its resident bytes, and those of them on huge pages (2 MiB and
/// up: transparent huge pages of anonymous memory or of a tmpfs file, or hugetlbfs pages).
/// Every lookup in a large table lands on a random page: on 4 KiB pages most of them miss
/// the TLB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PageUse {
    /// Resident bytes.
    pub resident: u64,
    /// Resident bytes on huge pages.
    pub huge: u64,
}

/// The [`PageUse`] of the mappings of `smaps` (the text of `/proc/PID/smaps`) that overlap
/// `start..end`, summed; `None` if none does.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn smaps_page_use(smaps: &str, start: usize, end: usize) -> Option<PageUse> {
    let mut found = false;
    let mut inside = false;
    let mut pages = PageUse {
        resident: 0,
        huge: 0,
    };
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else {
            continue;
        };
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                // A mapping's header line: "start-end perms offset dev inode [path]".
                inside = lo < end && start < hi;
                found |= inside;
                continue;
            }
        }
        if !inside {
            continue;
        }
        let kib = || -> u64 {
            words
                .clone()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(0, |k| k.saturating_mul(1024))
        };
        match first {
            "Rss:" => pages.resident = pages.resident.saturating_add(kib()),
            "AnonHugePages:" | "ShmemPmdMapped:" | "FilePmdMapped:" => {
                pages.huge = pages.huge.saturating_add(kib())
            }
            // hugetlbfs pages are not in Rss.
            "Shared_Hugetlb:" | "Private_Hugetlb:" => {
                pages.huge = pages.huge.saturating_add(kib());
                pages.resident = pages.resident.saturating_add(kib());
            }
            _ => {}
        }
    }
    found.then_some(pages)
}

#[cfg(all(test, not(loom)))]
mod page_tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0021000 r--p 00000000 fd:00 1234    /usr/bin/xnat
Size:                132 kB
Rss:                 132 kB
AnonHugePages:         0 kB
VmFlags: rd mr mw me
7f0000000000-7f0008000000 rw-s 00000000 00:1a 99      /run/xnat/table
Size:             131072 kB
KernelPageSize:        4 kB
Rss:              131072 kB
AnonHugePages:         0 kB
ShmemPmdMapped:   126976 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
VmFlags: rd wr sh mr mw me ms hg
7f0008000000-7f0008400000 rw-p 00000000 00:00 0
Size:               4096 kB
Rss:                4096 kB
AnonHugePages:      4096 kB
VmFlags: rd wr mr mw me ac hg
";

    #[test]
    fn smaps_tells_the_resident_and_huge_bytes_of_the_mappings_asked_about() {
        let mib = |m: u64| m << 20;
        // The state file's mapping: 124 MiB of its 128 on huge pages.
        assert_eq!(
            smaps_page_use(SMAPS, 0x7f00_0000_0000, 0x7f00_0800_0000),
            Some(PageUse {
                resident: mib(128),
                huge: mib(124)
            })
        );
        // A range over two mappings sums them; one inside a mapping finds it.
        assert_eq!(
            smaps_page_use(SMAPS, 0x7f00_0400_0000, 0x7f00_0820_0000),
            Some(PageUse {
                resident: mib(132),
                huge: mib(128)
            })
        );
        assert_eq!(
            smaps_page_use(SMAPS, 0x55d0_a000_0000, 0x55d0_a000_1000).map(|p| p.huge),
            Some(0)
        );
        // No mapping there, or no text: nothing to tell.
        assert_eq!(smaps_page_use(SMAPS, 0x1000, 0x2000), None);
        assert_eq!(smaps_page_use("", 0x1000, 0x2000), None);
        assert_eq!(
            smaps_page_use("garbage\nRss: x kB\n-\n", 0, usize::MAX),
            None
        );
    }

    #[test]
    fn a_real_mapping_is_found_in_this_process_smaps() {
        let r = Region::<u64>::zeroed(1 << 20).expect("mapping");
        r.populate().expect("populate");
        let pages = r.page_use().expect("the mapping is in /proc/self/smaps");
        // Every page was faulted in; huge pages only where the system gives them.
        assert_eq!(pages.resident, 8 << 20);
        assert!(pages.huge <= pages.resident);
    }
}
