//! [`CheckpointManager`]: a directory of step checkpoints with retention rules.

use super::storage::clean_stale_temps;
use super::{inspect_native, load_pytree, write_file, CheckpointError, Format, SaveOptions};
use crate::pytree::Pytree;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Whether a lower or a higher metric is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BestMode {
    /// Lower is better (a loss).
    Min,
    /// Higher is better (an accuracy).
    Max,
}

/// Retention and writing options of a [`CheckpointManager`].
///
/// A step is kept when any rule keeps it: among the last `keep_last`, a multiple of
/// `keep_every`, or among the best `keep_best` by metric. With no rule set, every step is
/// kept. The newest step is never deleted.
#[derive(Clone, Debug)]
pub struct ManagerOptions {
    /// Keep the last K steps.
    pub keep_last: Option<usize>,
    /// Keep every step that is a multiple of M.
    pub keep_every: Option<u64>,
    /// Keep the best J steps by their metric (steps without a metric are not ranked; NaN ranks
    /// last; on a tie the later step ranks first).
    pub keep_best: Option<(usize, BestMode)>,
    /// File name prefix; files are `<prefix><step>` (default `checkpoint_`, as Flax).
    pub prefix: String,
    /// How files are written (fsync, storage, alignment); `overwrite` and `format` are ignored.
    pub save: SaveOptions,
}

impl Default for ManagerOptions {
    fn default() -> ManagerOptions {
        ManagerOptions {
            keep_last: None,
            keep_every: None,
            keep_best: None,
            prefix: "checkpoint_".into(),
            save: SaveOptions::default(),
        }
    }
}

/// The name of the lock file in a managed directory.
pub const LOCK_FILE: &str = ".brainstate-manager.lock";

/// A directory of step checkpoints: save at step N, keep by rules, restore the latest or a step.
///
/// Only committed checkpoints are listed: files whose header, layout and trailer check out and
/// whose stored step matches the name. An advisory lock (`flock` on [`LOCK_FILE`]) keeps a second
/// manager out of the directory; the kernel releases it when its holder dies, so a lock file
/// left by a crashed process never blocks (stale locks cannot exist). Old checkpoints are
/// deleted only after the new one is committed.
#[derive(Debug)]
pub struct CheckpointManager {
    dir: PathBuf,
    opts: ManagerOptions,
    _lock: File,
    steps: BTreeMap<u64, Option<f64>>,
}

impl CheckpointManager {
    /// Opens (creating it if needed) and locks `dir`, removes our stale temp files, and lists
    /// the committed checkpoints.
    pub fn open(dir: impl AsRef<Path>, opts: ManagerOptions) -> Result<CheckpointManager, CheckpointError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| CheckpointError::io("create directory", &dir, e))?;
        let lp = dir.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lp)
            .map_err(|e| CheckpointError::io("open lock", &lp, e))?;
        // SAFETY: flock on a valid open descriptor.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = lock.read_to_string(&mut holder);
                return Err(CheckpointError::Locked {
                    dir,
                    holder: holder.trim().to_string(),
                });
            }
            return Err(CheckpointError::io("lock", &lp, e));
        }
        let _ = lock.set_len(0).and_then(|_| lock.rewind()).and_then(|_| {
            write!(lock, "pid {}", std::process::id())?;
            lock.flush()
        });
        clean_stale_temps(&*opts.save.storage, &dir);
        let mut m = CheckpointManager {
            dir,
            opts,
            _lock: lock,
            steps: BTreeMap::new(),
        };
        m.rescan()?;
        Ok(m)
    }

    fn rescan(&mut self) -> Result<(), CheckpointError> {
        self.steps.clear();
        let rd =
            std::fs::read_dir(&self.dir).map_err(|e| CheckpointError::io("read directory", &self.dir, e))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(step) = name
                .strip_prefix(&self.opts.prefix)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let Ok(Some(meta)) = inspect_native(&e.path()) else {
                continue;
            };
            let stored = meta.get("step").ok().and_then(|n| n.i64().ok());
            if stored != i64::try_from(step).ok() {
                continue;
            }
            let metric = meta.get("metric").ok().and_then(|n| n.f64().ok());
            self.steps.insert(step, metric);
        }
        Ok(())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of step `step`.
    pub fn path_for(&self, step: u64) -> PathBuf {
        self.dir.join(format!("{}{step}", self.opts.prefix))
    }

    /// The committed steps, ascending.
    pub fn steps(&self) -> Vec<u64> {
        self.steps.keys().copied().collect()
    }

    /// The latest committed step.
    pub fn latest_step(&self) -> Option<u64> {
        self.steps.keys().next_back().copied()
    }

    /// The metric stored with a step.
    pub fn metric(&self, step: u64) -> Option<f64> {
        self.steps.get(&step).copied().flatten()
    }

    /// Saves `tree` as step `step` with an optional metric. As Flax, an error if that step or a
    /// later one exists (see [`CheckpointManager::save_with`] to overwrite).
    pub fn save(
        &mut self,
        step: u64,
        tree: &Pytree,
        metric: Option<f64>,
    ) -> Result<PathBuf, CheckpointError> {
        self.save_with(step, tree, metric, false)
    }

    /// Saves step `step`. With `overwrite`, an existing file of that step is replaced and every
    /// later step is deleted (after the commit), as Flax does; without, a step at or after
    /// `step` is [`CheckpointError::StepExists`]. Retention runs after the commit.
    pub fn save_with(
        &mut self,
        step: u64,
        tree: &Pytree,
        metric: Option<f64>,
        overwrite: bool,
    ) -> Result<PathBuf, CheckpointError> {
        if !overwrite {
            if let Some((&existing, _)) = self.steps.range(step..).next_back() {
                return Err(CheckpointError::StepExists {
                    dir: self.dir.clone(),
                    step,
                    existing,
                });
            }
        }
        let path = self.path_for(step);
        let meta = crate::pytree! { "step" => step, "metric" => metric };
        let opts = SaveOptions {
            overwrite,
            verbose: false,
            format: Some(Format::Native),
            ..self.opts.save.clone()
        };
        write_file(&path, tree, Some(&meta), &opts)?;
        self.steps.insert(step, metric);
        if overwrite {
            let later: Vec<u64> = self.steps.range(step + 1..).map(|(&s, _)| s).collect();
            for s in later {
                self.delete(s)?;
            }
        }
        for s in self.to_delete() {
            self.delete(s)?;
        }
        Ok(path)
    }

    fn delete(&mut self, step: u64) -> Result<(), CheckpointError> {
        let p = self.path_for(step);
        self.steps.remove(&step);
        match self.opts.save.storage.remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CheckpointError::io("delete old checkpoint", p, e)),
        }
    }

    /// The steps the retention rules drop, oldest first.
    fn to_delete(&self) -> Vec<u64> {
        let o = &self.opts;
        if o.keep_last.is_none() && o.keep_every.is_none() && o.keep_best.is_none() {
            return Vec::new();
        }
        let all: Vec<u64> = self.steps.keys().copied().collect();
        let mut keep = std::collections::HashSet::new();
        if let Some(&newest) = all.last() {
            keep.insert(newest);
        }
        if let Some(k) = o.keep_last {
            keep.extend(all.iter().rev().take(k).copied());
        }
        if let Some(m) = o.keep_every.filter(|&m| m > 0) {
            keep.extend(all.iter().copied().filter(|s| s % m == 0));
        }
        if let Some((j, mode)) = o.keep_best {
            let mut ranked: Vec<(u64, f64)> = self
                .steps
                .iter()
                .filter_map(|(&s, m)| m.map(|m| (s, m)))
                .collect();
            ranked.sort_by(|a, b| {
                let key = |x: f64| {
                    if x.is_nan() {
                        f64::INFINITY
                    } else if mode == BestMode::Min {
                        x
                    } else {
                        -x
                    }
                };
                key(a.1).total_cmp(&key(b.1)).then(b.0.cmp(&a.0))
            });
            keep.extend(ranked.iter().take(j).map(|(s, _)| *s));
        }
        all.into_iter().filter(|s| !keep.contains(s)).collect()
    }

    /// The best step by metric under `mode` (NaN and missing metrics never win).
    pub fn best_step(&self, mode: BestMode) -> Option<u64> {
        self.steps
            .iter()
            .filter_map(|(&s, m)| m.filter(|m| !m.is_nan()).map(|m| (s, m)))
            .max_by(|a, b| {
                let o = a.1.total_cmp(&b.1);
                (if mode == BestMode::Min { o.reverse() } else { o }).then(a.0.cmp(&b.0))
            })
            .map(|(s, _)| s)
    }

    /// Loads step `step`, or the latest step when `None`.
    pub fn restore(&self, step: Option<u64>) -> Result<Pytree, CheckpointError> {
        let step = match step {
            Some(s) if self.steps.contains_key(&s) => s,
            Some(s) => {
                return Err(CheckpointError::NoSuchStep {
                    dir: self.dir.clone(),
                    step: s,
                })
            }
            None => self
                .latest_step()
                .ok_or_else(|| CheckpointError::EmptyDirectory {
                    path: self.dir.clone(),
                })?,
        };
        load_pytree(self.path_for(step), None, true)
    }
}
