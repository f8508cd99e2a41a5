//! Crash tests (D.1 F1, F5, F9; D.3 L6): a real child process is SIGKILLed in the middle of saves.
//!
//! The child is this test binary re-run with `BST_CRASH_CHILD` set, on the `child_*` entry
//! points, which do nothing in a normal run.

mod common_ckpt;
use brainstate_core::ckpt::{load_pytree, save_pytree, CheckpointManager, ManagerOptions};
use brainstate_core::{pytree, DType, Pytree};
use common_ckpt::*;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

const ENV: &str = "BST_CRASH_CHILD";

fn version(i: u8) -> Pytree {
    pytree! { "version" => i, "w" => tensor(DType::F32, &[1 << 20], i), "b" => tensor(DType::U8, &[1000], i) }
}

fn spawn(entry: &str, arg: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", entry, "--nocapture", "--test-threads=1"])
        .env(ENV, arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Child: saves versions 1 and 2 alternately into the file, forever.
#[test]
fn child_file_saver() {
    let Some(p) = std::env::var_os(ENV) else { return };
    let (a, b) = (version(1), version(2));
    let ready = Path::new(&p).with_extension("ready");
    loop {
        save_pytree(&p, &a, true, None, false).unwrap();
        if !ready.exists() {
            std::fs::write(&ready, b"").unwrap();
        }
        save_pytree(&p, &b, true, None, false).unwrap();
    }
}

/// Child: a manager keeping the last 2 saves steps after the latest, forever.
#[test]
fn child_manager_saver() {
    let Some(d) = std::env::var_os(ENV) else { return };
    let o = ManagerOptions {
        keep_last: Some(2),
        ..ManagerOptions::default()
    };
    let mut m = CheckpointManager::open(&d, o).unwrap();
    let first = m.latest_step().map_or(0, |s| s + 1);
    let mut s = first;
    let ready = Path::new(&d).with_extension("ready");
    loop {
        if s > first && !ready.exists() {
            std::fs::write(&ready, b"").unwrap();
        }
        m.save(
            s,
            &pytree! { "step" => s, "w" => tensor(DType::F32, &[1 << 18], s as u8) },
            None,
        )
        .unwrap();
        s += 1;
    }
}

/// Child: one verbose save (its stdout is checked by the parent).
#[test]
fn child_verbose_saver() {
    let Some(p) = std::env::var_os(ENV) else { return };
    save_pytree(&p, &version(1), true, None, true).unwrap();
}

#[test]
fn verbose_prints_the_file_name() {
    if std::env::var_os(ENV).is_some() {
        return;
    }
    let d = tempdir("verbose");
    let p = d.join("snn.ckpt");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_verbose_saver",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV, &p)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("Saving checkpoint into {}\n", p.display())),
        "{stdout}"
    );
    assert_eq!(load_pytree(&p, None, true).unwrap(), version(1));
}

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn killed_saves_leave_the_old_or_the_new_file() {
    if std::env::var_os(ENV).is_some() {
        return;
    }
    let d = tempdir("crash_file");
    let p = d.join("ckpt");
    let (a, b) = (version(1), version(2));
    save_pytree(&p, &a, true, None, false).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut orphans = 0;
    for i in 0..60 {
        let ready = p.with_extension("ready");
        let _ = std::fs::remove_file(&ready);
        let mut child = spawn("child_file_saver", &p);
        let t0 = std::time::Instant::now();
        while !ready.exists() {
            assert!(t0.elapsed() < Duration::from_secs(30), "child never saved");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng(&mut seed) % 25));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let got = load_pytree(&p, None, true).unwrap_or_else(|e| panic!("iteration {i}: {e}"));
        assert!(got == a || got == b, "iteration {i}: neither old nor new");
        let _ = std::fs::remove_file(&ready);
        orphans += std::fs::read_dir(&d).unwrap().count() - 1;
    }
    eprintln!("{orphans} orphaned temp files from killed saves");
    assert!(
        orphans > 0,
        "no kill landed in the middle of a save: the test proves nothing"
    );
    // The next save into the folder removes them.
    save_pytree(&p, &a, true, None, false).unwrap();
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
}

#[test]
fn killed_managers_leave_whole_committed_steps() {
    if std::env::var_os(ENV).is_some() {
        return;
    }
    let d = tempdir("crash_mgr");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut last_seen = None;
    for i in 0..20 {
        let ready = d.with_extension("ready");
        let _ = std::fs::remove_file(&ready);
        let mut child = spawn("child_manager_saver", &d);
        let t0 = std::time::Instant::now();
        while !ready.exists() {
            assert!(t0.elapsed() < Duration::from_secs(30), "child never saved");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng(&mut seed) % 40));
        child.kill().unwrap();
        child.wait().unwrap();
        // The dead child's lock does not block us (the kernel released it).
        let o = ManagerOptions {
            keep_last: Some(2),
            ..ManagerOptions::default()
        };
        let m = CheckpointManager::open(&d, o).unwrap_or_else(|e| panic!("iteration {i}: {e}"));
        let steps = m.steps();
        // Retention deletes only after a commit: at most keep + 1 steps can be on disk.
        assert!(steps.len() <= 3, "iteration {i}: {steps:?}");
        for &s in &steps {
            let t = m
                .restore(Some(s))
                .unwrap_or_else(|e| panic!("iteration {i} step {s}: {e}"));
            assert_eq!(t.get("step").unwrap().i64().unwrap(), s as i64);
        }
        // Steps only move forward (the committed set is a prefix of the issued order).
        if let (Some(prev), Some(now)) = (last_seen, m.latest_step()) {
            assert!(
                now >= prev,
                "iteration {i}: latest went back from {prev} to {now}"
            );
        }
        last_seen = m.latest_step().or(last_seen);
        let temps = std::fs::read_dir(&d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".bst-tmp-")
            })
            .count();
        assert_eq!(temps, 0, "iteration {i}: opening the manager cleans stale temps");
    }
    assert!(last_seen.is_some_and(|s| s > 0));
}

/// Child: a manager keeping the last 3 saves small steps forever, reporting its open file
/// descriptors every 50 saves.
#[test]
fn child_soak_saver() {
    let Some(d) = std::env::var_os(ENV) else { return };
    let d = Path::new(&d);
    let o = ManagerOptions {
        keep_last: Some(3),
        ..ManagerOptions::default()
    };
    let mut m = CheckpointManager::open(d, o).unwrap();
    let mut s = m.latest_step().map_or(0, |s| s + 1);
    let status = d.with_extension("fds");
    loop {
        m.save(
            s,
            &pytree! { "step" => s, "w" => tensor(DType::F32, &[64], s as u8) },
            None,
        )
        .unwrap();
        if s.is_multiple_of(50) {
            let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |r| r.count());
            std::fs::write(&status, format!("{s} {fds}")).unwrap();
        }
        s += 1;
    }
}

/// Soak (D.3 L6): 10,000 managed saves with `keep_last = 3`, the saver killed every few dozen
/// saves. On every restart: at most 3 + 1 committed steps (retention runs after the commit), no
/// orphaned temps once the manager is open, the latest step loads, the folder stays small, and
/// the saver's open file descriptors do not grow.
#[test]
fn soak_ten_thousand_saves_with_kills() {
    if std::env::var_os(ENV).is_some() {
        return;
    }
    let d = tempdir("soak");
    let status = d.with_extension("fds");
    let mut seed = 0x1234_5678_9abc_def1u64;
    let (mut kills, mut fds_seen) = (0, Vec::new());
    let t0 = std::time::Instant::now();
    loop {
        let mut child = spawn("child_soak_saver", &d);
        std::thread::sleep(Duration::from_millis(40 + rng(&mut seed) % 200));
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        let o = ManagerOptions {
            keep_last: Some(3),
            ..ManagerOptions::default()
        };
        let m = CheckpointManager::open(&d, o).unwrap_or_else(|e| panic!("restart {kills}: {e}"));
        let steps = m.steps();
        assert!(steps.len() <= 4, "restart {kills}: {steps:?}");
        if let Some(s) = m.latest_step() {
            let t = m
                .restore(None)
                .unwrap_or_else(|e| panic!("restart {kills} step {s}: {e}"));
            assert_eq!(t.get("step").unwrap().i64().unwrap(), s as i64);
        }
        let (mut files, mut bytes) = (0, 0);
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(!name.contains(".bst-tmp-"), "restart {kills}: orphan {name}");
            files += 1;
            bytes += e.metadata().unwrap().len();
        }
        assert!(
            files <= 5 && bytes < 64 << 10,
            "restart {kills}: {files} files, {bytes} B"
        );
        if let Ok(st) = std::fs::read_to_string(&status) {
            if let Some((_, f)) = st.split_once(' ') {
                fds_seen.push(f.parse::<usize>().unwrap());
            }
        }
        if m.latest_step().is_some_and(|s| s >= 10_000) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "soak too slow: {:?}",
            m.latest_step()
        );
    }
    let (min, max) = (fds_seen.iter().min().copied(), fds_seen.iter().max().copied());
    eprintln!("soak: {kills} kills; the saver held {min:?}..={max:?} file descriptors");
    assert!(kills >= 10, "only {kills} kills");
    assert!(
        max.is_some_and(|m| m <= 32),
        "the saver held up to {max:?} file descriptors"
    );
}
