//! Surrogate spike functions (BrainPy 2.8's `bm.surrogate`, one-input ones): Heaviside forward,
//! the listed derivative backward.

/// Runs `$body` with `$g` bound to the derivative of surrogate `$s` as a closure specialised to
/// its variant, so loops over it are compiled once per variant (and vectorise).
macro_rules! with_grad {
    ($s:expr, $g:ident => $body:expr) => {{
        use std::f32::consts::PI;
        match $s {
            Surrogate::Arctan { alpha } => {
                let $g = move |x: f32| {
                    let z = PI / 2.0 * alpha * x;
                    alpha / 2.0 / (1.0 + z * z)
                };
                $body
            }
            Surrogate::Sigmoid { alpha } => {
                let $g = move |x: f32| {
                    let s = 1.0 / (1.0 + (-alpha * x).exp());
                    alpha * s * (1.0 - s)
                };
                $body
            }
            Surrogate::InvSquareGrad { alpha } => {
                let $g = move |x: f32| {
                    let d = alpha * x.abs() + 1.0;
                    1.0 / (d * d)
                };
                $body
            }
            Surrogate::SoftSign { alpha } => {
                let $g = move |x: f32| {
                    let d = 1.0 + (alpha * x).abs();
                    alpha / 2.0 / (d * d)
                };
                $body
            }
            Surrogate::PiecewiseExp { alpha } => {
                let $g = move |x: f32| alpha / 2.0 * (-alpha * x.abs()).exp();
                $body
            }
            Surrogate::Erf { alpha } => {
                let $g = move |x: f32| alpha / PI.sqrt() * (-alpha * alpha * x * x).exp();
                $body
            }
            Surrogate::NonzeroSignLog { alpha } => {
                let $g = move |x: f32| 1.0 / (1.0 / alpha + x.abs());
                $body
            }
            Surrogate::SlayerGrad { alpha } => {
                let $g = move |x: f32| (-alpha * x.abs()).exp();
                $body
            }
            Surrogate::ReluGrad { alpha, width } => {
                let $g = move |x: f32| (alpha * width - alpha * x.abs()).max(0.0);
                $body
            }
            Surrogate::QPseudoSpike { alpha } => {
                let $g = move |x: f32| (1.0 + 2.0 * x.abs() / (alpha + 1.0)).powf(-alpha);
                $body
            }
            Surrogate::LeakyRelu { alpha, beta } => {
                let $g = move |x: f32| if x < 0.0 { alpha } else { beta };
                $body
            }
            Surrogate::PiecewiseQuadratic { alpha } => {
                let $g = move |x: f32| {
                    if x.abs() > 1.0 / alpha {
                        0.0
                    } else {
                        alpha - alpha * alpha * x.abs()
                    }
                };
                $body
            }
            Surrogate::PiecewiseLeakyRelu { c, w } => {
                let $g = move |x: f32| if x.abs() > w { c } else { 1.0 / (2.0 * w) };
                $body
            }
            Surrogate::GaussianGrad { sigma, alpha } => {
                let $g = move |x: f32| {
                    alpha * (-x * x / (2.0 * sigma * sigma)).exp() / ((2.0 * PI).sqrt() * sigma)
                };
                $body
            }
        }
    }};
}
pub(crate) use with_grad;

/// A one-input surrogate spike function. Forward is always the Heaviside step
/// `H(x) = 1 if x >= 0 else 0`; [`Surrogate::grad`] is the derivative used backward.
/// Constructors with BrainPy's names give BrainPy's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Surrogate {
    /// `alpha / (2 (1 + (pi/2 alpha x)^2))`.
    Arctan {
        /// Steepness.
        alpha: f32,
    },
    /// `alpha sigma(alpha x) (1 - sigma(alpha x))`.
    Sigmoid {
        /// Steepness.
        alpha: f32,
    },
    /// `1 / (alpha |x| + 1)^2` (the Lif default, alpha 100).
    InvSquareGrad {
        /// Steepness.
        alpha: f32,
    },
    /// `alpha / (2 (1 + |alpha x|)^2)`.
    SoftSign {
        /// Steepness.
        alpha: f32,
    },
    /// `alpha/2 e^{-alpha |x|}`.
    PiecewiseExp {
        /// Steepness.
        alpha: f32,
    },
    /// `alpha/sqrt(pi) e^{-alpha^2 x^2}`.
    Erf {
        /// Steepness.
        alpha: f32,
    },
    /// `1 / (1/alpha + |x|)`.
    NonzeroSignLog {
        /// Steepness.
        alpha: f32,
    },
    /// `e^{-alpha |x|}`.
    SlayerGrad {
        /// Steepness.
        alpha: f32,
    },
    /// `max(alpha width - alpha |x|, 0)`.
    ReluGrad {
        /// Slope.
        alpha: f32,
        /// Width.
        width: f32,
    },
    /// `(1 + 2|x|/(alpha + 1))^{-alpha}`.
    QPseudoSpike {
        /// Tail parameter.
        alpha: f32,
    },
    /// `alpha` for x < 0, else `beta`.
    LeakyRelu {
        /// Slope left of 0.
        alpha: f32,
        /// Slope right of 0.
        beta: f32,
    },
    /// 0 if `|x| > 1/alpha`, else `alpha - alpha^2 |x|` (BrainPy 2.8).
    PiecewiseQuadratic {
        /// Steepness.
        alpha: f32,
    },
    /// `c` if `|x| > w`, else `1/(2w)` (BrainPy 2.8).
    PiecewiseLeakyRelu {
        /// Outer slope.
        c: f32,
        /// Half width.
        w: f32,
    },
    /// `alpha N(x; 0, sigma)` (BrainPy 2.8's corrected exponent).
    GaussianGrad {
        /// Standard deviation.
        sigma: f32,
        /// Scale.
        alpha: f32,
    },
}

impl Default for Surrogate {
    /// The Lif default: `InvSquareGrad(alpha=100)`.
    fn default() -> Self {
        Surrogate::inv_square_grad()
    }
}

impl Surrogate {
    /// `Arctan(alpha=1)`.
    pub fn arctan() -> Self {
        Surrogate::Arctan { alpha: 1.0 }
    }
    /// `Sigmoid(alpha=4)`.
    pub fn sigmoid() -> Self {
        Surrogate::Sigmoid { alpha: 4.0 }
    }
    /// `InvSquareGrad(alpha=100)`.
    pub fn inv_square_grad() -> Self {
        Surrogate::InvSquareGrad { alpha: 100.0 }
    }
    /// `SoftSign(alpha=1)`.
    pub fn soft_sign() -> Self {
        Surrogate::SoftSign { alpha: 1.0 }
    }
    /// `PiecewiseExp(alpha=1)`.
    pub fn piecewise_exp() -> Self {
        Surrogate::PiecewiseExp { alpha: 1.0 }
    }
    /// `ERF(alpha=1)`.
    pub fn erf() -> Self {
        Surrogate::Erf { alpha: 1.0 }
    }
    /// `NonzeroSignLog(alpha=1)`.
    pub fn nonzero_sign_log() -> Self {
        Surrogate::NonzeroSignLog { alpha: 1.0 }
    }
    /// `SlayerGrad(alpha=1)`.
    pub fn slayer_grad() -> Self {
        Surrogate::SlayerGrad { alpha: 1.0 }
    }
    /// `ReluGrad(alpha=0.3, width=1)`.
    pub fn relu_grad() -> Self {
        Surrogate::ReluGrad {
            alpha: 0.3,
            width: 1.0,
        }
    }
    /// `QPseudoSpike(alpha=2)`.
    pub fn q_pseudo_spike() -> Self {
        Surrogate::QPseudoSpike { alpha: 2.0 }
    }
    /// `LeakyRelu(alpha=0.1, beta=1)`.
    pub fn leaky_relu() -> Self {
        Surrogate::LeakyRelu {
            alpha: 0.1,
            beta: 1.0,
        }
    }
    /// `PiecewiseQuadratic(alpha=1)`.
    pub fn piecewise_quadratic() -> Self {
        Surrogate::PiecewiseQuadratic { alpha: 1.0 }
    }
    /// `PiecewiseLeakyRelu(c=0.01, w=1)`.
    pub fn piecewise_leaky_relu() -> Self {
        Surrogate::PiecewiseLeakyRelu { c: 0.01, w: 1.0 }
    }
    /// `GaussianGrad(sigma=0.5, alpha=0.5)`.
    pub fn gaussian_grad() -> Self {
        Surrogate::GaussianGrad {
            sigma: 0.5,
            alpha: 0.5,
        }
    }

    /// Every surrogate with its defaults, with BrainPy's class name.
    pub fn all_defaults() -> Vec<(&'static str, Surrogate)> {
        vec![
            ("Arctan", Surrogate::arctan()),
            ("Sigmoid", Surrogate::sigmoid()),
            ("InvSquareGrad", Surrogate::inv_square_grad()),
            ("SoftSign", Surrogate::soft_sign()),
            ("PiecewiseExp", Surrogate::piecewise_exp()),
            ("ERF", Surrogate::erf()),
            ("NonzeroSignLog", Surrogate::nonzero_sign_log()),
            ("SlayerGrad", Surrogate::slayer_grad()),
            ("ReluGrad", Surrogate::relu_grad()),
            ("QPseudoSpike", Surrogate::q_pseudo_spike()),
            ("LeakyRelu", Surrogate::leaky_relu()),
            ("PiecewiseQuadratic", Surrogate::piecewise_quadratic()),
            ("PiecewiseLeakyRelu", Surrogate::piecewise_leaky_relu()),
            ("GaussianGrad", Surrogate::gaussian_grad()),
        ]
    }

    /// Forward: the Heaviside step, 1.0 where `x >= 0`.
    #[inline]
    pub fn forward(x: f32) -> f32 {
        if x >= 0.0 {
            1.0
        } else {
            0.0
        }
    }

    /// The surrogate derivative at `x`.
    #[inline]
    pub fn grad(&self, x: f32) -> f32 {
        with_grad!(*self, g => g(x))
    }

    /// A primitive `g` whose derivative is [`Surrogate::grad`], where one is simple (used by the
    /// finite-difference tests); None otherwise.
    pub fn primitive(&self, x: f64) -> Option<f64> {
        use std::f64::consts::PI;
        Some(match *self {
            Surrogate::Arctan { alpha } => (PI / 2.0 * alpha as f64 * x).atan() / PI + 0.5,
            Surrogate::Sigmoid { alpha } => 1.0 / (1.0 + (-(alpha as f64) * x).exp()),
            Surrogate::InvSquareGrad { alpha } => {
                let a = alpha as f64;
                x.signum() * (1.0 - 1.0 / (a * x.abs() + 1.0)) / a
            }
            Surrogate::SoftSign { alpha } => {
                let ax = alpha as f64 * x;
                0.5 * (ax / (1.0 + ax.abs()) + 1.0)
            }
            Surrogate::PiecewiseExp { alpha } => {
                let a = alpha as f64;
                if x < 0.0 {
                    0.5 * (a * x).exp()
                } else {
                    1.0 - 0.5 * (-a * x).exp()
                }
            }
            Surrogate::SlayerGrad { alpha } => {
                let a = alpha as f64;
                x.signum() * (1.0 - (-a * x.abs()).exp()) / a
            }
            Surrogate::NonzeroSignLog { alpha } => {
                let a = alpha as f64;
                x.signum() * (1.0 + a * x.abs()).ln()
            }
            Surrogate::QPseudoSpike { alpha } => {
                let a = alpha as f64;
                let u = 1.0 + 2.0 * x.abs() / (a + 1.0);
                x.signum() * (a + 1.0) / 2.0 * (1.0 - u.powf(1.0 - a)) / (a - 1.0)
            }
            _ => return None,
        })
    }
}
