//! `Sequential` containers, the tutorial network, and the `x >> layer >> layer` spelling.

use crate::dense::{event_limit, Dense, NARROW_BLOCK};
use crate::error::{NnError, Result};
use crate::init::Init;
use crate::layer::{chain_backward, chain_step, check_chain, label_of, Layer, ParamVisitor, Record};
use crate::mode::Mode;
use crate::neurons::{Expon, Integrator, Lif, LifParams, SpikeOut};
use crate::signal::{Events, Signal};
use brainstate_core::NodeName;
use ndarray::{Array2, ArrayView2};
use std::ops::Shr;

/// Layers applied one after the other, BrainPy's `bp.Sequential` (positional or named children).
///
/// Children are nodes of the model: their names and state keys are their own (`Dense0.W`); the
/// child keys of a named Sequential (`comm`, `syn`) only serve [`Sequential::get`].
#[derive(brainstate_derive::Stateful)]
#[stateful(crate = "brainstate_core", type_name = "Sequential")]
pub struct Sequential {
    #[stateful(name)]
    name: NodeName,
    children: Vec<Box<dyn Layer>>,
    keys: Vec<String>,
    mode: Mode,
}

impl Sequential {
    /// Positional children (`bp.Sequential(a, b)`); an error if consecutive sizes do not fit.
    pub fn new(children: Vec<Box<dyn Layer>>) -> Result<Sequential> {
        let keys = (0..children.len()).map(|i| i.to_string()).collect();
        Sequential::build(children, keys)
    }

    /// Named children (`bp.Sequential(comm=a, syn=b)`), in the given order.
    pub fn named_children(children: Vec<(&str, Box<dyn Layer>)>) -> Result<Sequential> {
        let (keys, children): (Vec<String>, Vec<Box<dyn Layer>>) =
            children.into_iter().map(|(k, c)| (k.to_string(), c)).unzip();
        Sequential::build(children, keys)
    }

    fn build(children: Vec<Box<dyn Layer>>, keys: Vec<String>) -> Result<Sequential> {
        if children.is_empty() {
            return Err(NnError::Param {
                layer: "Sequential".into(),
                name: "children".into(),
                value: "[]".into(),
                reason: "a Sequential needs at least one layer".into(),
            });
        }
        check_chain(&children, "Sequential")?;
        let mode = children[0].mode();
        Ok(Sequential {
            name: NodeName::auto(),
            children,
            keys,
            mode,
        })
    }

    /// Gives the container a name (must be an identifier).
    pub fn named(mut self, name: &str) -> Result<Sequential> {
        self.name = NodeName::new(name)?;
        Ok(self)
    }

    /// Appends a layer; an error if its input size does not fit the current output.
    pub fn push(mut self, layer: Box<dyn Layer>) -> Result<Sequential> {
        let last = self
            .children
            .last()
            .map(|l| (l.num_out(), label_of(l.node_name(), l.type_name())));
        if let Some((out, from)) = last {
            if out != layer.num_in() {
                return Err(NnError::LayerShape {
                    at: format!(
                        "{}, appending child {}",
                        label_of(&self.name, "Sequential"),
                        self.children.len()
                    ),
                    from,
                    to: label_of(layer.node_name(), layer.type_name()),
                    expected: layer.num_in(),
                    found: out,
                });
            }
        }
        self.keys.push(self.children.len().to_string());
        self.children.push(layer);
        Ok(self)
    }

    /// The child under `key` (its name for positional children is its index).
    pub fn get(&self, key: &str) -> Option<&dyn Layer> {
        let i = self.keys.iter().position(|k| k == key)?;
        Some(&*self.children[i])
    }

    /// The children in order.
    pub fn children(&self) -> &[Box<dyn Layer>] {
        &self.children
    }

    /// The children in order, mutably.
    pub fn children_mut(&mut self) -> &mut [Box<dyn Layer>] {
        &mut self.children
    }
}

/// Layers joined with `>>` (`Dense >> Expon >> ...`), turned into a positional [`Sequential`]
/// by [`Chain::build`], which checks that the sizes fit.
pub struct Chain(Vec<Box<dyn Layer>>);

impl Chain {
    /// The checked Sequential.
    pub fn build(self) -> Result<Sequential> {
        Sequential::new(self.0)
    }
}

impl<L: Layer + 'static> Shr<L> for Chain {
    type Output = Chain;
    fn shr(mut self, rhs: L) -> Chain {
        self.0.push(Box::new(rhs));
        self
    }
}

/// `seq >> layer` appends (sizes checked by [`Chain::build`]).
impl<L: Layer + 'static> Shr<L> for Sequential {
    type Output = Chain;
    fn shr(self, rhs: L) -> Chain {
        Chain(vec![Box::new(self), Box::new(rhs)])
    }
}

macro_rules! shr_builds_chain {
    ($($ty:ty),*) => {$(
        impl<L: Layer + 'static> Shr<L> for $ty {
            type Output = Chain;
            fn shr(self, rhs: L) -> Chain {
                Chain(vec![Box::new(self), Box::new(rhs)])
            }
        }
    )*};
}
shr_builds_chain!(Dense, Lif, Expon, Integrator);

impl Layer for Sequential {
    fn num_in(&self) -> usize {
        self.children.first().map_or(0, |c| c.num_in())
    }
    fn num_out(&self) -> usize {
        self.children.last().map_or(0, |c| c.num_out())
    }
    fn mode(&self) -> Mode {
        self.mode
    }
    fn reset(&mut self, batch_size: usize) {
        self.mode = self.mode.with_batch_size(batch_size);
        self.children.iter_mut().for_each(|c| c.reset(batch_size));
    }
    fn step(&mut self, dt: f32, input: Signal<'_>, record: Record) -> Result<&[f32]> {
        chain_step(&mut self.children, dt, input, record)
    }
    fn begin_tape(&mut self, num_steps: usize) {
        self.children.iter_mut().for_each(|c| c.begin_tape(num_steps));
    }
    fn begin_backward(&mut self) {
        self.children.iter_mut().for_each(|c| c.begin_backward());
    }
    fn zero_grad(&mut self) {
        self.children.iter_mut().for_each(|c| c.zero_grad());
    }
    fn backward(
        &mut self,
        dt: f32,
        t: usize,
        input: Option<Signal<'_>>,
        d_out: &[f32],
        want_d_in: bool,
    ) -> Result<&[f32]> {
        chain_backward(&mut self.children, dt, t, input, d_out, want_d_in)
    }
    fn visit_params(&mut self, f: &mut ParamVisitor<'_>) {
        self.children.iter_mut().for_each(|c| c.visit_params(f));
    }
    fn look_ahead(&mut self, steps: usize, input: &[f32]) {
        if let Some(first) = self.children.first_mut() {
            first.look_ahead(steps, input);
        }
    }
}

/// Feeds values through layers with `>>`, as BrainPy's `x >> l1 >> l2`:
/// `(Flow::new(x) >> &mut l1 >> &mut l2).output()?`. Errors (shape, batch) pass through to
/// [`Flow::output`]. Each stage copies its output, so this is for convenience; the trainer and
/// [`Layer::step`] do not allocate per step.
pub struct Flow {
    value: Result<Array2<f32>>,
    dt: f32,
}

impl Flow {
    /// Starts a flow from `batch x features` values with BrainPy's default `dt` (0.1 ms).
    pub fn new(x: Array2<f32>) -> Flow {
        Flow {
            value: Ok(x),
            dt: crate::mode::DEFAULT_DT,
        }
    }

    /// Sets the step size in ms.
    pub fn dt(mut self, dt: f32) -> Flow {
        self.dt = dt;
        self
    }

    /// The values after the last stage, or the first error.
    pub fn output(self) -> Result<Array2<f32>> {
        self.value
    }
}

impl<L: Layer + ?Sized> Shr<&mut L> for Flow {
    type Output = Flow;
    fn shr(self, layer: &mut L) -> Flow {
        let dt = self.dt;
        let value = self.value.and_then(|x| {
            let x = x.as_standard_layout();
            let rows = x.nrows();
            let out = layer.step(dt, Signal::Dense(x.as_slice().unwrap_or(&[])), Record::Off)?;
            let cols = out.len().checked_div(rows).unwrap_or(0);
            Ok(ArrayView2::from_shape((rows, cols), out)
                .expect("rows x cols")
                .to_owned())
        });
        Flow { value, dt }
    }
}

/// The tutorial's spiking network (BrainPy's `SNN` of "State saving and loading"):
/// `x >> i2r >> r >> r2o >> o` with `i2r = Sequential(comm=Linear(num_in, num_rec), syn=Expon)`,
/// `r = Lif`, `r2o = Sequential(comm=Linear(num_rec, num_out), syn=Expon)`, `o = Integrator`.
///
/// Its global state keys are BrainPy's: `SNN0, Lif0, Integrator0, Sequential0, Sequential1,
/// Dense0, Expon0, Dense1, Expon1`.
#[derive(brainstate_derive::Stateful)]
#[stateful(crate = "brainstate_core", type_name = "SNN")]
pub struct TutorialSnn {
    #[stateful(name)]
    name: NodeName,
    /// The recurrent Lif group.
    pub r: Lif,
    /// The output integrator.
    pub o: Integrator,
    /// Input synapse: `comm` (Dense) then `syn` (Expon).
    pub i2r: Sequential,
    /// Output synapse: `comm` (Dense) then `syn` (Expon).
    pub r2o: Sequential,
    mode: Mode,
    /// The spikes of `r` at the step being run backwards (the input of `r2o`), rebuilt from its
    /// recorded potentials instead of recorded by `r2o`: as events when `r2o`'s Dense would take
    /// the event path for them, else as 0/1 rows.
    spikes: Vec<f32>,
    spike_events: Events,
    /// Steps and backward steps take the fused passes when they can (off only in tests, to
    /// compare).
    fuse: bool,
}

/// Configuration of [`TutorialSnn`]; `Default` is the tutorial's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SnnConfig {
    /// Inputs (100).
    pub num_in: usize,
    /// Lif neurons (10).
    pub num_rec: usize,
    /// Outputs (2).
    pub num_out: usize,
    /// Lif parameters (tau 10, V_reset 0, V_rest 0, V_th 1, defaults otherwise).
    pub lif: LifParams,
    /// Input synapse time constant (10).
    pub syn_rec_tau: f32,
    /// Output synapse time constant (10).
    pub syn_out_tau: f32,
    /// Integrator time constant (5).
    pub out_tau: f32,
    /// Initializer of both weights (`KaimingNormal(scale=20)`).
    pub w_init: Init,
}

impl Default for SnnConfig {
    fn default() -> Self {
        SnnConfig {
            num_in: 100,
            num_rec: 10,
            num_out: 2,
            lif: LifParams {
                tau: 10.0,
                v_reset: 0.0,
                v_rest: 0.0,
                v_th: 1.0,
                ..LifParams::default()
            },
            syn_rec_tau: 10.0,
            syn_out_tau: 10.0,
            out_tau: 5.0,
            w_init: Init::kaiming_normal(20.0),
        }
    }
}

impl TutorialSnn {
    /// Builds the network; weights are drawn from `rng` in construction order (input weights,
    /// then output weights).
    pub fn new(cfg: &SnnConfig, mode: Mode, rng: &mut dyn rand::RngCore) -> Result<TutorialSnn> {
        let r = Lif::new(cfg.num_rec, cfg.lif, mode)?;
        let o = Integrator::new(cfg.num_out, cfg.out_tau, mode)?;
        // Linear + Expon, as the tutorial's `bp.Sequential(comm=..., syn=...)`; the input
        // weights are drawn before the output weights.
        let mut synapse = |n_in: usize, n_out: usize, tau: f32| -> Result<Sequential> {
            Sequential::named_children(vec![
                (
                    "comm",
                    Box::new(Dense::with_init(
                        n_in,
                        n_out,
                        cfg.w_init,
                        Some(Init::Zeros),
                        mode,
                        rng,
                    )?),
                ),
                ("syn", Box::new(Expon::new(n_out, tau, mode)?)),
            ])
        };
        let i2r = synapse(cfg.num_in, cfg.num_rec, cfg.syn_rec_tau)?;
        let r2o = synapse(cfg.num_rec, cfg.num_out, cfg.syn_out_tau)?;
        Ok(TutorialSnn {
            name: NodeName::auto(),
            r,
            o,
            i2r,
            r2o,
            mode,
            spikes: Vec::new(),
            spike_events: Events::default(),
            fuse: true,
        })
    }

    fn parts(&mut self) -> [&mut dyn Layer; 4] {
        [&mut self.i2r, &mut self.r, &mut self.r2o, &mut self.o]
    }
}

/// True when the tutorial network's backward step at `t` can take the fused pass
/// ([`Lif::backward_fused`]): training, the Lif wide enough, its step `t` recorded, the synapses
/// `Dense >> Expon` as built, the readout's Dense narrow with `W^T` kept and the input Expon's
/// backward begun. Changes nothing.
fn fusable(r: &mut Lif, i2r: &mut Sequential, r2o: &mut Sequential, dt: f32, t: usize) -> bool {
    let Some(n) = r.recorded_v_pre(t).map(<[f32]>::len) else {
        return false;
    };
    let ([comm1, _], [_, syn0]) = (r2o.children_mut(), i2r.children_mut()) else {
        return false;
    };
    r.mode().is_training()
        && r.num_out() >= NARROW_BLOCK
        && comm1
            .as_any_mut()
            .and_then(|a| a.downcast_mut::<Dense>())
            .is_some_and(|d| d.narrow_wt().is_some())
        && syn0
            .as_any_mut()
            .and_then(|a| a.downcast_mut::<Expon>())
            .is_some_and(|e| e.backward_carry(dt, n).is_some())
}

/// True when the tutorial network's step can run its input synapse's Expon inside the Lif's pass
/// ([`Lif::step_after_expon`]): training, and the input synapse `Dense >> Expon` as built, of the
/// Lif's size. Changes nothing.
fn fusable_step(r: &mut Lif, i2r: &mut Sequential) -> bool {
    let [_, syn0] = i2r.children_mut() else {
        return false;
    };
    r.mode().is_training()
        && syn0.num_out() == r.num_in()
        && syn0.as_any_mut().is_some_and(|a| a.is::<Expon>())
}

/// The error of a fused step whose layers are not those [`fusable`] or [`fusable_step`] saw.
fn not_built(what: &str) -> NnError {
    NnError::Mode {
        what: format!("fused {what}"),
        layer: "SNN".into(),
        needed: "the synapses as built (Dense then Expon)".into(),
        found: "other layers".into(),
    }
}

/// The parts of the tutorial network a fused backward step works on besides the input synapse.
struct Fusion<'a> {
    r: &'a mut Lif,
    r2o: &'a mut Sequential,
    /// Written with the step's 0/1 spikes when they are not events.
    spikes: &'a mut Vec<f32>,
    /// The list (reset to the Lif's width) for the step's spikes as events, and the most it may
    /// hold, when the readout's Dense takes them as events.
    events: Option<(&'a mut Events, usize)>,
}

impl Fusion<'_> {
    /// Backward through `r2o`'s synapse, then one fused pass for `r2o`'s input gradient, the Lif
    /// and `i2r`'s synapse, then the two Dense layers' gradients (after [`fusable`]).
    fn backward<'b>(
        self,
        i2r: &'b mut Sequential,
        dt: f32,
        t: usize,
        input: Option<Signal<'_>>,
        d: &[f32],
        want_d_in: bool,
    ) -> Result<&'b [f32]> {
        let not_built = || not_built(&format!("backward of step {t}"));
        let Fusion {
            r,
            r2o,
            spikes,
            mut events,
        } = self;
        let n = r.recorded_v_pre(t).map_or(0, <[f32]>::len);
        let [comm1, syn1] = r2o.children_mut() else {
            return Err(not_built());
        };
        let [comm0, syn0] = i2r.children_mut() else {
            return Err(not_built());
        };
        let d1 = syn1.backward(dt, t, None, d, true)?;
        let dense1 = comm1
            .as_any_mut()
            .and_then(|a| a.downcast_mut::<Dense>())
            .ok_or_else(not_built)?;
        let (e_din, e_keep) = syn0
            .as_any_mut()
            .and_then(|a| a.downcast_mut::<Expon>())
            .and_then(|e| e.backward_carry(dt, n))
            .ok_or_else(not_built)?;
        let n_out = dense1.num_out();
        let out = match events.as_mut() {
            Some((ev, max)) => SpikeOut::Events(ev, *max),
            None => {
                spikes.resize(n, 0.0);
                SpikeOut::Rows(&mut spikes[..])
            }
        };
        let wt = dense1.narrow_wt().ok_or_else(not_built)?;
        let held = r.backward_fused(dt, t, d1, wt, n_out, e_din, e_keep, out)?;
        let sig = match events {
            None => Signal::Dense(spikes),
            Some((e, _)) if held => Signal::Events(e.view()),
            // Too many for a list after all: 0/1 rows from the potentials, as unfused.
            Some(_) => {
                r.recorded_spikes(t, spikes);
                Signal::Dense(spikes)
            }
        };
        dense1.backward(dt, t, Some(sig), d1, false)?;
        comm0.backward(dt, t, input, e_din, want_d_in)
    }
}

impl Layer for TutorialSnn {
    fn num_in(&self) -> usize {
        self.i2r.num_in()
    }
    fn num_out(&self) -> usize {
        self.o.num_out()
    }
    fn mode(&self) -> Mode {
        self.mode
    }
    fn reset(&mut self, batch_size: usize) {
        self.mode = self.mode.with_batch_size(batch_size);
        self.parts().iter_mut().for_each(|l| l.reset(batch_size));
    }
    fn step(&mut self, dt: f32, input: Signal<'_>, record: Record) -> Result<&[f32]> {
        let down = record.downstream();
        let x = if self.fuse && fusable_step(&mut self.r, &mut self.i2r) {
            // The input synapse's Expon update runs inside the Lif's pass.
            let [comm0, syn0] = self.i2r.children_mut() else {
                return Err(not_built("step"));
            };
            let x = comm0.step(dt, input, record)?;
            let expon0 = syn0.as_any_mut().and_then(|a| a.downcast_mut::<Expon>());
            let (g, k) = expon0.ok_or_else(|| not_built("step"))?.step_state(dt, x)?;
            self.r.step_after_expon(dt, x, g, k, down)?
        } else {
            let x = self.i2r.step(dt, input, record)?;
            self.r.step(dt, Signal::Dense(x), down)?
        };
        // Backward hands `r2o` the spikes again (rebuilt from `r`'s tape): it keeps no copy.
        let retained = match record {
            Record::Off => Record::Off,
            _ => Record::TapeInputRetained,
        };
        let x = self.r2o.step(dt, Signal::Dense(x), retained)?;
        self.o.step(dt, Signal::Dense(x), down)
    }
    fn begin_tape(&mut self, num_steps: usize) {
        self.parts().iter_mut().for_each(|l| l.begin_tape(num_steps));
    }
    fn begin_backward(&mut self) {
        self.parts().iter_mut().for_each(|l| l.begin_backward());
    }
    fn zero_grad(&mut self) {
        self.parts().iter_mut().for_each(|l| l.zero_grad());
    }
    fn backward(
        &mut self,
        dt: f32,
        t: usize,
        input: Option<Signal<'_>>,
        d_out: &[f32],
        want_d_in: bool,
    ) -> Result<&[f32]> {
        let d = self.o.backward(dt, t, None, d_out, true)?;
        let (n_rec, n_out) = (self.r.num_out(), self.r2o.num_out());
        let v_th = self.r.params().v_th;
        // The spikes reach r2o's Dense as events when it would turn their 0/1 rows into events
        // itself (the same events, so the same gradient bits), taken straight from the
        // potentials: no 0/1 rows written and scanned again.
        let max_events = self
            .r
            .recorded_v_pre(t)
            .and_then(|vp| event_limit(vp.len() / n_rec.max(1), n_rec, n_out));
        if self.fuse && fusable(&mut self.r, &mut self.i2r, &mut self.r2o, dt, t) {
            // The fused pass collects the events as it goes, when the probe lets it try.
            let probe = |max| {
                let vp = self.r.recorded_v_pre(t).unwrap_or_default();
                Events::probe_spikes(vp, v_th, max)
            };
            let max_events = max_events.filter(|&max| probe(max));
            if max_events.is_some() {
                self.spike_events.reset(n_rec);
            }
            let parts = Fusion {
                r: &mut self.r,
                r2o: &mut self.r2o,
                spikes: &mut self.spikes,
                events: max_events.map(|max| (&mut self.spike_events, max)),
            };
            return parts.backward(&mut self.i2r, dt, t, input, d, want_d_in);
        }
        let events = self.r.recorded_v_pre(t).is_some_and(|vp| {
            max_events.is_some_and(|max| self.spike_events.collect_spikes(vp, n_rec, v_th, max))
        });
        let spikes = if events {
            Some(Signal::Events(self.spike_events.view()))
        } else {
            self.r
                .recorded_spikes(t, &mut self.spikes)
                .then_some(Signal::Dense(&self.spikes))
        };
        let d = self.r2o.backward(dt, t, spikes, d, true)?;
        let d = self.r.backward(dt, t, None, d, true)?;
        self.i2r.backward(dt, t, input, d, want_d_in)
    }
    fn visit_params(&mut self, f: &mut ParamVisitor<'_>) {
        self.parts().iter_mut().for_each(|l| l.visit_params(f));
    }
    fn look_ahead(&mut self, steps: usize, input: &[f32]) {
        self.i2r.look_ahead(steps, input);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::{Reduction, Targets};
    use crate::neurons::SpikeReset;
    use crate::train::{Bptt, SpikeInput};
    use ndarray::Array3;
    use rand::{Rng, SeedableRng};

    /// Parameter gradients of one BPTT pass, as bits.
    fn grads(net: &mut TutorialSnn, x: &SpikeInput, y: &[f32]) -> Vec<(String, Vec<u32>)> {
        let mut trainer = Bptt::new(1.0);
        net.zero_grad();
        trainer
            .loss_and_grad(net, x, Targets::Classes(y), Reduction::Mean)
            .expect("backward");
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
        let mut out = Vec::new();
        net.visit_params(&mut |node, key, _, g| out.push((format!("{node}.{key}"), bits(g))));
        // The forward values too: every output step, the last potentials and conductances.
        let outputs = trainer.outputs().iter().copied().collect::<Vec<f32>>();
        out.push(("outputs".into(), bits(&outputs)));
        out.push((
            "Lif.V".into(),
            bits(net.r.v().value().as_slice::<f32>().expect("V")),
        ));
        let syn0 = net.i2r.children_mut()[1].as_any_mut();
        let expon0 = syn0.and_then(|a| a.downcast_mut::<Expon>()).expect("Expon");
        out.push((
            "Expon0.g".into(),
            bits(expon0.g().value().as_slice::<f32>().expect("g")),
        ));
        out
    }

    #[test]
    fn fused_steps_give_the_bits_of_the_layer_by_layer_steps() {
        // 200 Lif neurons (a block of 128 and an overlapping last block), an odd batch, input
        // densities that give dense spikes (0/1 rows) and sparse spikes (events), soft and hard
        // resets, detached or not. Steps of three kinds must occur: spikes as events, too many
        // for events on the probe (0/1 rows), and too many only over the whole step (the list
        // is abandoned, then 0/1 rows).
        // The large cases (66 x 520 values a step) run in two halves of the rows on two
        // threads, the second half's events listed apart and appended.
        let mut kinds = [0usize; 3];
        let mut kinds_large = [0usize; 3];
        for (density, reset, detach, b, num_rec) in [
            (0.5, SpikeReset::Soft, false, 7, 200),
            (0.02, SpikeReset::Soft, false, 7, 200),
            (0.05, SpikeReset::Soft, false, 7, 200),
            (0.1, SpikeReset::Soft, false, 7, 200),
            (0.5, SpikeReset::Hard, false, 7, 200),
            (0.5, SpikeReset::Hard, true, 7, 200),
            (0.02, SpikeReset::Soft, false, 66, 520),
            (0.3, SpikeReset::Soft, false, 66, 520),
        ] {
            let cfg = SnnConfig {
                num_in: 40,
                num_rec,
                num_out: 5,
                lif: LifParams {
                    spk_reset: reset,
                    detach_spk: detach,
                    ..SnnConfig::default().lif
                },
                ..SnnConfig::default()
            };
            let t = 12;
            let mut rng = rand::rngs::StdRng::seed_from_u64(5);
            let x = Array3::from_shape_simple_fn((t, b, cfg.num_in), || {
                if rng.gen_bool(density) {
                    1.0f32
                } else {
                    0.0
                }
            });
            let x = SpikeInput::new(x).expect("input");
            let y: Vec<f32> = (0..b).map(|i| (i % cfg.num_out) as f32).collect();
            let build = || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(9);
                let mut net =
                    TutorialSnn::new(&cfg, Mode::Training { batch_size: b }, &mut rng).expect("net");
                // Biases of distinct values per column: BrainPy's default is zeros, under which
                // a bias taken from the wrong column would go unseen.
                net.visit_params(&mut |_, key, var, _| {
                    if key == "b" {
                        let mut b = var.array_mut::<f32>().expect("f32 bias");
                        b.iter_mut()
                            .enumerate()
                            .for_each(|(j, v)| *v = 0.05 * (j % 13) as f32 - 0.2);
                    }
                });
                net
            };
            let (mut fused, mut plain) = (build(), build());
            plain.fuse = false;
            let (gf, gp) = (grads(&mut fused, &x, &y), grads(&mut plain, &x, &y));
            assert_eq!(gf.len(), 7);
            for ((kf, f), (kp, p)) in gf.iter().zip(&gp) {
                assert_eq!(kf, kp);
                let differ = f.iter().zip(p).filter(|(a, b)| a != b).count();
                assert_eq!(
                    differ,
                    0,
                    "{kf}: {differ} of {} gradient values differ ({density}, {reset:?}, {detach})",
                    f.len()
                );
            }
            assert!(
                gp[0].1.iter().any(|&v| f32::from_bits(v) != 0.0),
                "input weights get a gradient"
            );
            // The comparison is between the two paths: the fused ones were open to this network.
            assert!(fusable_step(&mut fused.r, &mut fused.i2r));
            assert!(fusable(&mut fused.r, &mut fused.i2r, &mut fused.r2o, 1.0, t - 1));
            assert!(!fusable(&mut fused.r, &mut fused.i2r, &mut fused.r2o, 1.0, t));
            let max = event_limit(b, cfg.num_rec, cfg.num_out).expect("a list size");
            for step in 0..t {
                let vp = fused.r.recorded_v_pre(step).expect("recorded");
                let spikes = vp.iter().filter(|&&v| v >= cfg.lif.v_th).count();
                if b * num_rec <= 4096 {
                    // The probe sees the whole step.
                    kinds[usize::from(spikes > max) + usize::from(spikes > 2 * max)] += 1;
                } else {
                    kinds_large[usize::from(spikes > max)] += 1;
                }
            }
        }
        assert!(
            kinds.iter().all(|&k| k > 0),
            "steps as events, abandoned lists, 0/1 rows: {kinds:?}"
        );
        assert!(
            kinds_large[..2].iter().all(|&k| k > 0),
            "large steps: {kinds_large:?}"
        );
    }

    #[test]
    fn fused_backward_refuses_a_missing_step_and_mismatched_sizes() {
        let cfg = SnnConfig {
            num_in: 20,
            num_rec: 130,
            num_out: 3,
            ..SnnConfig::default()
        };
        let (t, b) = (3, 2);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut net = TutorialSnn::new(&cfg, Mode::Training { batch_size: b }, &mut rng).expect("net");
        let x = SpikeInput::new(Array3::from_elem((t, b, cfg.num_in), 1.0f32)).expect("input");
        let y = vec![0.0f32; b];
        grads(&mut net, &x, &y);
        let n = b * cfg.num_rec;
        let wt = vec![0.0f32; cfg.num_out * cfg.num_rec];
        let d1 = vec![0.0f32; b * cfg.num_out];
        let mut e = vec![0.0f32; n];
        let mut s = vec![0.0f32; n];
        let r = &mut net.r;
        fn rows(s: &mut [f32]) -> SpikeOut<'_> {
            SpikeOut::Rows(s)
        }
        let err = r
            .backward_fused(1.0, t, &d1, &wt, cfg.num_out, &mut e, 0.9, rows(&mut s))
            .unwrap_err();
        assert!(
            matches!(err, NnError::Mode { .. }) && err.to_string().contains("backward of step 3"),
            "{err}"
        );
        let batch = |err: NnError| matches!(err, NnError::BatchSize { .. });
        let out = cfg.num_out;
        assert!(batch(
            r.backward_fused(1.0, 0, &d1[1..], &wt, out, &mut e, 0.9, rows(&mut s))
                .unwrap_err()
        ));
        assert!(batch(
            r.backward_fused(1.0, 0, &d1, &wt[1..], out, &mut e, 0.9, rows(&mut s))
                .unwrap_err()
        ));
        assert!(batch(
            r.backward_fused(1.0, 0, &d1, &wt, out, &mut e[1..], 0.9, rows(&mut s))
                .unwrap_err()
        ));
        let short = SpikeOut::Rows(&mut s[1..]);
        assert!(batch(
            r.backward_fused(1.0, 0, &d1, &wt, out, &mut e, 0.9, short)
                .unwrap_err()
        ));
        assert!(batch(
            r.backward_fused(1.0, 0, &d1, &wt, 0, &mut e, 0.9, rows(&mut s))
                .unwrap_err()
        ));
        let mut narrow = Events::default();
        narrow.reset(cfg.num_rec - 1);
        let other_width = SpikeOut::Events(&mut narrow, 1000);
        assert!(batch(
            r.backward_fused(1.0, 0, &d1, &wt, out, &mut e, 0.9, other_width)
                .unwrap_err()
        ));
        let fits = r.backward_fused(1.0, 0, &d1, &wt, out, &mut e, 0.9, rows(&mut s));
        assert!(fits.expect("sizes that fit"));

        // A Lif narrower than one block of columns never takes the fused pass (the network
        // steps back layer by layer); called anyway, it refuses.
        let small = SnnConfig { num_rec: 100, ..cfg };
        let mut net = TutorialSnn::new(&small, Mode::Training { batch_size: b }, &mut rng).expect("net");
        grads(&mut net, &x, &y);
        assert!(!fusable(&mut net.r, &mut net.i2r, &mut net.r2o, 1.0, 0));
        let (wt, mut e, mut s) = (vec![0.0; out * 100], vec![0.0; b * 100], vec![0.0; b * 100]);
        let err = net
            .r
            .backward_fused(1.0, 0, &d1, &wt, out, &mut e, 0.9, rows(&mut s))
            .unwrap_err();
        assert!(err.to_string().contains("at least 128 neurons"), "{err}");
    }
}
