//! Optimizers: Adam (BrainPy 2.8 semantics) and SGD. Their state is `Stateful`, keyed by the
//! trainable variables' paths (`Adam0.Dense0.W_m`), so checkpoints resume training exactly.

use crate::error::{NnError, Result};
use crate::layer::Layer;
use brainstate_core::{variables, IndexMap, NodeName, Stateful, Tensor, Variable};
use ndarray::ArrayD;

/// BrainPy's constant learning-rate scheduler (`Constant0`, variable `last_epoch` = -1).
#[derive(brainstate_derive::Stateful)]
#[stateful(crate = "brainstate_core", type_name = "Constant")]
pub struct Constant {
    #[stateful(name)]
    name: NodeName,
    last_epoch: Variable,
    /// The learning rate.
    pub lr: f32,
}

impl Constant {
    /// A constant learning rate.
    pub fn new(lr: f32) -> Constant {
        Constant {
            name: NodeName::auto(),
            last_epoch: Variable::new(Tensor::scalar(-1i32)),
            lr,
        }
    }
}

/// An optimizer over a model's trainable variables.
pub trait Optimizer: Stateful {
    /// Creates state for every trainable variable of `model`, keyed by its global key
    /// (`Dense0.W`). Names the model's nodes if they are not named yet.
    fn register(&mut self, model: &dyn Stateful) -> Result<()>;
    /// One update from the gradients the model's layers hold.
    fn update(&mut self, model: &mut dyn Layer) -> Result<()>;
}

fn check_lr(what: &str, lr: f32) -> Result<()> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(NnError::Param {
            layer: what.into(),
            name: "lr".into(),
            value: lr.to_string(),
            reason: "must be finite and >= 0".into(),
        })
    }
}

fn trainable(model: &dyn Stateful) -> Result<Vec<(String, Vec<usize>)>> {
    Ok(variables(model)?
        .into_iter()
        .filter(|(_, v)| v.is_trainable())
        .map(|(k, v)| (k, v.shape().to_vec()))
        .collect())
}

/// Runs `f(key, param, grad)` over the model's parameters; the first error stops the rest.
fn each_param(
    model: &mut dyn Layer,
    mut f: impl FnMut(&str, &mut [f32], &[f32]) -> Result<()>,
) -> Result<()> {
    let mut err = None;
    let mut key = String::new();
    model.visit_params(&mut |node, field, var, grad| {
        if err.is_some() {
            return;
        }
        key.clear();
        key.push_str(node);
        key.push('.');
        key.push_str(field);
        let r = match var.array_mut::<f32>() {
            Ok(a) => match a.into_slice() {
                Some(p) if p.len() == grad.len() => f(&key, p, grad),
                Some(p) => Err(NnError::Variable {
                    key: key.clone(),
                    expected: format!("{} values like its gradient", grad.len()),
                    found: format!("{} values", p.len()),
                }),
                None => Err(NnError::Variable {
                    key: key.clone(),
                    expected: "contiguous values".into(),
                    found: "a strided view".into(),
                }),
            },
            Err(e) => Err(NnError::var(key.clone(), e)),
        };
        if let Err(e) = r {
            err = Some(e);
        }
    });
    err.map_or(Ok(()), Err)
}

/// Adam as BrainPy 2.8's `bp.optim.Adam(lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=None)`.
///
/// Each update: `t <- t + 1`; `lr_t = lr sqrt(1 - beta2^t) / (1 - beta1^t)`;
/// `m <- beta1 m + (1 - beta1) g`; `v <- beta2 v + (1 - beta2) g^2`;
/// `p <- (1 - wd) p - lr_t m / (sqrt(v) + eps)` (eps added to the uncorrected `sqrt(v)`).
/// State keys: `Adam0.step`, `Adam0.<var>_m` for every variable, then `Adam0.<var>_v`; the
/// scheduler child `Constant0.last_epoch`.
pub struct Adam {
    name: NodeName,
    step: Variable,
    m: IndexMap<String, Variable>,
    v: IndexMap<String, Variable>,
    lr: Constant,
    /// First-moment decay (0.9).
    pub beta1: f32,
    /// Second-moment decay (0.999).
    pub beta2: f32,
    /// Added to `sqrt(v)` (1e-8).
    pub eps: f32,
    /// Decoupled weight decay (None).
    pub weight_decay: Option<f32>,
}

impl Adam {
    /// Adam with BrainPy's defaults and learning rate `lr`.
    pub fn new(lr: f32) -> Result<Adam> {
        check_lr("Adam", lr)?;
        Ok(Adam {
            name: NodeName::auto(),
            step: Variable::new(Tensor::scalar(0i32)),
            m: IndexMap::new(),
            v: IndexMap::new(),
            lr: Constant::new(lr),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: None,
        })
    }

    /// The number of updates done (BrainPy's `step`).
    pub fn steps(&self) -> i32 {
        self.step
            .value()
            .as_slice::<i32>()
            .ok()
            .and_then(|s| s.first().copied())
            .unwrap_or(0)
    }

    /// The learning rate.
    pub fn lr(&self) -> f32 {
        self.lr.lr
    }

    /// First moment of the variable `key` (`Dense0.W`).
    pub fn m(&self, key: &str) -> Option<ArrayD<f32>> {
        self.m
            .get(key)
            .and_then(|v| v.array::<f32>().ok())
            .map(|a| a.to_owned())
    }

    /// Second moment of the variable `key`.
    pub fn v(&self, key: &str) -> Option<ArrayD<f32>> {
        self.v
            .get(key)
            .and_then(|v| v.array::<f32>().ok())
            .map(|a| a.to_owned())
    }
}

impl Stateful for Adam {
    fn type_name(&self) -> &'static str {
        "Adam"
    }
    fn node_name(&self) -> &NodeName {
        &self.name
    }
    fn name(&self) -> &str {
        self.name.resolve(self)
    }
    fn visit_variables<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Variable)) {
        f("step", &self.step);
        self.m.iter().for_each(|(k, v)| f(&format!("{k}_m"), v));
        self.v.iter().for_each(|(k, v)| f(&format!("{k}_v"), v));
    }
    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&'a dyn Stateful)) {
        f(&self.lr)
    }
    fn visit_mut<'a>(
        &'a mut self,
        vars: &mut dyn FnMut(&str, &'a mut Variable),
        children: &mut dyn FnMut(&'a mut dyn Stateful),
    ) {
        let Adam { step, m, v, lr, .. } = self;
        vars("step", step);
        m.iter_mut().for_each(|(k, x)| vars(&format!("{k}_m"), x));
        v.iter_mut().for_each(|(k, x)| vars(&format!("{k}_v"), x));
        children(lr);
    }
}

impl Optimizer for Adam {
    fn register(&mut self, model: &dyn Stateful) -> Result<()> {
        for (key, shape) in trainable(model)? {
            let zeros = || Variable::new(ArrayD::<f32>::zeros(shape.clone()));
            self.m.entry(key.clone()).or_insert_with(zeros);
            self.v.entry(key).or_insert_with(zeros);
        }
        Ok(())
    }

    fn update(&mut self, model: &mut dyn Layer) -> Result<()> {
        let name = self.name().to_string();
        let t = self.steps() + 1;
        let (b1, b2, eps, lr) = (self.beta1, self.beta2, self.eps, self.lr.lr);
        let lr_t = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
        let decay = self.weight_decay.map_or(1.0, |wd| 1.0 - wd);
        let (ms, vs) = (&mut self.m, &mut self.v);
        each_param(model, |key, p, g| {
            let missing = || NnError::Optimizer {
                optimizer: name.clone(),
                problem: format!("no moments for {key}: call register(&model) first"),
            };
            let m = ms.get_mut(key).ok_or_else(missing)?;
            let m = m
                .array_mut::<f32>()
                .map_err(|e| NnError::var(format!("{name}.{key}_m"), e))?
                .into_slice()
                .ok_or_else(missing)?;
            let v = vs.get_mut(key).ok_or_else(missing)?;
            let v = v
                .array_mut::<f32>()
                .map_err(|e| NnError::var(format!("{name}.{key}_v"), e))?
                .into_slice()
                .ok_or_else(missing)?;
            if m.len() != p.len() || v.len() != p.len() {
                return Err(NnError::Optimizer {
                    optimizer: name.clone(),
                    problem: format!(
                        "moments of {key} hold {} values, the variable {}",
                        m.len(),
                        p.len()
                    ),
                });
            }
            for j in 0..p.len() {
                let gj = g[j];
                m[j] = b1 * m[j] + (1.0 - b1) * gj;
                v[j] = b2 * v[j] + (1.0 - b2) * gj * gj;
                p[j] = decay * p[j] - lr_t * m[j] / (v[j].sqrt() + eps);
            }
            Ok(())
        })?;
        if let Ok(s) = self.step.value_slice_mut() {
            s[0] = t;
        }
        Ok(())
    }
}

trait ScalarMut {
    fn value_slice_mut(&mut self) -> Result<&mut [i32]>;
}

impl ScalarMut for Variable {
    fn value_slice_mut(&mut self) -> Result<&mut [i32]> {
        self.array_mut::<i32>()
            .map_err(|e| NnError::var("step".into(), e))?
            .into_slice()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| NnError::Variable {
                key: "step".into(),
                expected: "one i32".into(),
                found: "none".into(),
            })
    }
}

/// Plain gradient descent, `p <- (1 - wd) p - lr g` (BrainPy's `bp.optim.SGD`). Keeps no state
/// apart from its learning-rate scheduler.
#[derive(brainstate_derive::Stateful)]
#[stateful(crate = "brainstate_core", type_name = "SGD")]
pub struct Sgd {
    #[stateful(name)]
    name: NodeName,
    lr: Constant,
    /// Decoupled weight decay.
    pub weight_decay: Option<f32>,
}

impl Sgd {
    /// SGD with learning rate `lr`.
    pub fn new(lr: f32) -> Result<Sgd> {
        check_lr("SGD", lr)?;
        Ok(Sgd {
            name: NodeName::auto(),
            lr: Constant::new(lr),
            weight_decay: None,
        })
    }
}

impl Optimizer for Sgd {
    fn register(&mut self, model: &dyn Stateful) -> Result<()> {
        trainable(model).map(|_| ())
    }
    fn update(&mut self, model: &mut dyn Layer) -> Result<()> {
        let lr = self.lr.lr;
        let decay = self.weight_decay.map_or(1.0, |wd| 1.0 - wd);
        each_param(model, |_, p, g| {
            p.iter_mut().zip(g).for_each(|(p, g)| *p = decay * *p - lr * g);
            Ok(())
        })
    }
}
