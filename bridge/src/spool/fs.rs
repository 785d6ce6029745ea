//! The file system under the spool, behind a seam so that tests can fault it: an in-memory
//! file system ([`MemFs`]) that can fail writes, lose what was not synced (a power cut) and
//! tear or corrupt a file's tail.

use std::io::{self, Write};
use std::path::Path;

/// What the spool needs from a file system.
pub trait Fs {
    type Appender: Write;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// File names (not paths) in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The file's bytes from `offset` to its end.
    fn read_from(&self, path: &Path, offset: u64) -> io::Result<Vec<u8>>;
    /// The file's length in bytes.
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// Opens `path` for appending, creating it.
    fn append(&self, path: &Path) -> io::Result<Self::Appender>;
    /// Pushes buffered writes to the OS and makes them durable.
    fn sync(&self, file: &mut Self::Appender) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes a file's content durable (files a previous run left, possibly unsynced).
    fn sync_path(&self, path: &Path) -> io::Result<()>;
    /// Cuts a file back to `len` bytes (after a failed write left part of a batch in it).
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Replaces `path` with `data` so that a crash leaves either the old or the new content.
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskFs;

impl Fs for DiskFs {
    type Appender = io::BufWriter<std::fs::File>;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir)? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn read_from(&self, path: &Path, offset: u64) -> io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn append(&self, path: &Path) -> io::Result<Self::Appender> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        // A new file is durable only once its directory entry is.
        sync_dir(path)?;
        Ok(io::BufWriter::with_capacity(64 * 1024, f))
    }

    fn sync(&self, file: &mut Self::Appender) -> io::Result<()> {
        file.flush()?;
        file.get_ref().sync_data()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn sync_path(&self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(len)
    }

    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        sync_dir(path)
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(any(test, feature = "fuzzing"))]
pub use mem::MemFs;

#[cfg(any(test, feature = "fuzzing"))]
mod mem {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::rc::Rc;

    #[derive(Debug, Default, Clone)]
    struct File {
        data: Vec<u8>,
        /// Bytes known to be on stable storage.
        synced: usize,
    }

    #[derive(Debug, Default)]
    struct State {
        files: BTreeMap<PathBuf, File>,
        fail_writes: bool,
    }

    /// An in-memory file system shared by clones; see the module documentation.
    #[derive(Debug, Default, Clone)]
    pub struct MemFs(Rc<RefCell<State>>);

    pub struct MemAppender {
        fs: MemFs,
        path: PathBuf,
        pending: Vec<u8>,
    }

    impl Write for MemAppender {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.pending.extend_from_slice(buf);
            Ok(buf.len())
        }

        /// Like a `BufWriter`'s flush: the bytes reach the OS, not yet the disk.
        fn flush(&mut self) -> io::Result<()> {
            let mut st = self.fs.0.borrow_mut();
            if st.fail_writes && !self.pending.is_empty() {
                // Part of the batch reaches the file, as with a real short write.
                let half = self.pending.len() / 2;
                let f = st.files.entry(self.path.clone()).or_default();
                f.data.extend_from_slice(&self.pending[..half]);
                self.pending.clear();
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "injected: no space left",
                ));
            }
            let f = st.files.entry(self.path.clone()).or_default();
            f.data.append(&mut self.pending);
            Ok(())
        }
    }

    fn not_found(p: &Path) -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, format!("{}", p.display()))
    }

    impl MemFs {
        /// Makes every later write fail (disk full) until called with `false`.
        pub fn fail_writes(&self, fail: bool) {
            self.0.borrow_mut().fail_writes = fail;
        }

        /// A power cut: every file loses what was not synced, except a torn prefix of
        /// `keep_unsynced` bytes of it (what the disk happened to write).
        pub fn power_cut(&self, keep_unsynced: usize) {
            for f in self.0.borrow_mut().files.values_mut() {
                let keep = (f.synced + keep_unsynced).min(f.data.len());
                f.data.truncate(keep);
                f.synced = keep;
            }
        }

        /// Flips a byte of a file, counted from its end.
        pub fn corrupt_from_end(&self, name_suffix: &str, back: usize) -> bool {
            let mut st = self.0.borrow_mut();
            let Some(f) = st
                .files
                .iter_mut()
                .rev()
                .find(|(p, f)| p.to_string_lossy().ends_with(name_suffix) && f.data.len() > back)
                .map(|(_, f)| f)
            else {
                return false;
            };
            let i = f.data.len() - 1 - back;
            f.data[i] ^= 0x5a;
            true
        }

        pub fn debug_lens(&self) {
            for (p, f) in &self.0.borrow().files {
                eprintln!(
                    "{}: {} bytes, {} synced",
                    p.display(),
                    f.data.len(),
                    f.synced
                );
            }
        }

        pub fn total_bytes(&self) -> usize {
            self.0.borrow().files.values().map(|f| f.data.len()).sum()
        }
    }

    impl Fs for MemFs {
        type Appender = MemAppender;

        fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
            Ok(())
        }

        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            Ok(self
                .0
                .borrow()
                .files
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect())
        }

        fn len(&self, path: &Path) -> io::Result<u64> {
            let st = self.0.borrow();
            let f = st.files.get(path).ok_or_else(|| not_found(path))?;
            Ok(f.data.len() as u64)
        }

        fn read_from(&self, path: &Path, offset: u64) -> io::Result<Vec<u8>> {
            let st = self.0.borrow();
            let f = st.files.get(path).ok_or_else(|| not_found(path))?;
            Ok(f.data.get(offset as usize..).unwrap_or_default().to_vec())
        }

        fn append(&self, path: &Path) -> io::Result<MemAppender> {
            let mut st = self.0.borrow_mut();
            if st.fail_writes {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "injected: no space left",
                ));
            }
            st.files.entry(path.to_path_buf()).or_default();
            Ok(MemAppender {
                fs: self.clone(),
                path: path.to_path_buf(),
                pending: Vec::new(),
            })
        }

        fn sync(&self, file: &mut MemAppender) -> io::Result<()> {
            file.flush()?;
            let mut st = self.0.borrow_mut();
            let f = st
                .files
                .get_mut(&file.path)
                .ok_or_else(|| not_found(&file.path))?;
            f.synced = f.data.len();
            Ok(())
        }

        fn remove(&self, path: &Path) -> io::Result<()> {
            self.0.borrow_mut().files.remove(path);
            Ok(())
        }

        fn sync_path(&self, path: &Path) -> io::Result<()> {
            let mut st = self.0.borrow_mut();
            let f = st.files.get_mut(path).ok_or_else(|| not_found(path))?;
            f.synced = f.data.len();
            Ok(())
        }

        fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
            let mut st = self.0.borrow_mut();
            let f = st.files.get_mut(path).ok_or_else(|| not_found(path))?;
            f.data.truncate(len as usize);
            f.synced = f.synced.min(f.data.len());
            Ok(())
        }

        fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
            let mut st = self.0.borrow_mut();
            if st.fail_writes {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "injected: no space left",
                ));
            }
            st.files.insert(
                path.to_path_buf(),
                File {
                    data: data.to_vec(),
                    synced: data.len(),
                },
            );
            Ok(())
        }
    }
}
