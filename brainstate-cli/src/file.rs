//! Reading checkpoint files of any supported format, with what `inspect` and `verify` report
//! about them.

use crate::CliError;
use brainstate_core::ckpt::{self, native, Format};
use brainstate_core::Pytree;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A checkpoint file read in full.
#[derive(Debug)]
pub struct Opened {
    /// The file.
    pub path: PathBuf,
    /// Its format, detected from its content.
    pub format: Format,
    /// Its size in bytes.
    pub size: u64,
    /// The format version, for formats that record one (`1.0` for the native format).
    pub version: Option<String>,
    /// For native files, the number of tensor checksums verified (all of them).
    pub checksums: Option<usize>,
    /// The tree.
    pub tree: Pytree,
}

/// The name `inspect --json` and `convert --to` use for a format.
pub fn format_name(f: Format) -> &'static str {
    match f {
        Format::Native => "native",
        Format::BrainPy => "bp",
        Format::Safetensors => "safetensors",
        Format::Npz => "npz",
    }
}

/// A longer description for people.
pub fn format_title(f: Format) -> &'static str {
    match f {
        Format::Native => "brainstate native checkpoint (CBOR)",
        Format::BrainPy => "BrainPy checkpoint (Flax msgpack)",
        Format::Safetensors => "safetensors",
        Format::Npz => "numpy npz archive",
    }
}

/// Detects the format of `path` from its first bytes, without reading the rest.
pub fn detect(path: &Path) -> Result<(Format, u64), CliError> {
    let mut f = File::open(path).map_err(|e| CliError::io(path, e))?;
    let size = f.metadata().map_err(|e| CliError::io(path, e))?.len();
    if !f.metadata().map_err(|e| CliError::io(path, e))?.is_file() {
        return Err(CliError::NotAFile { path: path.into() });
    }
    let mut prefix = vec![0u8; size.min(64) as usize];
    f.read_exact(&mut prefix).map_err(|e| CliError::io(path, e))?;
    match Format::detect(&prefix) {
        Some(fmt) => Ok((fmt, size)),
        None if size == 0 => Err(CliError::Empty { path: path.into() }),
        None => Err(CliError::UnknownFormat {
            path: path.into(),
            prefix: prefix
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
        }),
    }
}

/// Reads `path` in full, checking everything the format allows (for native files: the header,
/// the layout, the trailer and every tensor's CRC32C).
pub fn open(path: &Path) -> Result<Opened, CliError> {
    let (format, size) = detect(path)?;
    let (version, checksums) = if format == Format::Native {
        let mut f = File::open(path).map_err(|e| CliError::io(path, e))?;
        let (h, _) = native::read_header(&mut f, size).map_err(|source| {
            CliError::from(ckpt::CheckpointError::Format {
                path: path.into(),
                source,
            })
        })?;
        (
            Some(format!("{}.{}", h.version[0], h.version[1])),
            Some(h.tensors.len()),
        )
    } else {
        (None, None)
    };
    let tree = ckpt::load_pytree(path, None, true).map_err(|source| CliError::reading(path, source))?;
    Ok(Opened {
        path: path.into(),
        format,
        size,
        version,
        checksums,
        tree,
    })
}
