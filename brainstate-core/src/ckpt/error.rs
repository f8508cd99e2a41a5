//! Errors of checkpoint saving and loading.

use crate::bpformat::BpError;
use crate::interop::InteropError;
use crate::tensor::TensorError;
use std::io;
use std::path::PathBuf;

/// What is wrong with the bytes of a native checkpoint. Offsets are absolute file offsets.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormatError {
    /// The file does not start with the magic `d9 d9 f7`.
    #[error("not a native checkpoint: the file does not start with the magic d9 d9 f7")]
    BadMagic,
    /// Self-described CBOR, but not our format id.
    #[error("self-described CBOR, but not a brainstate checkpoint (format id differs)")]
    NotNative,
    /// Written by a newer (or unknown) major version.
    #[error("written by format version {major}.{minor}; this library reads version 1.x")]
    UnsupportedVersion {
        /// Major version in the file.
        major: u64,
        /// Minor version in the file.
        minor: u64,
    },
    /// The file ends before an item does.
    #[error("truncated: an item at byte {offset} runs past the end of the file")]
    Truncated {
        /// Where the incomplete item starts.
        offset: u64,
    },
    /// Malformed or disallowed CBOR.
    #[error("invalid CBOR at byte {offset}: {what}")]
    Syntax {
        /// Where.
        offset: u64,
        /// What.
        what: String,
    },
    /// Nesting deeper than the reader allows.
    #[error("nesting deeper than {limit} levels at byte {offset}")]
    TooDeep {
        /// Where.
        offset: u64,
        /// The limit.
        limit: usize,
    },
    /// A map key that is not text.
    #[error("map key at byte {offset} is a {found}; keys must be text")]
    NonTextKey {
        /// Where.
        offset: u64,
        /// What the key was.
        found: &'static str,
    },
    /// A map holds the same key twice.
    #[error("duplicate map key {key:?} at byte {offset}")]
    DuplicateKey {
        /// Where the second occurrence starts.
        offset: u64,
        /// The key.
        key: String,
    },
    /// A required key is absent.
    #[error("{item} (at byte {offset}) has no key {key:?}")]
    MissingKey {
        /// Where the map starts.
        offset: u64,
        /// Which map.
        item: &'static str,
        /// The key.
        key: &'static str,
    },
    /// A value has the wrong CBOR type.
    #[error("{item} (at byte {offset}): {key:?} should be {expected}, found {found}")]
    WrongType {
        /// Where the map starts.
        offset: u64,
        /// Which map.
        item: &'static str,
        /// The key.
        key: &'static str,
        /// The expected type.
        expected: &'static str,
        /// The found type.
        found: &'static str,
    },
    /// The alignment is not a power of two between 8 and 65536.
    #[error("alignment {align} is not a power of two between 8 and 65536")]
    BadAlign {
        /// The alignment found.
        align: u64,
    },
    /// A dtype this library does not know.
    #[error("tensor {index}: unknown dtype {name:?}")]
    UnknownDtype {
        /// Tensor index.
        index: usize,
        /// The dtype name.
        name: String,
    },
    /// A shape with too many axes, or whose size overflows.
    #[error("tensor {index}: shape is invalid (too many axes, or its size overflows)")]
    BadShape {
        /// Tensor index.
        index: usize,
    },
    /// `len` is not shape × itemsize.
    #[error("tensor {index}: len is {found} bytes, but its shape and dtype need {expected}")]
    LengthMismatch {
        /// Tensor index.
        index: usize,
        /// Bytes the shape needs.
        expected: u64,
        /// The `len` in the header.
        found: u64,
    },
    /// Declared sizes do not fit in the file.
    #[error("declared sizes do not fit in the file of {file_len} bytes")]
    TooLarge {
        /// The file's length.
        file_len: u64,
    },
    /// A payload offset differs from the one the layout rules give.
    #[error("tensor {index}: offset {found}, but the layout puts it at {expected}")]
    BadOffset {
        /// Tensor index.
        index: usize,
        /// The offset the layout gives.
        expected: u64,
        /// The offset in the header.
        found: u64,
    },
    /// The padding or payload head in front of a tensor is not what the header implies.
    #[error("padding or payload head before tensor {index} is wrong at byte {offset}")]
    BadPadding {
        /// Where the first differing byte is.
        offset: u64,
        /// Tensor index.
        index: usize,
    },
    /// A tensor's payload does not match its CRC32C.
    #[error("tensor {index} (payload at byte {offset}) fails its CRC32C: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// Tensor index.
        index: usize,
        /// Payload start.
        offset: u64,
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
    /// The payload bytes could not be turned into a tensor (e.g. a bool byte other than 0/1).
    #[error("tensor {index} (payload at byte {offset}): {source}")]
    Tensor {
        /// Tensor index.
        index: usize,
        /// Payload start.
        offset: u64,
        /// The tensor error.
        source: TensorError,
    },
    /// The header's CRC32C in the trailer does not match.
    #[error("header fails its CRC32C: trailer says {stored:#x}, computed {computed:#010x}")]
    HeaderChecksum {
        /// CRC in the trailer.
        stored: u64,
        /// CRC of the header bytes.
        computed: u32,
    },
    /// The trailer is missing or inconsistent with the header.
    #[error("bad trailer at byte {offset}: {what}")]
    BadTrailer {
        /// Where the trailer starts.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// Bytes after the trailer.
    #[error("trailing data after the trailer at byte {offset}")]
    TrailingData {
        /// Where the extra bytes start.
        offset: u64,
    },
    /// A tree leaf refers to a tensor that does not exist, is referenced twice, or is a
    /// numpy scalar that is not 0-d.
    #[error("tree refers to tensor {index}, which does not exist, is used twice, or does not fit")]
    BadTensorRef {
        /// Offset (0 when unknown).
        offset: u64,
        /// The index (`u64::MAX` when not an integer).
        index: u64,
    },
    /// A tensor in the file is not referenced by the tree.
    #[error("tensor {index} of {count} is not referenced by the tree")]
    UnreferencedTensor {
        /// Tensor index.
        index: usize,
        /// Number of tensors.
        count: u64,
    },
    /// A tag this version does not know, or a known tag with the wrong content.
    #[error("unknown tag {tag} (or a known tag with wrong content) in the tree")]
    UnknownTag {
        /// The tag number.
        tag: u64,
    },
    /// A negative integer below `i64::MIN`.
    #[error("negative integer below i64::MIN in the tree")]
    IntOutOfRange,
    /// Reading failed.
    #[error("I/O error while reading: {0}")]
    Io(String),
}

/// Why a checkpoint could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The path does not exist.
    #[error("checkpoint not found: {path}")]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// `overwrite` is false and the file exists.
    #[error("checkpoint already exists: {path} (overwrite is false)")]
    AlreadyExists {
        /// The path.
        path: PathBuf,
    },
    /// An operating-system call failed.
    #[error("{op} failed for {path}: {source}")]
    Io {
        /// What was being done (`write`, `fsync`, `rename`, ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is a native checkpoint, but its bytes are invalid.
    #[error("{path}: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: FormatError,
    },
    /// The file is in no format this library reads.
    #[error("{path}: not a checkpoint in any known format (starts with {prefix})")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// Its first bytes in hex.
        prefix: String,
    },
    /// The tree cannot be written in the native format.
    #[error("cannot save {path}: {source}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// Why.
        source: super::native::EncodeError,
    },
    /// BrainPy's format failed (boxed: the BrainPy error is large).
    #[error(transparent)]
    BrainPy(Box<BpError>),
    /// The safetensors or npz codec failed.
    #[error(transparent)]
    Interop(#[from] InteropError),
    /// A directory holds no committed checkpoint.
    #[error("no committed checkpoint in directory {path}")]
    EmptyDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// The loaded tree does not match the target tree.
    #[error("{path}: the checkpoint does not match the target ({} problems):\n  {}", problems.len(), problems.join("\n  "))]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Every difference, with its tree path.
        problems: Vec<String>,
    },
    /// Saving step `step` while that step or a later one exists (and overwrite is false).
    #[error("cannot save step {step} in {dir}: step {existing} already exists (pass overwrite to replace)")]
    StepExists {
        /// The directory.
        dir: PathBuf,
        /// The step asked for.
        step: u64,
        /// The existing step (equal or later).
        existing: u64,
    },
    /// No checkpoint for the asked step.
    #[error("no committed checkpoint for step {step} in {dir}")]
    NoSuchStep {
        /// The directory.
        dir: PathBuf,
        /// The step.
        step: u64,
    },
    /// Another manager holds the directory's lock.
    #[error("checkpoint directory {dir} is locked by another manager ({holder})")]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// What the lock file says about its holder.
        holder: String,
    },
    /// A background save panicked.
    #[error("the background save into {path} panicked")]
    AsyncPanicked {
        /// The file.
        path: PathBuf,
    },
}

impl From<BpError> for CheckpointError {
    fn from(e: BpError) -> CheckpointError {
        CheckpointError::BrainPy(Box::new(e))
    }
}

impl CheckpointError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> CheckpointError {
        CheckpointError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The format error inside, if this is a [`CheckpointError::Format`].
    pub fn format_error(&self) -> Option<&FormatError> {
        match self {
            CheckpointError::Format { source, .. } => Some(source),
            _ => None,
        }
    }
}
