//! Differences between two checkpoint trees: added, removed and changed leaves, with the largest
//! absolute difference of each changed tensor.

use crate::leaves::{entries, LeafInfo};
use brainstate_core::{DType, Pytree, Tensor};
use half::{bf16, f16};
use indexmap::IndexMap;
use std::fmt;

/// One difference between tree A and tree B.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// In B only.
    Added {
        /// Slash-joined path.
        path: String,
        /// `float32[10]`, `int64[]`, `{}`.
        what: String,
    },
    /// In A only.
    Removed {
        /// Slash-joined path.
        path: String,
        /// `float32[10]`, `int64[]`, `{}`.
        what: String,
    },
    /// In both, with other dtype, shape or kind.
    Retyped {
        /// Slash-joined path.
        path: String,
        /// What A has.
        from: String,
        /// What B has.
        to: String,
    },
    /// Same kind, dtype and shape, other values.
    Values {
        /// Slash-joined path.
        path: String,
        /// `float32[10]`.
        what: String,
        /// Elements that differ (bitwise).
        differing: usize,
        /// Elements in all.
        total: usize,
        /// Largest `|a - b|` over the elements (NaN when a NaN meets a number); `None` for
        /// leaves without numbers (strings, bytes).
        max_abs: Option<f64>,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Added { path, what } => write!(f, "+ {path}: {what}"),
            Change::Removed { path, what } => write!(f, "- {path}: {what}"),
            Change::Retyped { path, from, to } => write!(f, "~ {path}: {from} -> {to}"),
            Change::Values {
                path,
                what,
                differing,
                total,
                max_abs,
            } => {
                write!(f, "~ {path}: {what}, {differing} of {total} elements differ")?;
                match max_abs {
                    Some(m) if *m == 0.0 => write!(f, " (bitwise only: max |a-b| = 0)"),
                    Some(m) => write!(f, ", max |a-b| = {}", number_text(*m, what)),
                    None => Ok(()),
                }
            }
        }
    }
}

/// A difference printed as Python prints a float; at single precision for 32- and 16-bit floats.
fn number_text(m: f64, what: &str) -> String {
    let single = ["float32", "float16", "bfloat16", "complex64"]
        .iter()
        .any(|d| what.strip_prefix(d).is_some_and(|r| r.starts_with('[')));
    if single && m.is_finite() && m <= f32::MAX as f64 {
        crate::numpy::py_float_text(&(m as f32).to_string(), m)
    } else {
        crate::numpy::py_float(m)
    }
}

/// Every difference from `a` to `b`: removed and changed entries in A's order, then added ones
/// in B's order.
pub fn diff(a: &Pytree, b: &Pytree) -> Vec<Change> {
    let ea: IndexMap<Vec<String>, &Pytree> = entries(a).into_iter().map(|e| (e.path, e.value)).collect();
    let eb: IndexMap<Vec<String>, &Pytree> = entries(b).into_iter().map(|e| (e.path, e.value)).collect();
    let mut out = Vec::new();
    for (path, va) in &ea {
        let p = path.join("/");
        let ia = LeafInfo::of(va);
        match eb.get(path) {
            None => out.push(Change::Removed {
                path: p,
                what: ia.type_text(),
            }),
            Some(vb) => {
                let ib = LeafInfo::of(vb);
                if ia.kind != ib.kind || ia.dtype != ib.dtype || ia.shape != ib.shape {
                    out.push(Change::Retyped {
                        path: p,
                        from: describe(&ia),
                        to: describe(&ib),
                    });
                } else if ia.bytes != ib.bytes {
                    let (differing, total, max_abs) = compare(va, vb, &ia, &ib);
                    out.push(Change::Values {
                        path: p,
                        what: ia.type_text(),
                        differing,
                        total,
                        max_abs,
                    });
                }
            }
        }
    }
    for (path, vb) in &eb {
        if !ea.contains_key(path) {
            out.push(Change::Added {
                path: path.join("/"),
                what: LeafInfo::of(vb).type_text(),
            });
        }
    }
    // A path that became a container (or stopped being one) shows up as removed and added
    // entries under it, which is what changed.
    out
}

fn describe(i: &LeafInfo<'_>) -> String {
    match i.kind {
        "tensor" | "map" | "list" | "str" | "bytes" | "none" => i.type_text(),
        k => format!("{k} {}", i.type_text()),
    }
}

/// (differing elements, total elements, largest absolute difference).
fn compare(a: &Pytree, b: &Pytree, ia: &LeafInfo<'_>, ib: &LeafInfo<'_>) -> (usize, usize, Option<f64>) {
    let (Some(xa), Some(xb)) = (numbers(a), numbers(b)) else {
        return (1, 1, None);
    };
    let size = ia
        .dtype
        .map_or(1, |d| DType::from_name(d).map_or(1, DType::itemsize));
    let differing = ia
        .bytes
        .chunks(size)
        .zip(ib.bytes.chunks(size))
        .filter(|(x, y)| x != y)
        .count();
    let mut max = 0.0f64;
    for (p, q) in xa.iter().zip(&xb) {
        let d = match (p, q) {
            (Num::Real(p), Num::Real(q)) => real_diff(*p, *q),
            (Num::Complex(pr, pi), Num::Complex(qr, qi)) => {
                let (dr, di) = (real_diff(*pr, *qr), real_diff(*pi, *qi));
                dr.hypot(di)
            }
            _ => f64::NAN,
        };
        if d.is_nan() || d > max {
            max = d;
            if d.is_nan() {
                break;
            }
        }
    }
    (differing, xa.len(), Some(max))
}

/// `|p - q|`, 0 for two NaNs or two equal infinities, NaN when a NaN meets a number.
fn real_diff(p: f64, q: f64) -> f64 {
    if p.is_nan() && q.is_nan() || p == q {
        0.0
    } else {
        (p - q).abs()
    }
}

enum Num {
    Real(f64),
    Complex(f64, f64),
}

/// The elements of a numeric leaf as f64 (integers above 2^53 lose precision in the difference
/// only).
fn numbers(v: &Pytree) -> Option<Vec<Num>> {
    fn real<T: brainstate_core::Storable + Copy>(t: &Tensor, f: impl Fn(T) -> f64) -> Option<Vec<Num>> {
        Some(t.as_slice::<T>().ok()?.iter().map(|&x| Num::Real(f(x))).collect())
    }
    match v {
        Pytree::Tensor(t) | Pytree::Scalar(t) => match t.dtype() {
            DType::Bool => real::<bool>(t, |x| f64::from(u8::from(x))),
            DType::U8 => real::<u8>(t, f64::from),
            DType::U16 => real::<u16>(t, f64::from),
            DType::U32 => real::<u32>(t, f64::from),
            DType::U64 => real::<u64>(t, |x| x as f64),
            DType::I8 => real::<i8>(t, f64::from),
            DType::I16 => real::<i16>(t, f64::from),
            DType::I32 => real::<i32>(t, f64::from),
            DType::I64 => real::<i64>(t, |x| x as f64),
            DType::F16 => real::<f16>(t, f16::to_f64),
            DType::BF16 => real::<bf16>(t, bf16::to_f64),
            DType::F32 => real::<f32>(t, f64::from),
            DType::F64 => real::<f64>(t, |x| x),
            DType::C64 => Some(
                t.as_slice::<brainstate_core::C64>()
                    .ok()?
                    .iter()
                    .map(|c| Num::Complex(c.re.into(), c.im.into()))
                    .collect(),
            ),
            DType::C128 => Some(
                t.as_slice::<brainstate_core::C128>()
                    .ok()?
                    .iter()
                    .map(|c| Num::Complex(c.re, c.im))
                    .collect(),
            ),
        },
        Pytree::Int(i) => Some(vec![Num::Real(*i as f64)]),
        Pytree::UInt(u) => Some(vec![Num::Real(*u as f64)]),
        Pytree::Float(x) => Some(vec![Num::Real(*x)]),
        Pytree::Bool(b) => Some(vec![Num::Real(f64::from(u8::from(*b)))]),
        Pytree::Complex(c) => Some(vec![Num::Complex(c.re, c.im)]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brainstate_core::pytree;
    use ndarray::array;

    #[test]
    fn added_removed_changed() {
        let a = pytree! {
            "net" => pytree! { "Dense0" => Pytree::map(), "Lif0" => pytree! { "Lif0.V" => array![0.0f32, 1.0, 2.0] } },
            "epoch_i" => 3,
            "gone" => "x",
        };
        let b = pytree! {
            "net" => pytree! { "Lif0" => pytree! { "Lif0.V" => array![0.0f32, 1.5, 2.0] } },
            "epoch_i" => 4i64,
            "new" => array![1i32],
        };
        let d: Vec<String> = diff(&a, &b).iter().map(|c| c.to_string()).collect();
        assert_eq!(
            d,
            [
                "- net/Dense0: {}",
                "~ net/Lif0/Lif0.V: float32[3], 1 of 3 elements differ, max |a-b| = 0.5",
                "~ epoch_i: int64[], 1 of 1 elements differ, max |a-b| = 1.0",
                "- gone: str",
                "+ new: int32[1]",
            ]
        );
        assert!(diff(&a, &a.clone()).is_empty());
    }

    #[test]
    fn retyped_and_special_values() {
        let a = pytree! { "x" => array![1.0f32, 2.0], "n" => array![f64::NAN, 0.0], "z" => array![0.0f64] };
        let b =
            pytree! { "x" => array![1.0f32, 2.0, 3.0], "n" => array![f64::NAN, 1.0], "z" => array![-0.0f64] };
        let d = diff(&a, &b);
        assert_eq!(d[0].to_string(), "~ x: float32[2] -> float32[3]");
        assert!(matches!(d[1], Change::Values { max_abs: Some(m), differing: 1, .. } if m == 1.0));
        assert_eq!(
            d[2].to_string(),
            "~ z: float64[1], 1 of 1 elements differ (bitwise only: max |a-b| = 0)"
        );
        let c = pytree! { "n" => array![1.0f64, 0.0] };
        let d = diff(&pytree! { "n" => array![f64::NAN, 0.0] }, &c);
        assert!(matches!(d[0], Change::Values { max_abs: Some(m), .. } if m.is_nan()));
    }
}
