//! Simulated power loss at every prefix of a save's operation log (test matrix F2).
//!
//! A recording [`Storage`] performs every call on the real file system and logs it. A small
//! model of a POSIX file system then replays each prefix of the log and builds the states a
//! crash could leave on disk: only what was `fsync`ed (file data after `fsync`, directory
//! entries after the folder's `fsync`), everything, directory entries that reached the disk
//! ahead of the data, and unsynced writes half on disk, in order or reordered. Each state is
//! loaded. Both write paths are covered: sequential, and the positional one of large saves
//! (payloads first, the header last at offset 0). The old checkpoint, or the new one once the
//! save returned, must load exactly; no state may hold a checkpoint that loads wrong or that
//! fails to load where a whole one was.

mod common_ckpt;
use brainstate_core::ckpt::{
    load_pytree, save_pytree_with, CheckpointManager, ManagerOptions, OsStorage, SaveOptions, Storage,
    StorageFile,
};
use brainstate_core::{pytree, DType, Pytree};
use common_ckpt::{tempdir, tensor};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
enum Op {
    Create {
        name: String,
        ino: usize,
    },
    Write {
        ino: usize,
        at: Option<u64>,
        bytes: Vec<u8>,
    },
    Sync {
        ino: usize,
    },
    Rename {
        from: String,
        to: String,
    },
    Remove {
        name: String,
    },
    SyncDir,
}

#[derive(Default)]
struct Log {
    ops: Vec<Op>,
    next_ino: usize,
}

/// Performs every call on the OS and records it; `positional` offers positional writes (the
/// path large native saves take: payloads first, the header last at offset 0).
struct Recorder {
    log: Arc<Mutex<Log>>,
    positional: bool,
}

struct RecFile {
    inner: Box<dyn StorageFile>,
    ino: usize,
    log: Arc<Mutex<Log>>,
    positional: bool,
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

impl Write for RecFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let ino = self.ino;
        self.log.lock().unwrap().ops.push(Op::Write {
            ino,
            at: None,
            bytes: buf[..n].to_vec(),
        });
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl StorageFile for RecFile {
    fn sync_all(&mut self) -> io::Result<()> {
        self.inner.sync_all()?;
        let ino = self.ino;
        self.log.lock().unwrap().ops.push(Op::Sync { ino });
        Ok(())
    }
    fn supports_write_at(&self) -> bool {
        self.positional
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)?;
        let ino = self.ino;
        self.log.lock().unwrap().ops.push(Op::Write {
            ino,
            at: Some(offset),
            bytes: buf.to_vec(),
        });
        Ok(())
    }
}

impl Recorder {
    /// Logs the operation `op` describes once the real call `r` has succeeded.
    fn logged(&self, r: io::Result<()>, op: impl FnOnce() -> Op) -> io::Result<()> {
        r?;
        self.log.lock().unwrap().ops.push(op());
        Ok(())
    }
}

impl Storage for Recorder {
    fn create_new(&self, path: &Path, mode: Option<u32>) -> io::Result<Box<dyn StorageFile>> {
        let inner = OsStorage.create_new(path, mode)?;
        let mut log = self.log.lock().unwrap();
        let ino = log.next_ino;
        log.next_ino += 1;
        log.ops.push(Op::Create {
            name: name_of(path),
            ino,
        });
        Ok(Box::new(RecFile {
            inner,
            ino,
            log: self.log.clone(),
            positional: self.positional,
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.logged(OsStorage.rename(from, to), || Op::Rename {
            from: name_of(from),
            to: name_of(to),
        })
    }
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.logged(OsStorage.rename_noreplace(from, to), || Op::Rename {
            from: name_of(from),
            to: name_of(to),
        })
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.logged(OsStorage.remove_file(path), || Op::Remove { name: name_of(path) })
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.logged(OsStorage.sync_dir(dir), || Op::SyncDir)
    }
}

/// A folder and its files: for each file, the bytes on disk and the writes since its last
/// `fsync` (in order, at resolved offsets); the directory as on disk and as cached.
#[derive(Clone, Default)]
struct Model {
    durable: Vec<Vec<u8>>,
    pending: Vec<Vec<(u64, Vec<u8>)>>,
    cached_len: Vec<u64>,
    durable_dir: BTreeMap<String, usize>,
    cached_dir: BTreeMap<String, usize>,
}

/// A folder's files by name.
type Files = BTreeMap<String, Vec<u8>>;

/// Which of a file's possible contents a crash state holds.
#[derive(Clone, Copy)]
enum Data {
    /// What the last `fsync` made durable.
    Durable,
    /// Every write.
    Cached,
    /// The first half of the unsynced writes reached the disk.
    FirstHalf,
    /// The second half did (the disk reordered them).
    SecondHalf,
}

impl Model {
    /// The folder's files at the start of recording, all on disk.
    fn from_dir(dir: &Path, log: &mut Log) -> Model {
        let mut m = Model::default();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if !e.file_type().unwrap().is_file() {
                continue;
            }
            let data = std::fs::read(e.path()).unwrap();
            let ino = log.next_ino;
            log.next_ino += 1;
            m.grow(ino);
            m.cached_len[ino] = data.len() as u64;
            m.durable[ino] = data;
            m.durable_dir.insert(name_of(&e.path()), ino);
        }
        m.cached_dir = m.durable_dir.clone();
        m
    }

    fn grow(&mut self, ino: usize) {
        if self.durable.len() <= ino {
            self.durable.resize(ino + 1, Vec::new());
            self.pending.resize(ino + 1, Vec::new());
            self.cached_len.resize(ino + 1, 0);
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Create { name, ino } => {
                self.grow(*ino);
                self.cached_dir.insert(name.clone(), *ino);
            }
            Op::Write { ino, at, bytes } => {
                let off = at.unwrap_or(self.cached_len[*ino]);
                self.cached_len[*ino] = self.cached_len[*ino].max(off + bytes.len() as u64);
                self.pending[*ino].push((off, bytes.clone()));
            }
            Op::Sync { ino } => {
                self.durable[*ino] = self.bytes(*ino, Data::Cached);
                self.pending[*ino].clear();
            }
            Op::Rename { from, to } => {
                let ino = self.cached_dir.remove(from).expect("renamed file exists");
                self.cached_dir.insert(to.clone(), ino);
            }
            Op::Remove { name } => {
                self.cached_dir.remove(name);
            }
            Op::SyncDir => self.durable_dir = self.cached_dir.clone(),
        }
    }

    /// A file's bytes under `data` (unwritten gaps read as zeros, as in a sparse file).
    fn bytes(&self, ino: usize, data: Data) -> Vec<u8> {
        let p = &self.pending[ino];
        let writes = match data {
            Data::Durable => &p[..0],
            Data::Cached => &p[..],
            Data::FirstHalf => &p[..p.len() / 2],
            Data::SecondHalf => &p[p.len() / 2..],
        };
        let mut v = self.durable[ino].clone();
        for (off, b) in writes {
            let (off, end) = (*off as usize, *off as usize + b.len());
            if v.len() < end {
                v.resize(end, 0);
            }
            v[off..end].copy_from_slice(b);
        }
        v
    }

    /// The folders a crash at this point could leave, with a label each: which directory
    /// (on disk or cached) and which file contents.
    fn crash_states(&self) -> Vec<(&'static str, &BTreeMap<String, usize>, Data)> {
        let (d, c) = (&self.durable_dir, &self.cached_dir);
        vec![
            ("only what was fsynced", d, Data::Durable),
            ("everything", c, Data::Cached),
            ("names ahead of data", c, Data::Durable),
            ("first half of the data, names on disk", d, Data::FirstHalf),
            ("first half of the data, names ahead", c, Data::FirstHalf),
            ("reordered data, names on disk", d, Data::SecondHalf),
            ("reordered data, names ahead", c, Data::SecondHalf),
        ]
    }

    /// The files of one crash state.
    fn files(&self, dir: &BTreeMap<String, usize>, data: Data) -> Files {
        dir.iter()
            .map(|(n, &i)| (n.clone(), self.bytes(i, data)))
            .collect()
    }
}

fn materialize(root: &Path, files: &Files) -> PathBuf {
    let d = root.join("state");
    std::fs::create_dir_all(&d).unwrap();
    for (n, data) in files {
        std::fs::write(d.join(n), data).unwrap();
    }
    d
}

fn tree(seed: u8, kib: usize) -> Pytree {
    pytree! {
        "W" => tensor(DType::F32, &[kib * 256], seed),
        "b" => tensor(DType::F64, &[7], seed.wrapping_add(1)),
        "step" => i64::from(seed),
        "nested" => pytree! { "V" => tensor(DType::F16, &[3, 5], seed.wrapping_add(2)) },
    }
}

struct Recording {
    log: Arc<Mutex<Log>>,
    start: Model,
}

fn record(dir: &Path, positional: bool) -> (Recording, SaveOptions) {
    let log = Arc::new(Mutex::new(Log::default()));
    let start = Model::from_dir(dir, &mut log.lock().unwrap());
    let opts = SaveOptions {
        storage: Arc::new(Recorder {
            log: log.clone(),
            positional,
        }),
        ..SaveOptions::default()
    };
    (Recording { log, start }, opts)
}

/// Replays every prefix of the log; calls `check(prefix, label, files)` on each crash state.
fn each_crash_state(rec: &Recording, check: &mut dyn FnMut(usize, &str, &Files)) -> usize {
    let ops = rec.log.lock().unwrap().ops.clone();
    assert!(
        ops.iter().any(|o| matches!(o, Op::Sync { .. })) && ops.iter().any(|o| matches!(o, Op::SyncDir)),
        "the save went through the storage seam"
    );
    let mut model = rec.start.clone();
    let mut n = 0;
    for k in 0..=ops.len() {
        if k > 0 {
            model.apply(&ops[k - 1]);
        }
        for (label, dir, data) in model.crash_states() {
            check(k, label, &model.files(dir, data));
            n += 1;
        }
    }
    n
}

/// Loads `bytes` as a checkpoint file (through a scratch file in `root`), remembering results
/// by content so that large files are loaded once per distinct content.
struct Loader {
    root: PathBuf,
    seen: Vec<(Vec<u8>, Result<Pytree, String>)>,
}

impl Loader {
    fn new(root: &Path) -> Loader {
        std::fs::create_dir_all(root).unwrap();
        Loader {
            root: root.into(),
            seen: Vec::new(),
        }
    }
    fn load(&mut self, bytes: &[u8]) -> Result<Pytree, String> {
        if let Some((_, r)) = self.seen.iter().find(|(b, _)| b == bytes) {
            return r.clone();
        }
        let p = self.root.join("probe.ckpt");
        std::fs::write(&p, bytes).unwrap();
        let r = load_pytree(&p, None, true).map_err(|e| e.to_string());
        self.seen.push((bytes.to_vec(), r.clone()));
        r
    }
}

/// Overwrites `old` with `new` at every crash point: the file always loads whole, as `old`
/// or `new`, and as `new` once the save has returned.
fn overwrite_case(name: &str, old: &Pytree, new: &Pytree, positional: bool) {
    let tmp = tempdir(name);
    let work = tmp.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let target = work.join("model.ckpt");
    save_pytree_with(&target, old, &SaveOptions::default(), None).unwrap();
    let (rec, opts) = record(&work, positional);
    save_pytree_with(&target, new, &opts, None).unwrap();
    let ops = rec.log.lock().unwrap().ops.clone();
    let total = ops.len();
    assert_eq!(
        ops.iter().any(|o| matches!(o, Op::Write { at: Some(0), .. })),
        positional,
        "positional writes used exactly when offered and the tree is large"
    );
    let mut loader = Loader::new(&tmp.join("probe"));
    let mut saw = (0, 0);
    let n = each_crash_state(&rec, &mut |k, label, files| {
        let bytes = files
            .get("model.ckpt")
            .unwrap_or_else(|| panic!("after {k} of {total} operations ({label}): no file"));
        let got = loader
            .load(bytes)
            .unwrap_or_else(|e| panic!("after {k} of {total} operations ({label}): {e}"));
        if &got == old {
            saw.0 += 1;
            assert!(
                !(k == total && label == "only what was fsynced"),
                "the save returned but the disk holds the old checkpoint"
            );
        } else {
            assert!(&got == new, "after {k} operations ({label}): neither old nor new");
            saw.1 += 1;
        }
    });
    assert!(saw.0 > 0 && saw.1 > 0, "both outcomes reachable: {saw:?}");
    assert!(n >= 7 * 6, "{n} crash states");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn power_loss_at_every_prefix_of_an_overwrite_keeps_old_or_new() {
    overwrite_case("pl-overwrite", &tree(1, 100), &tree(2, 100), false);
}

#[test]
fn power_loss_during_a_large_positional_save_keeps_old_or_new() {
    // 40 MiB: payloads written first with their CRCs on a second thread, the header last.
    overwrite_case("pl-positional", &tree(1, 40 << 10), &tree(2, 40 << 10), true);
}

#[test]
fn power_loss_during_a_first_save_leaves_nothing_or_the_whole_file() {
    let tmp = tempdir("pl-first");
    let work = tmp.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let new = tree(3, 40);
    let (rec, mut opts) = record(&work, false);
    opts.overwrite = false;
    save_pytree_with(work.join("first.ckpt"), &new, &opts, None).unwrap();
    let total = rec.log.lock().unwrap().ops.len();
    let mut loader = Loader::new(&tmp.join("probe"));
    each_crash_state(&rec, &mut |k, label, files| match files.get("first.ckpt") {
        Some(bytes) => {
            let got = loader
                .load(bytes)
                .unwrap_or_else(|e| panic!("after {k} ({label}): {e}"));
            assert!(got == new, "after {k} operations ({label}): a wrong tree");
        }
        None => assert!(
            !(k == total && label == "only what was fsynced"),
            "the save returned but the file is not on disk"
        ),
    });
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn without_fsync_the_model_finds_a_lost_checkpoint() {
    // The checks above have teeth: skipping the fsyncs lets the rename reach the disk before
    // the data, and the model finds the state where the checkpoint is gone.
    let tmp = tempdir("pl-nofsync");
    let work = tmp.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let target = work.join("model.ckpt");
    save_pytree_with(&target, &tree(1, 20), &SaveOptions::default(), None).unwrap();
    let (rec, mut opts) = record(&work, false);
    opts.fsync = false;
    save_pytree_with(&target, &tree(2, 20), &opts, None).unwrap();
    // Without fsync the log has no Sync/SyncDir; replay it by hand.
    let ops = rec.log.lock().unwrap().ops.clone();
    let mut model = rec.start.clone();
    let mut loader = Loader::new(&tmp.join("probe"));
    let mut lost = 0;
    for op in &ops {
        model.apply(op);
        for (label, dir, data) in model.crash_states() {
            let files = model.files(dir, data);
            if loader.load(&files["model.ckpt"]).is_err() {
                assert!(label.contains("names ahead"), "lost with names on disk: {label}");
                lost += 1;
            }
        }
    }
    assert!(lost > 0, "no crash state lost the checkpoint without fsync");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn power_loss_during_managed_saves_and_retention() {
    let tmp = tempdir("pl-manager");
    let (work, states) = (tmp.join("work"), tmp.join("states"));
    std::fs::create_dir_all(&work).unwrap();
    let trees: Vec<Pytree> = (0..6).map(|s| tree(10 + s, 8)).collect();
    let (rec, opts) = record(&work, false);
    // The op count at which each step's save (and its retention) had returned.
    let mut returned = Vec::new();
    {
        let mut m = CheckpointManager::open(
            &work,
            ManagerOptions {
                keep_last: Some(2),
                keep_every: Some(3),
                save: opts,
                ..ManagerOptions::default()
            },
        )
        .unwrap();
        for (s, t) in trees.iter().enumerate() {
            m.save(s as u64, t, Some(1.0 / (s as f64 + 1.0))).unwrap();
            returned.push(rec.log.lock().unwrap().ops.len());
        }
        assert_eq!(m.steps(), vec![0, 3, 4, 5]);
    }
    let mut checked = 0;
    each_crash_state(&rec, &mut |k, label, files| {
        let d = materialize(&states, files);
        let m = CheckpointManager::open(&d, ManagerOptions::default())
            .unwrap_or_else(|e| panic!("after {k} ({label}): {e}"));
        for s in m.steps() {
            let got = m
                .restore(Some(s))
                .unwrap_or_else(|e| panic!("step {s} after {k} ({label}): {e}"));
            assert!(
                got == trees[s as usize],
                "step {s} after {k} ({label}) is not what was saved"
            );
            checked += 1;
        }
        if label == "only what was fsynced" {
            if let Some(done) = returned.iter().rposition(|&r| r <= k) {
                assert!(
                    m.latest_step() >= Some(done as u64),
                    "after {k} ({label}): step {done} was saved but latest is {:?}",
                    m.latest_step()
                );
            }
        }
        drop(m);
        std::fs::remove_dir_all(&d).unwrap();
    });
    assert!(checked > 0);
    std::fs::remove_dir_all(&tmp).unwrap();
}
