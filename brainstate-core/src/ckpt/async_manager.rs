//! [`AsyncManager`]: background saves, at most one in flight.

use super::{write_file, CheckpointError, SaveOptions};
use crate::pytree::Pytree;
use std::path::PathBuf;
use std::sync::Mutex;
use std::thread::JoinHandle;

type Job = (PathBuf, JoinHandle<Result<(), CheckpointError>>);

/// Writes checkpoints in the background, as BrainPy's (Flax-derived) `AsyncManager`.
///
/// The tree is snapshotted (cloned) before [`save_pytree`](super::save_pytree) returns, so later
/// changes to the model never reach the file. At most one save is in flight: the next save and
/// [`AsyncManager::wait`] first wait for the previous one and return its error (the new save is
/// then not started). Dropping the manager waits for the save in flight.
#[derive(Default)]
pub struct AsyncManager {
    job: Mutex<Option<Job>>,
}

impl std::fmt::Debug for AsyncManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncManager").finish_non_exhaustive()
    }
}

impl AsyncManager {
    /// A manager with nothing in flight.
    pub fn new() -> AsyncManager {
        AsyncManager::default()
    }

    fn take_and_join(slot: &mut Option<Job>) -> Result<Option<PathBuf>, CheckpointError> {
        match slot.take() {
            None => Ok(None),
            Some((path, h)) => match h.join() {
                Ok(Ok(())) => Ok(Some(path)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(CheckpointError::AsyncPanicked { path }),
            },
        }
    }

    /// Waits for the save in flight; returns its path, or its error.
    pub fn wait(&self) -> Result<Option<PathBuf>, CheckpointError> {
        let mut slot = self.job.lock().unwrap_or_else(|p| p.into_inner());
        Self::take_and_join(&mut slot)
    }

    /// True while a save is running.
    pub fn in_flight(&self) -> bool {
        let slot = self.job.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().is_some_and(|(_, h)| !h.is_finished())
    }

    /// Waits for the previous save (returning its error if it failed), then writes the
    /// already-snapshotted `tree` in the background.
    pub(crate) fn save(&self, path: PathBuf, tree: Pytree, opts: SaveOptions) -> Result<(), CheckpointError> {
        let mut slot = self.job.lock().unwrap_or_else(|p| p.into_inner());
        Self::take_and_join(&mut slot)?;
        let p = path.clone();
        let h = std::thread::Builder::new()
            .name("brainstate-async-save".into())
            .spawn(move || write_file(&p, &tree, None, &opts))
            .map_err(|e| CheckpointError::io("spawn save thread", &path, e))?;
        *slot = Some((path, h));
        Ok(())
    }
}

impl Drop for AsyncManager {
    fn drop(&mut self) {
        let slot = self.job.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = Self::take_and_join(slot) {
            eprintln!("brainstate: background checkpoint save failed: {e}");
        }
    }
}
