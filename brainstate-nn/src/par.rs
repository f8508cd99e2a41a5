//! Worker threads for the large matrix products and the element-wise layer loops.
//!
//! Work is split into a fixed number of parts at fixed places (halves of the columns of a
//! product, halves of the elements of a layer's state), and every part computes its values in the
//! same order as one thread would, so results are bit-identical whatever the thread count.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, Axis};

/// Number of threads the layers use: `BRAINSTATE_NUM_THREADS`, else `MATMUL_NUM_THREADS`, else
/// the number of cores (at most 2 are used); 1 without the `threading` feature. Read once.
pub fn num_threads() -> usize {
    #[cfg(feature = "threading")]
    {
        pool().map_or(1, |p| p.current_num_threads())
    }
    #[cfg(not(feature = "threading"))]
    1
}

#[cfg(feature = "threading")]
fn pool() -> Option<&'static rayon::ThreadPool> {
    use std::sync::OnceLock;
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let from_env = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse::<usize>().ok());
        let n = from_env("BRAINSTATE_NUM_THREADS")
            .or_else(|| from_env("MATMUL_NUM_THREADS"))
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, 2);
        if n < 2 {
            return None;
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("brainstate-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// True when work of `size` elements is worth splitting across the threads.
pub(crate) fn worth(size: usize) -> bool {
    size >= 1 << 15 && num_threads() > 1
}

/// Runs `a` and `b`, in parallel when there is more than one thread.
pub(crate) fn join<A, B>(a: A, b: B)
where
    A: FnOnce() + Send,
    B: FnOnce() + Send,
{
    #[cfg(feature = "threading")]
    if let Some(p) = pool() {
        p.join(a, b);
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
pub(crate) fn zip2<A: Send, B: Send>(x: &mut [A], y: &[B], f: impl Fn(&mut [A], &[B]) + Sync)
where
    B: Sync,
{
    if worth(x.len()) && y.len() == x.len() {
        let m = mid(x.len());
        let (x0, x1) = x.split_at_mut(m);
        let (y0, y1) = y.split_at(m);
        join(|| f(x0, y0), || f(x1, y1));
    } else {
        f(x, y);
    }
}

/// `c = alpha a b + beta c`, split over halves of the columns of `b` and `c` when the product
/// is large (each half is the same product for its columns, so the values do not change).
pub(crate) fn gemm(
    alpha: f32,
    a: &ArrayView2<'_, f32>,
    b: &ArrayView2<'_, f32>,
    beta: f32,
    c: &mut ArrayViewMut2<'_, f32>,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    if cfg!(feature = "openblas") || n < 128 || !worth(m * k * n / 64) {
        general_mat_mul(alpha, a, b, beta, c);
        return;
    }
    let at = (n / 2) & !31;
    let (b0, b1) = b.view().split_at(Axis(1), at);
    let (mut c0, mut c1) = c.view_mut().split_at(Axis(1), at);
    join(
        || general_mat_mul(alpha, a, &b0, beta, &mut c0),
        || general_mat_mul(alpha, a, &b1, beta, &mut c1),
    );
}

/// Runs `f` compiled for the widest vector instructions the CPU has (AVX-512, else AVX2 on
/// x86-64; as is elsewhere). Only the instruction width changes: no fused multiply-adds are
/// formed, so results are the same bits as the baseline build.
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,avx,popcnt,bmi1,bmi2")]
        unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,avx,popcnt,bmi1,bmi2")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("bmi2")
        {
            // SAFETY: the CPU has every feature the function is compiled for (checked above).
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("bmi2") {
            // SAFETY: as above, for AVX2.
            return unsafe { avx2(f) };
        }
    }
    f()
}
