//! Worker threads for the large matrix products and the element-wise layer loops.
//!
//! Work is split into a fixed number of parts at fixed places (halves of the columns of a
//! product, halves of the elements of a layer's state), and every part computes its values in the
//! same order as one thread would, so results are bit-identical whatever the thread count.

use ndarray::{ArrayView2, ArrayViewMut2, Axis};

/// Number of threads the layers use: `BRAINSTATE_NUM_THREADS`, else `MATMUL_NUM_THREADS`, else
/// the number of cores (at most 2 are used); 1 without the `threading` feature. Read once.
pub fn num_threads() -> usize {
    if helper().is_some() {
        2
    } else {
        1
    }
}

#[cfg(feature = "threading")]
fn helper() -> Option<&'static pool::Helper> {
    use std::sync::OnceLock;
    static HELPER: OnceLock<Option<&'static pool::Helper>> = OnceLock::new();
    *HELPER.get_or_init(|| {
        let from_env = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse::<usize>().ok());
        let n = from_env("BRAINSTATE_NUM_THREADS")
            .or_else(|| from_env("MATMUL_NUM_THREADS"))
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if n < 2 {
            return None;
        }
        pool::Helper::start()
    })
}

#[cfg(not(feature = "threading"))]
fn helper() -> Option<&'static ()> {
    None
}

/// True when work of `size` elements is worth splitting across the threads.
pub(crate) fn worth(size: usize) -> bool {
    size >= 1 << 15 && num_threads() > 1
}

/// Runs `a` and `b`, in parallel when there is more than one thread: `a` on the calling
/// thread, `b` on the helper thread (both on the caller when the helper is busy, e.g. in a nested
/// call or from another thread).
pub(crate) fn join<A, B>(a: A, b: B)
where
    A: FnOnce() + Send,
    B: FnOnce() + Send,
{
    #[cfg(feature = "threading")]
    if let Some(h) = helper() {
        h.join(a, b);
        return;
    }
    a();
    b();
}

/// Where to split `len` elements in two: the middle, rounded to a multiple of 64 (whole cache
/// lines, whole vectors).
pub(crate) fn mid(len: usize) -> usize {
    (len / 2) & !63
}

/// Runs `f` over `(x, y)` element chunks, in two parts when large: `f(x_part, y_part)`.
pub(crate) fn zip2<A: Send, B: Send + Sync>(x: &mut [A], y: &[B], f: impl Fn(&mut [A], &[B]) + Sync) {
    if worth(x.len()) && y.len() == x.len() {
        let m = mid(x.len());
        let (x0, x1) = x.split_at_mut(m);
        let (y0, y1) = y.split_at(m);
        join(|| f(x0, y0), || f(x1, y1));
    } else {
        f(x, y);
    }
}

/// `c = alpha a b + beta c`, split over halves of the columns of `b` and `c` (or, for narrow
/// products, of the rows of `a` and `c`) when the product is large; each half is the same
/// product for its part, so the values do not change. Splits fall on multiples of 16 (the
/// AVX-512 kernels' tile width) and leave at least 128 columns (rows) in each half, so a half
/// takes the same blocking of the inner dimension as the whole product.
pub(crate) fn gemm(
    alpha: f32,
    a: &ArrayView2<'_, f32>,
    b: &ArrayView2<'_, f32>,
    beta: f32,
    c: &mut ArrayViewMut2<'_, f32>,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    if !worth(m * k * n / 64) {
        product(alpha, a, b, beta, c);
    } else if n >= 256 {
        let at = (n / 2) & !15;
        let (b0, b1) = b.view().split_at(Axis(1), at);
        let (mut c0, mut c1) = c.view_mut().split_at(Axis(1), at);
        join(
            || product(alpha, a, &b0, beta, &mut c0),
            || product(alpha, a, &b1, beta, &mut c1),
        );
    } else if m >= 256 {
        let at = (m / 2) & !15;
        let (a0, a1) = a.view().split_at(Axis(0), at);
        let (mut c0, mut c1) = c.view_mut().split_at(Axis(0), at);
        join(
            || product(alpha, &a0, b, beta, &mut c0),
            || product(alpha, &a1, b, beta, &mut c1),
        );
    } else {
        product(alpha, a, b, beta, c);
    }
}

/// `c = alpha a b + beta c` on the calling thread: the `gemm` crate's kernels (AVX-512, else
/// AVX2/FMA, chosen at run time; about 1.3x matrixmultiply's sgemm on this project's shapes),
/// or ndarray's product through the system OpenBLAS with the `openblas` feature. `c` is not
/// read when `beta` is 0.
fn product(
    alpha: f32,
    a: &ArrayView2<'_, f32>,
    b: &ArrayView2<'_, f32>,
    beta: f32,
    c: &mut ArrayViewMut2<'_, f32>,
) {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(
        k == k2 && c.dim() == (m, n),
        "product of {m}x{k} and {k2}x{n} into {:?}",
        c.dim()
    );
    if cfg!(feature = "openblas") {
        ndarray::linalg::general_mat_mul(alpha, a, b, beta, c);
        return;
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // Nothing to add: `c = beta c`, with `c` not read when beta is 0.
        if beta == 0.0 {
            c.fill(0.0);
        } else {
            c.mapv_inplace(|v| v * beta);
        }
        return;
    }
    let (sa, sb) = (a.strides(), b.strides());
    let (rsc, csc) = (c.strides()[0], c.strides()[1]);
    // SAFETY: each pointer and its strides are those of a view holding the stated m x k, k x n
    // and m x n elements, so every element the product touches is in bounds; `c` is borrowed
    // mutably and so overlaps neither `a` nor `b`.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            csc,
            rsc,
            beta != 0.0,
            a.as_ptr(),
            sa[1],
            sa[0],
            b.as_ptr(),
            sb[1],
            sb[0],
            beta,
            alpha,
            false,
            false,
            false,
            ::gemm::Parallelism::None,
        )
    }
}

/// `dst.copy_from_slice(src)` with non-temporal stores (x86-64: no read of the destination's
/// cache lines, which are not kept in cache either); call [`stream_fence`] before the values are
/// handed to another thread.
#[inline(always)]
pub(crate) fn store_stream(dst: &mut [f32], src: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_stream_ps};
        let n = dst.len();
        assert_eq!(n, src.len(), "store_stream: equal lengths");
        let head = dst.as_ptr().align_offset(16).min(n);
        dst[..head].copy_from_slice(&src[..head]);
        let end = head + (n - head) / 4 * 4;
        let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
        for k in (head..end).step_by(4) {
            // SAFETY: `k + 4 <= end <= n` = both lengths, so both 4-value ranges are in bounds;
            // `d + k` is 16-byte aligned (`head` aligns it and `k - head` is a multiple of 4).
            unsafe { _mm_stream_ps(d.add(k), _mm_loadu_ps(s.add(k))) };
        }
        dst[end..].copy_from_slice(&src[end..]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

/// Orders the non-temporal stores of [`store_stream`] before later stores (x86-64 `sfence`).
#[inline(always)]
pub(crate) fn stream_fence() {
    #[cfg(target_arch = "x86_64")]
    #[allow(unused_unsafe)]
    // SAFETY: `sfence` has no preconditions (SSE is part of x86-64).
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// Runs `f` compiled for the widest vector instructions the CPU has (AVX-512, else AVX2 on
/// x86-64; as is elsewhere). Only the instruction width changes: the compiler forms no fused
/// multiply-adds (only explicit `mul_add` is one), so results are the same bits as the baseline
/// build.
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,avx,fma,popcnt,bmi1,bmi2")]
        unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,avx,fma,popcnt,bmi1,bmi2")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("bmi2")
        {
            // SAFETY: the CPU has every feature the function is compiled for (checked above).
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("bmi2")
        {
            // SAFETY: as above, for AVX2.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// One persistent helper thread: the caller of [`join`] runs one half itself and offers the other
/// to the helper, which spins briefly between jobs (steps come every few hundred microseconds)
/// and then sleeps. A caller that finishes its half before the helper has taken the other (the
/// helper asleep, or its core busy with another program) takes it back and runs it itself, so a
/// busy machine costs parallelism, not waiting. No allocation per job.
#[cfg(feature = "threading")]
mod pool {
    use std::any::Any;
    use std::cell::UnsafeCell;
    use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};

    /// How long the idle helper spins before it sleeps.
    const SPIN: Duration = Duration::from_micros(100);
    /// Phases of the job in `state` (its low two bits; the job's number is above them).
    const POSTED: u64 = 1;
    const TAKEN: u64 = 2;

    type Job = *mut (dyn FnMut() + Send);

    pub(super) struct Helper {
        /// Held by the one caller whose job the helper may run (others run both halves).
        owner: Mutex<()>,
        /// Number of jobs posted (written under `owner`).
        posted: AtomicU64,
        /// `number << 2 | phase` of the latest job: POSTED by the caller, then TAKEN by the
        /// helper or taken back by the caller (phase 0), each by compare-and-swap.
        state: AtomicU64,
        /// Number of the latest job the helper finished.
        done: AtomicU64,
        job: UnsafeCell<Option<Job>>,
        panic: Mutex<Option<Box<dyn Any + Send>>>,
        sleeping: AtomicBool,
        lock: Mutex<()>,
        wake: Condvar,
    }

    // SAFETY: `job` is written only by the caller holding `owner`, before it publishes the job
    // in `state` (SeqCst), and read only by the helper after its compare-and-swap to TAKEN
    // succeeds on that job's state; the caller then does not touch it until the helper has
    // published `done` for that job, and a job taken back is never read by the helper.
    unsafe impl Sync for Helper {}

    impl Helper {
        pub(super) fn start() -> Option<&'static Helper> {
            let h: &'static Helper = Box::leak(Box::new(Helper {
                owner: Mutex::new(()),
                posted: AtomicU64::new(0),
                state: AtomicU64::new(0),
                done: AtomicU64::new(0),
                job: UnsafeCell::new(None),
                panic: Mutex::new(None),
                sleeping: AtomicBool::new(false),
                lock: Mutex::new(()),
                wake: Condvar::new(),
            }));
            std::thread::Builder::new()
                .name("brainstate-helper".into())
                .spawn(move || h.run())
                .ok()?;
            Some(h)
        }

        fn run(&self) {
            loop {
                let t0 = Instant::now();
                let mut spins = 0u32;
                let s = loop {
                    let s = self.state.load(Acquire);
                    if s & 3 == POSTED {
                        break s;
                    }
                    // A few pauses, then yields: on an idle core a yield returns at once, and on a
                    // core shared with the caller (a busy machine) it lets the caller run.
                    spins = spins.wrapping_add(1);
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                    if spins & 15 == 0 && t0.elapsed() > SPIN {
                        let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                        self.sleeping.store(true, SeqCst);
                        while self.state.load(SeqCst) & 3 != POSTED {
                            g = self.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                        }
                        self.sleeping.store(false, SeqCst);
                    }
                };
                if self
                    .state
                    .compare_exchange(s, s - POSTED + TAKEN, AcqRel, Acquire)
                    .is_err()
                {
                    continue; // taken back by the caller
                }
                // SAFETY: the caller stored the job before posting `s`, and keeps it (and all
                // it borrows) alive until `done` reaches this job's number (see `join`).
                let job = unsafe { (*self.job.get()).take() };
                if let Some(job) = job {
                    // SAFETY: as above; the job runs once, on this thread only.
                    let r = catch_unwind(AssertUnwindSafe(|| unsafe { (*job)() }));
                    if let Err(p) = r {
                        *self.panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
                    }
                }
                self.done.store(s >> 2, Release);
            }
        }

        /// Takes job `n` back if the helper has not taken it (true), else waits until the
        /// helper has finished it (false).
        fn reclaim_or_wait(&self, n: u64) -> bool {
            let posted = n << 2 | POSTED;
            if self
                .state
                .compare_exchange(posted, n << 2, AcqRel, Acquire)
                .is_ok()
            {
                return true;
            }
            let mut spins = 0u32;
            while self.done.load(Acquire) < n {
                spins = spins.wrapping_add(1);
                // A few pauses, then yields (the helper may share this core or have lost its).
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            false
        }

        pub(super) fn join<A, B>(&self, a: A, b: B)
        where
            A: FnOnce() + Send,
            B: FnOnce() + Send,
        {
            let Ok(_owner) = self.owner.try_lock() else {
                a();
                b();
                return;
            };
            let mut b = Some(b);
            let mut call_b = || {
                if let Some(b) = b.take() {
                    b()
                }
            };
            let job: &mut (dyn FnMut() + Send) = &mut call_b;
            // SAFETY: erases the lifetime of a borrow of `call_b`, which lives on this stack
            // frame; the frame is not left (by return or unwinding: see `Settle`) before the
            // job is taken back or the helper has finished it.
            let job: Job = unsafe { std::mem::transmute::<&mut (dyn FnMut() + Send), Job>(job) };
            // SAFETY: we hold `owner` and every earlier job was taken back or finished, so the
            // helper does not read `job` now.
            unsafe { *self.job.get() = Some(job) };
            let n = self.posted.load(Relaxed) + 1;
            self.posted.store(n, Relaxed);
            self.state.store(n << 2 | POSTED, SeqCst);
            if self.sleeping.load(SeqCst) {
                let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.wake.notify_one();
            }
            /// Settles job `n` if `a` unwinds: taken back (not run) or waited for.
            struct Settle<'a>(&'a Helper, u64);
            impl Drop for Settle<'_> {
                fn drop(&mut self) {
                    if !self.0.reclaim_or_wait(self.1) {
                        // `a` panicked: that panic goes on; one of `b` is dropped.
                        self.0.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
                    }
                }
            }
            let settle = Settle(self, n);
            a();
            std::mem::forget(settle);
            if self.reclaim_or_wait(n) {
                // SAFETY: taken back: the helper never runs this job, and it is still alive.
                unsafe { (*job)() };
            } else if let Some(p) = self.panic.lock().unwrap_or_else(|e| e.into_inner()).take() {
                resume_unwind(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_runs_both_halves_nested_and_from_many_threads() {
        std::thread::scope(|s| {
            for t in 0..4u32 {
                s.spawn(move || {
                    for i in 0..200u32 {
                        let (mut a, mut b, mut c) = (0, 0, 0);
                        join(|| a = i + t, || join(|| b = 2 * i, || c = 3 * i));
                        assert_eq!((a, b, c), (i + t, 2 * i, 3 * i));
                    }
                });
            }
        });
    }

    #[test]
    fn a_panic_in_either_half_reaches_the_caller() {
        let r = std::panic::catch_unwind(|| join(|| (), || panic!("in b")));
        assert!(r.is_err());
        let r = std::panic::catch_unwind(|| join(|| panic!("in a"), || ()));
        assert!(r.is_err());
        let mut x = 0;
        join(|| (), || x = 1);
        assert_eq!(x, 1);
    }

    /// `product` against plain loops: transposed views (the strides the layers pass), beta 0
    /// (C not read: NaN there must not leak), beta 1 and 2, and an empty inner dimension.
    #[test]
    fn product_matches_plain_loops_for_every_stride_and_beta() {
        use ndarray::Array2;
        for (m, k, n) in [(5, 7, 3), (40, 33, 70), (3, 0, 4)] {
            let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 3 + j * 7) % 13) as f32 * 0.5 - 2.0);
            let b = Array2::from_shape_fn((k, n), |(i, j)| ((i * 5 + j * 2) % 11) as f32 * 0.25 - 1.0);
            // The same matrices stored transposed, read through `.t()` views.
            let (at, bt) = (a.t().to_owned(), b.t().to_owned());
            for beta in [0.0f32, 1.0, 2.0] {
                let c0 = Array2::from_shape_fn(
                    (m, n),
                    |(i, j)| if beta == 0.0 { f32::NAN } else { (i + j) as f32 },
                );
                let want = Array2::from_shape_fn((m, n), |(i, j)| {
                    let dot: f32 = (0..k).map(|l| a[[i, l]] * b[[l, j]]).sum();
                    let c = if beta == 0.0 { 0.0 } else { beta * c0[[i, j]] };
                    1.5 * dot + c
                });
                for (av, bv) in [(a.view(), b.view()), (at.t(), bt.t()), (a.view(), bt.t())] {
                    let mut c = c0.clone();
                    product(1.5, &av, &bv, beta, &mut c.view_mut());
                    for (x, y) in c.iter().zip(&want) {
                        assert!(
                            (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                            "{m}x{k}x{n} beta {beta}: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn split_product_equals_whole_product() {
        for (m, k, n) in [(64, 300, 700), (300, 1000, 20)] {
            check_split(m, k, n);
        }
    }

    fn check_split(m: usize, k: usize, n: usize) {
        let a = ndarray::Array2::from_shape_fn((m, k), |(i, j)| ((i * 7 + j * 3) % 11) as f32 * 0.37 - 1.1);
        let b = ndarray::Array2::from_shape_fn((k, n), |(i, j)| ((i * 5 + j) % 13) as f32 * 0.21 - 1.3);
        let mut whole = ndarray::Array2::<f32>::ones((m, n));
        product(1.0, &a.view(), &b.view(), 1.0, &mut whole.view_mut());
        let mut split = ndarray::Array2::<f32>::ones((m, n));
        gemm(1.0, &a.view(), &b.view(), 1.0, &mut split.view_mut());
        assert!(whole.iter().zip(&split).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}
