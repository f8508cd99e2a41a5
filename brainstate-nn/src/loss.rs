//! Cross-entropy on logits, BrainPy 2.8's `bp.losses.cross_entropy_loss`.

use crate::error::{NnError, Result};
use ndarray::{Array1, Array2, ArrayView2};

/// BrainPy's default `ignore_index`: a class label equal to it is left out of the loss.
pub const IGNORE_INDEX: f32 = -100.0;

/// How per-sample losses are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Mean over the samples (class-index targets: over the samples not ignored). Default.
    #[default]
    Mean,
    /// Sum over the samples.
    Sum,
    /// One loss per sample.
    None,
}

/// Targets of a classification loss.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a> {
    /// One class index per sample; floats such as `0.` and `1.` work, as in the tutorial.
    /// [`IGNORE_INDEX`] leaves a sample out.
    Classes(&'a [f32]),
    /// Probabilities (one-hot or soft), `batch x classes`.
    Probs(ArrayView2<'a, f32>),
}

impl Targets<'_> {
    fn check(&self, batch: usize, classes: usize) -> Result<()> {
        match self {
            Targets::Classes(y) => {
                if y.len() != batch {
                    return Err(NnError::TargetShape {
                        what: "cross_entropy (class indices)".into(),
                        expected: vec![batch],
                        found: vec![y.len()],
                    });
                }
                for (sample, &label) in y.iter().enumerate() {
                    let ok = label == IGNORE_INDEX
                        || (label.is_finite()
                            && label.fract() == 0.0
                            && label >= 0.0
                            && (label as usize) < classes);
                    if !ok {
                        return Err(NnError::Label {
                            sample,
                            label,
                            num_classes: classes,
                        });
                    }
                }
            }
            Targets::Probs(p) => {
                if p.dim() != (batch, classes) {
                    return Err(NnError::TargetShape {
                        what: "cross_entropy (probabilities)".into(),
                        expected: vec![batch, classes],
                        found: p.shape().to_vec(),
                    });
                }
                if let Some(((b, c), v)) = p.indexed_iter().find(|(_, v)| !v.is_finite()) {
                    return Err(NnError::NonFinite {
                        what: "targets".into(),
                        index: vec![b, c],
                        value: *v,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The loss: one value, or one per sample with [`Reduction::None`].
#[derive(Clone, Debug, PartialEq)]
pub enum Loss {
    /// Mean or sum.
    Scalar(f32),
    /// Per sample.
    PerSample(Array1<f32>),
}

/// Per-sample loss `logsumexp(p) - sum_c p_c t_c` and its gradient row `softmax(p) - t`
/// (weight of the sample not applied), computed in f64.
fn sample(logits: &[f32], target: &mut dyn FnMut(usize) -> f64, grad: Option<&mut [f32]>, scale: f64) -> f64 {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let sum: f64 = logits.iter().map(|&p| (p as f64 - m).exp()).sum();
    let lse = m + sum.ln();
    let mut dot = 0.0;
    let mut tsum = 0.0;
    for (c, &p) in logits.iter().enumerate() {
        let t = target(c);
        dot += p as f64 * t;
        tsum += t;
    }
    if let Some(g) = grad {
        for (c, gc) in g.iter_mut().enumerate() {
            let sm = (logits[c] as f64 - m).exp() / sum;
            *gc = (scale * (tsum * sm - target(c))) as f32;
        }
    }
    tsum * lse - dot
}

/// Cross-entropy of `logits` (`batch x classes`, unnormalised) against `targets`.
pub fn cross_entropy(
    logits: ArrayView2<'_, f32>,
    targets: Targets<'_>,
    reduction: Reduction,
) -> Result<Loss> {
    let (b, c) = logits.dim();
    let lg = logits.as_standard_layout();
    let mut grad = Array2::zeros((0, 0));
    let (per, value) = ce_impl(
        lg.as_slice().unwrap_or(&[]),
        b,
        c,
        targets,
        reduction,
        grad.as_slice_mut(),
        false,
    )?;
    Ok(match reduction {
        Reduction::None => Loss::PerSample(per),
        _ => Loss::Scalar(value),
    })
}

/// Cross-entropy and its gradient with respect to the logits (for `Mean` or `Sum`; with
/// `None` the gradient is that of the sum). Writes the gradient into `grad` (`batch * classes`).
pub fn cross_entropy_with_grad(
    logits: &[f32],
    batch: usize,
    classes: usize,
    targets: Targets<'_>,
    reduction: Reduction,
    grad: &mut [f32],
) -> Result<f32> {
    if grad.len() != batch * classes {
        return Err(NnError::TargetShape {
            what: "cross_entropy gradient buffer".into(),
            expected: vec![batch, classes],
            found: vec![grad.len()],
        });
    }
    Ok(ce_impl(logits, batch, classes, targets, reduction, Some(grad), true)?.1)
}

fn ce_impl(
    logits: &[f32],
    b: usize,
    c: usize,
    targets: Targets<'_>,
    reduction: Reduction,
    mut grad: Option<&mut [f32]>,
    want_grad: bool,
) -> Result<(Array1<f32>, f32)> {
    if logits.len() != b * c || c == 0 {
        return Err(NnError::TargetShape {
            what: "cross_entropy logits".into(),
            expected: vec![b, c],
            found: vec![logits.len()],
        });
    }
    if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
        return Err(NnError::NonFinite {
            what: "logits".into(),
            index: vec![i / c, i % c],
            value: logits[i],
        });
    }
    targets.check(b, c)?;
    let counted = match targets {
        Targets::Classes(y) => y.iter().filter(|&&l| l != IGNORE_INDEX).count(),
        Targets::Probs(_) => b,
    };
    let scale = match reduction {
        Reduction::Mean => 1.0 / (counted.max(1) as f64),
        _ => 1.0,
    };
    let mut per = Array1::zeros(b);
    let mut total = 0.0f64;
    for s in 0..b {
        let row = &logits[s * c..(s + 1) * c];
        let g = match (&mut grad, want_grad) {
            (Some(g), true) => Some(&mut g[s * c..(s + 1) * c]),
            _ => None,
        };
        let l = match targets {
            Targets::Classes(y) => {
                if y[s] == IGNORE_INDEX {
                    if let Some(g) = g {
                        g.fill(0.0);
                    }
                    continue;
                }
                let k = y[s] as usize;
                sample(row, &mut |cc| if cc == k { 1.0 } else { 0.0 }, g, scale)
            }
            Targets::Probs(p) => sample(row, &mut |cc| p[[s, cc]] as f64, g, scale),
        };
        per[s] = l as f32;
        total += l;
    }
    Ok((per, (total * scale) as f32))
}
