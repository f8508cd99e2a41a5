//! Durable, atomic file commits through a storage seam.
//!
//! [`atomic_write`] creates a uniquely named temp file in the target's folder (`O_CREAT|O_EXCL`,
//! mode `0666 & !umask`, or the replaced file's mode), writes it, `fsync`s it, renames it over the
//! target (or, when overwriting is not allowed, commits with `renameat2(RENAME_NOREPLACE)` or
//! `link` + `unlink`), and `fsync`s the folder. Any failure before the commit removes the temp and
//! leaves the target as it was. All file-system calls go through [`Storage`], so tests can inject
//! `ENOSPC`/`EIO` at any step ([`FaultStorage`]).

use super::error::CheckpointError;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A file opened for writing through a [`Storage`].
pub trait StorageFile: Write + Send {
    /// Flushes data and metadata to stable storage (`fsync`).
    fn sync_all(&mut self) -> io::Result<()>;
    /// Reserves disk space for up to `len` bytes before the file is written, without changing
    /// its length (`fallocate` with `FALLOC_FL_KEEP_SIZE`). A hint: the default does nothing,
    /// and callers ignore errors (writes report them).
    fn allocate(&mut self, len: u64) -> io::Result<()> {
        let _ = len;
        Ok(())
    }
    /// True when [`StorageFile::write_all_at`] works (default false: writes are sequential
    /// only, and savers that want positional writes fall back to sequential ones).
    fn supports_write_at(&self) -> bool {
        false
    }
    /// Writes all of `buf` at byte `offset` (`pwrite`), leaving the sequential position alone.
    /// The default refuses (`Unsupported`).
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let _ = (buf, offset);
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

/// The file-system calls a save makes. [`OsStorage`] is the real one.
pub trait Storage: Send + Sync {
    /// Creates `path`, failing if it exists (`O_CREAT|O_EXCL`). With `mode`, the file gets exactly
    /// that mode; otherwise `0666` less the umask.
    fn create_new(&self, path: &Path, mode: Option<u32>) -> io::Result<Box<dyn StorageFile>>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Renames `from` to `to`, failing with `AlreadyExists` if `to` exists (atomically).
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Flushes a directory's entries to stable storage.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsStorage;

impl StorageFile for File {
    fn sync_all(&mut self) -> io::Result<()> {
        File::sync_all(self)
    }
    fn allocate(&mut self, len: u64) -> io::Result<()> {
        allocate(self, len)
    }
    fn supports_write_at(&self) -> bool {
        true
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }
}

/// `fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, len)`: the file gets up to `len` bytes of blocks in
/// one call (its length still grows only with writes), which makes large buffered writes on
/// ext4 cheaper than reserving blocks page by page.
fn allocate(f: &File, len: u64) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: fallocate on a file descriptor we own, no pointers involved.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The temp file an [`atomic_write`] callback fills: buffered sequential writes through
/// [`Write`], plus positional writes ([`TempFile::write_all_at`]).
pub struct TempFile {
    w: BufWriter<Box<dyn StorageFile>>,
}

impl TempFile {
    /// Reserves space for `len` bytes (see [`StorageFile::allocate`]); a hint.
    pub fn allocate(&mut self, len: u64) -> io::Result<()> {
        self.w.get_mut().allocate(len)
    }

    /// True when [`TempFile::write_all_at`] works on this storage.
    pub fn supports_write_at(&self) -> bool {
        self.w.get_ref().supports_write_at()
    }

    /// Writes all of `buf` at byte `offset` (buffered bytes are written first); the sequential
    /// position does not move.
    pub fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.w.flush()?;
        self.w.get_mut().write_all_at(buf, offset)
    }
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.w.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

impl Storage for OsStorage {
    fn create_new(&self, path: &Path, mode: Option<u32>) -> io::Result<Box<dyn StorageFile>> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(path)?;
        if let Some(m) = mode {
            f.set_permissions(fs::Permissions::from_mode(m))?;
        }
        Ok(Box::new(f))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use std::ffi::CString;
            use std::os::unix::ffi::OsStrExt;
            let a = CString::new(from.as_os_str().as_bytes()).map_err(io::Error::other)?;
            let b = CString::new(to.as_os_str().as_bytes()).map_err(io::Error::other)?;
            // SAFETY: both arguments are valid NUL-terminated strings that outlive the call.
            let r = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    a.as_ptr(),
                    libc::AT_FDCWD,
                    b.as_ptr(),
                    libc::RENAME_NOREPLACE,
                )
            };
            if r == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // Not supported by this file system or kernel: fall back to link + unlink.
                Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {}
                _ => return Err(e),
            }
        }
        fs::hard_link(from, to)?;
        fs::remove_file(from)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// The marker in our temp files' names: `.<file name>.bst-tmp-<pid>-<16 hex>`.
pub const TEMP_MARKER: &str = ".bst-tmp-";

fn temp_name(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = format!(".{name}{TEMP_MARKER}{}-{:016x}", std::process::id(), h.finish());
    target.with_file_name(tmp)
}

/// The pid in one of our temp names, if `name` is one.
pub fn temp_pid(name: &str) -> Option<u32> {
    if !name.starts_with('.') {
        return None;
    }
    let rest = &name[name.rfind(TEMP_MARKER)? + TEMP_MARKER.len()..];
    let (pid, hex) = rest.split_once('-')?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok()
}

/// True when a process with this pid exists.
pub fn process_alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(p, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes our temp files in `dir` left by processes that no longer run. Returns how many.
pub fn clean_stale_temps(storage: &dyn Storage, dir: &Path) -> usize {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    let me = std::process::id();
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = temp_pid(&name.to_string_lossy()) else {
            continue;
        };
        if pid != me && !process_alive(pid) && storage.remove_file(&e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

/// How [`atomic_write`] commits.
#[derive(Clone, Copy, Debug)]
pub struct Commit {
    /// Replace an existing file (otherwise `AlreadyExists`, checked atomically at the rename).
    pub overwrite: bool,
    /// `fsync` the file and its folder (on by default in every public API).
    pub fsync: bool,
}

/// Writes a file atomically and durably: temp, write, fsync, rename, fsync the folder.
///
/// `write` receives the temp file, buffered ([`TempFile`]). On any failure before the commit the
/// temp is removed and the target is untouched. If only the final folder `fsync` fails, the new
/// file is in place but not known to be durable; the error says so (`op = "fsync directory"`).
pub fn atomic_write(
    storage: &dyn Storage,
    path: &Path,
    commit: Commit,
    write: &mut dyn FnMut(&mut TempFile) -> Result<(), CheckpointError>,
) -> Result<(), CheckpointError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if path.file_name().is_none() {
        return Err(CheckpointError::io(
            "create",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
        ));
    }
    fs::create_dir_all(&dir).map_err(|e| CheckpointError::io("create directory", &dir, e))?;
    clean_stale_temps(storage, &dir);
    let existing = fs::metadata(path).ok();
    if !commit.overwrite && existing.is_some() {
        return Err(CheckpointError::AlreadyExists { path: path.into() });
    }
    let mode = existing
        .filter(|m| m.is_file())
        .map(|m| m.permissions().mode() & 0o7777);
    let (tmp, file) = {
        let mut tries = 0;
        loop {
            let tmp = temp_name(path);
            match storage.create_new(&tmp, mode) {
                Ok(f) => break (tmp, f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 16 => tries += 1,
                Err(e) => return Err(CheckpointError::io("create temp file", tmp, e)),
            }
        }
    };
    let result = (|| {
        let mut w = TempFile {
            w: BufWriter::with_capacity(1 << 16, file),
        };
        write(&mut w)?;
        w.flush().map_err(|e| CheckpointError::io("write", &tmp, e))?;
        let mut file =
            w.w.into_inner()
                .map_err(|e| CheckpointError::io("write", &tmp, e.into_error()))?;
        if commit.fsync {
            file.sync_all()
                .map_err(|e| CheckpointError::io("fsync", &tmp, e))?;
        }
        drop(file);
        if commit.overwrite {
            storage
                .rename(&tmp, path)
                .map_err(|e| CheckpointError::io("rename", path, e))
        } else {
            storage.rename_noreplace(&tmp, path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    CheckpointError::AlreadyExists { path: path.into() }
                } else {
                    CheckpointError::io("rename", path, e)
                }
            })
        }
    })();
    if let Err(e) = result {
        let _ = storage.remove_file(&tmp);
        return Err(e);
    }
    if commit.fsync {
        storage
            .sync_dir(&dir)
            .map_err(|e| CheckpointError::io("fsync directory", &dir, e))?;
    }
    Ok(())
}

/// Which call a [`FaultStorage`] fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAt {
    /// The `n`-th `write` or positional write on a created file (0-based; counted across files).
    Write(usize),
    /// `fsync` of a file.
    Sync,
    /// Either rename.
    Rename,
    /// `fsync` of the folder.
    SyncDir,
    /// Creating the temp file.
    Create,
}

/// A [`Storage`] that delegates to [`OsStorage`] but fails one kind of call with an OS error
/// (`ENOSPC`, `EIO`, ...). For fault-injection tests of everything that saves.
pub struct FaultStorage {
    at: FaultAt,
    errno: i32,
    writes: Arc<AtomicUsize>,
    /// Every call made, in order (`create <path>`, `write`, `sync`, `rename`, ...).
    pub log: Arc<Mutex<Vec<String>>>,
}

impl FaultStorage {
    /// Fails the call `at` with OS error `errno` (e.g. `libc::ENOSPC`).
    pub fn new(at: FaultAt, errno: i32) -> FaultStorage {
        FaultStorage {
            at,
            errno,
            writes: Arc::new(AtomicUsize::new(0)),
            log: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn note(&self, s: String) {
        if let Ok(mut l) = self.log.lock() {
            l.push(s);
        }
    }

    fn fail(&self, at: FaultAt) -> io::Result<()> {
        if self.at == at {
            Err(io::Error::from_raw_os_error(self.errno))
        } else {
            Ok(())
        }
    }
}

struct FaultFile {
    inner: File,
    at: FaultAt,
    errno: i32,
    writes: Arc<AtomicUsize>,
}

impl Write for FaultFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        if self.at == FaultAt::Write(n) {
            // Write half, as a full disk does, then fail.
            let _ = self.inner.write(&buf[..buf.len() / 2]);
            return Err(io::Error::from_raw_os_error(self.errno));
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl StorageFile for FaultFile {
    fn allocate(&mut self, len: u64) -> io::Result<()> {
        allocate(&self.inner, len)
    }
    fn sync_all(&mut self) -> io::Result<()> {
        if self.at == FaultAt::Sync {
            return Err(io::Error::from_raw_os_error(self.errno));
        }
        self.inner.sync_all()
    }
    fn supports_write_at(&self) -> bool {
        true
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        if self.at == FaultAt::Write(n) {
            let _ = self.inner.write_all_at(&buf[..buf.len() / 2], offset);
            return Err(io::Error::from_raw_os_error(self.errno));
        }
        self.inner.write_all_at(buf, offset)
    }
}

impl Storage for FaultStorage {
    fn create_new(&self, path: &Path, mode: Option<u32>) -> io::Result<Box<dyn StorageFile>> {
        self.note(format!("create {}", path.display()));
        self.fail(FaultAt::Create)?;
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(path)?;
        if let Some(m) = mode {
            f.set_permissions(fs::Permissions::from_mode(m))?;
        }
        Ok(Box::new(FaultFile {
            inner: f,
            at: self.at,
            errno: self.errno,
            writes: self.writes.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.note("rename".into());
        self.fail(FaultAt::Rename)?;
        OsStorage.rename(from, to)
    }
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.note("rename_noreplace".into());
        self.fail(FaultAt::Rename)?;
        OsStorage.rename_noreplace(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.note(format!("remove {}", path.display()));
        OsStorage.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.note("sync_dir".into());
        self.fail(FaultAt::SyncDir)?;
        OsStorage.sync_dir(dir)
    }
}
