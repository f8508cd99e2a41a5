//! The [`Layer`] trait: one time step forward, one step of backpropagation through time, and
//! chaining of layers.

use crate::error::{NnError, Result};
use crate::mode::Mode;
use crate::signal::Signal;
use brainstate_core::{NodeName, Stateful, Variable};

/// What a layer keeps of a forward step for the backward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// Inference: keep nothing.
    Off,
    /// Training: keep what backward needs (Lif: pre-reset potentials; Dense: its input).
    Tape,
    /// Training, and the caller keeps this step's input and hands it to `backward` again, so a
    /// Dense layer does not copy it.
    TapeInputRetained,
}

impl Record {
    /// The record mode for a layer further down a chain.
    pub fn downstream(self) -> Record {
        match self {
            Record::Off => Record::Off,
            _ => Record::Tape,
        }
    }
}

/// A dynamical layer: a [`Stateful`] node that maps `batch x num_in` inputs to `batch x num_out`
/// outputs each time step, and can run that step backwards for BPTT.
///
/// Backward protocol (what the trainer does): `begin_tape(T)`, then `T` calls of `step` with a
/// recording [`Record`], then `begin_backward()`, then `backward(t, ...)` for `t = T-1` down to 0,
/// each given the gradient of the loss with respect to that step's output. Parameter gradients
/// accumulate until [`Layer::zero_grad`].
pub trait Layer: Stateful {
    /// Features per sample in.
    fn num_in(&self) -> usize;
    /// Features per sample out.
    fn num_out(&self) -> usize;
    /// The mode the layer was built in (batch size as of the last reset).
    fn mode(&self) -> Mode;
    /// Re-initialises the state for `batch_size` samples (ignored without batch axis), as
    /// BrainPy's `reset(batch_size)`.
    fn reset(&mut self, batch_size: usize);
    /// One time step with `dt` (ms): returns the output rows (`batch * num_out`).
    fn step(&mut self, dt: f32, input: Signal<'_>, record: Record) -> Result<&[f32]>;
    /// Starts recording `num_steps` steps (drops older records, keeps the memory).
    fn begin_tape(&mut self, num_steps: usize);
    /// Zeroes the carried state gradients before the first backward step.
    fn begin_backward(&mut self);
    /// Zeroes the parameter gradients.
    fn zero_grad(&mut self);
    /// Backward through recorded step `t`. `input` is that step's input when the caller kept it
    /// ([`Record::TapeInputRetained`]); `d_out` is dLoss/d(output of step t). Returns
    /// dLoss/d(input of step t) when `want_d_in`, else an empty slice.
    fn backward(
        &mut self,
        dt: f32,
        t: usize,
        input: Option<Signal<'_>>,
        d_out: &[f32],
        want_d_in: bool,
    ) -> Result<&[f32]>;
    /// Visits each trainable variable with its node name, field key and accumulated gradient.
    fn visit_params(&mut self, f: &mut ParamVisitor<'_>);
    /// Announces the dense inputs of the next `steps` calls of [`Layer::step`], one step after
    /// another in `input` (`steps * batch * num_in` values). A layer whose output needs only the
    /// step's input and its parameters may compute those steps now (a [`crate::Dense`] layer: one
    /// product of `steps` times the rows, which packs `W` once instead of once a step); the later
    /// steps given exactly these slices then return the stored values, bit for bit what they
    /// would have computed. Parameters must not change before those steps; `look_ahead(0, &[])`
    /// drops announced steps not yet run. The default does nothing; containers pass the call to
    /// their first layer.
    fn look_ahead(&mut self, steps: usize, input: &[f32]) {
        let _ = (steps, input);
    }
    /// This layer as [`Any`](std::any::Any), so a network that knows its layers' types can reach
    /// them inside containers ([`crate::TutorialSnn`] fuses its backward step this way). The
    /// default, `None`, keeps a layer out of such fusions.
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
}

/// The callback of [`Layer::visit_params`]: `(node name, field key, variable, gradient)`.
pub type ParamVisitor<'a> = dyn FnMut(&str, &str, &mut Variable, &[f32]) + 'a;

/// A readable label of a node for errors: its name if it has one yet, else its type.
pub(crate) fn label_of(name: &NodeName, type_name: &str) -> String {
    match name.get() {
        Some(n) => n.to_string(),
        None => format!("{type_name} (unnamed)"),
    }
}

/// The f32 elements of a state variable, or a typed error naming it.
pub(crate) fn f32_mut<'a>(
    var: &'a mut Variable,
    name: &NodeName,
    type_name: &str,
    field: &str,
) -> Result<&'a mut [f32]> {
    let key = || format!("{}.{field}", label_of(name, type_name));
    match var.array_mut::<f32>() {
        Ok(a) => a.into_slice().ok_or_else(|| NnError::Variable {
            key: key(),
            expected: "contiguous values".into(),
            found: "a strided view".into(),
        }),
        Err(e) => Err(NnError::var(key(), e)),
    }
}

/// Read-only version of [`f32_mut`].
pub(crate) fn f32_ref<'a>(
    var: &'a Variable,
    name: &NodeName,
    type_name: &str,
    field: &str,
) -> Result<&'a [f32]> {
    let key = || format!("{}.{field}", label_of(name, type_name));
    match var.value().as_slice::<f32>() {
        Ok(s) => Ok(s),
        Err(e) => Err(NnError::var(key(), e)),
    }
}

/// Checks that `input` has `features` per row and `batch` rows.
pub(crate) fn check_input(
    input: &Signal<'_>,
    features: usize,
    batch: Option<usize>,
    layer: impl Fn() -> String,
) -> Result<usize> {
    let rows = input.rows(features).map_err(|found| NnError::InputShape {
        layer: layer(),
        expected: features,
        found,
    })?;
    if let Some(b) = batch {
        if b != rows {
            return Err(NnError::BatchSize {
                layer: layer(),
                expected: b,
                found: rows,
            });
        }
    }
    Ok(rows)
}

/// Access to a layer held in a container (a box or a borrow).
pub trait LayerSlot {
    /// The layer.
    fn layer(&self) -> &dyn Layer;
    /// The layer, mutably.
    fn layer_mut(&mut self) -> &mut dyn Layer;
}

impl LayerSlot for Box<dyn Layer> {
    fn layer(&self) -> &dyn Layer {
        &**self
    }
    fn layer_mut(&mut self) -> &mut dyn Layer {
        &mut **self
    }
}

impl LayerSlot for &mut dyn Layer {
    fn layer(&self) -> &dyn Layer {
        &**self
    }
    fn layer_mut(&mut self) -> &mut dyn Layer {
        &mut **self
    }
}

/// Checks that consecutive layers fit (`num_out` of one is `num_in` of the next).
pub(crate) fn check_chain<L: LayerSlot>(layers: &[L], at: &str) -> Result<()> {
    for (k, pair) in layers.windows(2).enumerate() {
        let (a, b) = (pair[0].layer(), pair[1].layer());
        if a.num_out() != b.num_in() {
            return Err(NnError::LayerShape {
                at: format!("{at}, between child {k} and child {}", k + 1),
                from: label_of(a.node_name(), a.type_name()),
                to: label_of(b.node_name(), b.type_name()),
                expected: b.num_in(),
                found: a.num_out(),
            });
        }
    }
    Ok(())
}

/// One step through a chain of layers.
pub(crate) fn chain_step<'a, L: LayerSlot>(
    layers: &'a mut [L],
    dt: f32,
    input: Signal<'_>,
    record: Record,
) -> Result<&'a [f32]> {
    let Some((first, rest)) = layers.split_first_mut() else {
        return Ok(&[]);
    };
    let mut out: &'a [f32] = first.layer_mut().step(dt, input, record)?;
    for l in rest {
        out = l.layer_mut().step(dt, Signal::Dense(out), record.downstream())?;
    }
    Ok(out)
}

/// One backward step through a chain of layers.
pub(crate) fn chain_backward<'a, L: LayerSlot>(
    layers: &'a mut [L],
    dt: f32,
    t: usize,
    input: Option<Signal<'_>>,
    d_out: &[f32],
    want_d_in: bool,
) -> Result<&'a [f32]> {
    let Some((last, init)) = layers.split_last_mut() else {
        return Ok(&[]);
    };
    let n = init.len();
    let first_input = |k: usize| if k == 0 { input } else { None };
    let mut d: &'a [f32] = last
        .layer_mut()
        .backward(dt, t, first_input(n), d_out, n > 0 || want_d_in)?;
    for (k, l) in init.iter_mut().enumerate().rev() {
        d = l
            .layer_mut()
            .backward(dt, t, first_input(k), d, k > 0 || want_d_in)?;
    }
    Ok(d)
}
