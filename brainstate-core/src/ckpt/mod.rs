//! Checkpoints on disk: the native CBOR format, `save_pytree` / `load_pytree`, durable atomic
//! saves, [`AsyncManager`] and [`CheckpointManager`] (issue 3).
//!
//! ```no_run
//! use brainstate_core::ckpt::{load_pytree, save_pytree};
//! use brainstate_core::pytree;
//! let tree = pytree! { "epoch_i" => 9, "train_loss" => 0.71f32 };
//! save_pytree("snn.ckpt", &tree, true, None, false)?;
//! assert_eq!(load_pytree("snn.ckpt", None, true)?, tree);
//! # Ok::<(), brainstate_core::ckpt::CheckpointError>(())
//! ```

mod async_manager;
mod error;
mod manager;
pub mod native;
pub mod storage;

pub use async_manager::AsyncManager;
pub use error::{CheckpointError, FormatError, Item};
pub use manager::{BestMode, CheckpointManager, ManagerOptions};
pub use storage::{atomic_write, Commit, FaultAt, FaultStorage, OsStorage, Storage, StorageFile, TempFile};

use crate::pytree::Pytree;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The cores this process may use ([`std::thread::available_parallelism`], 1 if unknown),
/// asked once: on Linux each ask opens and reads cgroup files, about 1% of loading a 5 MB
/// checkpoint when it was asked on every load and save.
pub(crate) fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A checkpoint file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// The native CBOR format (`docs/FORMAT.md`).
    Native,
    /// BrainPy's (Flax-derived msgpack) format.
    BrainPy,
    /// safetensors.
    Safetensors,
    /// numpy `.npz`.
    Npz,
}

impl Format {
    /// Detects the format from a file's first bytes (at least 16 when the file has them): the
    /// native magic first, then safetensors, npz and BrainPy by their own checks.
    pub fn detect(prefix: &[u8]) -> Option<Format> {
        if prefix.starts_with(&native::MAGIC) {
            Some(Format::Native)
        } else if crate::interop::safetensors::looks_like(prefix) {
            Some(Format::Safetensors)
        } else if crate::interop::npz::looks_like(prefix) {
            Some(Format::Npz)
        } else if crate::bpformat::looks_like(prefix) {
            Some(Format::BrainPy)
        } else {
            None
        }
    }
}

/// Options of [`save_pytree_with`]. `SaveOptions::default()` matches BrainPy's defaults except
/// that `verbose` is off.
#[derive(Clone)]
pub struct SaveOptions {
    /// Replace an existing file (default true). When false, an existing file gives
    /// [`CheckpointError::AlreadyExists`], checked atomically by a no-replace rename.
    pub overwrite: bool,
    /// Print `Saving checkpoint into <file>` (default false here; BrainPy's default is true).
    pub verbose: bool,
    /// The format; `None` (default) means BrainPy's when the name ends in `.bp`, else native.
    pub format: Option<Format>,
    /// `fsync` the file and its folder (default true).
    pub fsync: bool,
    /// Payload alignment of the native format (default 64; 4096 for page-aligned payloads).
    pub align: usize,
    /// The file system to write through (default: the OS).
    pub storage: Arc<dyn Storage>,
}

impl Default for SaveOptions {
    fn default() -> SaveOptions {
        SaveOptions {
            overwrite: true,
            verbose: false,
            format: None,
            fsync: true,
            align: native::DEFAULT_ALIGN,
            storage: Arc::new(OsStorage),
        }
    }
}

impl std::fmt::Debug for SaveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaveOptions")
            .field("overwrite", &self.overwrite)
            .field("verbose", &self.verbose)
            .field("format", &self.format)
            .field("fsync", &self.fsync)
            .field("align", &self.align)
            .finish_non_exhaustive()
    }
}

impl SaveOptions {
    fn format_for(&self, path: &Path) -> Format {
        self.format.unwrap_or_else(|| {
            if path.extension().is_some_and(|e| e == "bp") {
                Format::BrainPy
            } else {
                Format::Native
            }
        })
    }
}

/// Saves `target` into `filename`, as BrainPy's `save_pytree(filename, target, overwrite,
/// async_manager, verbose)`: BrainPy's format when the name ends in `.bp`, the native format
/// otherwise. Atomic and durable (see [`atomic_write`]). With an `async_manager`, the tree is
/// snapshotted before this returns and written in the background. Returns the path.
pub fn save_pytree(
    filename: impl AsRef<Path>,
    target: &Pytree,
    overwrite: bool,
    async_manager: Option<&AsyncManager>,
    verbose: bool,
) -> Result<PathBuf, CheckpointError> {
    let opts = SaveOptions {
        overwrite,
        verbose,
        ..SaveOptions::default()
    };
    save_pytree_with(filename, target, &opts, async_manager)
}

/// [`save_pytree`] with every option.
pub fn save_pytree_with(
    filename: impl AsRef<Path>,
    target: &Pytree,
    opts: &SaveOptions,
    async_manager: Option<&AsyncManager>,
) -> Result<PathBuf, CheckpointError> {
    let path = filename.as_ref().to_path_buf();
    if opts.verbose {
        println!("Saving checkpoint into {}", path.display());
    }
    match async_manager {
        Some(am) => {
            am.save(path.clone(), target.clone(), opts.clone())?;
            Ok(path)
        }
        None => {
            write_file(&path, target, None, opts)?;
            Ok(path)
        }
    }
}

/// Writes `tree` (with native `meta`) to `path` atomically in the format `opts` asks for.
pub(crate) fn write_file(
    path: &Path,
    tree: &Pytree,
    meta: Option<&Pytree>,
    opts: &SaveOptions,
) -> Result<(), CheckpointError> {
    let commit = Commit {
        overwrite: opts.overwrite,
        fsync: opts.fsync,
    };
    let storage = &*opts.storage;
    match opts.format_for(path) {
        Format::Native => write_native_file(path, tree, meta, opts, native::Overlap::default()),
        Format::BrainPy => atomic_write(storage, path, commit, &mut |w| {
            crate::bpformat::write_to(tree, w).map_err(CheckpointError::from)
        }),
        Format::Safetensors => atomic_write(storage, path, commit, &mut |w| {
            crate::interop::safetensors::write_to(tree, w).map_err(CheckpointError::from)
        }),
        Format::Npz => atomic_write(storage, path, commit, &mut |w| {
            crate::interop::npz::write_to(tree, w).map_err(CheckpointError::from)
        }),
    }
}

/// Writes `tree` to `path` in the native format. Large trees get their large tensors' CRC32C
/// computed on a second thread while the payloads are written, the header last
/// ([`native::Plan::write_overlapped`]); in the rare case the real CRCs change where the payloads
/// start, the file is written again in one pass with every CRC known.
#[doc(hidden)]
pub fn write_native_file(
    path: &Path,
    tree: &Pytree,
    meta: Option<&Pytree>,
    opts: &SaveOptions,
    overlap: native::Overlap,
) -> Result<(), CheckpointError> {
    let commit = Commit {
        overwrite: opts.overwrite,
        fsync: opts.fsync,
    };
    let storage = &*opts.storage;
    let wio = |e: std::io::Error| CheckpointError::io("write", path, e);
    let plan = native::Plan::deferred(tree, meta, opts.align, overlap).map_err(|source| {
        CheckpointError::Encode {
            path: path.into(),
            source,
        }
    })?;
    if !plan.has_deferred() {
        return atomic_write(storage, path, commit, &mut |w| plan.write_to(w).map_err(wio));
    }
    let mut relayout = None;
    let first = atomic_write(
        storage,
        path,
        commit,
        &mut |w| match plan.write_overlapped(w).map_err(wio)? {
            Ok(()) => Ok(()),
            Err(crcs) => {
                relayout = Some(crcs);
                Err(wio(std::io::Error::other("the header changed size")))
            }
        },
    );
    match relayout {
        None => first,
        Some(crcs) => {
            let plan = plan.with_crcs(&crcs);
            atomic_write(storage, path, commit, &mut |w| plan.write_to(w).map_err(wio))
        }
    }
}

/// Options of [`load_pytree_with`].
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Use more threads where it pays (default true): large payloads are read by several
    /// threads, and files of at least 8 MiB in many tensors are checked and copied by two.
    /// (Smaller files of many tensors are decoded by one thread: on a shared machine a second
    /// one cost more than the checksums it took over.)
    pub parallel: bool,
    /// Threads for parallel reads (default: the available cores, at most 8).
    pub threads: usize,
    /// Payloads of at least this many bytes are read in parallel (default 16 MiB).
    pub parallel_min_bytes: u64,
    /// Files up to this size are read whole with one read and decoded from memory (faster for
    /// many small tensors; the extra memory is at most this much). Larger files are streamed
    /// straight into the tensors' buffers. Default 16 MiB.
    pub whole_file_max: u64,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            parallel: true,
            threads: cores().min(8),
            parallel_min_bytes: 16 << 20,
            whole_file_max: 16 << 20,
        }
    }
}

/// Loads a checkpoint, as BrainPy's `load_pytree(filename, target, parallel)`.
///
/// `filename` is a file in any supported format (detected by content, never by name) or a
/// directory, in which case the latest committed checkpoint in it is loaded. A missing path is
/// [`CheckpointError::NotFound`]. With a `target`, the loaded tree must contain every map key of
/// the target, lists of the same length, and tensors of the same dtype and shape; the result is
/// restricted to the target's keys. `parallel` reads large payloads with several threads.
pub fn load_pytree(
    filename: impl AsRef<Path>,
    target: Option<&Pytree>,
    parallel: bool,
) -> Result<Pytree, CheckpointError> {
    let opts = LoadOptions {
        parallel,
        ..LoadOptions::default()
    };
    let path = filename.as_ref();
    let tree = load_pytree_with(path, &opts)?;
    match target {
        None => Ok(tree),
        Some(t) => restrict_to_target(path, tree, t),
    }
}

/// Loads a checkpoint file or the latest committed one in a directory (see [`load_pytree`]).
pub fn load_pytree_with(filename: impl AsRef<Path>, opts: &LoadOptions) -> Result<Pytree, CheckpointError> {
    let path = filename.as_ref();
    let md = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CheckpointError::NotFound { path: path.into() }
        } else {
            CheckpointError::io("stat", path, e)
        }
    })?;
    if md.is_dir() {
        let latest =
            latest_in_dir(path)?.ok_or_else(|| CheckpointError::EmptyDirectory { path: path.into() })?;
        return load_file(&latest, opts);
    }
    load_file(path, opts)
}

fn load_file(path: &Path, opts: &LoadOptions) -> Result<Pytree, CheckpointError> {
    let mut f = File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CheckpointError::NotFound { path: path.into() }
        } else {
            CheckpointError::io("open", path, e)
        }
    })?;
    let len = f
        .metadata()
        .map_err(|e| CheckpointError::io("stat", path, e))?
        .len();
    let mut prefix = vec![0u8; len.min(64) as usize];
    f.read_exact(&mut prefix)
        .map_err(|e| CheckpointError::io("read", path, e))?;
    match Format::detect(&prefix) {
        Some(Format::Native) if len <= opts.whole_file_max => {
            let mut bytes = Vec::with_capacity(len as usize);
            f.seek(std::io::SeekFrom::Start(0))
                .and_then(|_| f.read_to_end(&mut bytes))
                .map_err(|e| CheckpointError::io("read", path, e))?;
            let threads = if opts.parallel { opts.threads.min(2) } else { 1 };
            native::decode_threads(&bytes, threads).map_err(|source| CheckpointError::Format {
                path: path.into(),
                source,
            })
        }
        Some(Format::Native) => {
            let fref = f.try_clone().map_err(|e| CheckpointError::io("open", path, e))?;
            let par = native::Parallel {
                file: &fref,
                threads: opts.threads,
                min_bytes: opts.parallel_min_bytes,
            };
            native::read(&mut f, len, opts.parallel.then_some(&par)).map_err(|source| {
                CheckpointError::Format {
                    path: path.into(),
                    source,
                }
            })
        }
        Some(other) => {
            let bytes = std::fs::read(path).map_err(|e| CheckpointError::io("read", path, e))?;
            Ok(match other {
                Format::BrainPy => crate::bpformat::decode(&bytes)?,
                Format::Safetensors => crate::interop::safetensors::decode(&bytes)?,
                Format::Npz => crate::interop::npz::decode(&bytes)?,
                Format::Native => unreachable!("handled above"),
            })
        }
        None => Err(CheckpointError::UnknownFormat {
            path: path.into(),
            prefix: prefix
                .iter()
                .take(16)
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
        }),
    }
}

/// Checks the structure of a native checkpoint file (header, layout, trailer; not the payload
/// CRCs) and returns its meta-data. Used to list committed checkpoints.
pub fn inspect_native(path: &Path) -> Result<Option<Pytree>, CheckpointError> {
    let fe = |source| CheckpointError::Format {
        path: path.into(),
        source,
    };
    let mut f = File::open(path).map_err(|e| CheckpointError::io("open", path, e))?;
    let len = f
        .metadata()
        .map_err(|e| CheckpointError::io("stat", path, e))?
        .len();
    let h = native::check_structure(&mut f, len).map_err(fe)?;
    h.meta().map_err(fe)
}

/// The latest committed checkpoint in `dir`: among files whose structure checks out (native) or
/// whose content another format recognises, the highest manager step, else the newest file.
/// Our temp files, hidden files and the manager's lock are skipped.
fn latest_in_dir(dir: &Path) -> Result<Option<PathBuf>, CheckpointError> {
    let rd = std::fs::read_dir(dir).map_err(|e| CheckpointError::io("read directory", dir, e))?;
    let mut best: Option<((bool, u64, std::time::SystemTime), PathBuf)> = None;
    for e in rd.flatten() {
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let p = e.path();
        let Ok(md) = std::fs::metadata(&p) else { continue };
        if !md.is_file() {
            continue;
        }
        let mtime = md.modified().unwrap_or(std::time::UNIX_EPOCH);
        let key = match inspect_native(&p) {
            Ok(meta) => {
                let step = meta.as_ref().and_then(|m| m.get("step").ok()?.i64().ok());
                (step.is_some(), step.unwrap_or(0) as u64, mtime)
            }
            Err(_) => {
                let mut prefix = [0u8; 64];
                let n = File::open(&p).and_then(|mut f| f.read(&mut prefix)).unwrap_or(0);
                match Format::detect(&prefix[..n]) {
                    Some(f) if f != Format::Native => (false, 0, mtime),
                    _ => continue,
                }
            }
        };
        if best.as_ref().is_none_or(|(k, _)| key > *k) {
            best = Some((key, p));
        }
    }
    Ok(best.map(|(_, p)| p))
}

/// Checks `tree` against `target` (keys, list lengths, tensor dtypes and shapes) and keeps only
/// what the target has.
fn restrict_to_target(path: &Path, tree: Pytree, target: &Pytree) -> Result<Pytree, CheckpointError> {
    fn go(t: Pytree, target: &Pytree, at: &str, problems: &mut Vec<String>) -> Pytree {
        let sub = |k: &str| {
            if at.is_empty() {
                k.to_string()
            } else {
                format!("{at}/{k}")
            }
        };
        let shown = if at.is_empty() { "/" } else { at };
        match (t, target) {
            (Pytree::Map(mut m), Pytree::Map(tm)) => {
                let mut out = crate::PytreeMap::default();
                for (k, tv) in tm {
                    match m.shift_remove(k) {
                        Some(v) => {
                            out.insert(k.clone(), go(v, tv, &sub(k), problems));
                        }
                        None => problems.push(format!("{}: missing in the checkpoint", sub(k))),
                    }
                }
                Pytree::Map(out)
            }
            (Pytree::List(l), Pytree::List(tl)) => {
                if l.len() != tl.len() {
                    problems.push(format!(
                        "{shown}: list of {} items, the target has {}",
                        l.len(),
                        tl.len()
                    ));
                    return Pytree::List(l);
                }
                Pytree::List(
                    l.into_iter()
                        .zip(tl)
                        .enumerate()
                        .map(|(i, (v, tv))| go(v, tv, &sub(&i.to_string()), problems))
                        .collect(),
                )
            }
            (v @ (Pytree::Tensor(_) | Pytree::Scalar(_)), Pytree::Tensor(tt) | Pytree::Scalar(tt)) => {
                let (Pytree::Tensor(x) | Pytree::Scalar(x)) = &v else {
                    unreachable!()
                };
                if x.dtype() != tt.dtype() || x.shape() != tt.shape() {
                    problems.push(format!(
                        "{shown}: checkpoint has {}, the target {}",
                        x.summary(),
                        tt.summary()
                    ));
                }
                v
            }
            (v @ (Pytree::Map(_) | Pytree::List(_)), t) | (v, t @ (Pytree::Map(_) | Pytree::List(_))) => {
                problems.push(format!(
                    "{shown}: checkpoint has a {}, the target a {}",
                    v.kind(),
                    t.kind()
                ));
                v
            }
            (v, _) => v,
        }
    }
    let mut problems = Vec::new();
    let out = go(tree, target, "", &mut problems);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(CheckpointError::Mismatch {
            path: path.into(),
            problems,
        })
    }
}

/// Writes `tree` in the native format to any writer (no atomicity: see [`save_pytree`]).
pub fn write_native(tree: &Pytree, w: &mut dyn Write) -> Result<(), CheckpointError> {
    let plan =
        native::Plan::new(tree, None, native::DEFAULT_ALIGN).map_err(|source| CheckpointError::Encode {
            path: PathBuf::new(),
            source,
        })?;
    plan.write_to(w).map_err(|e| CheckpointError::io("write", "", e))
}
