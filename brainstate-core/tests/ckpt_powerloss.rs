//! Simulated power loss at every prefix of a save's operation log (test matrix F2).
//!
//! A recording [`Storage`] performs every call on the real file system and logs it. A small
//! model of a POSIX file system then replays each prefix of the log and builds the states a
//! crash could leave on disk: only what was `fsync`ed (file data after `fsync`, directory
//! entries after the folder's `fsync`), everything, directory entries that reached the disk
//! ahead of the data, and torn (half-written) data. Each state is written to a fresh folder and
//! loaded. The old checkpoint, or the new one once the save returned, must load exactly; no
//! state may hold a checkpoint that loads wrong or that fails to load where a whole one was.

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
    Create { name: String, ino: usize },
    Write { ino: usize, bytes: Vec<u8> },
    Sync { ino: usize },
    Rename { from: String, to: String },
    Remove { name: String },
    SyncDir,
}

#[derive(Default)]
struct Log {
    ops: Vec<Op>,
    next_ino: usize,
}

/// Performs every call on the OS and records it.
struct Recorder {
    log: Arc<Mutex<Log>>,
}

struct RecFile {
    inner: Box<dyn StorageFile>,
    ino: usize,
    log: Arc<Mutex<Log>>,
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
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsStorage.rename(from, to)?;
        self.log.lock().unwrap().ops.push(Op::Rename {
            from: name_of(from),
            to: name_of(to),
        });
        Ok(())
    }
    fn rename_noreplace(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsStorage.rename_noreplace(from, to)?;
        self.log.lock().unwrap().ops.push(Op::Rename {
            from: name_of(from),
            to: name_of(to),
        });
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        OsStorage.remove_file(path)?;
        self.log
            .lock()
            .unwrap()
            .ops
            .push(Op::Remove { name: name_of(path) });
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        OsStorage.sync_dir(dir)?;
        self.log.lock().unwrap().ops.push(Op::SyncDir);
        Ok(())
    }
}

/// A folder and its files as the disk holds them (`durable`) and as the page cache does.
#[derive(Clone, Default)]
struct Model {
    durable_data: Vec<Vec<u8>>,
    cached_data: Vec<Vec<u8>>,
    durable_dir: BTreeMap<String, usize>,
    cached_dir: BTreeMap<String, usize>,
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
            m.durable_data[ino] = data.clone();
            m.cached_data[ino] = data;
            m.durable_dir.insert(name_of(&e.path()), ino);
        }
        m.cached_dir = m.durable_dir.clone();
        m
    }

    fn grow(&mut self, ino: usize) {
        if self.durable_data.len() <= ino {
            self.durable_data.resize(ino + 1, Vec::new());
            self.cached_data.resize(ino + 1, Vec::new());
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Create { name, ino } => {
                self.grow(*ino);
                self.cached_dir.insert(name.clone(), *ino);
            }
            Op::Write { ino, bytes } => self.cached_data[*ino].extend_from_slice(bytes),
            Op::Sync { ino } => self.durable_data[*ino] = self.cached_data[*ino].clone(),
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

    /// The folders a crash at this point could leave, with a label each.
    fn crash_states(&self) -> Vec<(&'static str, BTreeMap<String, Vec<u8>>)> {
        let with = |dir: &BTreeMap<String, usize>, data: &dyn Fn(usize) -> Vec<u8>| {
            dir.iter().map(|(n, &i)| (n.clone(), data(i))).collect()
        };
        let torn = |i: usize| {
            let (d, c) = (&self.durable_data[i], &self.cached_data[i]);
            if c.starts_with(d) {
                c[..d.len() + (c.len() - d.len()) / 2].to_vec()
            } else {
                d.clone()
            }
        };
        vec![
            (
                "only what was fsynced",
                with(&self.durable_dir, &|i| self.durable_data[i].clone()),
            ),
            (
                "everything",
                with(&self.cached_dir, &|i| self.cached_data[i].clone()),
            ),
            (
                "names ahead of data",
                with(&self.cached_dir, &|i| self.durable_data[i].clone()),
            ),
            ("torn data, names on disk", with(&self.durable_dir, &torn)),
            ("torn data, names ahead", with(&self.cached_dir, &torn)),
        ]
    }
}

fn materialize(root: &Path, id: usize, files: &BTreeMap<String, Vec<u8>>) -> PathBuf {
    let d = root.join(format!("state{id}"));
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

fn record(dir: &Path) -> (Recording, SaveOptions) {
    let log = Arc::new(Mutex::new(Log::default()));
    let start = Model::from_dir(dir, &mut log.lock().unwrap());
    let opts = SaveOptions {
        storage: Arc::new(Recorder { log: log.clone() }),
        ..SaveOptions::default()
    };
    (Recording { log, start }, opts)
}

/// Replays every prefix of the log; calls `check(prefix, label, folder)` on each crash state.
fn each_crash_state(rec: &Recording, root: &Path, check: &mut dyn FnMut(usize, &str, &Path)) -> usize {
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
        for (label, files) in model.crash_states() {
            let d = materialize(root, n, &files);
            check(k, label, &d);
            std::fs::remove_dir_all(&d).unwrap();
            n += 1;
        }
    }
    n
}

#[test]
fn power_loss_at_every_prefix_of_an_overwrite_keeps_old_or_new() {
    let tmp = tempdir("pl-overwrite");
    let (work, states) = (tmp.join("work"), tmp.join("states"));
    std::fs::create_dir_all(&work).unwrap();
    let target = work.join("model.ckpt");
    let (old, new) = (tree(1, 100), tree(2, 100));
    save_pytree_with(&target, &old, &SaveOptions::default(), None).unwrap();
    let (rec, opts) = record(&work);
    save_pytree_with(&target, &new, &opts, None).unwrap();
    let total = rec.log.lock().unwrap().ops.len();
    let mut saw = (0, 0);
    let n = each_crash_state(&rec, &states, &mut |k, label, d| {
        let got = load_pytree(d.join("model.ckpt"), None, true)
            .unwrap_or_else(|e| panic!("after {k} of {total} operations ({label}): {e}"));
        if got == old {
            saw.0 += 1;
            assert!(
                !(k == total && label == "only what was fsynced"),
                "the save returned but the disk holds the old checkpoint"
            );
        } else {
            assert!(got == new, "after {k} operations ({label}): neither old nor new");
            saw.1 += 1;
        }
    });
    assert!(saw.0 > 0 && saw.1 > 0, "both outcomes reachable: {saw:?}");
    assert!(n >= 5 * 6, "{n} crash states");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn power_loss_during_a_first_save_leaves_nothing_or_the_whole_file() {
    let tmp = tempdir("pl-first");
    let (work, states) = (tmp.join("work"), tmp.join("states"));
    std::fs::create_dir_all(&work).unwrap();
    let new = tree(3, 40);
    let (rec, mut opts) = record(&work);
    opts.overwrite = false;
    save_pytree_with(work.join("first.ckpt"), &new, &opts, None).unwrap();
    let total = rec.log.lock().unwrap().ops.len();
    each_crash_state(&rec, &states, &mut |k, label, d| {
        let p = d.join("first.ckpt");
        if p.exists() {
            let got = load_pytree(&p, None, true).unwrap_or_else(|e| panic!("after {k} ({label}): {e}"));
            assert!(got == new, "after {k} operations ({label}): a wrong tree");
        } else {
            assert!(
                !(k == total && label == "only what was fsynced"),
                "the save returned but the file is not on disk"
            );
        }
    });
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn without_fsync_the_model_finds_a_lost_checkpoint() {
    // The check above has teeth: skipping the fsyncs lets the rename reach the disk before the
    // data, and the model finds the state where the checkpoint is gone.
    let tmp = tempdir("pl-nofsync");
    let (work, states) = (tmp.join("work"), tmp.join("states"));
    std::fs::create_dir_all(&work).unwrap();
    let target = work.join("model.ckpt");
    save_pytree_with(&target, &tree(1, 20), &SaveOptions::default(), None).unwrap();
    let (rec, mut opts) = record(&work);
    opts.fsync = false;
    save_pytree_with(&target, &tree(2, 20), &opts, None).unwrap();
    // Without fsync the log has no Sync/SyncDir; replay it by hand.
    let ops = rec.log.lock().unwrap().ops.clone();
    let mut model = rec.start.clone();
    let mut lost = 0;
    for op in &ops {
        model.apply(op);
        for (label, files) in model.crash_states() {
            let d = materialize(&states, 0, &files);
            if load_pytree(d.join("model.ckpt"), None, true).is_err() {
                assert!(label.contains("names ahead"), "lost with names on disk: {label}");
                lost += 1;
            }
            std::fs::remove_dir_all(&d).unwrap();
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
    let (rec, opts) = record(&work);
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
    each_crash_state(&rec, &states, &mut |k, label, d| {
        let m = CheckpointManager::open(d, ManagerOptions::default())
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
    });
    assert!(checked > 0);
    std::fs::remove_dir_all(&tmp).unwrap();
}
