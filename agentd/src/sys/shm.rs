//! Shared memory as words: the table file's mapping (memmap2) and the SysV counters segment
//! (`shmat`, which memmap2 does not cover).
//!
//! Both are turned into `&[AtomicU64]`, which is all `lbfo_core::shm` needs: every access to
//! shared memory is then an atomic load or store, so other processes writing the same pages
//! (lookups bumping counters) or reading them (the NSS module) never race with us in the
//! language's sense. That is why the table is mapped as memmap2's `MmapRaw`, a pointer and a
//! length, and never as a `&[u8]`, which would promise that nobody changes the bytes.
//!
//! Guarantees: a slice handed out is page-aligned, `len` is the mapping's bytes / 8, and it lives
//! no longer than the mapping or attachment it borrows from (unmapped / detached on drop).

use lbfo_core::atomic::AtomicU64;
use memmap2::{MmapOptions, MmapRaw};
use std::fs::File;
use std::io;

/// A read-write shared mapping of a whole table file.
#[derive(Debug)]
pub struct TableMap {
    map: MmapRaw,
}

impl TableMap {
    /// Maps all of `file` shared and writable. The file must be open read-write. The table file
    /// is ours (root-owned, mode 0644, the agent is its only writer and never truncates it).
    pub fn map(file: &File) -> io::Result<TableMap> {
        let map = options(file)?.map_raw(file)?;
        Ok(TableMap { map })
    }

    /// The mapping as words.
    pub fn words(&self) -> &[AtomicU64] {
        words_of(self.map.as_ptr(), self.map.len())
    }
}

/// A read-only shared mapping of a table file, for `status`.
#[derive(Debug)]
pub struct TableMapRo {
    map: MmapRaw,
}

impl TableMapRo {
    /// Maps all of `file` shared and read-only.
    pub fn map(file: &File) -> io::Result<TableMapRo> {
        let map = options(file)?.map_raw_read_only(file)?;
        Ok(TableMapRo { map })
    }

    /// The mapping as words. Only loads are allowed on these pages: `lbfo_core::shm::TableView`
    /// never stores, and a plain 64-bit atomic load does not write on the targets lbfo builds for.
    pub fn words(&self) -> &[AtomicU64] {
        words_of(self.map.as_ptr(), self.map.len())
    }
}

/// A mapping of all of `file`, its length read by `statx` (`sys::fs::fstat`). Given the length,
/// memmap2 does not ask std for the file's metadata, whose `fstat` wrapper on 32-bit musl
/// converts a time64 structure: more code on the router build for a number the agent already
/// reads this way.
fn options(file: &File) -> io::Result<MmapOptions> {
    let len = super::fs::fstat(std::os::fd::AsFd::as_fd(file))?.size;
    let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    let mut o = MmapOptions::new();
    o.len(len);
    Ok(o)
}

fn words_of<'a>(ptr: *const u8, bytes: usize) -> &'a [AtomicU64] {
    if bytes < 8 || (ptr as usize) % std::mem::align_of::<AtomicU64>() != 0 {
        return &[];
    }
    // SAFETY: `ptr` is the start of a live mapping of `bytes` bytes (the caller ties the returned
    // lifetime to the owner of that mapping), it is page-aligned and so aligned for AtomicU64
    // (checked above anyway), and `bytes / 8` words fit inside it. AtomicU64 has the size and
    // alignment of u64 and interior mutability, so a shared slice over memory that other
    // processes change concurrently is sound as long as every access is atomic, which it is.
    unsafe { std::slice::from_raw_parts(ptr.cast::<AtomicU64>(), bytes / 8) }
}

/// Facts about a SysV segment from `IPC_STAT`.
#[derive(Debug, Clone, Copy)]
pub struct SegmentInfo {
    /// Size in bytes.
    pub bytes: usize,
    /// Owner's uid.
    pub uid: u32,
    /// Creator's uid.
    pub cuid: u32,
    /// Permission bits.
    pub mode: u32,
}

/// An attached SysV shared memory segment (the usage counters). Detached on drop, never removed.
#[derive(Debug)]
pub struct Segment {
    addr: *mut libc::c_void,
    bytes: usize,
    id: i32,
}

impl Segment {
    /// Creates a fresh, zeroed segment of `words` words that every local user may read and write
    /// (lookups in every process bump counters), and attaches it read-write.
    pub fn create(words: usize) -> io::Result<Segment> {
        // SAFETY: shmget takes plain values and touches no memory of ours.
        let id = unsafe { libc::shmget(libc::IPC_PRIVATE, words * 8, libc::IPC_CREAT | 0o666) };
        if id < 0 {
            return Err(io::Error::last_os_error());
        }
        Segment::attach(id, false).inspect_err(|_| {
            let _ = Segment::remove(id);
        })
    }

    /// Attaches the segment `id`, read-only or read-write.
    pub fn attach(id: i32, read_only: bool) -> io::Result<Segment> {
        let flags = if read_only { libc::SHM_RDONLY } else { 0 };
        // SAFETY: a null address lets the kernel choose where to map; the result is checked.
        let addr = unsafe { libc::shmat(id, std::ptr::null(), flags) };
        if addr as isize == -1 {
            return Err(io::Error::last_os_error());
        }
        // Stat after attaching: our attachment keeps the segment (and so its size) alive.
        // On error `seg` is dropped, which detaches.
        let mut seg = Segment { addr, bytes: 0, id };
        seg.bytes = Segment::stat(id)?.bytes;
        Ok(seg)
    }

    /// `IPC_STAT` of segment `id`.
    pub fn stat(id: i32) -> io::Result<SegmentInfo> {
        // SAFETY: shmid_ds is plain old data; all-zero is a valid value.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: IPC_STAT writes one shmid_ds into the buffer we pass, which is that big.
        if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SegmentInfo {
            bytes: ds.shm_segsz,
            uid: ds.shm_perm.uid,
            cuid: ds.shm_perm.cuid,
            mode: u32::from(ds.shm_perm.mode) & 0o777,
        })
    }

    /// Marks segment `id` for removal once its last process detaches (`IPC_RMID`).
    pub fn remove(id: i32) -> io::Result<()> {
        // SAFETY: IPC_RMID ignores the buffer argument, so null is allowed.
        if unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The segment's id.
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The segment as words.
    pub fn words(&self) -> &[AtomicU64] {
        words_of(self.addr.cast::<u8>().cast_const(), self.bytes)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `addr` came from a successful shmat and is detached exactly once, here; no
        // slice from `words` outlives `self`.
        unsafe { libc::shmdt(self.addr) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn segment_round_trip() {
        let seg = Segment::create(16).unwrap();
        let info = Segment::stat(seg.id()).unwrap();
        assert_eq!((info.bytes, info.mode), (128, 0o666));
        assert_eq!(seg.words().len(), 16);
        assert!(
            seg.words().iter().all(|w| w.load(Ordering::Relaxed) == 0),
            "fresh segments are zeroed"
        );
        seg.words()[3].store(7, Ordering::Relaxed);
        let ro = Segment::attach(seg.id(), true).unwrap();
        assert_eq!(ro.words()[3].load(Ordering::Relaxed), 7);
        Segment::remove(seg.id()).unwrap();
        assert_eq!(
            ro.words()[3].load(Ordering::Relaxed),
            7,
            "attachments outlive IPC_RMID"
        );
    }

    #[test]
    fn file_maps_share_pages() {
        let path =
            std::env::temp_dir().join(format!("lbfo-agentd-shm-test-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(4096).unwrap();
        let rw = TableMap::map(&f).unwrap();
        let ro = TableMapRo::map(&f).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((rw.words().len(), ro.words().len()), (512, 512));
        rw.words()[511].store(42, Ordering::Relaxed);
        assert_eq!(ro.words()[511].load(Ordering::Relaxed), 42);
    }

    #[test]
    fn an_empty_file_maps_to_no_words_and_a_missing_mapping_is_an_error() {
        let path =
            std::env::temp_dir().join(format!("lbfo-agentd-shm-empty-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        let ro = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(TableMapRo::map(&ro).unwrap().words().is_empty());
        f.set_len(4096).unwrap();
        assert_eq!(TableMapRo::map(&ro).unwrap().words().len(), 512);
        // Write-only descriptor: mmap refuses (EACCES), and says so.
        let e = TableMap::map(&f).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    }
}
