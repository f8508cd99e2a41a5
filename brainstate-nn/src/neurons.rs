//! `Lif`, `Expon` and `Integrator`: BrainPy's exponential-Euler dynamics.

use crate::dense::{narrow_block, narrow_block2, NARROW_BLOCK};
use crate::error::{NnError, Result};
use crate::layer::{check_input, f32_mut, label_of, Layer, ParamVisitor, Record};
use crate::mode::Mode;
use crate::signal::{Events, Signal};
#[allow(unused_imports)]
use crate::surrogate::with_grad;
use crate::surrogate::Surrogate;
use brainstate_core::{NodeName, Variable};
use ndarray::{Array1, Array2};

/// `dt * phi1(-dt/tau)` of BrainPy's exponential Euler (`phi1(z) = (e^z - 1)/z`), rounded to f32
/// once. The update of `tau dx/dt = target - x` is `x + c * ((target - x) / tau)`.
fn exp_euler_c(dt: f32, tau: f32) -> f32 {
    let z = -(dt as f64) / (tau as f64);
    let phi = if z == 0.0 { 1.0 } else { z.exp_m1() / z };
    (dt as f64 * phi) as f32
}

fn check_tau(layer: &str, tau: f32) -> Result<()> {
    if tau.is_finite() && tau > 0.0 {
        Ok(())
    } else {
        Err(NnError::Param {
            layer: layer.into(),
            name: "tau".into(),
            value: tau.to_string(),
            reason: "a time constant must be finite and > 0".into(),
        })
    }
}

fn check_size(layer: &str, n: usize) -> Result<()> {
    if n == 0 {
        return Err(NnError::Param {
            layer: layer.into(),
            name: "size".into(),
            value: "0".into(),
            reason: "a layer needs at least one neuron".into(),
        });
    }
    Ok(())
}

/// A state variable of `n` per sample for `mode`: `(n,)` without batch axis, `(batch, n)` with
/// batch axis 0 otherwise.
fn state_var(mode: Mode, n: usize, value: f32) -> Variable {
    if mode.is_batching() {
        Variable::new(Array2::from_elem((mode.batch_size(), n), value)).with_batch_axis(0)
    } else {
        Variable::new(Array1::from_elem(n, value))
    }
}

fn spike_var(mode: Mode, n: usize) -> Variable {
    match (mode.is_training(), mode.is_batching()) {
        (true, _) => Variable::new(Array2::<f32>::zeros((mode.batch_size(), n))).with_batch_axis(0),
        (false, true) => Variable::new(Array2::from_elem((mode.batch_size(), n), false)).with_batch_axis(0),
        (false, false) => Variable::new(Array1::from_elem(n, false)),
    }
}

/// Re-initialises a state variable for `mode`, in place when the shape is unchanged.
fn reset_var(var: &mut Variable, mode: Mode, n: usize, value: f32) {
    let want: &[usize] = if mode.is_batching() {
        &[mode.batch_size(), n]
    } else {
        &[n]
    };
    if var.shape() == want && var.batch_axis() == mode.is_batching().then_some(0) {
        if let Ok(mut a) = var.array_mut::<f32>() {
            a.fill(value);
            return;
        }
    }
    *var = state_var(mode, n, value);
}

/// How the Lif membrane is reset after a spike in training mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SpikeReset {
    /// `V <- V - (V_th - V_reset) * spike` (BrainPy's default `'soft'`).
    #[default]
    Soft,
    /// `V <- V + (V_reset - V) * spike`.
    Hard,
}

/// Parameters of [`Lif`], with BrainPy's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LifParams {
    /// Resting potential (0).
    pub v_rest: f32,
    /// Reset potential (-5).
    pub v_reset: f32,
    /// Threshold (20).
    pub v_th: f32,
    /// Membrane resistance (1).
    pub r: f32,
    /// Membrane time constant in ms (10).
    pub tau: f32,
    /// Initial potential after a reset (`V_initializer=ZeroInit()`: 0).
    pub v_init: f32,
    /// Surrogate spike function (`InvSquareGrad(alpha=100)`).
    pub surrogate: Surrogate,
    /// Reset kind in training mode (soft); outside training the reset is always hard.
    pub spk_reset: SpikeReset,
    /// `detach_spk`: no gradient flows through the spike inside the reset term.
    pub detach_spk: bool,
}

impl Default for LifParams {
    fn default() -> Self {
        LifParams {
            v_rest: 0.0,
            v_reset: -5.0,
            v_th: 20.0,
            r: 1.0,
            tau: 10.0,
            v_init: 0.0,
            surrogate: Surrogate::default(),
            spk_reset: SpikeReset::Soft,
            detach_spk: false,
        }
    }
}

/// Leaky integrate-and-fire neurons, BrainPy's `bp.dyn.Lif`: variables `V` and `spike`.
///
/// Step: `V' = V + c ((-V + V_rest + R I) / tau)` (exponential Euler), `spike = H(V' - V_th)`,
/// then the reset. Training mode: spikes are f32 and the reset is soft or hard as configured;
/// otherwise spikes are bool and the reset is hard to `V_reset`.
#[derive(brainstate_derive::Stateful)]
#[stateful(crate = "brainstate_core", type_name = "Lif")]
pub struct Lif {
    #[stateful(name)]
    name: NodeName,
    #[stateful(rename = "V")]
    v: Variable,
    spike: Variable,
    params: LifParams,
    size: usize,
    mode: Mode,
    out: Vec<f32>,
    dense_in: Vec<f32>,
    /// Pre-reset potentials of the recorded steps (kept at full length between epochs).
    tape: Vec<f32>,
    tape_steps: usize,
    carry: Vec<f32>,
    d_in: Vec<f32>,
}

impl Lif {
    /// `size` neurons with `params` in `mode`.
    pub fn new(size: usize, params: LifParams, mode: Mode) -> Result<Lif> {
        check_size("Lif", size)?;
        check_tau("Lif", params.tau)?;
        for (name, v) in [
            ("V_rest", params.v_rest),
            ("V_reset", params.v_reset),
            ("V_th", params.v_th),
            ("R", params.r),
            ("V_init", params.v_init),
        ] {
            if !v.is_finite() {
                return Err(NnError::Param {
                    layer: "Lif".into(),
                    name: name.into(),
                    value: v.to_string(),
                    reason: "must be finite".into(),
                });
            }
        }
        Ok(Lif {
            name: NodeName::auto(),
            v: state_var(mode, size, params.v_init),
            spike: spike_var(mode, size),
            params,
            size,
            mode,
            out: vec![0.0; mode.batch_size() * size],
            dense_in: Vec::new(),
            tape: Vec::new(),
            tape_steps: 0,
            carry: Vec::new(),
            d_in: Vec::new(),
        })
    }

    /// Gives the layer a name (must be an identifier).
    pub fn named(mut self, name: &str) -> Result<Lif> {
        self.name = NodeName::new(name)?;
        Ok(self)
    }

    /// The parameters.
    pub fn params(&self) -> &LifParams {
        &self.params
    }

    /// The membrane potential variable `V`.
    pub fn v(&self) -> &Variable {
        &self.v
    }

    /// The spike variable.
    pub fn spike(&self) -> &Variable {
        &self.spike
    }

    /// Pre-reset potentials recorded at step `t` (training), `batch * size` values.
    pub fn recorded_v_pre(&self, t: usize) -> Option<&[f32]> {
        let n = self.out.len();
        if t >= self.tape_steps {
            return None;
        }
        self.tape.get(t * n..(t + 1) * n)
    }

    /// The spikes of recorded step `t` into `out` (`batch * size` values, 1.0 where the
    /// pre-reset potential reached `V_th`, as the step computed them); false when `t` was not
    /// recorded.
    pub(crate) fn recorded_spikes(&self, t: usize, out: &mut Vec<f32>) -> bool {
        let Some(vp) = self.recorded_v_pre(t) else {
            return false;
        };
        out.resize(vp.len(), 0.0);
        let v_th = self.params.v_th;
        crate::par::zip2(out, vp, |out, vp| {
            crate::par::wide(
                #[inline(always)]
                || {
                    out.iter_mut()
                        .zip(vp)
                        .for_each(|(s, &v)| *s = if v >= v_th { 1.0 } else { 0.0 })
                },
            )
        });
        true
    }

    /// One step with input current `I` = `input`, or, with `syn = (g, k)`, the conductance `g`
    /// of the Expon before this layer updated first with `input` (`g <- (g - k g) + x`, as its
    /// own step computes it) in the same pass over the values.
    fn step_current(
        &mut self,
        dt: f32,
        input: Signal<'_>,
        syn: Option<(&mut [f32], f32)>,
        record: Record,
    ) -> Result<&[f32]> {
        let Lif {
            name,
            v,
            spike,
            params: p,
            size,
            mode,
            out,
            dense_in,
            tape,
            tape_steps,
            ..
        } = self;
        let v = f32_mut(v, name, "Lif", "V")?;
        let batch = v.len() / *size;
        check_input(&input, *size, Some(batch), || label_of(name, "Lif"))?;
        let i: &[f32] = match input {
            Signal::Dense(x) => x,
            Signal::Events(e) => {
                dense_in.resize(e.rows() * e.cols, 0.0);
                e.densify(dense_in);
                dense_in
            }
        };
        out.resize(v.len(), 0.0);
        let c = exp_euler_c(dt, p.tau);
        let k = c / p.tau;
        let sized = |len: usize| {
            if len == v.len() {
                Ok(())
            } else {
                Err(NnError::BatchSize {
                    layer: label_of(name, "Lif"),
                    expected: batch,
                    found: len / *size,
                })
            }
        };
        sized(i.len())?;
        let cur = match syn {
            None => Current::Given(i),
            Some((g, k)) => {
                sized(g.len())?;
                Current::Expon { x: i, g, k }
            }
        };
        if mode.is_training() {
            // Training: spikes go straight into the f32 spike variable, which is the output.
            let o = f32_mut(spike, name, "Lif", "spike")?;
            if o.len() != v.len() {
                return Err(NnError::Variable {
                    key: format!("{}.spike", label_of(name, "Lif")),
                    expected: format!("{} values like V", v.len()),
                    found: format!("{} values", o.len()),
                });
            }
            let keep = record_slot(tape, tape_steps, v.len(), record);
            lif_update(v, cur, o, keep, p, k, true);
            Ok(o)
        } else {
            let keep = record_slot(tape, tape_steps, v.len(), record);
            lif_update(v, cur, out, keep, p, k, false);
            let key = || format!("{}.spike", label_of(name, "Lif"));
            let mut sv = spike.array_mut::<bool>().map_err(|e| NnError::var(key(), e))?;
            let sv = sv.as_slice_mut().ok_or_else(|| NnError::Variable {
                key: key(),
                expected: "contiguous values".into(),
                found: "a strided view".into(),
            })?;
            sv.iter_mut().zip(out.iter()).for_each(|(s, o)| *s = *o > 0.0);
            Ok(out)
        }
    }

    /// One training step fed by the Expon before this layer: its input `x` updates its
    /// conductance `g` (`k` = the Expon's decay for `dt`) and the new `g` drives this layer, in
    /// one pass over the values instead of two; values, spikes and the tape are those of the two
    /// steps run one after the other.
    pub(crate) fn step_after_expon(
        &mut self,
        dt: f32,
        x: &[f32],
        g: &mut [f32],
        k: f32,
        record: Record,
    ) -> Result<&[f32]> {
        self.step_current(dt, Signal::Dense(x), Some((g, k)), record)
    }

    /// Backward through recorded step `t` fused with the layers around it in the tutorial
    /// network, in one pass over the values: from `d1`, the output gradient of the narrow Dense
    /// this layer feeds (`rows * n_out`), through `wt`, that Dense's `W^T` (`n_out * size`), to
    /// this layer's spikes, back through this layer, and back through the Expon before it, whose
    /// input gradient `e_din` (also its carry) becomes `k_in dvp + e_keep e_din`. Keeps the
    /// step's spikes as `spikes` asks; false when they were to be events and there were too
    /// many (the list is then unusable). Every value is the one the three layers'
    /// own backward passes compute, bit for bit; only the arrays between them are skipped.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_fused(
        &mut self,
        dt: f32,
        t: usize,
        d1: &[f32],
        wt: &[f32],
        n_out: usize,
        e_din: &mut [f32],
        e_keep: f32,
        spikes: SpikeOut<'_>,
    ) -> Result<bool> {
        let n = self.out.len();
        let Some(vpre) = self.tape.get(t * n..(t + 1) * n).filter(|_| t < self.tape_steps) else {
            return Err(NnError::Mode {
                what: format!("backward of step {t}"),
                layer: label_of(&self.name, "Lif"),
                needed: "a recorded forward step".into(),
                found: format!("{} recorded steps", self.tape_steps),
            });
        };
        if self.size < NARROW_BLOCK {
            return Err(NnError::Mode {
                what: format!("fused backward of step {t}"),
                layer: label_of(&self.name, "Lif"),
                needed: format!("at least {NARROW_BLOCK} neurons"),
                found: format!("{} neurons", self.size),
            });
        }
        let rows = n / self.size;
        let sized = |len: usize| len == n;
        if n_out == 0
            || d1.len() != rows * n_out
            || wt.len() != n_out * self.size
            || !sized(self.carry.len())
            || !sized(e_din.len())
            || matches!(&spikes, SpikeOut::Rows(s) if !sized(s.len()))
            || matches!(&spikes, SpikeOut::Events(e, _) if e.cols != self.size)
        {
            return Err(NnError::BatchSize {
                layer: label_of(&self.name, "Lif"),
                expected: rows,
                found: d1.len() / n_out.max(1),
            });
        }
        let p = self.params;
        let c = exp_euler_c(dt, p.tau);
        let pass = Fused {
            d1,
            wt,
            vpre,
            carry: &mut self.carry,
            e_din,
            spikes,
            n: self.size,
            n_out,
            v_th: p.v_th,
            k_v: 1.0 - c / p.tau,
            k_in: c * p.r / p.tau,
            e_keep,
        };
        let keep = if p.detach_spk { 0.0 } else { 1.0 };
        let (v_th, v_reset) = (p.v_th, p.v_reset);
        Ok(crate::surrogate::with_grad!(p.surrogate, g => match p.spk_reset {
            SpikeReset::Soft => {
                let c_soft = keep * (v_th - v_reset);
                pass.run(move |vp, dout, dv| dvp_soft(vp, dout, dv, v_th, c_soft, &g))
            }
            SpikeReset::Hard => pass.run(move |vp, dout, dv| dvp_hard(vp, dout, dv, v_th, v_reset, keep, &g)),
        }))
    }
}

impl Layer for Lif {
    fn num_in(&self) -> usize {
        self.size
    }
    fn num_out(&self) -> usize {
        self.size
    }
    fn mode(&self) -> Mode {
        self.mode
    }
    fn reset(&mut self, batch_size: usize) {
        self.mode = self.mode.with_batch_size(batch_size);
        reset_var(&mut self.v, self.mode, self.size, self.params.v_init);
        let fresh = spike_var(self.mode, self.size);
        if self.spike.shape() == fresh.shape() && self.spike.dtype() == fresh.dtype() {
            let _ = self.spike.array_mut::<f32>().map(|mut a| a.fill(0.0));
            let _ = self.spike.array_mut::<bool>().map(|mut a| a.fill(false));
        } else {
            self.spike = fresh;
        }
        let n = self.mode.batch_size() * self.size;
        self.out.clear();
        self.out.resize(n, 0.0);
    }

    fn step(&mut self, dt: f32, input: Signal<'_>, record: Record) -> Result<&[f32]> {
        self.step_current(dt, input, None, record)
    }

    fn begin_tape(&mut self, num_steps: usize) {
        self.tape_steps = 0;
        let n = num_steps * self.out.len();
        if self.tape.len() < n {
            self.tape.resize(n, 0.0);
        }
    }

    fn begin_backward(&mut self) {
        self.carry.clear();
        self.carry.resize(self.out.len(), 0.0);
    }

    fn zero_grad(&mut self) {}

    fn backward(
        &mut self,
        dt: f32,
        t: usize,
        _input: Option<Signal<'_>>,
        d_out: &[f32],
        want_d_in: bool,
    ) -> Result<&[f32]> {
        let n = self.out.len();
        let Some(vpre) = self.tape.get(t * n..(t + 1) * n).filter(|_| t < self.tape_steps) else {
            return Err(NnError::Mode {
                what: format!("backward of step {t}"),
                layer: label_of(&self.name, "Lif"),
                needed: "a recorded forward step".into(),
                found: format!("{} recorded steps", self.tape_steps),
            });
        };
        if d_out.len() != n || self.carry.len() != n {
            return Err(NnError::BatchSize {
                layer: label_of(&self.name, "Lif"),
                expected: n / self.size,
                found: d_out.len() / self.size,
            });
        }
        self.d_in.resize(n, 0.0);
        let p = self.params;
        let c = exp_euler_c(dt, p.tau);
        let k_in = c * p.r / p.tau;
        let k_v = 1.0 - c / p.tau;
        let args = BwdArgs {
            vpre,
            d_out,
            carry: &mut self.carry,
            d_in: &mut self.d_in,
            v_th: p.v_th,
            v_reset: p.v_reset,
            k_in,
            k_v,
            detach: p.detach_spk,
        };
        crate::surrogate::with_grad!(p.surrogate, g => lif_backward_par(args, p.spk_reset, g));
        Ok(if want_d_in { &self.d_in } else { &[] })
    }

    fn visit_params(&mut self, _f: &mut ParamVisitor<'_>) {}
}

/// The tape slot of the next recorded step (`n` values; the tape grows when a run records more
/// steps than announced), or None when not recording.
fn record_slot<'a>(
    tape: &'a mut Vec<f32>,
    steps: &mut usize,
    n: usize,
    record: Record,
) -> Option<&'a mut [f32]> {
    if record == Record::Off {
        return None;
    }
    let t = *steps;
    *steps += 1;
    if tape.len() < (t + 1) * n {
        tape.resize((t + 1) * n, 0.0);
    }
    Some(&mut tape[t * n..(t + 1) * n])
}

/// The input current of a Lif step: given, or the conductance `g` of the Expon before it, which
/// its input `x` updates in the same pass (`g <- (g - k g) + x`).
enum Current<'a> {
    Given(&'a [f32]),
    Expon { x: &'a [f32], g: &'a mut [f32], k: f32 },
}

impl<'a> Current<'a> {
    /// The two parts of the current at `m` (for the two halves of the state).
    fn split_at(self, m: usize) -> (Current<'a>, Current<'a>) {
        match self {
            Current::Given(i) => {
                let (a, b) = i.split_at(m);
                (Current::Given(a), Current::Given(b))
            }
            Current::Expon { x, g, k } => {
                let (x0, x1) = x.split_at(m);
                let (g0, g1) = g.split_at_mut(m);
                (
                    Current::Expon { x: x0, g: g0, k },
                    Current::Expon { x: x1, g: g1, k },
                )
            }
        }
    }
}

/// One fused pass of the Lif update: the pre-reset potential `vp = V + k (V_rest - V + R I)`,
/// the spike `o = H(vp - V_th)` and the reset of `V`; `vp` goes to `tape` when given. Large
/// states are split in two halves across the worker threads.
fn lif_update(
    v: &mut [f32],
    i: Current<'_>,
    o: &mut [f32],
    tape: Option<&mut [f32]>,
    p: &LifParams,
    k: f32,
    training: bool,
) {
    // The tape of a large step skips the cache (see STREAM_MIN), decided for the whole step.
    let stream = tape.as_ref().is_some_and(|t| t.len() >= STREAM_MIN);
    if crate::par::worth(v.len()) {
        let m = crate::par::mid(v.len());
        let (v0, v1) = v.split_at_mut(m);
        let (i0, i1) = i.split_at(m);
        let (o0, o1) = o.split_at_mut(m);
        let (t0, t1) = match tape {
            Some(t) => {
                let (a, b) = t.split_at_mut(m);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        crate::par::join(
            || lif_update_current(v0, i0, o0, t0, stream, p, k, training),
            || lif_update_current(v1, i1, o1, t1, stream, p, k, training),
        );
    } else {
        lif_update_current(v, i, o, tape, stream, p, k, training);
    }
}

/// Values of the Expon and Lif steps run together per chunk: the chunk's new conductances are
/// still in L1 when the Lif pass reads them.
const FUSED_CHUNK: usize = 2048;

/// [`lif_update_part`] on a given current, or chunk by chunk after the Expon's update.
#[allow(clippy::too_many_arguments)]
fn lif_update_current(
    v: &mut [f32],
    i: Current<'_>,
    o: &mut [f32],
    mut tape: Option<&mut [f32]>,
    stream: bool,
    p: &LifParams,
    k: f32,
    training: bool,
) {
    match i {
        Current::Given(i) => lif_update_part(v, i, o, tape, stream, p, k, training),
        Current::Expon { x, g, k: k_syn } => {
            for at in (0..v.len()).step_by(FUSED_CHUNK) {
                let end = (at + FUSED_CHUNK).min(v.len());
                let g = &mut g[at..end];
                crate::par::wide(
                    #[inline(always)]
                    || {
                        g.iter_mut()
                            .zip(&x[at..end])
                            .for_each(|(g, &x)| *g = expon_update(*g, x, k_syn))
                    },
                );
                let t = tape.as_deref_mut().map(|t| &mut t[at..end]);
                lif_update_part(&mut v[at..end], g, &mut o[at..end], t, stream, p, k, training);
            }
        }
    }
}

/// The Expon update of one value: `g <- g + c (-g / tau)`, then `+ x`, with `k = c / tau`.
#[inline(always)]
fn expon_update(g: f32, x: f32, k: f32) -> f32 {
    (g - k * g) + x
}

/// The Expon's step back for decay `k`: the share of the carried gradient kept (`1 - k`) and of
/// the step's own gradient passed to the input (all of it).
fn expon_back(k: f32) -> (f32, f32) {
    (1.0 - k, 1.0)
}

#[allow(clippy::too_many_arguments)]
fn lif_update_part(
    v: &mut [f32],
    i: &[f32],
    o: &mut [f32],
    tape: Option<&mut [f32]>,
    stream: bool,
    p: &LifParams,
    k: f32,
    training: bool,
) {
    let (v_rest, r, v_th, v_reset) = (p.v_rest, p.r, p.v_th, p.v_reset);
    crate::par::wide(
        #[inline(always)]
        || match (training, p.spk_reset) {
            (false, _) => lif_pass(v, i, o, tape, stream, move |v, i| {
                let vp = v + k * (v_rest - v + r * i);
                let spiking = vp >= v_th;
                (
                    vp,
                    if spiking { 1.0 } else { 0.0 },
                    if spiking { v_reset } else { vp },
                )
            }),
            (true, SpikeReset::Soft) => {
                let jump = v_th - v_reset;
                lif_pass(v, i, o, tape, stream, move |v, i| {
                    let vp = v + k * (v_rest - v + r * i);
                    let s = if vp >= v_th { 1.0 } else { 0.0 };
                    (vp, s, vp - jump * s)
                })
            }
            (true, SpikeReset::Hard) => lif_pass(v, i, o, tape, stream, move |v, i| {
                let vp = v + k * (v_rest - v + r * i);
                let s = if vp >= v_th { 1.0 } else { 0.0 };
                (vp, s, vp + (v_reset - vp) * s)
            }),
        },
    )
}

/// Steps of at least this many values go to the tape with non-temporal stores; the tape of smaller
/// steps (a few MB for a run of a hundred steps) is left to the cache, which backward reads it
/// from.
const STREAM_MIN: usize = 1 << 14;

/// Applies `f(V, I) -> (vp, spike, V')` element-wise (equal lengths checked by the caller).
#[inline(always)]
fn lif_pass(
    v: &mut [f32],
    i: &[f32],
    o: &mut [f32],
    tape: Option<&mut [f32]>,
    stream: bool,
    f: impl Fn(f32, f32) -> (f32, f32, f32),
) {
    let it = v.iter_mut().zip(i).zip(o.iter_mut());
    match tape {
        Some(tape) if !stream => it.zip(tape.iter_mut()).for_each(|(((v, &i), o), vp)| {
            let (p, s, vn) = f(*v, i);
            *vp = p;
            *o = s;
            *v = vn;
        }),
        Some(tape) => {
            // The tape is read back only in backward, long after: its values go 64 at a time
            // through a register-sized buffer into non-temporal stores, which skip reading the
            // old contents of those cache lines from memory.
            let mut buf = [0.0f32; 64];
            for (((vc, ic), oc), tc) in v
                .chunks_mut(64)
                .zip(i.chunks(64))
                .zip(o.chunks_mut(64))
                .zip(tape.chunks_mut(64))
            {
                vc.iter_mut()
                    .zip(ic)
                    .zip(oc.iter_mut())
                    .zip(buf.iter_mut())
                    .for_each(|(((v, &i), o), vp)| {
                        let (p, s, vn) = f(*v, i);
                        *vp = p;
                        *o = s;
                        *v = vn;
                    });
                crate::par::store_stream(tc, &buf[..tc.len()]);
            }
            crate::par::stream_fence();
        }
        None => it.for_each(|((v, &i), o)| {
            let (_, s, vn) = f(*v, i);
            *o = s;
            *v = vn;
        }),
    }
}

struct BwdArgs<'a> {
    vpre: &'a [f32],
    d_out: &'a [f32],
    carry: &'a mut [f32],
    d_in: &'a mut [f32],
    v_th: f32,
    v_reset: f32,
    k_in: f32,
    k_v: f32,
    detach: bool,
}

/// [`lif_backward`], in two halves across the worker threads when large.
#[inline(always)]
fn lif_backward_par(a: BwdArgs<'_>, reset: SpikeReset, g: impl Fn(f32) -> f32 + Copy + Send + Sync) {
    let n = a.vpre.len();
    if !crate::par::worth(n) || a.d_out.len() != n || a.carry.len() != n || a.d_in.len() != n {
        return lif_backward(a, reset, g);
    }
    let m = crate::par::mid(n);
    let (vp0, vp1) = a.vpre.split_at(m);
    let (do0, do1) = a.d_out.split_at(m);
    let (c0, c1) = a.carry.split_at_mut(m);
    let (di0, di1) = a.d_in.split_at_mut(m);
    let half = |vpre, d_out, carry, d_in| BwdArgs {
        vpre,
        d_out,
        carry,
        d_in,
        ..a
    };
    let (h0, h1) = (half(vp0, do0, c0, di0), half(vp1, do1, c1, di1));
    crate::par::join(|| lif_backward(h0, reset, g), || lif_backward(h1, reset, g));
}

#[inline(always)]
fn lif_backward(a: BwdArgs<'_>, reset: SpikeReset, g: impl Fn(f32) -> f32) {
    let BwdArgs {
        vpre,
        d_out,
        carry,
        d_in,
        v_th,
        v_reset,
        k_in,
        k_v,
        detach,
    } = a;
    let keep = if detach { 0.0 } else { 1.0 };
    let it = vpre.iter().zip(d_out).zip(carry.iter_mut()).zip(d_in.iter_mut());
    crate::par::wide(
        #[inline(always)]
        || match reset {
            SpikeReset::Soft => {
                let c_soft = keep * (v_th - v_reset);
                it.for_each(|(((&vp, &dout), carry), din)| {
                    let dvp = dvp_soft(vp, dout, *carry, v_th, c_soft, &g);
                    *carry = k_v * dvp;
                    *din = k_in * dvp;
                })
            }
            SpikeReset::Hard => it.for_each(|(((&vp, &dout), carry), din)| {
                let dvp = dvp_hard(vp, dout, *carry, v_th, v_reset, keep, &g);
                *carry = k_v * dvp;
                *din = k_in * dvp;
            }),
        },
    )
}

/// dLoss/d(pre-reset potential) of one value, soft reset: `dv` is the gradient carried back from
/// the next step's potential, `dout` the one of this step's spike, `g` the surrogate derivative.
#[inline(always)]
fn dvp_soft(vp: f32, dout: f32, dv: f32, v_th: f32, c_soft: f32, g: &impl Fn(f32) -> f32) -> f32 {
    dv + (dout - c_soft * dv) * g(vp - v_th)
}

/// As [`dvp_soft`], for the hard reset (`keep` is 0 when the reset is detached, else 1).
#[inline(always)]
fn dvp_hard(vp: f32, dout: f32, dv: f32, v_th: f32, v_reset: f32, keep: f32, g: &impl Fn(f32) -> f32) -> f32 {
    let u = vp - v_th;
    let s = if u >= 0.0 { 1.0 } else { 0.0 };
    let ds = dout + keep * dv * (v_reset - vp);
    dv * (1.0 - s) + ds * g(u)
}

/// The element-wise part of the fused backward step (see [`Fused::part`]).
#[derive(Clone, Copy)]
struct StepBack<'a> {
    vpre: &'a [f32],
    k_v: f32,
    k_in: f32,
    e_keep: f32,
    v_th: f32,
}

impl StepBack<'_> {
    /// Steps back the values `at..at + acc.len()`, `acc` holding their spike gradients.
    #[inline(always)]
    fn run(
        self,
        acc: &[f32],
        at: usize,
        carry: &mut [f32],
        e_din: &mut [f32],
        spikes: Option<&mut [f32]>,
        dvp: &impl Fn(f32, f32, f32) -> f32,
    ) {
        let StepBack {
            vpre,
            k_v,
            k_in,
            e_keep,
            v_th,
        } = self;
        let len = acc.len();
        let vp = &vpre[at..at + len];
        let it = acc
            .iter()
            .zip(vp)
            .zip(carry[at..at + len].iter_mut())
            .zip(e_din[at..at + len].iter_mut());
        it.for_each(|(((&d, &vp), c), e)| {
            let p = dvp(vp, d, *c);
            *c = k_v * p;
            *e = k_in * p + e_keep * *e;
        });
        if let Some(s) = spikes {
            s[at..at + len]
                .iter_mut()
                .zip(vp)
                .for_each(|(s, &v)| *s = if v >= v_th { 1.0 } else { 0.0 });
        }
    }
}

/// What a fused backward step ([`Lif::backward_fused`]) keeps of the step's spikes for the
/// readout's weight gradient.
pub(crate) enum SpikeOut<'a> {
    /// 0/1 rows (`rows * size` values).
    Rows(&'a mut [f32]),
    /// The spikes as events, with the decisions of [`Events::collect_spikes`] for at most this
    /// many events (reset by the caller to the layer's width; the pass reports whether the
    /// list held).
    Events(&'a mut Events, usize),
}

impl SpikeOut<'_> {
    /// The 0/1 rows, when asked for.
    #[inline(always)]
    fn rows(&mut self) -> Option<&mut [f32]> {
        match self {
            SpikeOut::Rows(s) => Some(s),
            _ => None,
        }
    }
}

/// The arrays of one fused backward step (see [`Lif::backward_fused`]), all `rows * n` values
/// except `d1` (`rows * n_out`) and `wt` (`n_out * n`).
struct Fused<'a> {
    d1: &'a [f32],
    wt: &'a [f32],
    vpre: &'a [f32],
    carry: &'a mut [f32],
    e_din: &'a mut [f32],
    spikes: SpikeOut<'a>,
    n: usize,
    n_out: usize,
    v_th: f32,
    k_v: f32,
    k_in: f32,
    e_keep: f32,
}

impl Fused<'_> {
    /// Runs the pass over all rows, in two halves of the rows across the threads when large.
    /// False when the spikes were to be kept as events and there were too many.
    fn run(self, dvp: impl Fn(f32, f32, f32) -> f32 + Copy + Send + Sync) -> bool {
        let (n, n_out) = (self.n, self.n_out);
        let rows = self.d1.len() / n_out;
        if rows < 2 || !crate::par::worth(rows * n) {
            return self.part(dvp);
        }
        // Two halves of the rows (an event list's second half is scanned into its own list and
        // appended, as Events::collect_spikes does with the same halves).
        let m = rows / 2;
        let (d10, d11) = self.d1.split_at(m * n_out);
        let (vp0, vp1) = self.vpre.split_at(m * n);
        let (c0, c1) = self.carry.split_at_mut(m * n);
        let (e0, e1) = self.e_din.split_at_mut(m * n);
        let mut half: Option<Box<Events>> = None;
        let mut list: Option<(&mut Events, usize)> = None;
        let (s0, s1) = match self.spikes {
            SpikeOut::Rows(s) => {
                let (a, b) = s.split_at_mut(m * n);
                (SpikeOut::Rows(a), SpikeOut::Rows(b))
            }
            SpikeOut::Events(ev, max) => {
                let second = half.insert(ev.take_half());
                let first = list.insert((ev, max));
                (
                    SpikeOut::Events(&mut *first.0, max),
                    SpikeOut::Events(second, max),
                )
            }
        };
        let (h0, h1) = (
            Fused {
                d1: d10,
                vpre: vp0,
                carry: c0,
                e_din: e0,
                spikes: s0,
                ..self
            },
            Fused {
                d1: d11,
                vpre: vp1,
                carry: c1,
                e_din: e1,
                spikes: s1,
                ..self
            },
        );
        let (mut ok0, mut ok1) = (true, true);
        crate::par::join(|| ok0 = h0.part(dvp), || ok1 = h1.part(dvp));
        match (list, half) {
            (Some((ev, max)), Some(second)) => ev.merge_half(second, ok0 && ok1, max),
            _ => ok0 && ok1,
        }
    }

    /// Two rows at a time, 128 columns at a time: the spike gradient of the block (`d1 W^T` by
    /// the narrow Dense's own [`narrow_block2`] / [`narrow_block`]), then
    /// for each of its values the Lif step back (`carry`, `dvp`), the Expon step back
    /// (`e_din = k_in dvp + e_keep e_din`) and, when asked, the spike (0/1) for the readout's
    /// weight gradient. The last block overlaps the one before when 128 does not divide `n`;
    /// it recomputes those spike gradients but steps back only the columns not yet done.
    fn part(self, dvp: impl Fn(f32, f32, f32) -> f32) -> bool {
        const B: usize = NARROW_BLOCK;
        let Fused {
            d1,
            wt,
            vpre,
            carry,
            e_din,
            mut spikes,
            n,
            n_out,
            v_th,
            k_v,
            k_in,
            e_keep,
        } = self;
        let rows = d1.len() / n_out;
        let full = n / B * B;
        let last = (n % B != 0).then_some(n - B);
        crate::par::wide(
            #[inline(always)]
            || {
                let step_back = StepBack {
                    vpre,
                    k_v,
                    k_in,
                    e_keep,
                    v_th,
                };
                let mut r = 0;
                let mut events_ok = true;
                while r < rows {
                    let two = r + 1 < rows;
                    // (block start, first column not yet stepped back)
                    let blocks = (0..full).step_by(B).map(|lo| (lo, lo));
                    for (lo, from) in blocks.chain(last.map(|lo| (lo, full))) {
                        let d0 = &d1[r * n_out..(r + 1) * n_out];
                        let (a0, a1) = if two {
                            narrow_block2(wt, n, lo, d0, &d1[(r + 1) * n_out..(r + 2) * n_out])
                        } else {
                            (narrow_block(wt, n, lo, d0), [0.0; B])
                        };
                        let skip = from - lo;
                        let at = r * n + from;
                        step_back.run(&a0[skip..], at, carry, e_din, spikes.rows(), &dvp);
                        if two {
                            let at = at + n;
                            step_back.run(&a1[skip..], at, carry, e_din, spikes.rows(), &dvp);
                        }
                    }
                    let done = if two { 2 } else { 1 };
                    if let SpikeOut::Events(ev, max) = &mut spikes {
                        // The rows just stepped back are still in L1: their spikes as events.
                        if events_ok {
                            events_ok = ev.append_spikes(&vpre[r * n..(r + done) * n], v_th, *max);
                        }
                    }
                    r += done;
                }
                events_ok
            },
        )
    }
}

/// Exponential synapse, BrainPy's `bp.dyn.Expon`: variable `g`; each step
/// `g <- g + c (-g / tau)` (= `g e^{-dt/tau}`), then `g <- g + x`. Returns `g`.
#[derive(brainstate_derive::Stateful)]
#[stateful(crate = "brainstate_core", type_name = "Expon")]
pub struct Expon {
    #[stateful(name)]
    name: NodeName,
    g: Variable,
    tau: f32,
    size: usize,
    mode: Mode,
    dense_in: Vec<f32>,
    carry: Vec<f32>,
    d_in: Vec<f32>,
}

impl Expon {
    /// `size` synapses with time constant `tau` (BrainPy's default 8 ms).
    pub fn new(size: usize, tau: f32, mode: Mode) -> Result<Expon> {
        check_size("Expon", size)?;
        check_tau("Expon", tau)?;
        Ok(Expon {
            name: NodeName::auto(),
            g: state_var(mode, size, 0.0),
            tau,
            size,
            mode,
            dense_in: Vec::new(),
            carry: Vec::new(),
            d_in: Vec::new(),
        })
    }

    /// Gives the layer a name (must be an identifier).
    pub fn named(mut self, name: &str) -> Result<Expon> {
        self.name = NodeName::new(name)?;
        Ok(self)
    }

    /// The conductance variable `g`.
    pub fn g(&self) -> &Variable {
        &self.g
    }

    /// The conductance values and the decay `k` (`c / tau`) of a step of `dt` with input `x`
    /// (checked as [`Layer::step`] checks it), for a Lif step that runs this layer's update
    /// with its own ([`Lif::step_after_expon`]).
    pub(crate) fn step_state(&mut self, dt: f32, x: &[f32]) -> Result<(&mut [f32], f32)> {
        let Expon {
            name, g, tau, size, ..
        } = self;
        let g = f32_mut(g, name, "Expon", "g")?;
        check_input(&Signal::Dense(x), *size, Some(g.len() / *size), || {
            label_of(name, "Expon")
        })?;
        Ok((g, exp_euler_c(dt, *tau) / *tau))
    }

    /// The input gradient buffer of a backward pass under way, which is also its carry
    /// (`d_in = d + (1 - k) d_in` each step back), with `1 - k` for `dt`; None before
    /// `begin_backward` or when its length is not `n`.
    pub(crate) fn backward_carry(&mut self, dt: f32, n: usize) -> Option<(&mut [f32], f32)> {
        let (keep, _) = expon_back(exp_euler_c(dt, self.tau) / self.tau);
        (self.d_in.len() == n && self.carry.len() == n).then(|| (&mut self.d_in[..], keep))
    }
}

/// Leaky integrator, BrainPy's `bp.dyn.Integrator`: variable `x`;
/// `x <- x + c ((-x + I) / tau)`. Returns `x`.
#[derive(brainstate_derive::Stateful)]
#[stateful(crate = "brainstate_core", type_name = "Integrator")]
pub struct Integrator {
    #[stateful(name)]
    name: NodeName,
    x: Variable,
    tau: f32,
    size: usize,
    mode: Mode,
    dense_in: Vec<f32>,
    carry: Vec<f32>,
    d_in: Vec<f32>,
}

impl Integrator {
    /// `size` units with time constant `tau` (BrainPy's default 10 ms).
    pub fn new(size: usize, tau: f32, mode: Mode) -> Result<Integrator> {
        check_size("Integrator", size)?;
        check_tau("Integrator", tau)?;
        Ok(Integrator {
            name: NodeName::auto(),
            x: state_var(mode, size, 0.0),
            tau,
            size,
            mode,
            dense_in: Vec::new(),
            carry: Vec::new(),
            d_in: Vec::new(),
        })
    }

    /// Gives the layer a name (must be an identifier).
    pub fn named(mut self, name: &str) -> Result<Integrator> {
        self.name = NodeName::new(name)?;
        Ok(self)
    }

    /// The state variable `x`.
    pub fn x(&self) -> &Variable {
        &self.x
    }
}

macro_rules! linear_layer {
    ($ty:ident, $field:ident, $fname:literal, $update:expr, $back:expr) => {
        impl Layer for $ty {
            fn num_in(&self) -> usize {
                self.size
            }
            fn num_out(&self) -> usize {
                self.size
            }
            fn mode(&self) -> Mode {
                self.mode
            }
            fn reset(&mut self, batch_size: usize) {
                self.mode = self.mode.with_batch_size(batch_size);
                reset_var(&mut self.$field, self.mode, self.size, 0.0);
            }
            fn step(&mut self, dt: f32, input: Signal<'_>, _record: Record) -> Result<&[f32]> {
                let $ty {
                    name,
                    $field,
                    tau,
                    size,
                    dense_in,
                    ..
                } = self;
                let st = f32_mut($field, name, stringify!($ty), $fname)?;
                let batch = st.len() / *size;
                check_input(&input, *size, Some(batch), || {
                    label_of(name, stringify!($ty))
                })?;
                let i: &[f32] = match input {
                    Signal::Dense(x) => x,
                    Signal::Events(e) => {
                        dense_in.resize(e.rows() * e.cols, 0.0);
                        e.densify(dense_in);
                        dense_in
                    }
                };
                let k = exp_euler_c(dt, *tau) / *tau;
                let update = $update;
                crate::par::zip2(st, i, |st, i| {
                    crate::par::wide(
                        #[inline(always)]
                        || {
                            st.iter_mut()
                                .zip(i)
                                .for_each(|(s, &x)| *s = update(*s, x, k))
                        },
                    )
                });
                Ok(st)
            }
            fn begin_tape(&mut self, _num_steps: usize) {}
            fn begin_backward(&mut self) {
                let n = self.$field.value().len();
                self.carry.clear();
                self.carry.resize(n, 0.0);
                self.d_in.clear();
                self.d_in.resize(n, 0.0);
            }
            fn zero_grad(&mut self) {}
            fn backward(
                &mut self,
                dt: f32,
                _t: usize,
                _input: Option<Signal<'_>>,
                d_out: &[f32],
                want_d_in: bool,
            ) -> Result<&[f32]> {
                let n = self.carry.len();
                if d_out.len() != n {
                    return Err(NnError::BatchSize {
                        layer: label_of(&self.name, stringify!($ty)),
                        expected: n / self.size,
                        found: d_out.len() / self.size,
                    });
                }
                self.d_in.resize(n, 0.0);
                let k = exp_euler_c(dt, self.tau) / self.tau;
                let (k_keep, k_in): (f32, f32) = $back(k);
                if k_in == 1.0 {
                    // d_in = d itself: it doubles as the carry (`k_keep * d` of the step after),
                    // one stream less; the same two roundings as with a separate carry.
                    let part = |d_in: &mut [f32], d_out: &[f32]| {
                        crate::par::wide(
                            #[inline(always)]
                            || {
                                d_in.iter_mut()
                                    .zip(d_out)
                                    .for_each(|(di, &d)| *di = d + k_keep * *di)
                            },
                        )
                    };
                    crate::par::zip2(&mut self.d_in, d_out, part);
                    return Ok(if want_d_in { &self.d_in } else { &[] });
                }
                let part = |carry: &mut [f32], d_in: &mut [f32], d_out: &[f32]| {
                    crate::par::wide(
                        #[inline(always)]
                        || {
                            carry
                                .iter_mut()
                                .zip(d_in)
                                .zip(d_out)
                                .for_each(|((c, di), &d)| {
                                    let d = d + *c;
                                    *c = k_keep * d;
                                    *di = k_in * d;
                                })
                        },
                    )
                };
                if crate::par::worth(n) {
                    let m = crate::par::mid(n);
                    let (c0, c1) = self.carry.split_at_mut(m);
                    let (i0, i1) = self.d_in.split_at_mut(m);
                    let (d0, d1) = d_out.split_at(m);
                    crate::par::join(|| part(c0, i0, d0), || part(c1, i1, d1));
                } else {
                    part(&mut self.carry, &mut self.d_in, d_out);
                }
                Ok(if want_d_in { &self.d_in } else { &[] })
            }
            fn visit_params(&mut self, _f: &mut ParamVisitor<'_>) {}
            fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
                Some(self)
            }
        }
    };
}

linear_layer!(Expon, g, "g", expon_update, expon_back);
linear_layer!(
    Integrator,
    x,
    "x",
    |s: f32, i: f32, k: f32| s + k * (i - s),
    |k: f32| (1.0 - k, k)
);
