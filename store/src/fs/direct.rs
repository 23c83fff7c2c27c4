//! Large files of [`RealFs`](super::RealFs) bypass the page cache (`O_DIRECT`).
//!
//! Why: on the 2-core virtual machines this relay is measured on, putting a byte into the page
//! cache costs more than moving it (1 GiB: a buffered `dd conv=fsync` 2.7–3.0 s, the same copy
//! with `oflag=direct` 0.6–1.2 s; a buffered read of an uncached file 1.8 s, a direct read
//! 0.7 s; measured 2026-12-04). A relay hop with direct I/O spent half the receiver's CPU. The store writes a segment once, reads it back only
//! to send or export it, and already asked the kernel to drop written pages
//! (`start_writeback`), so the cache never paid for itself.
//!
//! How, without changing what callers see:
//!
//! - A [`DirectWriter`] collects an append-only stream of writes into one aligned block and
//!   writes each full block with `O_DIRECT` at an aligned offset. The tail (the last, partial
//!   block) goes through the page cache whenever the data must reach the file: at every sync, at
//!   a flush and when dropped; the block stays in memory, so the next full write covers the same
//!   bytes again, directly. Small files therefore never do a direct write at all.
//! - A [`DirectReader`] reads aligned blocks into one aligned buffer and serves reads and seeks
//!   from it; it is used only for files of at least [`DIRECT_IO_MIN_FILE_BYTES`] (a small
//!   segment is most likely still cached, and one direct read of it would cost a disk access).
//! - Every failure of the direct path that the file system may produce for an unsupported
//!   `O_DIRECT` (EINVAL at open, at a read or a write) falls back to buffered I/O on the same
//!   descriptor: slower, never wrong.
//!
//! - A file read or written by a thread that also does the other half of a copy (an import
//!   reading its socket, an export writing its medium) asks for the page cache instead
//!   (`prefer_cache`): a direct request waits for the device and would stall that other half,
//!   where buffered I/O overlaps it with the kernel's read-ahead and write-back. A peer's
//!   transfer has a disk thread of its own and keeps direct I/O.
//!
//! Durability is unchanged: data reaches the device's cache through either path and is durable
//! only after the caller's `fsync` ([`super::FsFile::sync`]).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::limits::{DIRECT_IO_ALIGN_BYTES, DIRECT_IO_BLOCK_BYTES};

/// Files at least this long are read with `O_DIRECT`.
pub const DIRECT_IO_MIN_FILE_BYTES: u64 = 8 << 20;

/// A buffer of [`DIRECT_IO_BLOCK_BYTES`] whose start is aligned to [`DIRECT_IO_ALIGN_BYTES`]
/// (what `O_DIRECT` asks of memory), carved out of a slightly larger vector.
#[derive(Debug)]
struct AlignedBlock {
    raw: Vec<u8>,
    start: usize,
}

impl AlignedBlock {
    fn new() -> Self {
        let raw = vec![0u8; DIRECT_IO_BLOCK_BYTES + DIRECT_IO_ALIGN_BYTES];
        let start = raw.as_ptr().align_offset(DIRECT_IO_ALIGN_BYTES);
        AlignedBlock { raw, start }
    }

    fn bytes(&self) -> &[u8] {
        &self.raw[self.start..self.start + DIRECT_IO_BLOCK_BYTES]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + DIRECT_IO_BLOCK_BYTES]
    }
}

/// Turns `O_DIRECT` on or off for an open descriptor.
pub(crate) fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    let flags = if on {
        flags | rustix::fs::OFlags::DIRECT
    } else {
        flags - rustix::fs::OFlags::DIRECT
    };
    rustix::fs::fcntl_setfl(file, flags)?;
    Ok(())
}

/// Whether an error means "this file system does not do `O_DIRECT` here".
fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

/// Writes all of `buf` at `offset`.
fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write_at(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The direct-write state of a file created empty and written from offset 0 onwards.
#[derive(Debug)]
pub(crate) struct DirectWriter {
    block: AlignedBlock,
    /// Bytes of `block` holding data.
    filled: usize,
    /// File offset of `block[0]`; a multiple of [`DIRECT_IO_BLOCK_BYTES`].
    block_start: u64,
}

impl DirectWriter {
    /// For a file just created with `O_DIRECT`.
    pub(crate) fn new() -> Self {
        DirectWriter {
            block: AlignedBlock::new(),
            filled: 0,
            block_start: 0,
        }
    }

    /// File offset after the last byte written.
    pub(crate) fn end(&self) -> u64 {
        self.block_start + self.filled as u64
    }

    /// Takes as much of `buf` as fits in the block; writes the block directly once full.
    /// Returns the bytes taken. On an error nothing of `buf` was taken.
    pub(crate) fn write(&mut self, file: &File, buf: &[u8]) -> io::Result<usize> {
        if self.filled == DIRECT_IO_BLOCK_BYTES {
            self.write_block(file)?;
        }
        let n = buf.len().min(DIRECT_IO_BLOCK_BYTES - self.filled);
        self.block.bytes_mut()[self.filled..self.filled + n].copy_from_slice(&buf[..n]);
        self.filled += n;
        if self.filled == DIRECT_IO_BLOCK_BYTES {
            // A failure here is reported by the next write or by `write_tail` (the block is
            // kept): the bytes were taken, so this call must report them.
            let _ = self.write_block(file);
        }
        Ok(n)
    }

    fn write_block(&mut self, file: &File) -> io::Result<()> {
        debug_assert_eq!(self.filled, DIRECT_IO_BLOCK_BYTES);
        match write_all_at(file, self.block.bytes(), self.block_start) {
            Ok(()) => {}
            Err(e) if unsupported(&e) => {
                set_direct(file, false)?;
                write_all_at(file, self.block.bytes(), self.block_start)?;
                // Buffered from now on for this descriptor: the flag is off, the block
                // size still frames the writes.
            }
            Err(e) => return Err(e),
        }
        self.block_start += DIRECT_IO_BLOCK_BYTES as u64;
        self.filled = 0;
        Ok(())
    }

    /// Puts the partial block into the file through the page cache, keeping it in memory: a
    /// later full block rewrites the same bytes directly.
    pub(crate) fn write_tail(&mut self, file: &File) -> io::Result<()> {
        if self.filled == DIRECT_IO_BLOCK_BYTES {
            return self.write_block(file);
        }
        if self.filled == 0 {
            return Ok(());
        }
        let was_direct = rustix::fs::fcntl_getfl(file)?.contains(rustix::fs::OFlags::DIRECT);
        if was_direct {
            set_direct(file, false)?;
        }
        let written = write_all_at(file, &self.block.bytes()[..self.filled], self.block_start);
        if was_direct {
            set_direct(file, true)?;
        }
        written
    }
}

/// The direct-read state of a file: one aligned block read ahead.
#[derive(Debug)]
pub(crate) struct DirectReader {
    block: AlignedBlock,
    /// File offset of `block[0]`, aligned to [`DIRECT_IO_ALIGN_BYTES`].
    block_start: u64,
    /// Bytes of `block` read from the file (fewer than a block at its end).
    valid: usize,
    /// Set once the file system refused a direct read: plain `pread` from then on.
    buffered: bool,
}

impl DirectReader {
    pub(crate) fn new() -> Self {
        DirectReader {
            block: AlignedBlock::new(),
            block_start: 0,
            valid: 0,
            buffered: false,
        }
    }

    /// Reads at `pos` into `out`; 0 at the end of the file.
    pub(crate) fn read_at(&mut self, file: &File, out: &mut [u8], pos: u64) -> io::Result<usize> {
        if self.buffered {
            return file.read_at(out, pos);
        }
        let cached = pos >= self.block_start && pos < self.block_start + self.valid as u64;
        if !cached {
            let start = pos - pos % DIRECT_IO_ALIGN_BYTES as u64;
            loop {
                match file.read_at(self.block.bytes_mut(), start) {
                    Ok(n) => {
                        self.block_start = start;
                        self.valid = n;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if unsupported(&e) => {
                        set_direct(file, false)?;
                        self.buffered = true;
                        self.valid = 0;
                        return file.read_at(out, pos);
                    }
                    Err(e) => return Err(e),
                }
            }
            if pos >= self.block_start + self.valid as u64 {
                return Ok(0);
            }
        }
        let from = (pos - self.block_start) as usize;
        let n = out.len().min(self.valid - from);
        out[..n].copy_from_slice(&self.block.bytes()[from..from + n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    use crate::fs::{Fs, RealFs};

    /// Bytes whose value depends on their offset, so a misplaced block shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    #[test]
    fn writes_of_any_size_land_in_order_through_blocks_tails_and_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let data = pattern(3 * DIRECT_IO_BLOCK_BYTES + 12_345);
        let mut f = RealFs.create_new(&path).unwrap();
        // Odd write sizes straddle blocks; syncs in between put tails through the cache that
        // later blocks overwrite directly.
        let sizes = [187usize, 65_536, 1, 300_000, 4096, 70_001];
        let (mut at, mut i) = (0, 0);
        while at < data.len() {
            let n = sizes[i % sizes.len()].min(data.len() - at);
            f.write_all(&data[at..at + n]).unwrap();
            at += n;
            i += 1;
            if i % 4 == 0 {
                f.sync().unwrap();
            }
        }
        f.sync().unwrap();
        drop(f);
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn full_blocks_go_direct_where_the_file_system_allows_it() {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let Ok(file) = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(&path)
        else {
            return; // no O_DIRECT here: the fallback is what the other tests cover
        };
        let mut w = DirectWriter::new();
        let data = pattern(2 * DIRECT_IO_BLOCK_BYTES + 10);
        let mut at = 0;
        while at < data.len() {
            at += w.write(&file, &data[at..]).unwrap();
        }
        // The full blocks were written with the flag on: no silent fallback.
        assert!(
            rustix::fs::fcntl_getfl(&file)
                .unwrap()
                .contains(rustix::fs::OFlags::DIRECT)
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            2 * DIRECT_IO_BLOCK_BYTES as u64
        );
        w.write_tail(&file).unwrap();
        assert!(
            rustix::fs::fcntl_getfl(&file)
                .unwrap()
                .contains(rustix::fs::OFlags::DIRECT)
        );
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn a_dropped_writer_leaves_its_tail_and_reads_and_seeks_see_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = pattern(DIRECT_IO_BLOCK_BYTES + 999);
        let mut f = RealFs.create_new(&path).unwrap();
        f.write_all(&data).unwrap();
        // Reading through the writer leaves direct mode: every byte is there.
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut back = Vec::new();
        f.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        f.write_all(b"tail").unwrap();
        drop(f);
        let mut want = data.clone();
        want.extend_from_slice(b"tail");
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    #[test]
    fn the_reader_serves_reads_and_seeks_from_aligned_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        let data = pattern(DIRECT_IO_MIN_FILE_BYTES as usize + 5_000);
        std::fs::write(&path, &data).unwrap();
        let mut r = RealFs.open_read(&path).unwrap();
        assert_eq!(r.len().unwrap(), data.len() as u64);
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert!(all == data, "a whole read differs");
        for at in [0u64, 1, 4095, 4096, 777_777, data.len() as u64 - 3] {
            r.seek(SeekFrom::Start(at)).unwrap();
            let mut buf = [0u8; 10];
            let n = r.read(&mut buf).unwrap();
            assert!(n > 0);
            assert_eq!(&buf[..n], &data[at as usize..at as usize + n], "at {at}");
        }
        r.seek(SeekFrom::End(0)).unwrap();
        assert_eq!(r.read(&mut [0u8; 4]).unwrap(), 0);
        assert_eq!(r.seek(SeekFrom::End(-2)).unwrap(), data.len() as u64 - 2);
    }
}
