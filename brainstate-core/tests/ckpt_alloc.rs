//! Hostile declared lengths never drive allocation: the decoder's peak extra memory stays
//! within the input's size plus a small fixed cap (a counting global allocator measures it).

use brainstate_core::ckpt::native::{decode, encode, push_padding};
use brainstate_core::{pytree, Tensor};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

struct Counting;
static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = IN_USE.fetch_add(l.size(), Ordering::SeqCst) + l.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        // SAFETY: forwarded to the system allocator with the same layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        IN_USE.fetch_sub(l.size(), Ordering::SeqCst);
        // SAFETY: p was allocated by System with layout l.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Runs one whole test at a time: the counters are process-wide, so another test allocating
/// (even while building its inputs) would show up in this test's peak.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Peak bytes allocated on top of what was in use when `f` started (call under [`serial`]).
fn peak_extra(f: impl FnOnce()) -> usize {
    let base = IN_USE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst) - base
}

fn file_with_tree(tree: &[u8]) -> Vec<u8> {
    // Header {fmt, ver, tree: <tree>} then padding and a trailer-like tail of zeros.
    let mut h = vec![0xd9, 0xd9, 0xf7, 0xa3, 0x63, b'f', b'm', b't', 0x6f];
    h.extend_from_slice(b"brainstate-ckpt");
    h.extend_from_slice(&[0x63, b'v', b'e', b'r', 0x82, 1, 0, 0x64, b't', b'r', b'e', b'e']);
    h.extend_from_slice(tree);
    push_padding(&mut h, 4096);
    h
}

const CAP: usize = 64 * 1024;

#[test]
fn hostile_lengths_allocate_nothing_big() {
    let _serial = serial();
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for head in [
        vec![0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // bytes of 2^64-1
        vec![0x7b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // text of 2^63-1
        vec![0x5a, 0xff, 0xff, 0xff, 0xff],                         // bytes of 2^32-1
        vec![0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // array of 2^64-1
        vec![0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // map of 2^64-1
        vec![0x9a, 0xff, 0xff, 0xff, 0xff],                         // array of 2^32-1
    ] {
        cases.push(file_with_tree(&head));
    }
    // Deep nesting.
    cases.push(file_with_tree(&vec![0x81; 100_000]));
    cases.push(file_with_tree(&[0xa1, 0x61, b'k'].repeat(50_000)));
    for c in &cases {
        let extra = peak_extra(|| {
            assert!(decode(c).is_err());
        });
        assert!(
            extra <= c.len() + CAP,
            "{} bytes allocated for a {}-byte input",
            extra,
            c.len()
        );
    }
}

#[test]
fn tensors_claiming_more_than_the_file_allocate_nothing_big() {
    let _serial = serial();
    // A real file with its `len` patched (LengthMismatch), and a truncated one.
    let f = encode(&pytree! { "w" => Tensor::from_vec(&[4], vec![1u8, 2, 3, 4]).unwrap() }).unwrap();
    let mut g = f.clone();
    let at = f.windows(4).position(|w| w == b"clen").unwrap() + 4;
    g[at] = 0x17; // len 23 instead of 4: LengthMismatch, no allocation
    for input in [&g[..], &f[..f.len() / 2]] {
        let extra = peak_extra(|| {
            assert!(decode(input).is_err());
        });
        assert!(extra <= input.len() + CAP, "{extra}");
    }
    // And a valid load allocates about the payload plus the tree, not more.
    let extra = peak_extra(|| {
        decode(&f).unwrap();
    });
    assert!(extra <= f.len() + CAP, "{extra}");
}
