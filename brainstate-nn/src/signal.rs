//! What flows between layers in one time step: dense rows or binary spike events.

/// Sparse rows: for sample `b`, the active columns are `idx[row_ptr[b]..row_ptr[b + 1]]`, each
/// with value `val[k]` (or 1.0 when `val` is None). Offsets are absolute into `idx`.
#[derive(Clone, Copy, Debug)]
pub struct EventsRef<'a> {
    /// `rows + 1` offsets into `idx` (the first need not be 0).
    pub row_ptr: &'a [usize],
    /// Column of each event.
    pub idx: &'a [u32],
    /// Value of each event, parallel to `idx`; None means every value is 1.0.
    pub val: Option<&'a [f32]>,
    /// Number of columns (features).
    pub cols: usize,
}

impl EventsRef<'_> {
    /// Number of rows (samples).
    pub fn rows(&self) -> usize {
        self.row_ptr.len().saturating_sub(1)
    }

    /// Number of events.
    pub fn nnz(&self) -> usize {
        match (self.row_ptr.first(), self.row_ptr.last()) {
            (Some(a), Some(b)) => b - a,
            _ => 0,
        }
    }

    /// Writes the rows densely into `out` (`rows * cols`).
    pub fn densify(&self, out: &mut [f32]) {
        out.fill(0.0);
        for b in 0..self.rows() {
            let row = &mut out[b * self.cols..(b + 1) * self.cols];
            for k in self.row_ptr[b]..self.row_ptr[b + 1] {
                row[self.idx[k] as usize] = self.val.map_or(1.0, |v| v[k]);
            }
        }
    }
}

/// One step's input to a layer: `rows x features` values, dense row-major or as events.
#[derive(Clone, Copy, Debug)]
pub enum Signal<'a> {
    /// Dense row-major values, `batch * features` long.
    Dense(&'a [f32]),
    /// Sparse events (spikes); silent inputs cost nothing.
    Events(EventsRef<'a>),
}

impl Signal<'_> {
    /// Number of values (rows times features).
    pub fn len(&self) -> usize {
        match self {
            Signal::Dense(x) => x.len(),
            Signal::Events(e) => e.rows() * e.cols,
        }
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows, given the number of features; an error message `(expected features, found)` when
    /// the length is not a multiple.
    pub(crate) fn rows(&self, features: usize) -> Result<usize, usize> {
        match self {
            Signal::Dense(x) => {
                if features == 0 || x.len() % features != 0 {
                    Err(x.len())
                } else {
                    Ok(x.len() / features)
                }
            }
            Signal::Events(e) => {
                if e.cols != features {
                    Err(e.cols)
                } else {
                    Ok(e.rows())
                }
            }
        }
    }
}

/// Growable event storage reused across steps (no allocation once warmed up).
#[derive(Clone, Debug, Default)]
pub struct Events {
    pub(crate) row_ptr: Vec<usize>,
    pub(crate) idx: Vec<u32>,
    pub(crate) val: Vec<f32>,
    pub(crate) binary: bool,
    pub(crate) cols: usize,
    /// The second half of the rows while two threads scan (appended afterwards).
    half: Option<Box<Events>>,
}

impl Events {
    /// Collects the nonzeros of `x` (`rows x cols`) if there are at most `max_nnz`; returns false
    /// (and leaves the storage unusable) when there are more.
    pub(crate) fn collect(&mut self, x: &[f32], cols: usize, max_nnz: usize) -> bool {
        self.collect_by(x, cols, max_nnz, Pick::Nonzero)
    }

    /// Collects the spikes `x >= v_th` of `x` (`rows x cols`, e.g. a Lif's recorded pre-reset
    /// potentials) as binary events, with the decisions of [`Events::collect`] on the 0/1 spike
    /// rows: the same list, and false exactly when `collect` of those rows would be.
    pub(crate) fn collect_spikes(&mut self, x: &[f32], cols: usize, v_th: f32, max_nnz: usize) -> bool {
        self.collect_by(x, cols, max_nnz, Pick::AtLeast(v_th))
    }

    fn collect_by(&mut self, x: &[f32], cols: usize, max_nnz: usize, pick: Pick) -> bool {
        self.reset(cols);
        if cols == 0 || !probe(x, max_nnz, pick) {
            return false;
        }
        let rows = x.len() / cols;
        if rows < 2 || !crate::par::worth(x.len()) {
            return self.scan(x, cols, max_nnz, pick);
        }
        // Two halves of the rows, the second into `half`, then appended: the same list.
        let mut other = self.take_half();
        let (x0, x1) = x.split_at(rows / 2 * cols);
        let (mut ok0, mut ok1) = (false, false);
        crate::par::join(
            || ok0 = self.scan(x0, cols, max_nnz, pick),
            || ok1 = other.scan(x1, cols, max_nnz, pick),
        );
        self.merge_half(other, ok0 && ok1, max_nnz)
    }

    /// False when the first values of `x` already show more spikes (`x >= v_th`) than
    /// [`Events::collect_spikes`] would take for `max_nnz` (it refuses on the same test).
    pub(crate) fn probe_spikes(x: &[f32], v_th: f32, max_nnz: usize) -> bool {
        probe(x, max_nnz, Pick::AtLeast(v_th))
    }

    /// Appends the spikes `x >= v_th` of whole rows `x` (`cols` as reset); false, leaving the
    /// list unusable, once it holds more than `max_nnz` events.
    pub(crate) fn append_spikes(&mut self, x: &[f32], v_th: f32, max_nnz: usize) -> bool {
        let cols = self.cols;
        cols > 0 && self.scan(x, cols, max_nnz, Pick::AtLeast(v_th))
    }

    /// An empty list with the same columns, for the second half of the rows of a two-thread
    /// scan (handed back through [`Events::merge_half`], which keeps its storage).
    pub(crate) fn take_half(&mut self) -> Box<Events> {
        let mut other = self.half.take().unwrap_or_default();
        other.reset(self.cols);
        other
    }

    /// Appends the list of the second half of the rows when both halves succeeded (`ok`) and the
    /// whole holds at most `max_nnz` events; true then.
    pub(crate) fn merge_half(&mut self, other: Box<Events>, ok: bool, max_nnz: usize) -> bool {
        let ok = ok && self.idx.len() + other.idx.len() <= max_nnz;
        if ok {
            let base = self.idx.len();
            self.row_ptr.extend(other.row_ptr[1..].iter().map(|p| p + base));
            self.idx.extend_from_slice(&other.idx);
            self.val.extend_from_slice(&other.val);
            self.binary &= other.binary;
        }
        self.half = Some(other);
        ok
    }

    /// Empties the list for rows of `cols` columns (the start of a scan, or of a list built
    /// with [`Events::append_spikes`]).
    pub(crate) fn reset(&mut self, cols: usize) {
        self.row_ptr.clear();
        self.idx.clear();
        self.val.clear();
        self.cols = cols;
        self.binary = true;
        self.row_ptr.push(0);
    }

    fn scan(&mut self, x: &[f32], cols: usize, max_nnz: usize, pick: Pick) -> bool {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            return unsafe {
                match pick {
                    Pick::Nonzero => self.collect_rows_avx512::<true>(x, cols, max_nnz, 0.0),
                    Pick::AtLeast(th) => self.collect_rows_avx512::<false>(x, cols, max_nnz, th),
                }
            };
        }
        crate::par::wide(
            #[inline(always)]
            || match pick {
                Pick::Nonzero => self.collect_rows::<true>(x, cols, max_nnz, |c| masks16(c).0, |v| v != 0.0),
                Pick::AtLeast(th) => {
                    self.collect_rows::<false>(x, cols, max_nnz, |c| at_least16(c, th), |v| v >= th)
                }
            },
        )
    }

    /// [`Events::collect_rows`] without a branch per 16 values: each vector compare's mask
    /// compress-stores the picked columns (and values) straight into the lists' spare capacity,
    /// so sparse rows cost no mispredicted branches. The same lists; the limit is checked at
    /// the end of each row (the lists hold at most one row more than `max_nnz`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,popcnt")]
    unsafe fn collect_rows_avx512<const VALUED: bool>(
        &mut self,
        x: &[f32],
        cols: usize,
        max_nnz: usize,
        th: f32,
    ) -> bool {
        use std::arch::x86_64::*;
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let (zero, one, thv) = (_mm512_setzero_ps(), _mm512_set1_ps(1.0), _mm512_set1_ps(th));
        let mut not_one = 0u16;
        for row in x.chunks_exact(cols) {
            // Room for every column of the row: the stores below stay in the capacity.
            self.idx.reserve(cols);
            if VALUED {
                self.val.reserve(cols);
            }
            let mut n = self.idx.len();
            let (ip, vp) = (self.idx.as_mut_ptr(), self.val.as_mut_ptr());
            let mut chunks = row.chunks_exact(16);
            let mut base = 0;
            for chunk in &mut chunks {
                // SAFETY: `chunk` holds 16 values; at most 16 picks go to `n..n + 16`, and
                // `n - len <= cols` over the row, within the capacity reserved above (`val`
                // grows in step with `idx` when VALUED).
                unsafe {
                    let v = _mm512_loadu_ps(chunk.as_ptr());
                    let mask = if VALUED {
                        _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(v, zero)
                    } else {
                        _mm512_cmp_ps_mask::<_CMP_GE_OQ>(v, thv)
                    };
                    let cols = _mm512_add_epi32(lanes, _mm512_set1_epi32(base as i32));
                    _mm512_mask_compressstoreu_epi32(ip.add(n).cast(), mask, cols);
                    if VALUED {
                        _mm512_mask_compressstoreu_ps(vp.add(n).cast(), mask, v);
                        not_one |= mask & !_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(v, one);
                    }
                    n += mask.count_ones() as usize;
                }
                base += 16;
            }
            // SAFETY: every slot below `n` was written (above, or before this row), and `n` is
            // within the capacity.
            unsafe {
                self.idx.set_len(n);
                if VALUED {
                    self.val.set_len(n);
                }
            }
            for (j, &v) in chunks.remainder().iter().enumerate() {
                let picked = if VALUED { v != 0.0 } else { v >= th };
                if picked {
                    self.idx.push((base + j) as u32);
                    if VALUED {
                        self.val.push(v);
                        self.binary &= v == 1.0;
                    }
                }
            }
            self.row_ptr.push(self.idx.len());
            if self.idx.len() > max_nnz {
                return false;
            }
        }
        self.binary &= not_one == 0;
        true
    }

    /// The scan of [`Events::collect`]: 16 values at a time into a bit mask, then only the set
    /// bits are visited (silent stretches cost one compare per 16 values). `VALUED`: the picked
    /// values are the events' values (else every event is 1.0).
    #[inline(always)]
    fn collect_rows<const VALUED: bool>(
        &mut self,
        x: &[f32],
        cols: usize,
        max_nnz: usize,
        mask16: impl Fn(&[f32; 16]) -> u16,
        picks: impl Fn(f32) -> bool,
    ) -> bool {
        for row in x.chunks_exact(cols) {
            let mut base = 0;
            let mut chunks = row.chunks_exact(16);
            for chunk in &mut chunks {
                // A fixed 16 lanes: one vector compare into a mask.
                let chunk: &[f32; 16] = chunk.try_into().expect("16 values");
                let mut mask = u32::from(mask16(chunk));
                if mask != 0 {
                    if self.idx.len() + mask.count_ones() as usize > max_nnz {
                        return false;
                    }
                    while mask != 0 {
                        let j = mask.trailing_zeros() as usize;
                        mask &= mask - 1;
                        self.idx.push((base + j) as u32);
                        if VALUED {
                            let v = chunk[j];
                            self.val.push(v);
                            self.binary &= v == 1.0;
                        }
                    }
                }
                base += 16;
            }
            for (j, &v) in chunks.remainder().iter().enumerate() {
                if picks(v) {
                    if self.idx.len() >= max_nnz {
                        return false;
                    }
                    self.idx.push((base + j) as u32);
                    if VALUED {
                        self.val.push(v);
                        self.binary &= v == 1.0;
                    }
                }
            }
            self.row_ptr.push(self.idx.len());
        }
        true
    }

    /// A view of the collected events.
    pub(crate) fn view(&self) -> EventsRef<'_> {
        EventsRef {
            row_ptr: &self.row_ptr,
            idx: &self.idx,
            val: if self.binary { None } else { Some(&self.val) },
            cols: self.cols,
        }
    }
}

/// The probe of a scan: false when the first 4096 values of `x` show more than twice the density
/// `max_nnz` allows (a dense input is recognised without building a list).
fn probe(x: &[f32], max_nnz: usize, pick: Pick) -> bool {
    let probe = &x[..x.len().min(4096)];
    let seen = probe.iter().filter(|&&v| pick.picks(v)).count();
    probe.is_empty() || seen * x.len() <= 2 * max_nnz * probe.len()
}

/// Which values of a dense row become events.
#[derive(Clone, Copy)]
enum Pick {
    /// Every nonzero, with its value.
    Nonzero,
    /// Values `>= v_th` (NaN never), as events of value 1.
    AtLeast(f32),
}

impl Pick {
    #[inline(always)]
    fn picks(self, v: f32) -> bool {
        match self {
            Pick::Nonzero => v != 0.0,
            Pick::AtLeast(th) => v >= th,
        }
    }
}

/// Bit `j` is `c[j] >= th` (false for NaN, as Rust's `>=`). Only the generic scan uses it: a
/// CPU with AVX-512 takes [`Events::collect_rows_avx512`] instead.
#[inline(always)]
fn at_least16(c: &[f32; 16], th: f32) -> u16 {
    c.iter()
        .enumerate()
        .fold(0u16, |m, (j, &v)| m | (u16::from(v >= th) << j))
}

/// Bit masks of 16 values: bit `j` of the first is `c[j] != 0`, of the second `c[j] == 1` (one
/// vector compare each with AVX-512).
#[inline(always)]
pub(crate) fn masks16(c: &[f32; 16]) -> (u16, u16) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked above).
        return unsafe { masks16_avx512(c) };
    }
    let (mut nz, mut one) = (0u32, 0u32);
    for (j, v) in c.iter().enumerate() {
        nz |= u32::from(*v != 0.0) << j;
        one |= u32::from(*v == 1.0) << j;
    }
    (nz as u16, one as u16)
}

/// [`masks16`] with AVX-512 compares into mask registers (`!=` unordered, true for NaN, as
/// Rust's; `==` ordered).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn masks16_avx512(c: &[f32; 16]) -> (u16, u16) {
    use std::arch::x86_64::{
        _mm512_cmp_ps_mask, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _CMP_EQ_OQ, _CMP_NEQ_UQ,
    };
    // SAFETY: `c` holds 16 values to load.
    let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
    (
        _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(v, _mm512_setzero_ps()),
        _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(v, _mm512_set1_ps(1.0)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator of test values.
    fn lcg(mut seed: u64) -> impl FnMut() -> u32 {
        move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        }
    }

    /// The AVX-512 scan (compress-stores) gives the lists of the generic one, and refuses the
    /// same inputs: values and spikes, NaN, values other than 1, rows with a partial last chunk.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_scan_equals_the_generic_scan() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512 here: the generic scan is the only one");
            return;
        }
        for (rows, cols, binary) in [
            (7, 45, true),
            (7, 45, false),
            (5, 16, false),
            (4, 3, true),
            (30, 1000, true),
        ] {
            let mut next = lcg(99u64);
            let x: Vec<f32> = (0..rows * cols)
                .map(|_| match next() % 100 {
                    0..=7 => 1.0,
                    8..=9 if !binary => 0.5 + (next() % 4) as f32,
                    10 if !binary => f32::NAN,
                    _ => 0.0,
                })
                .collect();
            let n = x.iter().filter(|&&v| v != 0.0).count();
            for max in [n.saturating_sub(1), n, rows * cols] {
                for pick in [Pick::Nonzero, Pick::AtLeast(1.0)] {
                    let (mut a, mut b) = (Events::default(), Events::default());
                    a.reset(cols);
                    b.reset(cols);
                    // SAFETY: the CPU has AVX-512F (checked above).
                    let ok_a = unsafe {
                        match pick {
                            Pick::Nonzero => a.collect_rows_avx512::<true>(&x, cols, max, 0.0),
                            Pick::AtLeast(th) => a.collect_rows_avx512::<false>(&x, cols, max, th),
                        }
                    };
                    let ok_b = match pick {
                        Pick::Nonzero => {
                            b.collect_rows::<true>(&x, cols, max, |c| masks16(c).0, |v| v != 0.0)
                        }
                        Pick::AtLeast(th) => {
                            b.collect_rows::<false>(&x, cols, max, |c| at_least16(c, th), |v| v >= th)
                        }
                    };
                    assert_eq!(ok_a, ok_b, "{rows}x{cols}, max {max} of {n}");
                    if ok_a {
                        assert_eq!((&a.row_ptr, &a.idx, a.binary), (&b.row_ptr, &b.idx, b.binary));
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&a.val), bits(&b.val));
                    }
                }
            }
        }
    }

    /// Events of the spikes `x >= v_th`, collected from the potentials, equal those collected from
    /// the 0/1 spike rows, and both refuse (too many events, or a dense probe) together.
    #[test]
    fn spikes_collected_from_potentials_equal_spikes_collected_from_rows() {
        let v_th = 1.0f32;
        for (rows, cols, rate_in_1000) in [(64, 1000, 15), (64, 1000, 300), (3, 37, 100), (600, 300, 5)] {
            let mut next = lcg(12345u64);
            let vp: Vec<f32> = (0..rows * cols)
                .map(|_| match next() % 1000 {
                    r if r < rate_in_1000 => v_th + (next() % 7) as f32 * 0.25, // at or above
                    999 => f32::NAN,
                    _ => v_th - 1e-3 - (next() % 5) as f32,
                })
                .collect();
            let spikes: Vec<f32> = vp.iter().map(|&v| if v >= v_th { 1.0 } else { 0.0 }).collect();
            let n = spikes.iter().filter(|&&s| s == 1.0).count();
            for max in [n.saturating_sub(1), n, n + 1, rows * cols] {
                let (mut a, mut b) = (Events::default(), Events::default());
                let ok_a = a.collect_spikes(&vp, cols, v_th, max);
                let ok_b = b.collect(&spikes, cols, max);
                assert_eq!(
                    ok_a, ok_b,
                    "{rows}x{cols} rate {rate_in_1000}/1000, max {max} of {n}"
                );
                if ok_a {
                    let (va, vb) = (a.view(), b.view());
                    assert!(va.val.is_none() && vb.val.is_none());
                    assert_eq!((va.row_ptr, va.idx), (vb.row_ptr, vb.idx));
                    assert_eq!(va.nnz(), n);
                }
            }
        }
    }
}
