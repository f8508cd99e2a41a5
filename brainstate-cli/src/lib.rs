//! The `brainstate` command: look into checkpoint files of any format brainstate reads (native
//! CBOR, BrainPy `.bp`, safetensors, npz).
//!
//! ```text
//! brainstate inspect FILE [--json]      format, version, tree, dtypes, shapes, sizes, checksums
//! brainstate show FILE PATH [--full]    the values of one leaf, numpy-style
//! brainstate diff A B                   added, removed and changed leaves (exit 1 if any)
//! brainstate verify FILE                structure and checksums (exit 0 or 1 with the reason)
//! brainstate convert IN OUT [--to F]    rewrite in another format
//! ```
//!
//! Everything is in this library so it can be tested; `main.rs` only parses and reports.
#![warn(missing_docs)]

pub mod diff;
pub mod file;
pub mod leaves;
pub mod numpy;

use brainstate_core::ckpt::{self, CheckpointError, Format};
use brainstate_core::Pytree;
use clap::{Parser, Subcommand, ValueEnum};
use leaves::{entries, JsonDoc, LeafInfo};
use numpy::PrintOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "brainstate",
    version,
    about = "Inspect, show, diff, verify and convert checkpoint files (native, BrainPy .bp, safetensors, npz)"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Format and version, then the tree with each leaf's dtype, shape and size; for native
    /// files whether every checksum holds.
    Inspect {
        /// The checkpoint file.
        file: PathBuf,
        /// Print one JSON document: {"format", "leaves": [{"path", "kind", "dtype", "shape",
        /// "nbytes", "sha256"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Print the values of one leaf (or the outline of a subtree), numpy-style.
    Show {
        /// The checkpoint file.
        file: PathBuf,
        /// Slash-separated path of the leaf, e.g. `net/Lif0/Lif0.V` (list items by index).
        path: String,
        /// Print every element instead of summarising arrays of more than 1000.
        #[arg(long)]
        full: bool,
    },
    /// Added, removed and changed leaves from A to B, with the largest absolute difference of
    /// each changed tensor. Exit status 1 when they differ.
    Diff {
        /// The first file.
        a: PathBuf,
        /// The second file.
        b: PathBuf,
    },
    /// Check structure and checksums. Exit status 0 when the file is sound, 1 with the reason.
    Verify {
        /// The checkpoint file.
        file: PathBuf,
    },
    /// Rewrite a checkpoint in another format (atomically).
    Convert {
        /// The file to read (any format).
        input: PathBuf,
        /// The file to write.
        output: PathBuf,
        /// Output format; by default from OUT's extension (.bp, .safetensors, .npz), else native.
        #[arg(long, value_enum)]
        to: Option<FormatArg>,
    },
}

/// The formats `convert --to` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// The native CBOR format with per-tensor checksums.
    Native,
    /// BrainPy's `.bp` format (Flax msgpack).
    Bp,
    /// safetensors.
    Safetensors,
    /// numpy `.npz`.
    Npz,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Native => Format::Native,
            FormatArg::Bp => Format::BrainPy,
            FormatArg::Safetensors => Format::Safetensors,
            FormatArg::Npz => Format::Npz,
        }
    }
}

/// Why a command failed. Each prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Reading or writing a checkpoint failed (includes every format error).
    #[error("{source}")]
    Checkpoint {
        /// The library's error.
        source: Box<CheckpointError>,
    },
    /// A format error whose message does not name the file (BrainPy, safetensors, npz codecs).
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The library's error.
        source: Box<CheckpointError>,
    },
    /// The path is a directory or another non-file.
    #[error("{path}: not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file is empty.
    #[error("{path}: empty file, not a checkpoint")]
    Empty {
        /// The path.
        path: PathBuf,
    },
    /// The content matches no format.
    #[error("{path}: not a checkpoint in any known format (native, BrainPy .bp, safetensors, npz); it starts with {prefix}")]
    UnknownFormat {
        /// The path.
        path: PathBuf,
        /// Its first bytes in hex.
        prefix: String,
    },
    /// Opening or reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `show` was given a path the tree does not have.
    #[error("{file}: no entry {path:?}: {reason}")]
    NoSuchPath {
        /// The file.
        file: PathBuf,
        /// The asked path.
        path: String,
        /// What is there instead.
        reason: String,
    },
    /// Writing to stdout failed.
    #[error("cannot write output: {0}")]
    Output(io::Error),
}

impl CliError {
    fn io(path: &Path, source: io::Error) -> CliError {
        if source.kind() == io::ErrorKind::NotFound {
            CheckpointError::NotFound { path: path.into() }.into()
        } else {
            CliError::Io {
                path: path.into(),
                source,
            }
        }
    }

    /// A load error of `path`, naming the file if the library's message does not.
    pub fn reading(path: &Path, source: CheckpointError) -> CliError {
        if source.to_string().contains(&path.display().to_string()) {
            source.into()
        } else {
            CliError::Read {
                path: path.into(),
                source: Box::new(source),
            }
        }
    }

    /// The message on one line (multi-line library messages joined with `; `).
    pub fn one_line(&self) -> String {
        let s = self.to_string();
        s.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl From<CheckpointError> for CliError {
    fn from(source: CheckpointError) -> CliError {
        CliError::Checkpoint {
            source: Box::new(source),
        }
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> CliError {
        CliError::Output(e)
    }
}

/// Runs a command, writing its report to `out`. Returns the exit status for a completed
/// command (`diff`: 1 when the files differ); errors are for the caller to print.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<u8, CliError> {
    match &cli.command {
        Command::Inspect { file, json } => inspect(file, *json, out),
        Command::Show { file, path, full } => show(file, path, *full, out),
        Command::Diff { a, b } => diff_files(a, b, out),
        Command::Verify { file } => verify(file, out),
        Command::Convert { input, output, to } => convert(input, output, to.map(Format::from), out),
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut x = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if x < 1024.0 {
            break;
        }
        x /= 1024.0;
        unit = u;
    }
    format!("{x:.1} {unit}")
}

/// `inspect`: header lines, then one line per entry of the tree.
pub fn inspect(path: &Path, json: bool, out: &mut dyn Write) -> Result<u8, CliError> {
    let f = file::open(path)?;
    if json {
        let doc = JsonDoc::new(file::format_name(f.format), &f.tree);
        serde_json::to_writer_pretty(&mut *out, &doc).map_err(|e| CliError::Output(e.into()))?;
        writeln!(out)?;
        return Ok(0);
    }
    let version = f.version.as_deref().map_or_else(
        || "no version field".to_string(),
        |v| format!("format version {v}"),
    );
    writeln!(out, "{}: {} bytes", f.path.display(), f.size)?;
    writeln!(
        out,
        "format: {} ({}, {version})",
        file::format_name(f.format),
        file::format_title(f.format)
    )?;
    let es = entries(&f.tree);
    let leaves: Vec<LeafInfo<'_>> = es.iter().map(|e| LeafInfo::of(e.value)).collect();
    let n_leaves = leaves
        .iter()
        .filter(|l| !matches!(l.kind, "map" | "list"))
        .count();
    let n_tensors = leaves
        .iter()
        .filter(|l| matches!(l.kind, "tensor" | "scalar"))
        .count();
    let data: u64 = leaves
        .iter()
        .filter(|l| matches!(l.kind, "tensor" | "scalar"))
        .map(|l| l.nbytes() as u64)
        .sum();
    writeln!(
        out,
        "leaves: {n_leaves} ({n_tensors} array{}, {} of array data)",
        if n_tensors == 1 { "" } else { "s" },
        human_bytes(data)
    )?;
    match f.checksums {
        Some(n) => writeln!(out, "checksums: all {n} tensor CRC32C checksums hold")?,
        None => writeln!(out, "checksums: none in this format")?,
    }
    writeln!(out)?;
    print_outline(&f.tree, out)?;
    Ok(0)
}

/// The tree, one line per map key, leaves with dtype, shape, size and small values.
fn print_outline(tree: &Pytree, out: &mut dyn Write) -> Result<(), CliError> {
    let mut rows: Vec<(String, String, String)> = Vec::new();
    fn walk(t: &Pytree, depth: usize, rows: &mut Vec<(String, String, String)>) {
        let children: Vec<(String, &Pytree)> = match t {
            Pytree::Map(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
            Pytree::List(l) => l.iter().enumerate().map(|(i, v)| (format!("[{i}]"), v)).collect(),
            _ => return,
        };
        for (k, v) in children {
            let name = format!("{}{k}", "  ".repeat(depth));
            match v {
                Pytree::Map(m) if !m.is_empty() => {
                    rows.push((name, String::new(), String::new()));
                    walk(v, depth + 1, rows);
                }
                Pytree::List(l) if !l.is_empty() => {
                    rows.push((name, format!("list of {}", l.len()), String::new()));
                    walk(v, depth + 1, rows);
                }
                leaf => {
                    let info = LeafInfo::of(leaf);
                    let (what, extra) = leaf_columns(leaf, &info);
                    rows.push((name, what, extra));
                }
            }
        }
    }
    if !matches!(tree, Pytree::Map(_) | Pytree::List(_)) {
        let info = LeafInfo::of(tree);
        let (what, extra) = leaf_columns(tree, &info);
        rows.push(("(root)".into(), what, extra));
    }
    walk(tree, 0, &mut rows);
    let w0 = rows
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(0)
        .min(60);
    let w1 = rows
        .iter()
        .map(|r| r.1.chars().count())
        .max()
        .unwrap_or(0)
        .min(40);
    for (a, b, c) in rows {
        let line = format!("{a:<w0$}  {b:<w1$}  {c}");
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// (`float32[256, 10]`, `10.0 KiB`) for arrays; (`int`, `9`) for Python values.
fn leaf_columns(v: &Pytree, info: &LeafInfo<'_>) -> (String, String) {
    let small = PrintOptions {
        threshold: 8,
        edgeitems: 3,
        linewidth: usize::MAX,
        precision: 8,
    };
    match v {
        Pytree::Tensor(t) if t.ndim() == 0 => (info.type_text(), numpy::scalar_text(t)),
        Pytree::Tensor(_) => (info.type_text(), human_bytes(info.nbytes() as u64)),
        Pytree::Scalar(_) => (
            format!("scalar {}", info.type_text()),
            numpy::leaf_repr(v, &small),
        ),
        Pytree::Map(_) => ("{}".into(), String::new()),
        Pytree::List(_) => ("[]".into(), String::new()),
        Pytree::Str(_) | Pytree::Bytes(_) | Pytree::None => {
            (info.kind.into(), short(&numpy::leaf_repr(v, &small)))
        }
        _ => (info.kind.into(), numpy::leaf_repr(v, &small)),
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(37).collect::<String>())
    } else {
        s.to_string()
    }
}

/// `show`: the leaf at `path` printed numpy-style, or the outline of a subtree.
pub fn show(path: &Path, at: &str, full: bool, out: &mut dyn Write) -> Result<u8, CliError> {
    let f = file::open(path)?;
    let node = f.tree.at(at).map_err(|e| CliError::NoSuchPath {
        file: path.into(),
        path: at.to_string(),
        reason: e.to_string(),
    })?;
    let v = node.value();
    let opts = if full {
        PrintOptions::full()
    } else {
        PrintOptions::default()
    };
    match v {
        Pytree::Map(m) if !m.is_empty() => print_outline(v, out)?,
        Pytree::List(l) if !l.is_empty() => print_outline(v, out)?,
        leaf => {
            let info = LeafInfo::of(leaf);
            writeln!(out, "{}: {}", node.path(), info.type_text())?;
            writeln!(out, "{}", numpy::leaf_repr(leaf, &opts))?;
        }
    }
    Ok(0)
}

/// `diff`: one line per difference and a summary; 1 when they differ.
pub fn diff_files(a: &Path, b: &Path, out: &mut dyn Write) -> Result<u8, CliError> {
    let fa = file::open(a)?;
    let fb = file::open(b)?;
    let changes = diff::diff(&fa.tree, &fb.tree);
    if changes.is_empty() {
        writeln!(out, "identical trees: {} and {}", a.display(), b.display())?;
        return Ok(0);
    }
    for c in &changes {
        writeln!(out, "{c}")?;
    }
    let count = |p: fn(&diff::Change) -> bool| changes.iter().filter(|c| p(c)).count();
    writeln!(
        out,
        "{} changed, {} added, {} removed",
        count(|c| matches!(c, diff::Change::Values { .. } | diff::Change::Retyped { .. })),
        count(|c| matches!(c, diff::Change::Added { .. })),
        count(|c| matches!(c, diff::Change::Removed { .. })),
    )?;
    Ok(1)
}

/// `verify`: reads the whole file with every check; a problem is an error (exit 1).
pub fn verify(path: &Path, out: &mut dyn Write) -> Result<u8, CliError> {
    let f = file::open(path)?;
    let n = entries(&f.tree).iter().filter(|e| !e.is_container()).count();
    match f.checksums {
        Some(c) => writeln!(
            out,
            "OK {}: {} format {}, {n} leaves, structure valid, all {c} tensor checksums hold",
            path.display(),
            file::format_name(f.format),
            f.version.as_deref().unwrap_or("?"),
        )?,
        None => writeln!(
            out,
            "OK {}: {} format, {n} leaves, structure valid (this format carries no checksums)",
            path.display(),
            file::format_name(f.format),
        )?,
    }
    Ok(0)
}

/// The format `convert` writes when `--to` is not given: from the extension, else native.
pub fn format_for_output(path: &Path) -> Format {
    match path.extension().and_then(|e| e.to_str()) {
        Some("bp") => Format::BrainPy,
        Some("safetensors") => Format::Safetensors,
        Some("npz") => Format::Npz,
        _ => Format::Native,
    }
}

/// `convert`: reads `input` (any format) and writes `output` atomically.
pub fn convert(input: &Path, output: &Path, to: Option<Format>, out: &mut dyn Write) -> Result<u8, CliError> {
    let f = file::open(input)?;
    let format = to.unwrap_or_else(|| format_for_output(output));
    let opts = ckpt::SaveOptions {
        format: Some(format),
        ..ckpt::SaveOptions::default()
    };
    ckpt::save_pytree_with(output, &f.tree, &opts, None)?;
    writeln!(
        out,
        "wrote {} ({}) from {} ({})",
        output.display(),
        file::format_name(format),
        input.display(),
        file::format_name(f.format)
    )?;
    Ok(0)
}
