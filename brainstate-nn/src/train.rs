//! Backpropagation through time: the tutorial's `for_loop` over `step_run`, max-over-time
//! readout, cross-entropy, gradients for every trainable variable, and checkpoints.

use crate::error::{NnError, Result};
use crate::layer::{Layer, Record};
use crate::loss::{cross_entropy_with_grad, Reduction, Targets};
use crate::optim::Optimizer;
use crate::signal::{EventsRef, Signal};
use brainstate_core::{init_names, load_state, save_state, IndexMap, Pytree, Stateful};
use ndarray::{Array3, ArrayD, ArrayView2, ArrayView3};

/// A batch of input sequences `(time, batch, features)`, checked once (finite values) and, when
/// at most 1/8 of the values are nonzero, kept as events so silent inputs cost nothing.
pub struct SpikeInput {
    x: Array3<f32>,
    row_ptr: Vec<usize>,
    idx: Vec<u32>,
    val: Vec<f32>,
    binary: bool,
    sparse: bool,
}

impl SpikeInput {
    /// Checks `x` (time, batch, features); an error names the first non-finite value.
    pub fn new(x: Array3<f32>) -> Result<SpikeInput> {
        let x = if x.is_standard_layout() {
            x
        } else {
            x.as_standard_layout().into_owned()
        };
        let (t, b, n) = x.dim();
        let flat = x.as_slice().unwrap_or(&[]);
        if let Some(i) = flat.iter().position(|v| !v.is_finite()) {
            return Err(NnError::NonFinite {
                what: "input x".into(),
                index: vec![i / (b * n), (i / n) % b, i % n],
                value: flat[i],
            });
        }
        let nnz = flat.iter().filter(|v| **v != 0.0).count();
        let sparse = nnz * 8 <= flat.len() && n > 0;
        let (mut row_ptr, mut idx, mut val) = (Vec::new(), Vec::new(), Vec::new());
        let mut binary = true;
        if sparse {
            row_ptr.reserve(t * b + 1);
            idx.reserve(nnz);
            val.reserve(nnz);
            row_ptr.push(0);
            for row in flat.chunks_exact(n) {
                for (i, &v) in row.iter().enumerate() {
                    if v != 0.0 {
                        idx.push(i as u32);
                        val.push(v);
                        binary &= v == 1.0;
                    }
                }
                row_ptr.push(idx.len());
            }
        }
        Ok(SpikeInput {
            x,
            row_ptr,
            idx,
            val,
            binary,
            sparse,
        })
    }

    /// The dense values of steps `t0..t1`, one step after another (empty when sparse).
    fn dense_steps(&self, t0: usize, t1: usize) -> &[f32] {
        let (_, b, n) = self.x.dim();
        match self.x.as_slice() {
            Some(flat) if !self.sparse => &flat[t0 * b * n..t1 * b * n],
            _ => &[],
        }
    }

    /// Number of time steps.
    pub fn num_steps(&self) -> usize {
        self.x.dim().0
    }

    /// Number of samples.
    pub fn batch_size(&self) -> usize {
        self.x.dim().1
    }

    /// Features per sample.
    pub fn num_features(&self) -> usize {
        self.x.dim().2
    }

    /// True when kept as events.
    pub fn is_sparse(&self) -> bool {
        self.sparse
    }

    /// The values.
    pub fn values(&self) -> ArrayView3<'_, f32> {
        self.x.view()
    }

    /// The input of step `t`.
    pub fn signal(&self, t: usize) -> Signal<'_> {
        let (_, b, n) = self.x.dim();
        if self.sparse {
            Signal::Events(EventsRef {
                row_ptr: &self.row_ptr[t * b..(t + 1) * b + 1],
                idx: &self.idx,
                val: if self.binary { None } else { Some(&self.val) },
                cols: n,
            })
        } else {
            let flat = self.x.as_slice().unwrap_or(&[]);
            Signal::Dense(&flat[t * b * n..(t + 1) * b * n])
        }
    }
}

/// The BPTT trainer: runs a [`Layer`] model over a [`SpikeInput`] with the tutorial's loss
/// (cross-entropy of the max over time of the outputs) and applies an [`Optimizer`].
///
/// Buffers are kept between epochs; nothing is allocated per time step.
pub struct Bptt {
    /// Step size in ms (the tutorial sets 1.0).
    pub dt: f32,
    outs: Vec<f32>,
    logits: Vec<f32>,
    d_logits: Vec<f32>,
    ties: Vec<u32>,
    d_out: Vec<f32>,
    shape: (usize, usize, usize),
}

impl Bptt {
    /// A trainer with step size `dt` (ms).
    pub fn new(dt: f32) -> Bptt {
        Bptt {
            dt,
            outs: Vec::new(),
            logits: Vec::new(),
            d_logits: Vec::new(),
            ties: Vec::new(),
            d_out: Vec::new(),
            shape: (0, 0, 0),
        }
    }

    /// Outputs of the last forward pass, `(time, batch, num_out)`.
    pub fn outputs(&self) -> ArrayView3<'_, f32> {
        ArrayView3::from_shape(self.shape, &self.outs[..]).expect("consistent buffers")
    }

    /// Max over time of the last outputs, `(batch, num_out)`.
    pub fn logits(&self) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((self.shape.1, self.shape.2), &self.logits[..]).expect("consistent buffers")
    }

    /// `reset(batch)` and the forward pass over all steps (the tutorial's `for_loop`), recording
    /// for backward when `record`. Outputs go to [`Bptt::outputs`].
    pub fn forward(&mut self, model: &mut dyn Layer, x: &SpikeInput, record: bool) -> Result<()> {
        init_names(model)?;
        let (t_len, b) = (x.num_steps(), x.batch_size());
        if x.num_features() != model.num_in() {
            return Err(NnError::InputShape {
                layer: model.name().to_string(),
                expected: model.num_in(),
                found: x.num_features(),
            });
        }
        if record && !model.mode().is_training() {
            return Err(NnError::Mode {
                what: "training".into(),
                layer: model.name().to_string(),
                needed: "training".into(),
                found: model.mode().to_string(),
            });
        }
        let n_out = model.num_out();
        model.reset(b);
        if record {
            model.begin_tape(t_len);
        }
        self.shape = (t_len, b, n_out);
        self.outs.resize(t_len * b * n_out, 0.0);
        let rec = if record {
            Record::TapeInputRetained
        } else {
            Record::Off
        };
        self.logits.clear();
        self.logits.resize(b * n_out, f32::NEG_INFINITY);
        self.ties.clear();
        self.ties.resize(b * n_out, 0);
        let dt = self.dt;
        // Dense inputs are announced a few steps ahead, so the input layer's product covers
        // about 1024 rows at a time (its weights are packed once for all of them).
        let ahead = if x.is_sparse() {
            1
        } else {
            (1024 / b.max(1)).clamp(1, 8)
        };
        let (outs, logits, ties) = (&mut self.outs, &mut self.logits, &mut self.ties);
        let mut run = || -> Result<()> {
            for t in 0..t_len {
                if ahead > 1 && t % ahead == 0 {
                    let steps = ahead.min(t_len - t);
                    model.look_ahead(steps, x.dense_steps(t, t + steps));
                }
                let y = model.step(dt, x.signal(t), rec)?;
                if y.len() != b * n_out {
                    let found = y.len() / n_out.max(1);
                    return Err(NnError::BatchSize {
                        layer: model.name().to_string(),
                        expected: b,
                        found,
                    });
                }
                outs[t * b * n_out..(t + 1) * b * n_out].copy_from_slice(y);
                running_max(logits, ties, y);
            }
            Ok(())
        };
        if let Err(e) = run() {
            // Steps announced and not run must not be taken later, by steps of other weights.
            model.look_ahead(0, &[]);
            return Err(e);
        }
        Ok(())
    }

    /// Forward, loss (`reduction` of the cross-entropy of the max over time) and backward:
    /// afterwards every layer holds dLoss/dparameter. The max splits its gradient equally among
    /// tied time steps, as `jnp.max`. Returns the loss.
    pub fn loss_and_grad(
        &mut self,
        model: &mut dyn Layer,
        x: &SpikeInput,
        y: Targets<'_>,
        reduction: Reduction,
    ) -> Result<f32> {
        let (t_len, b) = (x.num_steps(), x.batch_size());
        let n_out = model.num_out();
        // Check the targets before the (long) forward pass.
        let probe = vec![0.0f32; b * n_out.max(1)];
        let mut g = vec![0.0f32; b * n_out.max(1)];
        cross_entropy_with_grad(&probe, b, n_out.max(1), y, reduction, &mut g)?;
        self.forward(model, x, true)?;
        self.d_logits.resize(b * n_out, 0.0);
        let loss = cross_entropy_with_grad(&self.logits, b, n_out, y, reduction, &mut self.d_logits)?;
        model.zero_grad();
        model.begin_backward();
        self.d_out.resize(b * n_out, 0.0);
        // Each tied step's share of the gradient of a maximum.
        for (d, &n) in self.d_logits.iter_mut().zip(&self.ties) {
            *d /= n as f32;
        }
        let dt = self.dt;
        for t in (0..t_len).rev() {
            let o = &self.outs[t * b * n_out..(t + 1) * b * n_out];
            let (lg, share) = (&self.logits, &self.d_logits);
            crate::par::wide(
                #[inline(always)]
                || {
                    for (((d, &o), &lg), &s) in self.d_out.iter_mut().zip(o).zip(lg).zip(share) {
                        *d = if o == lg { s } else { 0.0 };
                    }
                },
            );
            model.backward(dt, t, Some(x.signal(t)), &self.d_out, false)?;
        }
        Ok(loss)
    }

    /// One training epoch as the tutorial's `f_train`: gradients of the mean loss, then one
    /// optimizer update. Returns the loss (before the update).
    pub fn train_epoch(
        &mut self,
        model: &mut dyn Layer,
        opt: &mut dyn Optimizer,
        x: &SpikeInput,
        y: Targets<'_>,
    ) -> Result<f32> {
        let loss = self.loss_and_grad(model, x, y, Reduction::Mean)?;
        opt.update(model)?;
        Ok(loss)
    }
}

/// One step of the max over time: `logits = max(logits, y)` element-wise, `ties` counting the
/// steps that reached the maximum (reset to 1 by a larger value; a NaN changes nothing). No
/// branch per value.
fn running_max(logits: &mut [f32], ties: &mut [u32], y: &[f32]) {
    crate::par::wide(
        #[inline(always)]
        || {
            for ((m, n), &v) in logits.iter_mut().zip(ties.iter_mut()).zip(y) {
                let (gt, eq) = (v > *m, v == *m);
                *n = if gt { 1 } else { *n + u32::from(eq) };
                *m = if gt { v } else { *m };
            }
        },
    )
}

/// The gradients the model's layers hold, keyed by variable (`Dense0.W`).
pub fn gradients(model: &mut dyn Layer) -> Result<IndexMap<String, ArrayD<f32>>> {
    init_names(model)?;
    let mut out = IndexMap::new();
    model.visit_params(&mut |node, field, var, grad| {
        let shape = var.shape().to_vec();
        let g = ArrayD::from_shape_vec(shape, grad.to_vec()).unwrap_or_else(|_| ArrayD::zeros(vec![0]));
        out.insert(format!("{node}.{field}"), g);
    });
    Ok(out)
}

/// A training checkpoint as the tutorial's: `{"net": save_state(net), "opt": save_state(opt),
/// "epoch_i": epoch}` plus the given extra entries (e.g. `train_loss`).
pub fn checkpoint(
    net: &dyn Stateful,
    opt: &dyn Stateful,
    epoch: i64,
    extra: impl IntoIterator<Item = (String, Pytree)>,
) -> Result<Pytree> {
    let mut tree = Pytree::map()
        .with("net", save_state(net)?)
        .with("opt", save_state(opt)?)
        .with("epoch_i", epoch);
    for (k, v) in extra {
        tree = tree.with(k, v);
    }
    Ok(tree)
}

/// Loads a [`checkpoint`] into a model and its optimizer; returns the epoch. Keys must match
/// exactly (strict). On any error neither the model nor the optimizer is changed.
pub fn restore(net: &mut dyn Stateful, opt: &mut dyn Stateful, ckpt: &Pytree) -> Result<i64> {
    let strict = brainstate_core::LoadOptions::strict();
    let net_state = ckpt.get("net")?.state_tree()?;
    let opt_state = ckpt.get("opt")?.state_tree()?;
    let epoch = ckpt.get("epoch_i")?.i64()?;
    init_names(net)?;
    init_names(opt)?;
    // Each load is checked before it assigns; if the optimizer's fails, the network is put back.
    let before = save_state(net)?;
    brainstate_core::node::load_state_with(net, &net_state, &strict)?;
    if let Err(e) = brainstate_core::node::load_state_with(opt, &opt_state, &strict) {
        let _ = load_state(net, &before);
        return Err(e.into());
    }
    Ok(epoch)
}
