//! A big file written from its first byte to its last, past the page cache.
//!
//! A 1 GiB upload written the ordinary way is copied into the page cache on
//! the publisher and again on each box, and then written back by the final
//! fsync. On the machines the figures in `docs/performance.md` come from,
//! that copy was the largest single cost of a big push (a third of all CPU
//! samples, in `copy_folio_from_iter_atomic`): page-cache pages the kernel
//! had not used lately cost ten times as much to fill as recently freed ones.
//! With `O_DIRECT` the disk reads the bytes from the writer's own buffer; the
//! only copy is into that buffer, whose memory the allocator hands from one
//! write to the next, so it stays warm. Nothing is
//! lost by skipping the cache: the file is read again only when it is sent on
//! or served, and the boxes serve hot files from their own cache then.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::OFlags;

/// What `O_DIRECT` asks offsets, lengths and buffer addresses to be a multiple
/// of: the logical block size, 512 or 4096 bytes on the disks in use.
const ALIGN: usize = 4096;

/// Bytes gathered before each write: big enough that the disk sees long
/// requests, small enough to stay flat in memory per transfer.
pub const STAGE: usize = 1024 * 1024;

/// A new file written in order with `O_DIRECT` where the filesystem allows it
/// (some filesystems do not: it is then written the ordinary way, and
/// [`DirectFile::is_direct`] says so). Blocking: use it on the blocking pool.
///
/// Each [`DirectFile::write_all`] writes every whole block it can at once,
/// from an aligned buffer of at most [`STAGE`] bytes that lives only for the
/// call (the allocator hands the same warm memory to the next one); only the
/// last partial block, under 4 KiB, is kept until the next call. An open
/// transfer that is not writing therefore holds next to no memory: a box with
/// many transfers open stays within its upload budget. The tail goes out
/// padded to a block at [`DirectFile::finish`], and the file is then cut to
/// its real length. Until `finish`, the file on disk is not the upload:
/// callers write into a temporary file, as before.
#[derive(Debug)]
pub struct DirectFile {
    file: File,
    direct: bool,
    /// The bytes after the last whole block, not yet written.
    tail: Vec<u8>,
    /// Bytes handed to [`DirectFile::write_all`] so far.
    len: u64,
    /// Bytes already on disk: where `tail` goes.
    flushed: u64,
    /// The last block went out padded: the file is longer than `len`.
    padded: bool,
}

impl DirectFile {
    /// Creates (or truncates) `path` for writing past the page cache.
    pub fn create(path: &Path) -> io::Result<DirectFile> {
        DirectFile::open(path, true)
    }

    /// Creates (or truncates) `path` for writing through the page cache: for
    /// a file that is read again soon, like a live segment a box serves at once.
    pub fn create_cached(path: &Path) -> io::Result<DirectFile> {
        DirectFile::open(path, false)
    }

    fn open(path: &Path, direct: bool) -> io::Result<DirectFile> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        let mut direct_options = options.clone();
        direct_options.custom_flags(OFlags::DIRECT.bits() as i32);
        let (file, direct) = match direct.then(|| direct_options.open(path)) {
            None => (options.open(path)?, false),
            Some(Ok(file)) => (file, true),
            Some(Err(e)) if is_unsupported(&e) => (options.open(path)?, false),
            Some(Err(e)) => return Err(e),
        };
        Ok(DirectFile {
            file,
            direct,
            tail: Vec::new(),
            len: 0,
            flushed: 0,
            padded: false,
        })
    }

    /// Whether the bytes bypass the page cache. An ordinary file benefits
    /// from [`super::WriteBehind`]; a direct one has nothing to write back.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The open file, for flushes of an ordinary one.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Bytes written so far (the last partial block may still be held).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `bytes`: every whole block now, the rest at the next call.
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.len = self.len.saturating_add(bytes.len() as u64);
        if !self.direct {
            return self.file.write_all(bytes);
        }
        let total = self.tail.len() + bytes.len();
        let mut whole = total - total % ALIGN;
        let mut rest = bytes;
        if whole > 0 {
            let mut stage = Stage::new(whole.min(STAGE));
            while whole > 0 {
                let n = whole.min(STAGE);
                let from_rest = n - self.tail.len();
                stage.fill(&[&self.tail, &rest[..from_rest]]);
                self.tail.clear();
                rest = &rest[from_rest..];
                self.write_block(stage.bytes(), n)?;
                whole -= n;
            }
        }
        self.tail.extend_from_slice(rest);
        Ok(())
    }

    /// Writes what is still held and returns the file at its exact length,
    /// not yet synced.
    pub fn finish(mut self) -> io::Result<File> {
        if !self.tail.is_empty() {
            if self.direct {
                let real = self.tail.len();
                let mut stage = Stage::new(ALIGN);
                stage.fill(&[&self.tail, &[0; ALIGN][..ALIGN - real]]);
                self.padded = true;
                self.write_block(stage.bytes(), real)?;
            } else {
                self.file.write_all(&self.tail)?;
            }
        }
        if self.padded {
            // Cut the padding of the last block off.
            self.file.set_len(self.len)?;
        }
        Ok(self.file)
    }

    /// Writes `block` (whole blocks, of which the first `real` bytes are the
    /// upload's). A filesystem that accepted `O_DIRECT` at open and refuses it
    /// on write gets this and the rest the ordinary way.
    fn write_block(&mut self, block: &[u8], real: usize) -> io::Result<()> {
        match self.file.write_all(block) {
            Ok(()) => {}
            Err(e) if is_unsupported(&e) => {
                let flags = rustix::fs::fcntl_getfl(&self.file)?;
                rustix::fs::fcntl_setfl(&self.file, flags - OFlags::DIRECT)?;
                self.direct = false;
                self.padded = false;
                // A refused write may have left part of the block behind.
                self.file.seek(SeekFrom::Start(self.flushed))?;
                self.file.write_all(&block[..real])?;
            }
            Err(e) => return Err(e),
        }
        self.flushed += real as u64;
        Ok(())
    }
}

/// An aligned buffer for one call's writes: allocated without zeroing, the
/// bytes to write start at a block boundary inside it.
struct Stage {
    buf: Vec<u8>,
    start: usize,
}

impl Stage {
    fn new(capacity: usize) -> Stage {
        let mut buf: Vec<u8> = Vec::with_capacity(capacity + ALIGN);
        let start = buf.as_ptr().align_offset(ALIGN);
        buf.resize(start, 0);
        Stage { buf, start }
    }

    /// Replaces the staged bytes with `parts`, one after the other.
    fn fill(&mut self, parts: &[&[u8]]) {
        self.buf.truncate(self.start);
        for part in parts {
            self.buf.extend_from_slice(part);
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// `EINVAL`: how Linux says a filesystem or a request does not do `O_DIRECT`.
fn is_unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    fn write_in_pieces(mut file: DirectFile, data: &[u8], piece: usize) {
        for chunk in data.chunks(piece) {
            file.write_all(chunk).unwrap();
            // Between writes an open transfer holds a partial block at most.
            assert!(file.tail.capacity() < 2 * ALIGN, "{}", file.tail.capacity());
        }
        assert_eq!(file.len(), data.len() as u64);
        file.finish().unwrap().sync_all().unwrap();
    }

    #[test]
    fn every_length_comes_back_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        for (len, piece) in [
            (0, 1),
            (1, 1),
            (ALIGN - 1, 100),
            (ALIGN, ALIGN),
            (STAGE, 65_536),
            (STAGE + 1, 333_333),
            (3 * STAGE + 12_345, STAGE + 17),
        ] {
            let data = pattern(len);
            let path = dir.path().join(format!("f-{len}"));
            write_in_pieces(DirectFile::create(&path).unwrap(), &data, piece);
            assert_eq!(std::fs::read(&path).unwrap(), data, "length {len}");
            let cached = dir.path().join(format!("c-{len}"));
            let file = DirectFile::create_cached(&cached).unwrap();
            assert!(!file.is_direct());
            write_in_pieces(file, &data, piece);
            assert_eq!(std::fs::read(&cached).unwrap(), data, "length {len}");
        }
    }

    #[test]
    fn a_file_that_is_there_is_replaced_not_merged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![9u8; 3 * STAGE]).unwrap();
        let data = pattern(STAGE / 2 + 5);
        write_in_pieces(DirectFile::create(&path).unwrap(), &data, 4_000);
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}
