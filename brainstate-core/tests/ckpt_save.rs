//! save_pytree / load_pytree, durable atomic saves with injected faults (D.1), AsyncManager.

mod common_ckpt;
use brainstate_core::ckpt::{
    load_pytree, load_pytree_with, native, save_pytree, save_pytree_with, write_native_file, AsyncManager,
    CheckpointError, FaultAt, FaultStorage, Format, FormatError, LoadOptions, OsStorage, SaveOptions,
    Storage, StorageFile,
};
use brainstate_core::{pytree, DType, Pytree};
use common_ckpt::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn save_and_load_the_tutorial_tree() {
    let d = tempdir("tutorial");
    let p = d.join("snn.ckpt");
    let t = tutorial();
    assert_eq!(save_pytree(&p, &t, true, None, true).unwrap(), p);
    assert_eq!(load_pytree(&p, None, true).unwrap(), t);
    assert_eq!(load_pytree(&p, None, false).unwrap(), t);
    // Parent directories are created, as BrainPy does.
    let nested = d.join("a/b/c.ckpt");
    save_pytree(&nested, &t, true, None, false).unwrap();
    assert!(same(&load_pytree(&nested, None, false).unwrap(), &t));
    assert_eq!(names(&d), ["a", "snn.ckpt"]);
}

#[test]
fn every_kind_round_trips_through_a_file() {
    let d = tempdir("everykind");
    let p = d.join("all");
    save_pytree(&p, &every_kind(), true, None, false).unwrap();
    assert!(same(&load_pytree(&p, None, true).unwrap(), &every_kind()));
}

#[test]
fn parallel_reads_give_the_same_tree() {
    let d = tempdir("parallel");
    let p = d.join("big");
    let t = pytree! {
        "w" => tensor(DType::F32, &[1 << 20], 1),
        "b" => tensor(DType::Bool, &[3 << 19], 2),
        "small" => tensor(DType::I16, &[7], 3),
    };
    save_pytree(&p, &t, true, None, false).unwrap();
    for threads in [2, 3, 5] {
        let o = LoadOptions {
            parallel: true,
            threads,
            parallel_min_bytes: 1,
            whole_file_max: 0,
        };
        assert_eq!(load_pytree_with(&p, &o).unwrap(), t);
    }
    // A flipped payload byte is caught on the parallel path too.
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x10;
    std::fs::write(&p, &bytes).unwrap();
    let o = LoadOptions {
        parallel: true,
        threads: 2,
        parallel_min_bytes: 1,
        whole_file_max: 0,
    };
    let e = load_pytree_with(&p, &o).unwrap_err();
    assert!(
        matches!(e.format_error(), Some(FormatError::Checksum { .. })),
        "{e}"
    );
}

#[test]
fn missing_path_is_an_error() {
    let d = tempdir("missing");
    let e = load_pytree(d.join("nope"), None, true).unwrap_err();
    assert!(
        matches!(e, CheckpointError::NotFound { ref path } if path.ends_with("nope")),
        "{e}"
    );
    assert!(e.to_string().starts_with("checkpoint not found: "));
}

#[test]
fn unknown_format_is_an_error() {
    let d = tempdir("unknown");
    let p = d.join("x.bin");
    std::fs::write(&p, b"hello world").unwrap();
    let e = load_pytree(&p, None, true).unwrap_err();
    assert!(matches!(e, CheckpointError::UnknownFormat { .. }), "{e}");
    assert!(e.to_string().contains("68 65 6c 6c 6f"), "{e}");
    // Truncated native file: typed format error naming the file.
    let q = d.join("t");
    save_pytree(&q, &tutorial(), true, None, false).unwrap();
    let b = std::fs::read(&q).unwrap();
    std::fs::write(&q, &b[..b.len() - 3]).unwrap();
    let e = load_pytree(&q, None, true).unwrap_err();
    assert!(
        matches!(e, CheckpointError::Format { .. }) && e.to_string().contains("/t: "),
        "{e}"
    );
}

#[test]
fn format_is_detected_by_content_not_name() {
    let d = tempdir("byname");
    // A native file named .bp and one named .safetensors load as native.
    for name in ["model.safetensors", "x.npz"] {
        let p = d.join(name);
        save_pytree_with(
            &p,
            &tutorial(),
            &SaveOptions {
                format: Some(Format::Native),
                ..SaveOptions::default()
            },
            None,
        )
        .unwrap();
        assert_eq!(load_pytree(&p, None, true).unwrap(), tutorial());
    }
    assert_eq!(Format::detect(&[0xd9, 0xd9, 0xf7, 0xa5]), Some(Format::Native));
    assert_eq!(Format::detect(b"garbage"), None);
}

#[test]
fn bp_name_routes_to_the_brainpy_writer() {
    let d = tempdir("bp");
    let p = d.join("a.bp");
    save_pytree(&p, &tutorial(), true, None, false).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(Format::detect(&bytes[..16]), Some(Format::BrainPy));
    assert_ne!(&bytes[..3], &[0xd9, 0xd9, 0xf7]);
    assert_eq!(load_pytree(&p, None, true).unwrap(), tutorial());
    // A codec's error surfaces typed, and neither the file nor a temp is left behind.
    let mut deep = Pytree::Int(1);
    for _ in 0..600 {
        deep = pytree! { "k" => deep };
    }
    let e = save_pytree(d.join("deep.bp"), &deep, true, None, false).unwrap_err();
    assert!(matches!(e, CheckpointError::BrainPy(_)), "{e}");
    assert_eq!(names(&d), ["a.bp"]);
    // Explicit formats work with any name and are detected by content on load.
    for (f, name) in [
        (Format::BrainPy, "x.msgpack"),
        (Format::Safetensors, "y"),
        (Format::Npz, "z"),
    ] {
        let o = SaveOptions {
            format: Some(f),
            ..SaveOptions::default()
        };
        save_pytree_with(d.join(name), &tutorial(), &o, None).unwrap();
        let bytes = std::fs::read(d.join(name)).unwrap();
        assert_eq!(Format::detect(&bytes[..16.min(bytes.len())]), Some(f), "{name}");
        load_pytree(d.join(name), None, true).unwrap();
    }
    // safetensors cannot hold complex tensors: typed error, nothing left behind.
    let o = SaveOptions {
        format: Some(Format::Safetensors),
        ..SaveOptions::default()
    };
    let c = pytree! { "c" => tensor(DType::C64, &[2], 0) };
    let e = save_pytree_with(d.join("c.st"), &c, &o, None).unwrap_err();
    assert!(matches!(e, CheckpointError::Interop(_)), "{e}");
    assert_eq!(names(&d), ["a.bp", "x.msgpack", "y", "z"]);
}

#[test]
fn overwrite_false_refuses_an_existing_file() {
    let d = tempdir("noover");
    let p = d.join("c");
    save_pytree(&p, &tutorial(), false, None, false).unwrap();
    let e = save_pytree(&p, &every_kind(), false, None, false).unwrap_err();
    assert!(matches!(e, CheckpointError::AlreadyExists { .. }), "{e}");
    assert_eq!(load_pytree(&p, None, true).unwrap(), tutorial());
    save_pytree(&p, &every_kind(), true, None, false).unwrap();
    assert!(same(&load_pytree(&p, None, true).unwrap(), &every_kind()));
    assert_eq!(names(&d), ["c"]);
}

#[test]
fn overwrite_false_race_has_exactly_one_winner() {
    // F12: many savers, target absent, no-replace commit: one wins, the others get AlreadyExists.
    for round in 0..10 {
        let d = tempdir(&format!("race{round}"));
        let p = d.join("c");
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..6)
                .map(|i| {
                    let p = p.clone();
                    s.spawn(move || {
                        let t = pytree! { "who" => i, "w" => tensor(DType::F32, &[1000], i as u8) };
                        save_pytree(&p, &t, false, None, false).map(|_| i)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<i64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|&i| i as i64))
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(matches!(e, CheckpointError::AlreadyExists { .. }), "{e}");
            }
        }
        let got = load_pytree(&p, None, true).unwrap();
        assert_eq!(got.get("who").unwrap().i64().unwrap(), winners[0]);
        assert_eq!(names(&d), ["c"]);
    }
}

#[test]
fn permissions_are_0666_less_umask_and_kept_on_overwrite() {
    let d = tempdir("perm");
    let p = d.join("c");
    // SAFETY: umask is process-wide; this test only reads it and restores it at once.
    let um = unsafe {
        let u = libc::umask(0o022);
        libc::umask(u);
        u
    } as u32;
    save_pytree(&p, &tutorial(), true, None, false).unwrap();
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666 & !um);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    save_pytree(&p, &every_kind(), true, None, false).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o640);
}

fn faulty(at: FaultAt, errno: i32) -> SaveOptions {
    SaveOptions {
        storage: Arc::new(FaultStorage::new(at, errno)),
        ..SaveOptions::default()
    }
}

#[test]
fn injected_faults_keep_the_old_file_and_leave_no_temp() {
    // F3/F4: ENOSPC or EIO at the Nth write, at fsync, at rename; each leaves the old file whole.
    let big = pytree! { "w" => tensor(DType::F64, &[50_000], 9), "s" => "new" };
    let mut cases = vec![
        (FaultAt::Sync, libc::EIO, "fsync"),
        (FaultAt::Sync, libc::ENOSPC, "fsync"),
        (FaultAt::Rename, libc::EIO, "rename"),
        (FaultAt::Create, libc::ENOSPC, "create temp file"),
    ];
    // The writer makes 3 write calls for this tree: buffered header, payload, buffered tail.
    for n in 0..3 {
        cases.push((FaultAt::Write(n), libc::ENOSPC, "write"));
        cases.push((FaultAt::Write(n), libc::EIO, "write"));
    }
    for (i, (at, errno, op)) in cases.into_iter().enumerate() {
        let d = tempdir(&format!("fault{i}"));
        let p = d.join("c");
        save_pytree(&p, &tutorial(), true, None, false).unwrap();
        for overwrite in [true, false] {
            let o = SaveOptions {
                overwrite,
                ..faulty(at, errno)
            };
            let target = if overwrite { p.clone() } else { d.join("fresh") };
            let e = save_pytree_with(&target, &big, &o, None).unwrap_err();
            match &e {
                CheckpointError::Io { op: got, source, .. } => {
                    assert_eq!(*got, op, "{at:?}: {e}");
                    assert_eq!(source.raw_os_error(), Some(errno), "{at:?}: {e}");
                }
                other => panic!("{at:?}: {other}"),
            }
            assert_eq!(load_pytree(&p, None, true).unwrap(), tutorial(), "{at:?}");
            assert_eq!(names(&d), ["c"], "{at:?} overwrite={overwrite}");
        }
    }
}

#[test]
fn failed_directory_fsync_is_reported() {
    let d = tempdir("dirsync");
    let p = d.join("c");
    let e = save_pytree_with(&p, &tutorial(), &faulty(FaultAt::SyncDir, libc::EIO), None).unwrap_err();
    assert!(
        matches!(
            e,
            CheckpointError::Io {
                op: "fsync directory",
                ..
            }
        ),
        "{e}"
    );
    // The rename happened; the file is whole, only its durability is unknown.
    assert_eq!(load_pytree(&p, None, true).unwrap(), tutorial());
}

#[test]
fn save_order_is_write_fsync_rename_fsync_dir() {
    let d = tempdir("order");
    let fs = FaultStorage::new(FaultAt::Write(usize::MAX), 0);
    let log = fs.log.clone();
    let o = SaveOptions {
        storage: Arc::new(fs),
        ..SaveOptions::default()
    };
    save_pytree_with(d.join("c"), &tutorial(), &o, None).unwrap();
    let log = log.lock().unwrap();
    assert!(
        log[0].starts_with("create ") && log[0].contains(".c.bst-tmp-"),
        "{log:?}"
    );
    assert_eq!(&log[1..], ["rename", "sync_dir"]);
    let o = SaveOptions {
        overwrite: false,
        fsync: false,
        ..SaveOptions::default()
    };
    save_pytree_with(d.join("e"), &tutorial(), &o, None).unwrap();
}

#[test]
fn stale_temps_of_dead_processes_are_cleaned_on_next_save() {
    let d = tempdir("stale");
    // A pid that cannot be alive (above the kernel's pid_max) and one that is (ours).
    let dead = d.join(".c.bst-tmp-4194305-0123456789abcdef");
    let mine = d.join(format!(".c.bst-tmp-{}-0123456789abcdef", std::process::id()));
    let other = d.join(".c.bst-tmp-x-notours");
    for f in [&dead, &mine, &other] {
        std::fs::write(f, b"partial").unwrap();
    }
    save_pytree(d.join("c"), &tutorial(), true, None, false).unwrap();
    assert!(!dead.exists());
    assert!(mine.exists() && other.exists());
}

#[test]
fn load_from_a_directory_takes_the_latest_committed() {
    let d = tempdir("dirload");
    let e = load_pytree(&d, None, true).unwrap_err();
    assert!(matches!(e, CheckpointError::EmptyDirectory { .. }), "{e}");
    save_pytree(d.join("old"), &tutorial(), true, None, false).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    save_pytree(d.join("new"), &every_kind(), true, None, false).unwrap();
    // An uncommitted (truncated) newer file and a stray temp are never picked.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let b = std::fs::read(d.join("new")).unwrap();
    std::fs::write(d.join("torn"), &b[..b.len() - 1]).unwrap();
    std::fs::write(d.join(".new.bst-tmp-1-0123456789abcdef"), &b).unwrap();
    assert!(same(&load_pytree(&d, None, true).unwrap(), &every_kind()));
}

#[test]
fn target_mismatch_names_every_path() {
    let d = tempdir("target");
    let p = d.join("c");
    save_pytree(&p, &tutorial(), true, None, false).unwrap();
    // Matching target: extra keys of the file are dropped.
    let target = pytree! { "epoch_i" => 0 };
    assert_eq!(
        load_pytree(&p, Some(&target), true).unwrap(),
        pytree! { "epoch_i" => 9 }
    );
    let bad = pytree! {
        "net" => pytree! {
            "Lif0" => pytree! {
                "Lif0.V" => tensor(DType::F32, &[11], 0),
                "Lif0.spike" => tensor(DType::F32, &[10], 0),
            },
            "Gone0" => Pytree::map(),
        },
        "epoch_i" => Pytree::List(vec![]),
    };
    let e = load_pytree(&p, Some(&bad), true).unwrap_err();
    let CheckpointError::Mismatch { problems, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(problems.len(), 4, "{e}");
    let s = e.to_string();
    for needle in [
        "net/Lif0/Lif0.V: checkpoint has f32[10], the target f32[11]",
        "net/Lif0/Lif0.spike: checkpoint has bool[10], the target f32[10]",
        "net/Gone0: missing in the checkpoint",
        "epoch_i: checkpoint has a int, the target a list",
    ] {
        assert!(s.contains(needle), "{needle} not in {s}");
    }
}

// ------------------------------------------------------------------ AsyncManager

#[test]
fn async_save_snapshots_before_returning() {
    // F7: mutate the tree right after save returns; the file holds the old values.
    let d = tempdir("asnap");
    let am = AsyncManager::new();
    let mut t = pytree! { "w" => tensor(DType::F32, &[1 << 18], 1) };
    let before = t.clone();
    let p = d.join("c");
    save_pytree(&p, &t, true, Some(&am), false).unwrap();
    if let Pytree::Map(m) = &mut t {
        m.insert("w".into(), tensor(DType::F32, &[1 << 18], 99).into());
    }
    assert_eq!(am.wait().unwrap(), Some(p.clone()));
    assert_eq!(load_pytree(&p, None, true).unwrap(), before);
    assert_eq!(am.wait().unwrap(), None);
}

#[test]
fn async_errors_surface_on_next_save_and_wait() {
    // F8: the background failure is returned by the next save (which then does not start).
    let d = tempdir("aerr");
    let am = AsyncManager::new();
    let o = SaveOptions {
        overwrite: false,
        ..SaveOptions::default()
    };
    save_pytree(d.join("x"), &tutorial(), true, None, false).unwrap();
    save_pytree_with(d.join("x"), &every_kind(), &o, Some(&am)).unwrap();
    let e = save_pytree(d.join("y"), &tutorial(), true, Some(&am), false).unwrap_err();
    assert!(matches!(e, CheckpointError::AlreadyExists { .. }), "{e}");
    assert!(!d.join("y").exists());
    // And through wait().
    save_pytree_with(
        d.join("x"),
        &every_kind(),
        &faulty(FaultAt::Sync, libc::EIO),
        Some(&am),
    )
    .unwrap();
    let e = am.wait().unwrap_err();
    assert!(matches!(e, CheckpointError::Io { op: "fsync", .. }), "{e}");
    assert_eq!(load_pytree(d.join("x"), None, true).unwrap(), tutorial());
}

#[test]
fn async_keeps_one_in_flight_in_order_and_drop_waits() {
    let d = tempdir("aorder");
    {
        let am = AsyncManager::new();
        for i in 0..5i64 {
            let t = pytree! { "i" => i, "w" => tensor(DType::F32, &[1 << 16], i as u8) };
            save_pytree(d.join("c"), &t, true, Some(&am), false).unwrap();
            save_pytree(d.join(format!("c{i}")), &t, true, Some(&am), false).unwrap();
        }
    } // drop waits
    assert_eq!(
        load_pytree(d.join("c"), None, true)
            .unwrap()
            .get("i")
            .unwrap()
            .i64()
            .unwrap(),
        4
    );
    for i in 0..5 {
        assert!(d.join(format!("c{i}")).exists());
    }
    assert_eq!(names(&d).len(), 6);
}

#[test]
fn errors_stay_small_enough_to_return_by_value() {
    // Callers wrap CheckpointError with a path; keep that under clippy's 128-byte large-Err bound.
    assert!(std::mem::size_of::<CheckpointError>() <= 96);
    assert!(std::mem::size_of::<FormatError>() <= 64);
}

/// A tree whose 20 tensors of 64 KiB and up all get their CRC on the second thread under
/// [`overlap_all`].
fn overlap_tree() -> Pytree {
    let mut t = pytree! { "meta" => "x", "small" => tensor(DType::F32, &[3], 1) };
    for i in 0..20u8 {
        t = t.with(
            format!("w{i:02}"),
            tensor(DType::F64, &[8192 + 37 * i as usize], i),
        );
    }
    t
}

fn overlap_all(placeholder: u32) -> native::Overlap {
    native::Overlap {
        min_total: 0,
        min_tensor: 4096,
        placeholder,
    }
}

#[test]
fn overlapped_save_writes_the_same_bytes() {
    // The default placeholder (header laid out with the longest CRCs) and a short one, which
    // makes the real header at least 80 bytes longer, so the payloads move and the file is
    // written again in one pass.
    let d = tempdir("overlap");
    let tree = overlap_tree();
    let want = native::encode(&tree).unwrap();
    for (i, placeholder) in [u32::MAX, 0].into_iter().enumerate() {
        let plan = native::Plan::deferred(&tree, None, 64, overlap_all(placeholder)).unwrap();
        assert!(plan.has_deferred());
        let p = d.join(format!("c{i}"));
        write_native_file(&p, &tree, None, &SaveOptions::default(), overlap_all(placeholder)).unwrap();
        assert!(std::fs::read(&p).unwrap() == want, "placeholder {placeholder:#x}");
    }
    assert_eq!(names(&d), ["c0", "c1"]);
}

#[test]
fn overlapped_save_faults_keep_the_old_file_and_leave_no_temp() {
    // Fail each write call in turn (sequential and positional, in both passes when the file
    // is written twice) until the save makes fewer calls than that and succeeds.
    let d = tempdir("overlapfault");
    let p = d.join("c");
    let tree = overlap_tree();
    for placeholder in [u32::MAX, 0] {
        for n in 0.. {
            save_pytree(&p, &tutorial(), true, None, false).unwrap();
            let o = faulty(FaultAt::Write(n), libc::ENOSPC);
            match write_native_file(&p, &tree, None, &o, overlap_all(placeholder)) {
                Ok(()) => {
                    assert!(n >= 20, "only {n} write calls");
                    assert!(load_pytree(&p, None, true).unwrap() == tree);
                    break;
                }
                Err(CheckpointError::Io { op, source, .. }) => {
                    assert_eq!(op, "write", "{n}");
                    assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{n}");
                }
                Err(other) => panic!("{n}: {other}"),
            }
            assert_eq!(load_pytree(&p, None, true).unwrap(), tutorial(), "{n}");
            assert_eq!(names(&d), ["c"], "{n}");
        }
    }
}

/// A storage whose files only write sequentially (the default `StorageFile::write_all_at`).
struct SequentialOnly;
struct SeqFile(std::fs::File);
impl std::io::Write for SeqFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
impl StorageFile for SeqFile {
    fn sync_all(&mut self) -> std::io::Result<()> {
        self.0.sync_all()
    }
}
impl Storage for SequentialOnly {
    fn create_new(&self, path: &Path, _mode: Option<u32>) -> std::io::Result<Box<dyn StorageFile>> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(SeqFile(f)))
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        OsStorage.rename(from, to)
    }
    fn rename_noreplace(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        OsStorage.rename_noreplace(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        OsStorage.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        OsStorage.sync_dir(dir)
    }
}

#[test]
fn storage_without_positional_writes_gets_the_same_bytes() {
    let d = tempdir("seqonly");
    let tree = overlap_tree();
    let want = native::encode(&tree).unwrap();
    let o = SaveOptions {
        storage: Arc::new(SequentialOnly),
        ..SaveOptions::default()
    };
    for (i, placeholder) in [u32::MAX, 0].into_iter().enumerate() {
        let p = d.join(format!("c{i}"));
        write_native_file(&p, &tree, None, &o, overlap_all(placeholder)).unwrap();
        assert!(std::fs::read(&p).unwrap() == want, "placeholder {placeholder:#x}");
    }
    assert_eq!(names(&d), ["c0", "c1"]);
}
