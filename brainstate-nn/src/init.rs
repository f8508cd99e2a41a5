//! Weight initializers (BrainPy's `bp.init`): variance scaling presets, normal, uniform, constants.

use crate::error::{NnError, Result};
use ndarray::{ArrayD, IxDyn};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// Standard deviation of the standard normal truncated to [-2, 2].
const TRUNC_STD: f64 = 0.879_625_661_034_239_8;

/// Which fan `VarianceScaling` divides the scale by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanMode {
    /// `fan_in`.
    FanIn,
    /// `fan_out`.
    FanOut,
    /// `(fan_in + fan_out) / 2`.
    FanAvg,
}

/// The distribution `VarianceScaling` draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distr {
    /// Standard normal truncated to [-2, 2], rescaled to unit variance.
    TruncatedNormal,
    /// Normal.
    Normal,
    /// Uniform on `[-sqrt(3 var), sqrt(3 var)]`.
    Uniform,
}

/// An initializer: how a weight or a state starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Zeros (BrainPy's `ZeroInit`).
    Zeros,
    /// A constant.
    Constant(f32),
    /// Normal with mean and standard deviation.
    Normal {
        /// Mean.
        mean: f32,
        /// Standard deviation.
        std: f32,
    },
    /// Uniform on `[low, high)`.
    Uniform {
        /// Lower bound.
        low: f32,
        /// Upper bound.
        high: f32,
    },
    /// BrainPy's `VarianceScaling(scale, mode, distribution)` with `in_axis=-2`, `out_axis=-1`.
    /// `scale` multiplies the variance (not the standard deviation).
    VarianceScaling {
        /// Variance scale.
        scale: f32,
        /// Fan used.
        mode: FanMode,
        /// Distribution.
        distribution: Distr,
    },
}

impl Init {
    /// `KaimingNormal(scale)`: variance `scale/fan_in`, truncated normal (BrainPy default scale 2).
    pub fn kaiming_normal(scale: f32) -> Init {
        Init::VarianceScaling {
            scale,
            mode: FanMode::FanIn,
            distribution: Distr::TruncatedNormal,
        }
    }
    /// `KaimingUniform(scale)` (default 2): variance `scale/fan_in`, uniform.
    pub fn kaiming_uniform(scale: f32) -> Init {
        Init::VarianceScaling {
            scale,
            mode: FanMode::FanIn,
            distribution: Distr::Uniform,
        }
    }
    /// `XavierNormal(scale)` (default 1): variance `scale/fan_avg`, truncated normal.
    pub fn xavier_normal(scale: f32) -> Init {
        Init::VarianceScaling {
            scale,
            mode: FanMode::FanAvg,
            distribution: Distr::TruncatedNormal,
        }
    }
    /// `XavierUniform(scale)` (default 1): variance `scale/fan_avg`, uniform.
    pub fn xavier_uniform(scale: f32) -> Init {
        Init::VarianceScaling {
            scale,
            mode: FanMode::FanAvg,
            distribution: Distr::Uniform,
        }
    }
    /// `LecunNormal(scale)` (default 1): variance `scale/fan_in`, truncated normal.
    pub fn lecun_normal(scale: f32) -> Init {
        Init::VarianceScaling {
            scale,
            mode: FanMode::FanIn,
            distribution: Distr::TruncatedNormal,
        }
    }
    /// `LecunUniform(scale)` (default 1): variance `scale/fan_in`, uniform.
    pub fn lecun_uniform(scale: f32) -> Init {
        Init::VarianceScaling {
            scale,
            mode: FanMode::FanIn,
            distribution: Distr::Uniform,
        }
    }

    /// For variance scaling: `(fan_in, fan_out)` of `shape` (`in_axis=-2`, `out_axis=-1`; 1-d
    /// shapes use the size for both, 0-d use 1, as BrainPy 2.8.1+).
    pub fn fans(shape: &[usize]) -> (f64, f64) {
        match shape.len() {
            0 => (1.0, 1.0),
            1 => (shape[0] as f64, shape[0] as f64),
            n => {
                let total: usize = shape.iter().product();
                let (fi, fo) = (shape[n - 2], shape[n - 1]);
                let receptive = if fi * fo == 0 {
                    0.0
                } else {
                    total as f64 / fi as f64 / fo as f64
                };
                (fi as f64 * receptive, fo as f64 * receptive)
            }
        }
    }

    /// The standard deviation a variance-scaling initializer gives `shape` (None for others).
    pub fn std_for(&self, shape: &[usize]) -> Option<f64> {
        match *self {
            Init::VarianceScaling { scale, mode, .. } => {
                let (fi, fo) = Init::fans(shape);
                let denom = match mode {
                    FanMode::FanIn => fi,
                    FanMode::FanOut => fo,
                    FanMode::FanAvg => (fi + fo) / 2.0,
                };
                Some((scale as f64 / denom.max(f64::MIN_POSITIVE)).sqrt())
            }
            _ => None,
        }
    }

    /// Draws an f32 array of `shape`. Errors for a negative scale/std or an empty range.
    pub fn sample(&self, shape: &[usize], rng: &mut dyn rand::RngCore) -> Result<ArrayD<f32>> {
        let bad = |name: &str, value: String, reason: &str| NnError::Param {
            layer: format!("{self:?}"),
            name: name.into(),
            value,
            reason: reason.into(),
        };
        let dim = IxDyn(shape);
        Ok(match *self {
            Init::Zeros => ArrayD::zeros(dim),
            Init::Constant(c) => ArrayD::from_elem(dim, c),
            Init::Normal { mean, std } => {
                if !(std >= 0.0 && std.is_finite()) {
                    return Err(bad("std", std.to_string(), "must be finite and >= 0"));
                }
                ArrayD::from_shape_simple_fn(dim, || {
                    let z: f64 = StandardNormal.sample(rng);
                    (mean as f64 + std as f64 * z) as f32
                })
            }
            Init::Uniform { low, high } => {
                if !(low.is_finite() && high.is_finite() && low < high) {
                    return Err(bad(
                        "high",
                        high.to_string(),
                        "bounds must be finite and high must exceed low",
                    ));
                }
                ArrayD::from_shape_simple_fn(dim, || rng.gen_range(low..high))
            }
            Init::VarianceScaling {
                scale, distribution, ..
            } => {
                if !(scale >= 0.0 && scale.is_finite()) {
                    return Err(bad("scale", scale.to_string(), "must be finite and >= 0"));
                }
                let std = self.std_for(shape).unwrap_or(0.0);
                match distribution {
                    Distr::TruncatedNormal => ArrayD::from_shape_simple_fn(dim, || {
                        let z = loop {
                            let z: f64 = StandardNormal.sample(rng);
                            if (-2.0..=2.0).contains(&z) {
                                break z;
                            }
                        };
                        (z * std / TRUNC_STD) as f32
                    }),
                    Distr::Normal => ArrayD::from_shape_simple_fn(dim, || {
                        let z: f64 = StandardNormal.sample(rng);
                        (z * std) as f32
                    }),
                    Distr::Uniform => {
                        let bound = (3.0f64).sqrt() * std;
                        ArrayD::from_shape_simple_fn(dim, || (rng.gen_range(-1.0..1.0f64) * bound) as f32)
                    }
                }
            }
        })
    }
}
