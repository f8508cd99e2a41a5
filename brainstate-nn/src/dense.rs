//! `Dense` (= BrainPy's `bp.dnn.Linear`): `y = x @ W + b`.

use crate::error::{NnError, Result};
use crate::init::Init;
use crate::layer::{check_input, f32_ref, label_of, Layer, ParamVisitor, Record};
use crate::mode::Mode;
use crate::par;
use crate::signal::{masks16, Events, EventsRef, Signal};
use brainstate_core::{NodeName, Variable};
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2};

/// Most nonzeros for which the event path (a spike adds a row of weights, silence costs nothing)
/// beats the matrix multiply: an event costs about `n_out + 16` scalar adds, the multiply
/// `rows * n_in * n_out` multiply-adds at about 8 per add of the event loop.
fn max_events(rows: usize, n_in: usize, n_out: usize) -> usize {
    rows * n_in * n_out / (8 * (n_out + 16))
}

/// Outputs up to this many make a layer narrow: its input gradient `d W^T` (inner dimension
/// `n_out`) runs in a register-blocked loop instead of the matrix multiply.
const NARROW: usize = 64;

/// Dense steps of at least this many values are recorded as bit masks when binary.
const PACK_MIN: usize = 1 << 14;

/// Products small enough that direct loops (skipping zero inputs) beat the matrix multiply's
/// packing and the event list's bookkeeping.
fn small(rows: usize, n_in: usize, n_out: usize) -> bool {
    n_in * n_out <= 256 && rows * n_in * n_out <= 1 << 16
}

/// The most events for which a Dense layer takes a step of `rows` dense inputs as events
/// ([`max_events`]), or None when it never does (small products run direct loops instead).
pub(crate) fn event_limit(rows: usize, n_in: usize, n_out: usize) -> Option<usize> {
    (!small(rows, n_in, n_out)).then(|| max_events(rows, n_in, n_out))
}

/// Calls `$f::<N>(args)` with `N = n` for `n` in 1..=16 (loops over fixed-length rows that stay in
/// registers), else `$f::<0>(args)` (the row length read at run time).
macro_rules! by_width {
    ($n:expr, $f:ident ( $($a:expr),* $(,)? )) => {
        match $n {
            1 => $f::<1>($($a),*),
            2 => $f::<2>($($a),*),
            3 => $f::<3>($($a),*),
            4 => $f::<4>($($a),*),
            5 => $f::<5>($($a),*),
            6 => $f::<6>($($a),*),
            7 => $f::<7>($($a),*),
            8 => $f::<8>($($a),*),
            9 => $f::<9>($($a),*),
            10 => $f::<10>($($a),*),
            11 => $f::<11>($($a),*),
            12 => $f::<12>($($a),*),
            13 => $f::<13>($($a),*),
            14 => $f::<14>($($a),*),
            15 => $f::<15>($($a),*),
            16 => $f::<16>($($a),*),
            _ => $f::<0>($($a),*),
        }
    };
}

/// Lanes of the register rows of the small kernels.
const LANES: usize = 16;

/// The small forward product `out[b, :] += sum_i x[b, i] W[i, :]` (in order of `i`, zero inputs
/// skipped); `N` outputs per row held in registers (0: `n_out` at run time).
#[inline(always)]
fn small_forward<const N: usize>(out: &mut [f32], x: &[f32], w: &[f32], n_in: usize, n_out: usize) {
    if N == 0 {
        for (o, xr) in out.chunks_exact_mut(n_out).zip(x.chunks_exact(n_in)) {
            for (&xi, wr) in xr.iter().zip(w.chunks_exact(n_out)) {
                if xi != 0.0 {
                    o.iter_mut().zip(wr).for_each(|(o, w)| *o += xi * w);
                }
            }
        }
        return;
    }
    for (o, xr) in out.chunks_exact_mut(N).zip(x.chunks_exact(n_in)) {
        let o: &mut [f32; N] = o.try_into().expect("N values");
        let mut acc = *o;
        for (&xi, wr) in xr.iter().zip(w.chunks_exact(N)) {
            if xi != 0.0 {
                let wr: [f32; N] = wr.try_into().expect("N values");
                for j in 0..N {
                    acc[j] += xi * wr[j];
                }
            }
        }
        *o = acc;
    }
}

/// Every sum a row of 0/1 inputs can give a layer with few inputs: entry `m` (a bit per input)
/// holds `b + W[i1, :] + W[i2, :] + ...` added in order of the set bits `i1 < i2 < ...`, exactly
/// the sum [`small_forward`] forms for such a row (a 1 times a weight is the weight). Kept while
/// `W` and `b` keep their bits (a training epoch), rebuilt when they change.
#[derive(Clone, Debug, Default)]
struct SubsetSums {
    /// `2^n_in` rows of `n_out` values.
    sums: Vec<f32>,
    /// The bits of `W` then `b` the sums were built from.
    key: Vec<u32>,
}

impl SubsetSums {
    /// True when a layer of this size uses the table: `n_out <= 16` and at most 8192 values.
    fn fits(n_in: usize, n_out: usize) -> bool {
        (1..=16).contains(&n_out) && n_in <= 13 && n_out << n_in <= 1 << 13
    }

    /// Rebuilds the sums if `w` or `bias` changed since the last build.
    fn update(&mut self, w: &[f32], bias: Option<&[f32]>, n_in: usize, n_out: usize) {
        let bits = || w.iter().chain(bias.unwrap_or(&[])).map(|v| v.to_bits());
        let n_key = w.len() + bias.map_or(0, <[f32]>::len);
        if self.sums.len() == n_out << n_in && self.key.len() == n_key && bits().eq(self.key.iter().copied())
        {
            return;
        }
        self.key.clear();
        self.key.extend(bits());
        self.sums.clear();
        self.sums.resize(n_out << n_in, 0.0);
        if let Some(b) = bias {
            self.sums[..n_out].copy_from_slice(b);
        }
        for m in 1..1usize << n_in {
            let hi = m.ilog2() as usize;
            let (done, rest) = self.sums.split_at_mut(m * n_out);
            let prev = &done[(m ^ 1 << hi) * n_out..][..n_out];
            for ((s, &p), &wv) in rest[..n_out]
                .iter_mut()
                .zip(prev)
                .zip(&w[hi * n_out..(hi + 1) * n_out])
            {
                *s = p + wv;
            }
        }
    }
}

/// [`small_forward`] from [`SubsetSums`] (`sums`, `2^n_in` rows of `N`; `n_in <= 16`) over
/// `out` holding the bias rows: a row of 0s and 1s takes the entry of its bits (no branch per
/// input, which spikes defeat), another row is summed as in [`small_forward`]. The same values
/// either way.
#[inline(always)]
fn subset_forward<const N: usize>(
    out: &mut [f32],
    x: &[f32],
    w: &[f32],
    sums: &[f32],
    n_in: usize,
    n_out: usize,
) {
    if N == 0 {
        return small_forward::<0>(out, x, w, n_in, n_out);
    }
    let keep = ((1u32 << n_in) - 1) as u16;
    for (b, o) in out.chunks_exact_mut(N).enumerate() {
        let (nz, one) = masks16(&lanes_at(x, b * n_in));
        let (nz, one) = (nz & keep, one & keep);
        let o: &mut [f32; N] = o.try_into().expect("N values");
        if nz == one {
            let m = usize::from(nz);
            *o = sums[m * N..(m + 1) * N].try_into().expect("N values");
        } else {
            small_forward::<N>(o, &x[b * n_in..(b + 1) * n_in], w, n_in, N);
        }
    }
}

fn subset_forward_wide<const N: usize>(
    out: &mut [f32],
    x: &[f32],
    w: &[f32],
    sums: &[f32],
    n_in: usize,
    n_out: usize,
) {
    par::wide(
        #[inline(always)]
        || subset_forward::<N>(out, x, w, sums, n_in, n_out),
    )
}

fn small_forward_wide<const N: usize>(out: &mut [f32], x: &[f32], w: &[f32], n_in: usize, n_out: usize) {
    par::wide(
        #[inline(always)]
        || small_forward::<N>(out, x, w, n_in, n_out),
    )
}

/// `x[b * n_in..]` as `LANES` values: straight from `x` when that many are left (the lanes past
/// the row hold later rows' values, which the caller ignores), else the rest padded with zeros.
#[inline(always)]
fn lanes_at(x: &[f32], at: usize) -> [f32; LANES] {
    match x.get(at..at + LANES) {
        Some(s) => s.try_into().expect("LANES values"),
        None => {
            let mut v = [0.0; LANES];
            let rest = &x[at.min(x.len())..];
            v[..rest.len().min(LANES)].copy_from_slice(&rest[..rest.len().min(LANES)]);
            v
        }
    }
}

/// The small weight gradient with `n_in <= LANES`: `t[j, i] = sum_b d[b, j] x[b, i]` from 0 in
/// order of `b` (the columns `j` in registers), then `gw[i, j] += t[j, i]`.
#[inline(always)]
fn small_grad<const N: usize>(gw: &mut [f32], x: &[f32], d: &[f32], n_in: usize, _n_out: usize) {
    let mut t = [[0.0f32; LANES]; N];
    // One column at a time: its lanes are one vector (the inputs `i` of a row).
    for (j, tj) in t.iter_mut().enumerate() {
        let mut acc = [0.0f32; LANES];
        for (b, dr) in d.chunks_exact(N).enumerate() {
            let xv = lanes_at(x, b * n_in);
            let dj = dr[j];
            for l in 0..LANES {
                acc[l] += dj * xv[l];
            }
        }
        *tj = acc;
    }
    for (i, gr) in gw.chunks_exact_mut(N).enumerate() {
        for j in 0..N {
            gr[j] += t[j][i];
        }
    }
}

fn small_grad_wide<const N: usize>(gw: &mut [f32], x: &[f32], d: &[f32], n_in: usize, n_out: usize) {
    par::wide(
        #[inline(always)]
        || small_grad::<N>(gw, x, d, n_in, n_out),
    )
}

/// The small input gradient with `n_in <= LANES`: `d_in[b, :] = 0 + sum_j d[b, j] W[:, j]` in
/// order of `j`, the columns of `W` in registers.
#[inline(always)]
fn small_d_in<const N: usize>(d_in: &mut [f32], d: &[f32], w: &[f32], n_in: usize, _n_out: usize) {
    let mut wt = [[0.0f32; LANES]; N];
    for (i, wr) in w.chunks_exact(N).enumerate() {
        for j in 0..N {
            wt[j][i] = wr[j];
        }
    }
    let rows = d_in.len() / n_in.max(1);
    for (b, dr) in d.chunks_exact(N).enumerate().take(rows) {
        let mut acc = [0.0f32; LANES];
        for j in 0..N {
            let dj = dr[j];
            for l in 0..LANES {
                acc[l] += dj * wt[j][l];
            }
        }
        let at = b * n_in;
        match d_in.get_mut(at..at + LANES) {
            // All lanes in one store: those past the row are rewritten by the next rows.
            Some(o) => *<&mut [f32; LANES]>::try_from(o).expect("LANES values") = acc,
            None => d_in[at..at + n_in].copy_from_slice(&acc[..n_in]),
        }
    }
}

fn small_d_in_wide<const N: usize>(d_in: &mut [f32], d: &[f32], w: &[f32], n_in: usize, n_out: usize) {
    par::wide(
        #[inline(always)]
        || small_d_in::<N>(d_in, d, w, n_in, n_out),
    )
}

/// `gb[j] += d[b, lo + j]` for the rows `b` of `d` (`n_out` wide) in order; `N` columns held in
/// registers (0: `gb.len()` columns at run time; `N > 0` needs `N == n_out`, `lo == 0`).
#[inline(always)]
fn sum_rows<const N: usize>(gb: &mut [f32], d: &[f32], n_out: usize, lo: usize) {
    if N == 0 {
        for r in d.chunks_exact(n_out) {
            gb.iter_mut().zip(&r[lo..]).for_each(|(g, d)| *g += d);
        }
        return;
    }
    let gb: &mut [f32; N] = gb.try_into().expect("N values");
    let mut acc = *gb;
    for r in d.chunks_exact(N) {
        for j in 0..N {
            acc[j] += r[j];
        }
    }
    *gb = acc;
}

fn sum_rows_wide<const N: usize>(gb: &mut [f32], d: &[f32], n_out: usize, lo: usize) {
    par::wide(
        #[inline(always)]
        || sum_rows::<N>(gb, d, n_out, lo),
    )
}

/// Copies `b` into every row of `out` (rows of `b.len()` values; `N` of them in registers, 0:
/// the length at run time).
fn fill_rows<const N: usize>(out: &mut [f32], b: &[f32]) {
    if N == 0 {
        return out.chunks_exact_mut(b.len()).for_each(|r| r.copy_from_slice(b));
    }
    let b: [f32; N] = b.try_into().expect("N values");
    for r in out.chunks_exact_mut(N) {
        let r: &mut [f32; N] = r.try_into().expect("N values");
        *r = b;
    }
}

#[derive(Clone, Copy, Debug)]
enum TapeStep {
    Events {
        ptr: usize,
        binary: bool,
    },
    Dense {
        start: usize,
    },
    /// A dense input of only 0s and 1s (spikes), one bit per value from `bits[start]` on.
    Bits {
        start: usize,
    },
}

/// Packs `x` into bit masks (bit `j` of word `w` is `x[16 w + j] != 0`) if every value is 0 or 1;
/// false (and `bits` unusable) otherwise. Two halves across the threads when large.
fn pack_bits(x: &[f32], bits: &mut [u16]) -> bool {
    fn part(x: &[f32], bits: &mut [u16]) -> bool {
        par::wide(
            #[inline(always)]
            || {
                let mut ok = true;
                let chunks = x.chunks_exact(16);
                let tail = chunks.remainder();
                let mut words = bits.iter_mut();
                for (c, b) in chunks.zip(&mut words) {
                    // A fixed 16 lanes: one vector compare per mask.
                    let c: &[f32; 16] = c.try_into().expect("16 values");
                    let (nz, one) = masks16(c);
                    *b = nz;
                    ok &= nz == one;
                }
                if let (false, Some(b)) = (tail.is_empty(), words.next()) {
                    let mut c = [0.0; 16];
                    c[..tail.len()].copy_from_slice(tail);
                    let (nz, one) = masks16(&c);
                    *b = nz;
                    ok &= nz == one;
                }
                ok
            },
        )
    }
    if par::worth(x.len()) {
        let m = par::mid(x.len());
        let (b0, b1) = bits.split_at_mut(m / 16);
        let (x0, x1) = x.split_at(m);
        let (mut ok0, mut ok1) = (false, false);
        par::join(|| ok0 = part(x0, b0), || ok1 = part(x1, b1));
        ok0 && ok1
    } else {
        part(x, bits)
    }
}

/// The values of [`pack_bits`] back (`out.len()` of them).
fn unpack_bits(bits: &[u16], out: &mut [f32]) {
    fn part(bits: &[u16], out: &mut [f32]) {
        par::wide(
            #[inline(always)]
            || {
                let mut chunks = out.chunks_exact_mut(16);
                for (c, &b) in (&mut chunks).zip(bits) {
                    let c: &mut [f32; 16] = c.try_into().expect("16 values");
                    // Integer lanes: 0 - bit is all ones or zero, masked to the bits of 1.0.
                    let m = u32::from(b);
                    for (j, o) in c.iter_mut().enumerate() {
                        *o = f32::from_bits(0u32.wrapping_sub(m >> j & 1) & 0x3f80_0000);
                    }
                }
                let done = out.len() / 16;
                if let Some(&b) = bits.get(done) {
                    for (j, o) in out[done * 16..].iter_mut().enumerate() {
                        *o = if b >> j & 1 != 0 { 1.0 } else { 0.0 };
                    }
                }
            },
        )
    }
    if par::worth(out.len()) {
        let m = par::mid(out.len());
        let (b0, b1) = bits.split_at(m / 16);
        let (o0, o1) = out.split_at_mut(m);
        par::join(|| part(b0, o0), || part(b1, o1));
    } else {
        part(bits, out)
    }
}

/// What a Dense layer keeps of its inputs for backward.
#[derive(Clone, Debug, Default)]
struct DenseTape {
    steps: Vec<TapeStep>,
    row_ptr: Vec<usize>,
    idx: Vec<u32>,
    val: Vec<f32>,
    /// Dense inputs, `dense_len` of them in use (kept at full length between epochs, so a step
    /// is a plain copy, in two halves across the threads, without growing or zero-filling).
    dense: Vec<f32>,
    dense_len: usize,
    /// Binary dense inputs as bit masks (16 values a word), `bits_len` words in use, kept like
    /// `dense`: 1/32 of the memory and traffic of a copy.
    bits: Vec<u16>,
    bits_len: usize,
    /// A bit-mask step expanded back to values for backward.
    expanded: Vec<f32>,
}

impl DenseTape {
    fn clear(&mut self) {
        self.steps.clear();
        self.row_ptr.clear();
        self.idx.clear();
        self.val.clear();
        self.dense_len = 0;
        self.bits_len = 0;
    }

    fn push(&mut self, sig: &Signal<'_>) {
        match sig {
            // Small steps are copied: packing and unpacking cost more than the copy saves.
            Signal::Dense(x) if x.len() >= PACK_MIN => {
                let start = self.bits_len;
                self.bits_len += x.len().div_ceil(16);
                if self.bits.len() < self.bits_len {
                    self.bits.resize(self.bits_len, 0);
                }
                if pack_bits(x, &mut self.bits[start..self.bits_len]) {
                    self.steps.push(TapeStep::Bits { start });
                    return;
                }
                self.bits_len = start;
                self.push_dense(x);
            }
            Signal::Dense(x) => self.push_dense(x),
            Signal::Events(e) => {
                let ptr = self.row_ptr.len();
                let (base, first) = (self.idx.len(), e.row_ptr[0]);
                self.row_ptr.extend(e.row_ptr.iter().map(|p| base + (p - first)));
                let (lo, hi) = (first, *e.row_ptr.last().unwrap_or(&first));
                self.idx.extend_from_slice(&e.idx[lo..hi]);
                // Values are kept only for valued steps (binary ones read no values); `val`
                // shares the offsets of `idx`, so it is padded up to this step's first event.
                if let Some(v) = e.val {
                    self.val.resize(base, 0.0);
                    self.val.extend_from_slice(&v[lo..hi]);
                }
                self.steps.push(TapeStep::Events {
                    ptr,
                    binary: e.val.is_none(),
                });
            }
        }
    }

    /// Records a dense step as a plain copy.
    fn push_dense(&mut self, x: &[f32]) {
        let start = self.dense_len;
        self.steps.push(TapeStep::Dense { start });
        self.dense_len += x.len();
        if self.dense.len() < self.dense_len {
            self.dense.resize(self.dense_len, 0.0);
        }
        let dst = &mut self.dense[start..self.dense_len];
        if par::worth(x.len()) {
            let m = par::mid(x.len());
            let ((d0, d1), (x0, x1)) = (dst.split_at_mut(m), x.split_at(m));
            par::join(|| d0.copy_from_slice(x0), || d1.copy_from_slice(x1));
        } else {
            dst.copy_from_slice(x);
        }
    }

    fn get(&mut self, t: usize, rows: usize, cols: usize) -> Option<Signal<'_>> {
        match *self.steps.get(t)? {
            TapeStep::Dense { start } => Some(Signal::Dense(&self.dense[start..start + rows * cols])),
            TapeStep::Bits { start } => {
                let n = rows * cols;
                self.expanded.resize(n, 0.0);
                unpack_bits(&self.bits[start..start + n.div_ceil(16)], &mut self.expanded);
                Some(Signal::Dense(&self.expanded))
            }
            TapeStep::Events { ptr, binary } => Some(Signal::Events(EventsRef {
                row_ptr: &self.row_ptr[ptr..ptr + rows + 1],
                idx: &self.idx,
                val: if binary { None } else { Some(&self.val) },
                cols,
            })),
        }
    }
}

/// A fully connected layer, BrainPy's `bp.dnn.Dense` / `bp.dnn.Linear` (type name `Dense`).
///
/// `W` has shape `(num_in, num_out)`, `b` `(num_out,)` (absent without bias). In training mode
/// they are trainable variables saved as `Dense0.W`, `Dense0.b`; otherwise constants, so the
/// layer saves `{}` as BrainPy's. Spiking inputs are handled as events: each active input adds
/// its row of `W`, silent inputs cost nothing. Backward uses `W` as of [`Layer::begin_backward`]
/// (narrow layers keep its transpose from then), so `W` must not change during a backward pass.
#[derive(brainstate_derive::Stateful)]
#[stateful(crate = "brainstate_core", type_name = "Dense")]
pub struct Dense {
    #[stateful(name)]
    name: NodeName,
    #[stateful(rename = "W")]
    w: Option<Variable>,
    b: Option<Variable>,
    fixed_w: Array2<f32>,
    fixed_b: Option<Array1<f32>>,
    num_in: usize,
    num_out: usize,
    mode: Mode,
    out: Vec<f32>,
    scan: Events,
    tape: DenseTape,
    grad_w: Vec<f32>,
    grad_b: Vec<f32>,
    d_in: Vec<f32>,
    small_t: Vec<f32>,
    wt: Vec<f32>,
    by_input: ByInput,
    /// The row of each event, for the flat event loops.
    ev_rows: Vec<u32>,
    subsets: SubsetSums,
    ahead: Ahead,
}

/// Outputs of steps computed in advance by [`Layer::look_ahead`].
#[derive(Default)]
struct Ahead {
    /// `steps` outputs of `rows * num_out` values.
    out: Vec<f32>,
    steps: usize,
    /// The next stored step, and the address and length its input must have.
    next: usize,
    next_src: usize,
    step_len: usize,
}

impl Ahead {
    /// The stored output of a step with input `x`, if it is the next announced one (compared by
    /// address and length); anything else drops the stored steps.
    fn take(&mut self, x: &[f32]) -> Option<&[f32]> {
        if self.next < self.steps && x.as_ptr() as usize == self.next_src && x.len() == self.step_len {
            let n = self.out.len() / self.steps;
            let k = self.next;
            self.next += 1;
            self.next_src += std::mem::size_of_val(x);
            Some(&self.out[k * n..(k + 1) * n])
        } else {
            self.steps = 0;
            None
        }
    }
}

impl Dense {
    /// BrainPy's defaults: `W_initializer=XavierNormal()`, `b_initializer=ZeroInit()`.
    pub fn new(num_in: usize, num_out: usize, mode: Mode, rng: &mut dyn rand::RngCore) -> Result<Dense> {
        Dense::with_init(
            num_in,
            num_out,
            Init::xavier_normal(1.0),
            Some(Init::Zeros),
            mode,
            rng,
        )
    }

    /// With given initializers; `b_init = None` means no bias.
    pub fn with_init(
        num_in: usize,
        num_out: usize,
        w_init: Init,
        b_init: Option<Init>,
        mode: Mode,
        rng: &mut dyn rand::RngCore,
    ) -> Result<Dense> {
        for (name, v) in [("num_in", num_in), ("num_out", num_out)] {
            if v == 0 {
                return Err(NnError::Param {
                    layer: "Dense".into(),
                    name: name.into(),
                    value: "0".into(),
                    reason: "a layer needs at least one feature".into(),
                });
            }
        }
        let w = w_init
            .sample(&[num_in, num_out], rng)?
            .into_dimensionality::<ndarray::Ix2>()
            .expect("2-d shape");
        let b = match b_init {
            Some(init) => Some(
                init.sample(&[num_out], rng)?
                    .into_dimensionality::<ndarray::Ix1>()
                    .expect("1-d shape"),
            ),
            None => None,
        };
        Ok(Dense::from_arrays(w, b, mode))
    }

    /// From given weights `(num_in, num_out)` and optional bias `(num_out,)` (panics never: a
    /// bias of the wrong length is dropped into an error by [`Dense::try_from_arrays`]).
    fn from_arrays(w: Array2<f32>, b: Option<Array1<f32>>, mode: Mode) -> Dense {
        let (num_in, num_out) = w.dim();
        let training = mode.is_training();
        Dense {
            name: NodeName::auto(),
            w: training.then(|| Variable::trainable(w.clone())),
            b: if training {
                b.clone().map(Variable::trainable)
            } else {
                None
            },
            fixed_w: if training { Array2::zeros((0, 0)) } else { w },
            fixed_b: if training { None } else { b },
            num_in,
            num_out,
            mode,
            out: Vec::new(),
            ahead: Ahead::default(),
            scan: Events::default(),
            tape: DenseTape::default(),
            grad_w: vec![0.0; if training { num_in * num_out } else { 0 }],
            grad_b: vec![0.0; num_out],
            d_in: Vec::new(),
            small_t: Vec::new(),
            wt: Vec::new(),
            by_input: ByInput::default(),
            ev_rows: Vec::new(),
            subsets: SubsetSums::default(),
        }
    }

    /// From given weights; an error if the bias length is not `num_out` or a size is 0.
    pub fn try_from_arrays(w: Array2<f32>, b: Option<Array1<f32>>, mode: Mode) -> Result<Dense> {
        let (num_in, num_out) = w.dim();
        if num_in == 0 || num_out == 0 {
            return Err(NnError::Param {
                layer: "Dense".into(),
                name: "W".into(),
                value: format!("shape {:?}", w.dim()),
                reason: "a layer needs at least one feature".into(),
            });
        }
        if let Some(b) = &b {
            if b.len() != num_out {
                return Err(NnError::Param {
                    layer: "Dense".into(),
                    name: "b".into(),
                    value: format!("shape [{}]", b.len()),
                    reason: format!("the bias needs {num_out} values, one per output"),
                });
            }
        }
        Ok(Dense::from_arrays(w.as_standard_layout().into_owned(), b, mode))
    }

    /// Gives the layer a name (must be an identifier).
    pub fn named(mut self, name: &str) -> Result<Dense> {
        self.name = NodeName::new(name)?;
        Ok(self)
    }

    /// True when the layer has a bias.
    pub fn has_bias(&self) -> bool {
        self.b.is_some() || self.fixed_b.is_some()
    }

    /// The weights `(num_in, num_out)`.
    pub fn weight(&self) -> Result<ArrayView2<'_, f32>> {
        let w = self.w_slice()?;
        Ok(ArrayView2::from_shape((self.num_in, self.num_out), w).expect("checked shape"))
    }

    /// The accumulated gradient of `W` (training mode), `(num_in, num_out)`.
    pub fn grad_w(&self) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((self.num_in, self.num_out), &self.grad_w[..])
            .unwrap_or_else(|_| ArrayView2::from_shape((0, 0), &[]).expect("empty"))
    }

    /// The accumulated gradient of `b`.
    pub fn grad_b(&self) -> &[f32] {
        &self.grad_b
    }

    /// `W^T` (`num_out x num_in`) as kept by `begin_backward` for a narrow layer's input
    /// gradient, when it is.
    pub(crate) fn narrow_wt(&self) -> Option<&[f32]> {
        (self.mode.is_training() && self.wt.len() == self.num_in * self.num_out).then_some(&self.wt[..])
    }

    fn w_slice(&self) -> Result<&[f32]> {
        w_of(&self.w, &self.fixed_w, &self.name, self.num_in, self.num_out)
    }
}

fn w_of<'a>(
    w: &'a Option<Variable>,
    fixed: &'a Array2<f32>,
    name: &NodeName,
    n_in: usize,
    n_out: usize,
) -> Result<&'a [f32]> {
    let s = match w {
        Some(v) => f32_ref(v, name, "Dense", "W")?,
        None => fixed.as_slice().unwrap_or(&[]),
    };
    if s.len() != n_in * n_out {
        return Err(NnError::Variable {
            key: format!("{}.W", label_of(name, "Dense")),
            expected: format!("{} values ({n_in} x {n_out})", n_in * n_out),
            found: format!("{} values", s.len()),
        });
    }
    Ok(s)
}

fn b_of<'a>(
    b: &'a Option<Variable>,
    fixed: &'a Option<Array1<f32>>,
    name: &NodeName,
    n_out: usize,
) -> Result<Option<&'a [f32]>> {
    let s = match (b, fixed) {
        (Some(v), _) => Some(f32_ref(v, name, "Dense", "b")?),
        (None, Some(b)) => b.as_slice(),
        _ => None,
    };
    if let Some(s) = s {
        if s.len() != n_out {
            return Err(NnError::Variable {
                key: format!("{}.b", label_of(name, "Dense")),
                expected: format!("{n_out} values"),
                found: format!("{} values", s.len()),
            });
        }
    }
    Ok(s)
}

/// Sets every row of `out` (rows of `n_out`) to the bias, or to zero without one; in two halves
/// of the rows when large.
fn init_rows(out: &mut [f32], bias: Option<&[f32]>, n_out: usize) {
    let init = |o: &mut [f32]| match bias {
        Some(b) => by_width!(n_out, fill_rows(o, b)),
        None => o.fill(0.0),
    };
    let rows = out.len() / n_out.max(1);
    if rows >= 2 && par::worth(out.len()) {
        let (o0, o1) = out.split_at_mut(rows / 2 * n_out);
        par::join(|| init(o0), || init(o1));
    } else {
        init(out);
    }
}

/// `out[b, :] += val * w[i, :]` for every event `(b, i, val)`; large outputs in two halves of the
/// rows across the worker threads, sparse events in one flat pass ([`sparse_flat`], with
/// `ev_rows` as scratch).
fn add_rows(out: &mut [f32], n_out: usize, e: &EventsRef<'_>, w: &[f32], ev_rows: &mut Vec<u32>) {
    let rows = e.rows();
    if rows >= 2 && out.len() >= rows * n_out && par::worth(rows * n_out) {
        let m = rows / 2;
        let (o0, o1) = out.split_at_mut(m * n_out);
        let (e0, e1) = (
            EventsRef {
                row_ptr: &e.row_ptr[..=m],
                ..*e
            },
            EventsRef {
                row_ptr: &e.row_ptr[m..],
                ..*e
            },
        );
        par::join(
            || add_rows_part(o0, n_out, &e0, w),
            || add_rows_part(o1, n_out, &e1, w),
        );
    } else if sparse_flat(e, n_out) {
        event_rows(e, ev_rows);
        by_width!(n_out, add_flat_wide(out, n_out, e, ev_rows, w, true));
    } else {
        add_rows_part(out, n_out, e, w);
    }
}

fn add_rows_part(out: &mut [f32], n_out: usize, e: &EventsRef<'_>, w: &[f32]) {
    by_width!(n_out, add_rows_wide(out, n_out, e, w))
}

fn add_rows_wide<const N: usize>(out: &mut [f32], n_out: usize, e: &EventsRef<'_>, w: &[f32]) {
    par::wide(
        #[inline(always)]
        || {
            if N == 0 {
                add_rows_loop(out, n_out, e, w)
            } else {
                add_rows_fixed::<N>(out, e, w)
            }
        },
    )
}

/// [`add_rows_loop`] with rows of `N` outputs, each accumulated in registers.
#[inline(always)]
fn add_rows_fixed<const N: usize>(out: &mut [f32], e: &EventsRef<'_>, w: &[f32]) {
    let row = |i: u32| -> [f32; N] {
        let i = i as usize;
        w[i * N..(i + 1) * N].try_into().expect("N values")
    };
    let (row_ptr, idx, val) = (e.row_ptr, e.idx, e.val);
    for (b, o) in out.chunks_exact_mut(N).enumerate().take(e.rows()) {
        let (lo, hi) = (row_ptr[b], row_ptr[b + 1]);
        if lo == hi {
            continue;
        }
        let mut acc: [f32; N] = (&*o).try_into().expect("N values");
        match val {
            None => {
                for &i in &idx[lo..hi] {
                    let wr = row(i);
                    for j in 0..N {
                        acc[j] += wr[j];
                    }
                }
            }
            Some(v) => {
                for (&i, &s) in idx[lo..hi].iter().zip(&v[lo..hi]) {
                    let wr = row(i);
                    for j in 0..N {
                        acc[j] += s * wr[j];
                    }
                }
            }
        }
        o.copy_from_slice(&acc);
    }
}

#[inline(always)]
fn add_rows_loop(out: &mut [f32], n_out: usize, e: &EventsRef<'_>, w: &[f32]) {
    const B: usize = OUTER_BLOCK;
    let rows = e.rows().min(out.len() / n_out.max(1));
    // Wide outputs in blocks of B columns: a row's block stays in registers over its events and
    // the block of W (n_in x B) stays in cache over all rows, instead of a whole row of W from
    // memory per event. Each output takes its events in the same order: the same values.
    let mut c0 = 0;
    while n_out >= 2 * B && c0 + B <= n_out {
        for b in 0..rows {
            let (lo, hi) = (e.row_ptr[b], e.row_ptr[b + 1]);
            if lo == hi {
                continue;
            }
            let at = b * n_out + c0;
            let o: &mut [f32; B] = (&mut out[at..at + B]).try_into().expect("block");
            let mut acc = *o;
            let block = |i: u32| -> &[f32; B] {
                let at = i as usize * n_out + c0;
                w[at..at + B].try_into().expect("block")
            };
            match e.val {
                None => {
                    for &i in &e.idx[lo..hi] {
                        acc.iter_mut().zip(block(i)).for_each(|(a, w)| *a += w);
                    }
                }
                Some(v) => {
                    for (&i, &s) in e.idx[lo..hi].iter().zip(&v[lo..hi]) {
                        acc.iter_mut().zip(block(i)).for_each(|(a, w)| *a += s * w);
                    }
                }
            }
            *o = acc;
        }
        c0 += B;
    }
    for (b, o) in out.chunks_exact_mut(n_out).enumerate().take(rows) {
        let o = &mut o[c0..];
        for k in e.row_ptr[b]..e.row_ptr[b + 1] {
            let i = e.idx[k] as usize;
            let wr = &w[i * n_out + c0..(i + 1) * n_out];
            match e.val {
                None => o.iter_mut().zip(wr).for_each(|(o, w)| *o += w),
                Some(v) => {
                    let s = v[k];
                    o.iter_mut().zip(wr).for_each(|(o, w)| *o += s * w)
                }
            }
        }
    }
}

/// `gw[i, :] += val * d[b, :]` for every event `(b, i, val)`; a large `gw` in two halves of its
/// rows (inputs `i`) across the worker threads, each taking the events of its inputs in order.
fn add_outer(gw: &mut [f32], n_out: usize, e: &EventsRef<'_>, d: &[f32], ev_rows: &mut Vec<u32>) {
    let n_in = gw.len() / n_out.max(1);
    if n_in >= 2 && par::worth(gw.len()) && par::worth(e.nnz() * n_out) {
        let m = n_in / 2;
        let (g0, g1) = gw.split_at_mut(m * n_out);
        par::join(
            || add_outer_part(g0, 0, n_out, e, d),
            || add_outer_part(g1, m, n_out, e, d),
        );
    } else if sparse_flat(e, n_out) {
        event_rows(e, ev_rows);
        by_width!(n_out, add_flat_wide(gw, n_out, e, ev_rows, d, false));
    } else {
        add_outer_part(gw, 0, n_out, e, d);
    }
}

/// [`add_outer`] for the rows `lo..lo + gw.len() / n_out` of the gradient.
fn add_outer_part(gw: &mut [f32], lo: usize, n_out: usize, e: &EventsRef<'_>, d: &[f32]) {
    by_width!(n_out, add_outer_wide(gw, lo, n_out, e, d))
}

fn add_outer_wide<const N: usize>(gw: &mut [f32], lo: usize, n_out: usize, e: &EventsRef<'_>, d: &[f32]) {
    par::wide(
        #[inline(always)]
        || {
            if N == 0 {
                add_outer_loop(gw, lo, n_out, e, d)
            } else {
                add_outer_fixed::<N>(gw, lo, e, d)
            }
        },
    )
}

/// [`add_outer_loop`] with rows of `N` outputs.
#[inline(always)]
fn add_outer_fixed<const N: usize>(gw: &mut [f32], lo: usize, e: &EventsRef<'_>, d: &[f32]) {
    let hi = lo + gw.len() / N;
    let (row_ptr, idx, val) = (e.row_ptr, e.idx, e.val);
    for (b, dr) in d.chunks_exact(N).enumerate().take(e.rows()) {
        let dr: [f32; N] = dr.try_into().expect("N values");
        let (k0, k1) = (row_ptr[b], row_ptr[b + 1]);
        for k in k0..k1 {
            let i = idx[k] as usize;
            if i < lo || i >= hi {
                continue;
            }
            let i = i - lo;
            let g: &mut [f32; N] = (&mut gw[i * N..(i + 1) * N]).try_into().expect("N values");
            let mut gv = *g;
            match val {
                None => {
                    for j in 0..N {
                        gv[j] += dr[j];
                    }
                }
                Some(v) => {
                    let s = v[k];
                    for j in 0..N {
                        gv[j] += s * dr[j];
                    }
                }
            }
            *g = gv;
        }
    }
}

#[inline(always)]
fn add_outer_loop(gw: &mut [f32], lo: usize, n_out: usize, e: &EventsRef<'_>, d: &[f32]) {
    let hi = lo + gw.len() / n_out.max(1);
    for b in 0..e.rows() {
        let dr = &d[b * n_out..(b + 1) * n_out];
        for k in e.row_ptr[b]..e.row_ptr[b + 1] {
            let i = e.idx[k] as usize;
            if i < lo || i >= hi {
                continue;
            }
            let i = i - lo;
            let g = &mut gw[i * n_out..(i + 1) * n_out];
            match e.val {
                None => g.iter_mut().zip(dr).for_each(|(g, d)| *g += d),
                Some(v) => {
                    let s = v[k];
                    g.iter_mut().zip(dr).for_each(|(g, d)| *g += s * d)
                }
            }
        }
    }
}

/// True when the events of narrow rows (`n_out <= 16`) go through one flat pass over the events
/// ([`add_flat`]) instead of a loop per row: at most two events per row
/// on average, where the per-row loops' trip counts (0, 1, 2, ... events) defeat the branch
/// predictor.
fn sparse_flat(e: &EventsRef<'_>, n_out: usize) -> bool {
    n_out <= 16 && e.nnz() <= 2 * e.rows()
}

/// The row (sample) of every event of `e` in order into `rows` (`e.nnz()` values and one spare),
/// without a branch per row: a mark at each row's first event, then a running sum.
fn event_rows(e: &EventsRef<'_>, rows: &mut Vec<u32>) {
    let (base, nnz) = (e.row_ptr[0], e.nnz());
    rows.clear();
    // Room for the most events [`sparse_flat`] lets through, so the buffer is sized once.
    rows.reserve(2 * e.rows() + 1);
    rows.resize(nnz + 1, 0);
    for &p in &e.row_ptr[1..e.rows().max(1)] {
        rows[p - base] += 1;
    }
    let mut b = 0;
    for r in rows.iter_mut() {
        b += *r;
        *r = b;
    }
}

/// [`add_flat`] into `dst` from `src` (`n_out` values a row; `N = 0`: the per-row loops):
/// output rows from weight rows when `into_rows`, else gradient rows from `d` rows.
fn add_flat_wide<const N: usize>(
    dst: &mut [f32],
    n_out: usize,
    e: &EventsRef<'_>,
    rows: &[u32],
    src: &[f32],
    into_rows: bool,
) {
    par::wide(
        #[inline(always)]
        || match (N, into_rows, e.val) {
            (0, true, _) => add_rows_loop(dst, n_out, e, src),
            (0, false, _) => add_outer_loop(dst, 0, n_out, e, src),
            (_, true, None) => add_flat::<N, true>(dst, src, e, rows, |_| 1.0),
            (_, true, Some(v)) => add_flat::<N, true>(dst, src, e, rows, |k| v[k]),
            (_, false, None) => add_flat::<N, false>(dst, src, e, rows, |_| 1.0),
            (_, false, Some(v)) => add_flat::<N, false>(dst, src, e, rows, |k| v[k]),
        },
    )
}

/// One pass over the events of `e` (`rows` from [`event_rows`]), rows of `N > 0` values:
/// `dst[b, :] += val * src[i, :]` for each event `(b, i, val)` when `INTO_ROWS` (the forward
/// [`add_rows_loop`]), else `dst[i, :] += val * src[b, :]` (the weight gradient
/// [`add_outer_loop`]); `scale(k)` is the value of event `k` (1 for binary events: `1 * x` is
/// `x`, the plain add of the loops). Each destination row takes its events
/// in the loops' order, so the values are theirs.
#[inline(always)]
fn add_flat<const N: usize, const INTO_ROWS: bool>(
    dst: &mut [f32],
    src: &[f32],
    e: &EventsRef<'_>,
    rows: &[u32],
    scale: impl Fn(usize) -> f32,
) {
    let (lo, hi) = (e.row_ptr[0], e.row_ptr[e.rows()]);
    for (k, (&i, &b)) in (lo..hi).zip(e.idx[lo..hi].iter().zip(&rows[..hi - lo])) {
        let (r, q) = if INTO_ROWS {
            (b as usize, i as usize)
        } else {
            (i as usize, b as usize)
        };
        let sr: [f32; N] = src[q * N..(q + 1) * N].try_into().expect("N values");
        let o: &mut [f32; N] = (&mut dst[r * N..(r + 1) * N]).try_into().expect("N values");
        let s = scale(k);
        for j in 0..N {
            o[j] += s * sr[j];
        }
    }
}

/// Columns of the gradient rows accumulated in registers at a time by [`add_outer_grouped`].
const OUTER_BLOCK: usize = 128;

/// Events regrouped by input `i`: group `i` is `ev[ptr[i]..ptr[i + 1]]`, each `(row, event)` in
/// row order.
#[derive(Clone, Debug, Default)]
struct ByInput {
    ptr: Vec<usize>,
    ev: Vec<(u32, u32)>,
}

impl ByInput {
    /// Counting sort of the events by input (stable: rows stay in order).
    fn build(&mut self, e: &EventsRef<'_>, n_in: usize) {
        let (lo, hi) = (e.row_ptr[0], e.row_ptr[e.rows()]);
        self.ptr.clear();
        self.ptr.resize(n_in + 2, 0);
        for &i in &e.idx[lo..hi] {
            self.ptr[i as usize + 2] += 1;
        }
        for i in 2..n_in + 2 {
            self.ptr[i] += self.ptr[i - 1];
        }
        self.ev.clear();
        self.ev.resize(hi - lo, (0, 0));
        for b in 0..e.rows() {
            for k in e.row_ptr[b]..e.row_ptr[b + 1] {
                let slot = &mut self.ptr[e.idx[k] as usize + 1];
                self.ev[*slot] = (b as u32, k as u32);
                *slot += 1;
            }
        }
    }
}

/// [`add_outer`] by input: each gradient row takes all its events in row order while 128 of its
/// columns stay in registers, so it is read and written once per step instead of once per event
/// (the same additions in the same order: the same values). Halves of the inputs across the
/// threads when large.
fn add_outer_grouped(gw: &mut [f32], n_out: usize, by: &ByInput, e: &EventsRef<'_>, d: &[f32]) {
    let n_in = gw.len() / n_out;
    if n_in >= 2 && par::worth(gw.len()) && par::worth(e.nnz() * n_out) {
        let m = n_in / 2;
        let (g0, g1) = gw.split_at_mut(m * n_out);
        par::join(
            || add_outer_grouped_part(g0, 0, n_out, by, e, d),
            || add_outer_grouped_part(g1, m, n_out, by, e, d),
        );
    } else {
        add_outer_grouped_part(gw, 0, n_out, by, e, d);
    }
}

fn add_outer_grouped_part(
    gw: &mut [f32],
    lo: usize,
    n_out: usize,
    by: &ByInput,
    e: &EventsRef<'_>,
    d: &[f32],
) {
    par::wide(
        #[inline(always)]
        || {
            const B: usize = OUTER_BLOCK;
            for (r, g) in gw.chunks_exact_mut(n_out).enumerate() {
                let i = lo + r;
                let evs = &by.ev[by.ptr[i]..by.ptr[i + 1]];
                if evs.is_empty() {
                    continue;
                }
                // A binary event adds `1.0 * d` = `d`, the same value as a plain add.
                let scale = |k: u32| e.val.map_or(1.0, |v| v[k as usize]);
                let mut c0 = 0;
                while c0 + B <= n_out {
                    let gb: &mut [f32; B] = (&mut g[c0..c0 + B]).try_into().expect("block");
                    let mut acc = *gb;
                    for &(b, k) in evs {
                        let s = scale(k);
                        let at = b as usize * n_out + c0;
                        let dr: &[f32; B] = d[at..at + B].try_into().expect("block");
                        for (a, &x) in acc.iter_mut().zip(dr) {
                            *a += s * x;
                        }
                    }
                    *gb = acc;
                    c0 += B;
                }
                if c0 < n_out {
                    let gt = &mut g[c0..];
                    for &(b, k) in evs {
                        let s = scale(k);
                        let at = b as usize * n_out;
                        gt.iter_mut()
                            .zip(&d[at + c0..at + n_out])
                            .for_each(|(a, &x)| *a += s * x);
                    }
                }
            }
        },
    )
}

/// Columns of a narrow layer's input gradient held in registers at a time.
pub(crate) const NARROW_BLOCK: usize = 128;

/// Columns `lo..lo + 128` of one row of `d W^T` from the row's output gradient `d0` and
/// `wt = W^T` (`n_out x n_in`, `n_in >= lo + 128`): fused multiply-adds from zero, `j` ascending,
/// the order of the matrix multiply's kernel. Inlined into callers compiled by [`par::wide`].
#[inline(always)]
pub(crate) fn narrow_block(wt: &[f32], n_in: usize, lo: usize, d0: &[f32]) -> [f32; NARROW_BLOCK] {
    const B: usize = NARROW_BLOCK;
    let mut acc = [0.0f32; B];
    for (j, &x) in d0.iter().enumerate() {
        let w: &[f32; B] = wt[j * n_in + lo..j * n_in + lo + B]
            .try_into()
            .expect("128 values");
        for (a, &w) in acc.iter_mut().zip(w) {
            *a = x.mul_add(w, *a);
        }
    }
    acc
}

/// [`narrow_block`] for two rows at once (`d0`, `d1`, equal lengths): 16 independent chains of
/// accumulators hide the FMA latency, and each vector of `W^T` loaded serves both rows. The
/// same values as two calls of [`narrow_block`].
#[inline(always)]
pub(crate) fn narrow_block2(
    wt: &[f32],
    n_in: usize,
    lo: usize,
    d0: &[f32],
    d1: &[f32],
) -> ([f32; NARROW_BLOCK], [f32; NARROW_BLOCK]) {
    const B: usize = NARROW_BLOCK;
    let (mut a0, mut a1) = ([0.0f32; B], [0.0f32; B]);
    for (j, (&x0, &x1)) in d0.iter().zip(d1).enumerate() {
        let w: &[f32; B] = wt[j * n_in + lo..j * n_in + lo + B]
            .try_into()
            .expect("128 values");
        for ((a0, a1), &w) in a0.iter_mut().zip(a1.iter_mut()).zip(w) {
            *a0 = x0.mul_add(w, *a0);
            *a1 = x1.mul_add(w, *a1);
        }
    }
    (a0, a1)
}

/// `d_in = d W^T` for a narrow layer from `wt = W^T` (`n_out x n_in`): 128 inputs at a time are
/// accumulated in registers over the `n_out` terms, as fused multiply-adds in the order of the
/// matrix multiply's kernel (from zero, `j` ascending), so the values are the same. Two halves
/// of the rows across the threads when large.
fn narrow_d_in(d_in: &mut [f32], d: &[f32], wt: &[f32], n_in: usize, n_out: usize) {
    let rows = d.len() / n_out;
    if rows >= 2 && par::worth(rows * n_in) {
        let m = rows / 2;
        let (i0, i1) = d_in.split_at_mut(m * n_in);
        let (d0, d1) = d.split_at(m * n_out);
        par::join(
            || narrow_d_in_part(i0, d0, wt, n_in, n_out),
            || narrow_d_in_part(i1, d1, wt, n_in, n_out),
        );
    } else {
        narrow_d_in_part(d_in, d, wt, n_in, n_out);
    }
}

fn narrow_d_in_part(d_in: &mut [f32], d: &[f32], wt: &[f32], n_in: usize, n_out: usize) {
    par::wide(
        #[inline(always)]
        || {
            const B: usize = NARROW_BLOCK;
            let block = |ir: &mut [f32], dr: &[f32], lo: usize| {
                ir[lo..lo + B].copy_from_slice(&narrow_block(wt, n_in, lo, dr));
            };
            let block2 = |ir: &mut [f32], dr: &[f32], lo: usize| {
                let (d0, d1) = dr.split_at(n_out);
                let (a0, a1) = narrow_block2(wt, n_in, lo, d0, d1);
                ir[lo..lo + B].copy_from_slice(&a0);
                ir[n_in + lo..n_in + lo + B].copy_from_slice(&a1);
            };
            if n_in >= B {
                // Block by block, so the block's 128 columns of W^T stay in L1 over all rows.
                // The last block overlaps the one before when B does not divide n_in;
                // overlapping values are computed the same way and written with the same bits.
                let last = (n_in & (B - 1) != 0).then_some(n_in - B);
                for lo in (0..n_in - B + 1).step_by(B).chain(last) {
                    let mut pairs = d_in.chunks_exact_mut(2 * n_in).zip(d.chunks_exact(2 * n_out));
                    for (ir, dr) in &mut pairs {
                        block2(ir, dr, lo);
                    }
                    let rows = d.len() / n_out;
                    if rows % 2 == 1 {
                        let at = rows - 1;
                        block(&mut d_in[at * n_in..], &d[at * n_out..], lo);
                    }
                }
            } else {
                for (ir, dr) in d_in.chunks_exact_mut(n_in).zip(d.chunks_exact(n_out)) {
                    for (c, o) in ir.iter_mut().enumerate() {
                        let mut a = 0.0f32;
                        for (j, &dj) in dr.iter().enumerate() {
                            a = dj.mul_add(wt[j * n_in + c], a);
                        }
                        *o = a;
                    }
                }
            }
        },
    )
}

impl Layer for Dense {
    fn num_in(&self) -> usize {
        self.num_in
    }
    fn num_out(&self) -> usize {
        self.num_out
    }
    fn mode(&self) -> Mode {
        self.mode
    }
    fn reset(&mut self, batch_size: usize) {
        self.mode = self.mode.with_batch_size(batch_size);
        self.ahead.steps = 0;
    }

    fn step(&mut self, _dt: f32, input: Signal<'_>, record: Record) -> Result<&[f32]> {
        let Dense {
            name,
            w,
            b,
            fixed_w,
            fixed_b,
            num_in,
            num_out,
            out,
            scan,
            tape,
            ev_rows,
            subsets,
            ahead,
            ..
        } = self;
        let (n_in, n_out) = (*num_in, *num_out);
        let rows = check_input(&input, n_in, None, || label_of(name, "Dense"))?;
        match input {
            Signal::Dense(x) => {
                if let Some(y) = ahead.take(x) {
                    if record == Record::Tape {
                        tape.push(&input);
                    }
                    return Ok(y);
                }
            }
            Signal::Events(_) => ahead.steps = 0,
        }
        if out.len() != rows * n_out {
            out.resize(rows * n_out, 0.0);
        }
        let bias = b_of(b, fixed_b, name, n_out)?;
        init_rows(out, bias, n_out);
        let w = w_of(w, fixed_w, name, n_in, n_out)?;
        let sig = match input {
            Signal::Events(e) => {
                add_rows(out, n_out, &e, w, ev_rows);
                input
            }
            Signal::Dense(x) if small(rows, n_in, n_out) && SubsetSums::fits(n_in, n_out) => {
                // Few inputs and outputs: a row of spikes looks its sum up.
                subsets.update(w, bias, n_in, n_out);
                by_width!(n_out, subset_forward_wide(out, x, w, &subsets.sums, n_in, n_out));
                input
            }
            Signal::Dense(x) if small(rows, n_in, n_out) => {
                // Small products: direct loops, skipping zero inputs, beat both other paths.
                by_width!(n_out, small_forward_wide(out, x, w, n_in, n_out));
                input
            }
            Signal::Dense(x) => {
                if scan.collect(x, n_in, max_events(rows, n_in, n_out)) {
                    add_rows(out, n_out, &scan.view(), w, ev_rows);
                    Signal::Events(scan.view())
                } else {
                    let xv = ArrayView2::from_shape((rows, n_in), x).expect("checked shape");
                    let wv = ArrayView2::from_shape((n_in, n_out), w).expect("checked shape");
                    let mut ov = ArrayViewMut2::from_shape((rows, n_out), &mut out[..]).expect("shape");
                    par::gemm(1.0, &xv, &wv, 1.0, &mut ov);
                    input
                }
            }
        };
        if record == Record::Tape {
            tape.push(&sig);
        }
        Ok(out)
    }

    fn begin_tape(&mut self, _num_steps: usize) {
        self.tape.clear();
    }

    fn look_ahead(&mut self, steps: usize, input: &[f32]) {
        let (n_in, n_out) = (self.num_in, self.num_out);
        self.ahead.steps = 0;
        if steps < 2 || n_in == 0 || !input.len().is_multiple_of(steps * n_in) {
            return;
        }
        let step_len = input.len() / steps;
        let rows = step_len / n_in;
        // Only steps that would take the matrix product: not small, not sparse enough for events.
        let Some(max) = event_limit(rows, n_in, n_out) else {
            return;
        };
        if input
            .chunks_exact(step_len)
            .any(|x| self.scan.collect(x, n_in, max))
        {
            return;
        }
        let Dense {
            name,
            w,
            b,
            fixed_w,
            fixed_b,
            ahead,
            ..
        } = self;
        // Errors are left to the steps, which report them.
        let (Ok(w), Ok(bias)) = (w_of(w, fixed_w, name, n_in, n_out), b_of(b, fixed_b, name, n_out)) else {
            return;
        };
        ahead.out.resize(steps * rows * n_out, 0.0);
        init_rows(&mut ahead.out, bias, n_out);
        let xv = ArrayView2::from_shape((steps * rows, n_in), input).expect("checked shape");
        let wv = ArrayView2::from_shape((n_in, n_out), w).expect("checked shape");
        let mut ov = ArrayViewMut2::from_shape((steps * rows, n_out), &mut ahead.out[..]).expect("shape");
        par::gemm(1.0, &xv, &wv, 1.0, &mut ov);
        ahead.steps = steps;
        ahead.next = 0;
        ahead.next_src = input.as_ptr() as usize;
        ahead.step_len = step_len;
    }

    fn begin_backward(&mut self) {
        // Narrow layers keep W^T for the input gradient of every step.
        let (n_in, n_out) = (self.num_in, self.num_out);
        self.wt.clear();
        if n_out >= NARROW || n_in < 64 {
            return;
        }
        if let Ok(w) = w_of(&self.w, &self.fixed_w, &self.name, n_in, n_out) {
            self.wt.resize(n_in * n_out, 0.0);
            for (i, wr) in w.chunks_exact(n_out).enumerate() {
                for (j, &v) in wr.iter().enumerate() {
                    self.wt[j * n_in + i] = v;
                }
            }
        }
    }

    fn zero_grad(&mut self) {
        self.grad_w.fill(0.0);
        self.grad_b.fill(0.0);
    }

    fn backward(
        &mut self,
        _dt: f32,
        t: usize,
        input: Option<Signal<'_>>,
        d_out: &[f32],
        want_d_in: bool,
    ) -> Result<&[f32]> {
        if !self.mode.is_training() {
            return Err(NnError::Mode {
                what: "backward".into(),
                layer: label_of(&self.name, "Dense"),
                needed: "training".into(),
                found: self.mode.to_string(),
            });
        }
        let (n_in, n_out) = (self.num_in, self.num_out);
        let rows = d_out.len() / n_out;
        if n_out >= 128 && par::worth(d_out.len()) {
            // Two halves of the columns: each sums its columns over the rows in order.
            let m = n_out / 2;
            let (g0, g1) = self.grad_b.split_at_mut(m);
            par::join(
                || sum_rows_wide::<0>(g0, d_out, n_out, 0),
                || sum_rows_wide::<0>(g1, d_out, n_out, m),
            );
        } else {
            by_width!(n_out, sum_rows_wide(&mut self.grad_b, d_out, n_out, 0));
        }
        let Dense {
            name,
            scan,
            tape,
            grad_w,
            small_t,
            by_input,
            ev_rows,
            ..
        } = self;
        // A dense step on the tape is one whose scan for events already failed in forward.
        let (sig, scanned) = match input {
            Some(s) => (s, false),
            None => (
                {
                    let recorded = tape.steps.len();
                    tape.get(t, rows, n_in).ok_or_else(|| NnError::Mode {
                        what: format!("backward of step {t}"),
                        layer: label_of(name, "Dense"),
                        needed: "a recorded forward step".into(),
                        found: format!("{recorded} recorded steps"),
                    })?
                },
                true,
            ),
        };
        let sig = match sig {
            Signal::Dense(x)
                if small(rows, n_in, n_out)
                    && x.len() == rows * n_in
                    && n_in <= LANES
                    && (1..=16).contains(&n_out) =>
            {
                by_width!(n_out, small_grad_wide(grad_w, x, d_out, n_in, n_out));
                None
            }
            Signal::Dense(x) if small(rows, n_in, n_out) && x.len() == rows * n_in => {
                // Accumulate the transpose (rows of length n_in vectorise), then fold it in.
                small_t.clear();
                small_t.resize(n_out * n_in, 0.0);
                for (xr, dr) in x.chunks_exact(n_in).zip(d_out.chunks_exact(n_out)) {
                    for (gt, &d) in small_t.chunks_exact_mut(n_in).zip(dr) {
                        gt.iter_mut().zip(xr).for_each(|(g, x)| *g += d * x);
                    }
                }
                for (i, gr) in grad_w.chunks_exact_mut(n_out).enumerate() {
                    for (j, g) in gr.iter_mut().enumerate() {
                        *g += small_t[j * n_in + i];
                    }
                }
                None
            }
            Signal::Dense(x) if !scanned && scan.collect(x, n_in, max_events(rows, n_in, n_out)) => {
                Some(Signal::Events(scan.view()))
            }
            s => Some(s),
        };
        match sig {
            None => {}
            Some(Signal::Events(e)) if n_out >= 2 * OUTER_BLOCK && e.nnz() > 0 => {
                by_input.build(&e, n_in);
                add_outer_grouped(grad_w, n_out, by_input, &e, d_out)
            }
            Some(Signal::Events(e)) => add_outer(grad_w, n_out, &e, d_out, ev_rows),
            Some(Signal::Dense(x)) => {
                let xv = ArrayView2::from_shape((rows, n_in), x).map_err(|_| NnError::BatchSize {
                    layer: label_of(name, "Dense"),
                    expected: x.len() / n_in.max(1),
                    found: rows,
                })?;
                let dv = ArrayView2::from_shape((rows, n_out), d_out).expect("shape");
                let mut gv = ArrayViewMut2::from_shape((n_in, n_out), &mut grad_w[..]).expect("shape");
                par::gemm(1.0, &xv.t(), &dv, 1.0, &mut gv);
            }
        }
        if !want_d_in {
            return Ok(&[]);
        }
        if self.d_in.len() != rows * n_in {
            self.d_in.resize(rows * n_in, 0.0);
        }
        let w = match &self.w {
            Some(v) => f32_ref(v, &self.name, "Dense", "W")?,
            None => &[][..],
        };
        let wv = ArrayView2::from_shape((n_in, n_out), w).map_err(|_| NnError::Variable {
            key: format!("{}.W", label_of(&self.name, "Dense")),
            expected: format!("{n_in} x {n_out}"),
            found: format!("{} values", w.len()),
        })?;
        if small(rows, n_in, n_out)
            && n_in <= LANES
            && (1..=16).contains(&n_out)
            && w.len() == n_in * n_out
            && d_out.len() == rows * n_out
        {
            by_width!(n_out, small_d_in_wide(&mut self.d_in, d_out, w, n_in, n_out));
            return Ok(&self.d_in);
        }
        if small(rows, n_in, n_out) {
            // d_in[b, :] = sum_j d[b, j] W[:, j]: axpys over n_in with W transposed once.
            let wt = &mut self.small_t;
            wt.clear();
            wt.resize(n_out * n_in, 0.0);
            for (i, wr) in w.chunks_exact(n_out).enumerate() {
                for (j, &wv) in wr.iter().enumerate() {
                    wt[j * n_in + i] = wv;
                }
            }
            for (ir, dr) in self.d_in.chunks_exact_mut(n_in).zip(d_out.chunks_exact(n_out)) {
                ir.fill(0.0);
                for (wtr, &d) in wt.chunks_exact(n_in).zip(dr) {
                    ir.iter_mut().zip(wtr).for_each(|(i, w)| *i += d * w);
                }
            }
            return Ok(&self.d_in);
        }
        if self.wt.len() == n_in * n_out && d_out.len() == rows * n_out {
            narrow_d_in(&mut self.d_in, d_out, &self.wt, n_in, n_out);
            return Ok(&self.d_in);
        }
        let dv = ArrayView2::from_shape((rows, n_out), d_out).expect("shape");
        let mut iv = ArrayViewMut2::from_shape((rows, n_in), &mut self.d_in[..]).expect("shape");
        par::gemm(1.0, &dv, &wv.t(), 0.0, &mut iv);
        Ok(&self.d_in)
    }

    fn visit_params(&mut self, f: &mut ParamVisitor<'_>) {
        let name = label_of(&self.name, "Dense");
        if let Some(w) = &mut self.w {
            f(&name, "W", w, &self.grad_w);
        }
        if let Some(b) = &mut self.b {
            f(&name, "b", b, &self.grad_b);
        }
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events for tests: `(b, i)` is an event of value `value(b, i)` where `on(b, i)`.
    struct TestEvents {
        row_ptr: Vec<usize>,
        idx: Vec<u32>,
        val: Vec<f32>,
        cols: usize,
    }

    impl TestEvents {
        fn new(
            rows: usize,
            cols: usize,
            on: impl Fn(usize, usize) -> bool,
            value: impl Fn(usize, usize) -> f32,
        ) -> Self {
            let mut e = TestEvents {
                row_ptr: vec![0],
                idx: Vec::new(),
                val: Vec::new(),
                cols,
            };
            for b in 0..rows {
                for i in (0..cols).filter(|&i| on(b, i)) {
                    e.idx.push(i as u32);
                    e.val.push(value(b, i));
                }
                e.row_ptr.push(e.idx.len());
            }
            e
        }

        /// Binary (values read as 1.0) or valued.
        fn view(&self, valued: bool) -> EventsRef<'_> {
            EventsRef {
                row_ptr: &self.row_ptr,
                idx: &self.idx,
                val: valued.then_some(&self.val[..]),
                cols: self.cols,
            }
        }
    }

    #[test]
    fn fixed_width_kernels_have_the_bits_of_the_generic_loops() {
        let val = |k: usize| -> f32 {
            match k % 7 {
                0 | 3 => 0.0,
                5 => -0.0,
                _ => ((k * 7919) % 101) as f32 / 37.0 - 1.3,
            }
        };
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        let rows = 9;
        for n_in in [1, 5, 10, 16] {
            for n_out in [1, 2, 3, 10, 16] {
                let x: Vec<f32> = (0..rows * n_in).map(|k| val(k * 3 + 1)).collect();
                let w: Vec<f32> = (0..n_in * n_out).map(|k| val(k * 5 + 2)).collect();
                let d: Vec<f32> = (0..rows * n_out).map(|k| val(k * 11 + 4)).collect();
                let init: Vec<f32> = (0..rows * n_out).map(|k| val(k + 6)).collect();
                // Forward.
                let mut a = init.clone();
                small_forward::<0>(&mut a, &x, &w, n_in, n_out);
                let mut b = init.clone();
                by_width!(n_out, small_forward_wide(&mut b, &x, &w, n_in, n_out));
                assert!(same(&a, &b), "forward {n_in} x {n_out}");
                // Forward from subset sums: rows of 0s, 1s and -0s, every fourth with other
                // values; the bias with a -0.0 among its values.
                let bias: Vec<f32> = (0..n_out).map(|k| val(k * 2 + 5)).collect();
                let xb: Vec<f32> = (0..rows * n_in)
                    .map(|k| match (k / n_in % 4, (k * 7) % 5) {
                        (3, _) => val(k),
                        (_, 0 | 3) => 1.0,
                        (_, 1) => -0.0,
                        _ => 0.0,
                    })
                    .collect();
                let mut sums = SubsetSums::default();
                for round in 0..2 {
                    // The second round rebuilds the sums for other weights.
                    let w: Vec<f32> = w.iter().map(|v| v * (1 + round) as f32).collect();
                    let mut a: Vec<f32> = bias.iter().copied().cycle().take(rows * n_out).collect();
                    small_forward::<0>(&mut a, &xb, &w, n_in, n_out);
                    sums.update(&w, Some(&bias), n_in, n_out);
                    let mut b: Vec<f32> = bias.iter().copied().cycle().take(rows * n_out).collect();
                    by_width!(
                        n_out,
                        subset_forward_wide(&mut b, &xb, &w, &sums.sums, n_in, n_out)
                    );
                    assert!(same(&a, &b), "subset forward {n_in} x {n_out}");
                }
                // Weight gradient: the transpose accumulated from 0, then folded in.
                let g0: Vec<f32> = (0..n_in * n_out).map(|k| val(k * 13 + 3)).collect();
                let mut t = vec![0.0f32; n_out * n_in];
                for (xr, dr) in x.chunks_exact(n_in).zip(d.chunks_exact(n_out)) {
                    for (gt, &dv) in t.chunks_exact_mut(n_in).zip(dr) {
                        gt.iter_mut().zip(xr).for_each(|(g, x)| *g += dv * x);
                    }
                }
                let mut a = g0.clone();
                for (i, gr) in a.chunks_exact_mut(n_out).enumerate() {
                    for (j, g) in gr.iter_mut().enumerate() {
                        *g += t[j * n_in + i];
                    }
                }
                let mut b = g0;
                by_width!(n_out, small_grad_wide(&mut b, &x, &d, n_in, n_out));
                assert!(same(&a, &b), "grad {n_in} x {n_out}");
                // Input gradient.
                let mut a = vec![0.0f32; rows * n_in];
                for (ir, dr) in a.chunks_exact_mut(n_in).zip(d.chunks_exact(n_out)) {
                    for (j, &dv) in dr.iter().enumerate() {
                        for (i, v) in ir.iter_mut().enumerate() {
                            *v += dv * w[i * n_out + j];
                        }
                    }
                }
                let mut b = vec![1.0f32; rows * n_in];
                by_width!(n_out, small_d_in_wide(&mut b, &d, &w, n_in, n_out));
                assert!(same(&a, &b), "d_in {n_in} x {n_out}");
                // Bias gradient: the columns summed over the rows in order.
                let mut a: Vec<f32> = (0..n_out).map(|k| val(k * 19 + 1)).collect();
                let mut b = a.clone();
                sum_rows::<0>(&mut a, &d, n_out, 0);
                by_width!(n_out, sum_rows_wide(&mut b, &d, n_out, 0));
                assert!(same(&a, &b), "bias {n_in} x {n_out}");
                // Events: rows of W added, rows of the gradient accumulated.
                let events =
                    TestEvents::new(rows, n_in, |r, i| (r * 5 + i * 3) % 4 == 0, |r, i| val(r + i + 1));
                for valued in [false, true] {
                    let e = events.view(valued);
                    let mut a = init.clone();
                    add_rows_loop(&mut a, n_out, &e, &w);
                    let mut b = init.clone();
                    add_rows_part(&mut b, n_out, &e, &w);
                    assert!(same(&a, &b), "rows {n_in} x {n_out}");
                    // The flat pass over the events, with their rows marked and summed.
                    let mut rows_of = Vec::new();
                    event_rows(&e, &mut rows_of);
                    let want: Vec<u32> = (0..rows)
                        .flat_map(|r| std::iter::repeat_n(r as u32, e.row_ptr[r + 1] - e.row_ptr[r]))
                        .collect();
                    assert_eq!(rows_of[..e.idx.len()], want[..]);
                    let mut b = init.clone();
                    by_width!(n_out, add_flat_wide(&mut b, n_out, &e, &rows_of, &w, true));
                    assert!(same(&a, &b), "flat rows {n_in} x {n_out}");
                    let g0: Vec<f32> = (0..n_in * n_out).map(|k| val(k * 17 + 5)).collect();
                    let mut a = g0.clone();
                    add_outer_loop(&mut a, 0, n_out, &e, &d);
                    let mut b = g0.clone();
                    add_outer_part(&mut b, 0, n_out, &e, &d);
                    assert!(same(&a, &b), "outer {n_in} x {n_out}");
                    let mut b = g0;
                    by_width!(n_out, add_flat_wide(&mut b, n_out, &e, &rows_of, &d, false));
                    assert!(same(&a, &b), "flat outer {n_in} x {n_out}");
                }
            }
        }
    }

    #[test]
    fn grouped_event_gradient_has_the_bits_of_the_plain_one() {
        let (rows, n_in, n_out) = (19, 57, 300);
        let events = TestEvents::new(
            rows,
            n_in,
            |b, i| (b * 31 + i * 17) % 7 == 0,
            |b, i| ((b + i) % 5) as f32 * 0.3 - 0.6,
        );
        let d: Vec<f32> = (0..rows * n_out)
            .map(|k| ((k * 7919) % 101) as f32 / 101.0 - 0.5)
            .collect();
        for valued in [false, true] {
            let e = events.view(valued);
            let init: Vec<f32> = (0..n_in * n_out).map(|k| (k % 13) as f32 * 0.01).collect();
            let mut plain = init.clone();
            add_outer(&mut plain, n_out, &e, &d, &mut Vec::new());
            let mut by = ByInput::default();
            by.build(&e, n_in);
            let mut grouped = init;
            add_outer_grouped(&mut grouped, n_out, &by, &e, &d);
            assert!(plain
                .iter()
                .zip(&grouped)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    #[test]
    fn steps_announced_ahead_have_the_bits_of_single_steps() {
        let (t_len, rows, n_in, n_out) = (6, 8, 40, 48);
        let w = Array2::from_shape_fn((n_in, n_out), |(i, j)| ((i * 7 + j * 3) % 11) as f32 * 0.05 - 0.2);
        let b = Array1::from_shape_fn(n_out, |j| j as f32 * 0.01);
        let x: Vec<f32> = (0..t_len * rows * n_in)
            .map(|k| ((k * 37) % 17) as f32 * 0.1 + 0.05)
            .collect();
        let mode = Mode::Training { batch_size: rows };
        let len = rows * n_in;
        let mut single = Dense::try_from_arrays(w.clone(), Some(b.clone()), mode).unwrap();
        let expected: Vec<Vec<f32>> = x
            .chunks_exact(len)
            .map(|s| single.step(1.0, Signal::Dense(s), Record::Off).unwrap().to_vec())
            .collect();
        let same = |a: &[f32], b: &[f32]| {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits())
        };
        let mut d = Dense::try_from_arrays(w, Some(b), mode).unwrap();
        // Four announced steps come from the stored product; the two after them are computed.
        d.look_ahead(4, &x[..4 * len]);
        assert_eq!(d.ahead.steps, 4);
        for (k, s) in x.chunks_exact(len).enumerate() {
            let y = d.step(1.0, Signal::Dense(s), Record::Off).unwrap();
            assert!(same(y, &expected[k]), "step {k}");
            assert_eq!(d.ahead.next, (k + 1).min(4));
        }
        assert_eq!(d.ahead.steps, 0, "an unannounced step drops the rest");
        // The same values at another address are not the announced step: computed afresh.
        d.look_ahead(2, &x[..2 * len]);
        let copy = x[..len].to_vec();
        assert!(same(
            d.step(1.0, Signal::Dense(&copy), Record::Off).unwrap(),
            &expected[0]
        ));
        assert_eq!((d.ahead.steps, d.ahead.next), (0, 0));
        // Steps out of order drop the stored ones.
        d.look_ahead(2, &x[..2 * len]);
        assert!(same(
            d.step(1.0, Signal::Dense(&x[len..2 * len]), Record::Off).unwrap(),
            &expected[1]
        ));
        assert_eq!(d.ahead.steps, 0);
        // A reset drops them too, and so does announcing nothing.
        d.look_ahead(2, &x[..2 * len]);
        d.reset(rows);
        assert_eq!(d.ahead.steps, 0);
        d.look_ahead(2, &x[..2 * len]);
        d.look_ahead(0, &[]);
        assert_eq!(d.ahead.steps, 0);
        // Inputs sparse enough for events, small products and ragged lengths are not computed ahead.
        let mut sparse = vec![0.0f32; 2 * len];
        sparse.iter_mut().step_by(n_in).for_each(|v| *v = 1.0);
        d.look_ahead(2, &sparse);
        assert_eq!(d.ahead.steps, 0);
        d.look_ahead(2, &x[..2 * len - 1]);
        assert_eq!(d.ahead.steps, 0);
        let mut tiny = Dense::try_from_arrays(Array2::ones((4, 3)), None, mode).unwrap();
        tiny.look_ahead(2, &x[..2 * rows * 4]);
        assert_eq!(tiny.ahead.steps, 0);
    }

    #[test]
    fn wide_event_rows_in_column_blocks_have_the_bits_of_a_row_at_a_time() {
        let (rows, n_in, n_out) = (9, 23, 300);
        // Row 4 stays silent.
        let events = TestEvents::new(
            rows,
            n_in,
            |b, i| b != 4 && (b * 13 + i * 5) % 6 == 0,
            |b, i| ((b + 2 * i) % 7) as f32 * 0.25 - 0.8,
        );
        let w: Vec<f32> = (0..n_in * n_out)
            .map(|k| ((k * 7919) % 103) as f32 / 103.0 - 0.5)
            .collect();
        let init: Vec<f32> = (0..rows * n_out).map(|k| (k % 11) as f32 * 0.01).collect();
        for valued in [false, true] {
            let e = events.view(valued);
            // A row at a time, each event adding its whole row of W.
            let mut plain = init.clone();
            for (b, o) in plain.chunks_exact_mut(n_out).enumerate() {
                for k in e.row_ptr[b]..e.row_ptr[b + 1] {
                    let wr = &w[e.idx[k] as usize * n_out..][..n_out];
                    let s = e.val.map(|v| v[k]);
                    o.iter_mut()
                        .zip(wr)
                        .for_each(|(o, w)| *o += s.map_or(*w, |s| s * w));
                }
            }
            let mut blocked = init.clone();
            add_rows_part(&mut blocked, n_out, &e, &w);
            assert!(plain
                .iter()
                .zip(&blocked)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            assert_ne!(plain, init);
        }
    }

    #[test]
    fn bit_masks_round_trip_binary_values_and_refuse_others() {
        for n in [1, 15, 16, 17, 100, 70_003] {
            let x: Vec<f32> = (0..n)
                .map(|k| ((k * 2_654_435_761usize) >> 7 & 1) as f32)
                .collect();
            let mut bits = vec![0u16; n.div_ceil(16)];
            assert!(pack_bits(&x, &mut bits));
            let mut back = vec![7.0; n];
            unpack_bits(&bits, &mut back);
            assert_eq!(back, x, "{n}");
            let mut y = x.clone();
            y[n / 2] = 0.5;
            assert!(!pack_bits(&y, &mut bits), "{n}");
        }
    }

    #[test]
    fn narrow_input_gradient_matches_the_product() {
        for (rows, n_in, n_out) in [(37, 203, 20), (5, 100, 7), (9, 256, 3)] {
            check_narrow(rows, n_in, n_out);
        }
    }

    fn check_narrow(rows: usize, n_in: usize, n_out: usize) {
        let w: Vec<f32> = (0..n_in * n_out)
            .map(|k| ((k * 7919) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let d: Vec<f32> = (0..rows * n_out)
            .map(|k| ((k * 104_729) % 89) as f32 / 89.0 - 0.5)
            .collect();
        let mut wt = vec![0.0; n_in * n_out];
        for i in 0..n_in {
            for j in 0..n_out {
                wt[j * n_in + i] = w[i * n_out + j];
            }
        }
        let mut got = vec![0.0; rows * n_in];
        narrow_d_in(&mut got, &d, &wt, n_in, n_out);
        for b in 0..rows {
            for i in 0..n_in {
                let want: f64 = (0..n_out)
                    .map(|j| f64::from(d[b * n_out + j]) * f64::from(w[i * n_out + j]))
                    .sum();
                assert!((f64::from(got[b * n_in + i]) - want).abs() < 1e-5, "{b} {i}");
            }
        }
    }
}
