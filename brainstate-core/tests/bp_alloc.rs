//! The reader allocates by what the input holds, never by what it claims: a counting allocator
//! records the largest single allocation and the peak while decoding hostile and valid files.
//! (One test in this binary, so no other test allocates at the same time.)

use brainstate_core::bpformat;
use brainstate_core::{Pytree, Tensor};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(l.size(), Relaxed) + l.size();
        PEAK.fetch_max(now, Relaxed);
        LARGEST.fetch_max(l.size(), Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(l.size(), Relaxed) + l.size();
        PEAK.fetch_max(now, Relaxed);
        LARGEST.fetch_max(l.size(), Relaxed);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CURRENT.fetch_sub(l.size(), Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > l.size() {
            let now = CURRENT.fetch_add(new - l.size(), Relaxed) + new - l.size();
            PEAK.fetch_max(now, Relaxed);
        } else {
            CURRENT.fetch_sub(l.size() - new, Relaxed);
        }
        LARGEST.fetch_max(new, Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// (largest single allocation, peak above the starting level) while decoding `b`.
fn measure(b: &[u8]) -> (usize, usize, bool) {
    let base = CURRENT.load(Relaxed);
    LARGEST.store(0, Relaxed);
    PEAK.store(base, Relaxed);
    let ok = bpformat::decode(b).is_ok();
    (LARGEST.load(Relaxed), PEAK.load(Relaxed) - base, ok)
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn allocations_follow_the_input_not_its_claims() {
    // Headers claiming 2^32 - 1 bytes or items, 2^64-byte arrays, 65535-entry maps, deep nesting:
    // each costs a few KiB at most (paths and the error message), whatever it claims.
    let mut hostile = vec![
        hex("dbffffffff 00000000"),
        hex("c6ffffffff 00000000"),
        hex("ddffffffff 00000000"),
        hex("dfffffffff 00000000"),
        hex("c9ffffffff 01 00000000"),
        hex("deffff"),
        hex("c7 1a 01 93 92 cf0000000100000000 cf0000000100000000 a7 666c6f61743332 c4 00"),
        hex("c7 13 01 93 91 cf0000010000000000 a7 666c6f61743332 c4 00"),
    ];
    let mut deep = hex("91").repeat(100_000);
    deep.push(0xc0);
    hostile.push(deep.clone());
    for b in &hostile {
        let (largest, peak, ok) = measure(b);
        assert!(!ok);
        assert!(
            largest <= 16 * 1024,
            "{:02x?}...: largest allocation {largest}",
            &b[..b.len().min(8)]
        );
        assert!(
            peak <= 64 * 1024 + 16 * b.len().min(MAX_NODES_BYTES),
            "peak {peak}"
        );
    }
    // A map16 claiming 65535 entries backed by 131070 bytes of real (nil-keyed) input: the error
    // comes at the first non-string key, after a bounded preallocation.
    let mut b = hex("deffff");
    b.extend(vec![0xc0; 131_070]);
    let (largest, _, ok) = measure(&b);
    assert!(!ok);
    assert!(largest <= 16 * 1024, "largest {largest}");

    // A valid 16 MiB float32 array: one allocation of the data's size, peak about the same.
    let n = 4 << 20;
    let t = Pytree::map().with(
        "w",
        Pytree::Tensor(Tensor::from_vec(&[n], vec![1.5f32; n]).unwrap()),
    );
    let file = bpformat::to_vec(&t).unwrap();
    let (largest, peak, ok) = measure(&file);
    assert!(ok);
    assert_eq!(largest, 4 * n, "the tensor buffer is the largest allocation");
    assert!(
        peak <= 4 * n + 64 * 1024,
        "peak {peak} for a {} byte file",
        file.len()
    );

    // The same array chunked in 1 MiB pieces: joined straight into one buffer (no second copy).
    let file = bpformat::to_vec_with(
        &t,
        &bpformat::WriteOptions {
            max_chunk_bytes: 1 << 20,
        },
    )
    .unwrap();
    let (largest, peak, ok) = measure(&file);
    assert!(ok);
    assert_eq!(largest, 4 * n);
    assert!(peak <= 4 * n + 64 * 1024, "chunked peak {peak}");
}

/// Tree nodes cost memory in proportion to the items really present (about 100 bytes a node);
/// the bound above only matters for the deep-nesting case, which stops at `MAX_DEPTH` nodes.
const MAX_NODES_BYTES: usize = 4096;
