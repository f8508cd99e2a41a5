//! numpy-style printing of tensors: `array([0. , 0.5, 1. ], dtype=float32)`, summarised with
//! `...` past a threshold as numpy does (threshold 1000 elements, 3 edge items, 75 columns).

use brainstate_core::{DType, Pytree, Tensor};
use half::{bf16, f16};

/// How much of an array to print.
#[derive(Clone, Copy, Debug)]
pub struct PrintOptions {
    /// Arrays with more elements than this are summarised (numpy's `threshold`).
    pub threshold: usize,
    /// Items kept at each end of a summarised axis (numpy's `edgeitems`).
    pub edgeitems: usize,
    /// Line width (numpy's `linewidth`).
    pub linewidth: usize,
    /// Significant fraction digits of floats (numpy's `precision`).
    pub precision: usize,
}

impl Default for PrintOptions {
    fn default() -> Self {
        PrintOptions {
            threshold: 1000,
            edgeitems: 3,
            linewidth: 75,
            precision: 8,
        }
    }
}

impl PrintOptions {
    /// Never summarise.
    pub fn full() -> Self {
        PrintOptions {
            threshold: usize::MAX,
            ..Self::default()
        }
    }
}

/// Which elements are shown: per axis, the kept indices with `None` for the `...` gap.
fn kept(len: usize, summarise: bool, edge: usize) -> Vec<Option<usize>> {
    if summarise && len > 2 * edge {
        (0..edge)
            .map(Some)
            .chain(std::iter::once(None))
            .chain((len - edge..len).map(Some))
            .collect()
    } else {
        (0..len).map(Some).collect()
    }
}

/// Flat indices of every shown element, in order.
fn shown_indices(shape: &[usize], summarise: bool, edge: usize) -> Vec<usize> {
    let mut out = Vec::new();
    fn go(shape: &[usize], axis: usize, base: usize, summarise: bool, edge: usize, out: &mut Vec<usize>) {
        if axis == shape.len() {
            out.push(base);
            return;
        }
        let stride: usize = shape[axis + 1..].iter().product();
        for i in kept(shape[axis], summarise, edge).into_iter().flatten() {
            go(shape, axis + 1, base + i * stride, summarise, edge, out);
        }
    }
    go(shape, 0, 0, summarise, edge, &mut out);
    out
}

/// Formats the shown elements of `t` (by flat index), numpy-style and padded to one width.
fn element_texts(t: &Tensor, idx: &[usize], opts: &PrintOptions) -> Vec<String> {
    fn ints<T: brainstate_core::Storable + ToString>(t: &Tensor, idx: &[usize]) -> Vec<String> {
        let s = t.as_slice::<T>().expect("dtype checked by the caller");
        idx.iter().map(|&i| s[i].to_string()).collect()
    }
    fn floats<T: brainstate_core::Storable>(
        t: &Tensor,
        idx: &[usize],
        f: impl Fn(T) -> (f64, String),
    ) -> Vec<(f64, String)> {
        let s = t.as_slice::<T>().expect("dtype checked by the caller");
        idx.iter().map(|&i| f(s[i])).collect()
    }
    let texts = match t.dtype() {
        DType::Bool => {
            let s = t.as_slice::<bool>().expect("bool");
            idx.iter()
                .map(|&i| if s[i] { "True" } else { "False" }.to_string())
                .collect()
        }
        DType::U8 => ints::<u8>(t, idx),
        DType::U16 => ints::<u16>(t, idx),
        DType::U32 => ints::<u32>(t, idx),
        DType::U64 => ints::<u64>(t, idx),
        DType::I8 => ints::<i8>(t, idx),
        DType::I16 => ints::<i16>(t, idx),
        DType::I32 => ints::<i32>(t, idx),
        DType::I64 => ints::<i64>(t, idx),
        DType::F16 => float_column(&floats::<f16>(t, idx, |x| (x.to_f64(), x.to_string())), opts),
        DType::BF16 => float_column(&floats::<bf16>(t, idx, |x| (x.to_f64(), x.to_string())), opts),
        DType::F32 => float_column(&floats::<f32>(t, idx, |x| (x as f64, x.to_string())), opts),
        DType::F64 => float_column(&floats::<f64>(t, idx, |x| (x, x.to_string())), opts),
        DType::C64 => {
            let s = t.as_slice::<brainstate_core::C64>().expect("c64");
            let re: Vec<_> = idx
                .iter()
                .map(|&i| (s[i].re as f64, s[i].re.to_string()))
                .collect();
            let im: Vec<_> = idx
                .iter()
                .map(|&i| (s[i].im as f64, s[i].im.to_string()))
                .collect();
            complex_column(&re, &im, opts)
        }
        DType::C128 => {
            let s = t.as_slice::<brainstate_core::C128>().expect("c128");
            let re: Vec<_> = idx.iter().map(|&i| (s[i].re, s[i].re.to_string())).collect();
            let im: Vec<_> = idx.iter().map(|&i| (s[i].im, s[i].im.to_string())).collect();
            complex_column(&re, &im, opts)
        }
    };
    let width = texts.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    texts.into_iter().map(|s| format!("{s:>width$}")).collect()
}

fn complex_column(re: &[(f64, String)], im: &[(f64, String)], opts: &PrintOptions) -> Vec<String> {
    let r = float_column(re, opts);
    let abs: Vec<(f64, String)> = im
        .iter()
        .map(|(x, s)| (x.abs(), s.trim_start_matches('-').to_string()))
        .collect();
    let i = float_column(&abs, opts);
    re.iter()
        .zip(r)
        .zip(im.iter().zip(i))
        .map(|((_, r), ((x, _), i))| {
            let sign = if x.is_sign_negative() && !x.is_nan() {
                '-'
            } else {
                '+'
            };
            format!("{r}{sign}{}j", i.trim_start())
        })
        .collect()
}

/// Formats floats as numpy's default (`floatmode='maxprec'`): positional unless the magnitudes
/// call for scientific notation; fractions padded to a common length.
fn float_column(vals: &[(f64, String)], opts: &PrintOptions) -> Vec<String> {
    let finite: Vec<f64> = vals
        .iter()
        .map(|(x, _)| x.abs())
        .filter(|x| x.is_finite() && *x != 0.0)
        .collect();
    let (max, min) = finite
        .iter()
        .fold((0.0f64, f64::INFINITY), |(mx, mn), &x| (mx.max(x), mn.min(x)));
    let sci = !finite.is_empty() && (max >= 1e8 || min < 1e-4 || max / min > 1e3);
    let special = |x: f64| {
        if x.is_nan() {
            Some("nan".to_string())
        } else if x.is_infinite() {
            Some(if x > 0.0 { "inf" } else { "-inf" }.to_string())
        } else {
            None
        }
    };
    if sci {
        // Mantissa digits: the fewest that show each value at the precision, shared by all.
        let digits = vals
            .iter()
            .filter(|(x, _)| x.is_finite())
            .map(|(x, _)| {
                let s = format!("{:.*e}", opts.precision, x);
                let mant = s.split('e').next().unwrap_or("");
                mant.split('.')
                    .nth(1)
                    .map_or(0, |f| f.trim_end_matches('0').len())
            })
            .max()
            .unwrap_or(0);
        vals.iter()
            .map(|&(x, _)| {
                special(x).unwrap_or_else(|| {
                    let s = format!("{:.*e}", digits, x);
                    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
                    let mant = if mant.contains('.') {
                        mant.to_string()
                    } else {
                        format!("{mant}.")
                    };
                    let (sign, e) = exp.strip_prefix('-').map_or(('+', exp), |e| ('-', e));
                    format!("{mant}e{sign}{e:0>2}")
                })
            })
            .collect()
    } else {
        let parts: Vec<Option<(String, String)>> = vals
            .iter()
            .map(|(x, repr)| {
                if !x.is_finite() {
                    return None;
                }
                let mut s = repr.clone();
                if let Some((_, frac)) = s.split_once('.') {
                    if frac.len() > opts.precision {
                        s = format!("{:.*}", opts.precision, x);
                        s = s.trim_end_matches('0').to_string();
                    }
                }
                let (int, frac) = s.split_once('.').map_or((s.clone(), String::new()), |(i, f)| {
                    (i.to_string(), f.to_string())
                });
                Some((int, frac))
            })
            .collect();
        let fw = parts.iter().flatten().map(|(_, f)| f.len()).max().unwrap_or(0);
        vals.iter()
            .zip(parts)
            .map(|(&(x, _), p)| match p {
                Some((int, frac)) => format!("{int}.{frac:<fw$}"),
                None => special(x).unwrap_or_default(),
            })
            .collect()
    }
}

/// numpy leaves out the dtype of these in a repr.
fn default_dtype(d: DType) -> bool {
    matches!(d, DType::F64 | DType::I64 | DType::Bool | DType::C128)
}

/// `array([...], dtype=float32)`, as numpy's `repr` prints it.
pub fn array_repr(t: &Tensor, opts: &PrintOptions) -> String {
    let summarise = t.len() > opts.threshold;
    let idx = shown_indices(t.shape(), summarise, opts.edgeitems);
    let texts = element_texts(t, &idx, opts);
    // numpy 2 names the shape of a summarised array.
    let shape = if summarise {
        format!(", shape=({})", tuple(t.shape()))
    } else {
        String::new()
    };
    let suffix = if default_dtype(t.dtype()) {
        format!("{shape})")
    } else {
        format!("{shape}, dtype={})", t.dtype().name())
    };
    if t.ndim() == 0 {
        return format!("array({}{suffix}", texts.first().map_or("", |s| s.trim()));
    }
    if t.is_empty() {
        let shape = if t.ndim() > 1 {
            format!(", shape=({})", tuple(t.shape()))
        } else {
            String::new()
        };
        return format!("array([]{shape}, dtype={})", t.dtype().name());
    }
    let mut it = texts.into_iter();
    let body = block(t.shape(), 0, summarise, opts, "      ", &mut it);
    format!("array({body}{suffix}")
}

fn tuple(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    if dims.len() == 1 {
        format!("{},", dims[0])
    } else {
        dims.join(", ")
    }
}

/// Renders the sub-array at `axis`, consuming its element texts from `it`. `indent` is the
/// column where this block's `[` stands.
fn block(
    shape: &[usize],
    axis: usize,
    summarise: bool,
    opts: &PrintOptions,
    indent: &str,
    it: &mut dyn Iterator<Item = String>,
) -> String {
    let items = kept(shape[axis], summarise, opts.edgeitems);
    let inner = format!("{indent} ");
    if axis + 1 == shape.len() {
        let mut out = String::from("[");
        let mut col = indent.len() + 1;
        for (n, k) in items.iter().enumerate() {
            let text = match k {
                Some(_) => it.next().unwrap_or_default(),
                None => "...".to_string(),
            };
            let last = n + 1 == items.len();
            // Room for the text and the `,` or `]` after it.
            let need = text.len() + 1;
            if n > 0 {
                if col + 1 + need > opts.linewidth {
                    out.push('\n');
                    out.push_str(&inner);
                    col = inner.len();
                } else {
                    out.push(' ');
                    col += 1;
                }
            }
            out.push_str(&text);
            col += text.len();
            if !last {
                out.push(',');
                col += 1;
            }
        }
        out.push(']');
        return out;
    }
    let blank = "\n".repeat(shape.len() - axis - 1);
    let parts: Vec<String> = items
        .iter()
        .map(|k| match k {
            Some(_) => block(shape, axis + 1, summarise, opts, &inner, it),
            None => "...".to_string(),
        })
        .collect();
    format!("[{}]", parts.join(&format!(",{blank}{inner}")))
}

/// The value of a 0-d tensor as numpy prints it (`0.72636056`, `True`, `3`).
pub fn scalar_text(t: &Tensor) -> String {
    let texts = element_texts(t, &[0], &PrintOptions::default());
    texts.into_iter().next().unwrap_or_default().trim().to_string()
}

/// A leaf as Python would print it: numpy arrays by [`array_repr`], numpy scalars as
/// `np.float32(0.5)`, Python values as their repr.
pub fn leaf_repr(v: &Pytree, opts: &PrintOptions) -> String {
    match v {
        Pytree::Tensor(t) => array_repr(t, opts),
        Pytree::Scalar(t) => {
            let a = array_repr(t, opts);
            let inner = a
                .strip_prefix("array(")
                .and_then(|s| s.split(", dtype=").next())
                .unwrap_or(&a)
                .trim_end_matches(')');
            format!("np.{}({inner})", t.dtype().name())
        }
        Pytree::Int(i) => i.to_string(),
        Pytree::UInt(u) => u.to_string(),
        Pytree::Float(x) => py_float(*x),
        Pytree::Complex(c) => format!(
            "({}{}{}j)",
            py_float(c.re),
            if c.im < 0.0 { "" } else { "+" },
            py_float(c.im)
        ),
        Pytree::Bool(b) => if *b { "True" } else { "False" }.into(),
        Pytree::Str(s) => format!("{s:?}"),
        Pytree::Bytes(b) => {
            let shown: String = b.iter().take(64).map(|c| format!("\\x{c:02x}")).collect();
            if b.len() > 64 {
                format!("b'{shown}...' ({} bytes)", b.len())
            } else {
                format!("b'{shown}'")
            }
        }
        Pytree::None => "None".into(),
        Pytree::Map(m) if m.is_empty() => "{}".into(),
        Pytree::List(l) if l.is_empty() => "[]".into(),
        Pytree::Map(_) | Pytree::List(_) => "...".into(),
    }
}

/// Python's repr of a float: `1.0`, `0.1`, `1e-05`, `nan`, `inf`.
pub(crate) fn py_float(x: f64) -> String {
    py_float_text(&x.to_string(), x)
}

/// Python's repr of `x`, given Rust's shortest text of it (of an `f32` or `f64`).
pub(crate) fn py_float_text(shortest: &str, x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else if x != 0.0 && (x.abs() >= 1e16 || x.abs() < 1e-4) {
        // Rust's `{:e}` of the parsed shortest text keeps its digits.
        let v: f64 = shortest.parse().unwrap_or(x);
        let digits: String = shortest.chars().filter(|c| c.is_ascii_digit()).collect();
        let sig = digits.trim_start_matches('0').trim_end_matches('0').len().max(1);
        let s = format!("{:.*e}", sig - 1, v);
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, e) = e.strip_prefix('-').map_or(('+', e), |e| ('-', e));
        format!("{m}e{sign}{e:0>2}")
    } else if shortest.contains('.') {
        shortest.to_string()
    } else {
        format!("{shortest}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array1, Array2};

    fn r(t: Tensor) -> String {
        array_repr(&t, &PrintOptions::default())
    }

    #[test]
    fn one_d_floats_as_numpy() {
        assert_eq!(
            r(Tensor::from(array![0.0f32, 0.5, 1.0])),
            "array([0. , 0.5, 1. ], dtype=float32)"
        );
        assert_eq!(r(Tensor::from(array![0.0f64, 0.0])), "array([0., 0.])");
        assert_eq!(r(Tensor::from(array![-1.25f64, 10.0])), "array([-1.25, 10.  ])");
        assert_eq!(r(Tensor::from(array![1e-5f64, 1.0])), "array([1.e-05, 1.e+00])");
        assert_eq!(
            r(Tensor::from(array![1.2345e-5f64, 1.0])),
            "array([1.2345e-05, 1.0000e+00])"
        );
        assert_eq!(r(Tensor::from(array![f64::NAN, 1.0])), "array([nan,  1.])");
        assert_eq!(r(Tensor::from(array![0.123456789f64])), "array([0.12345679])");
        assert_eq!(r(Tensor::scalar(0.5f32)), "array(0.5, dtype=float32)");
    }

    #[test]
    fn bools_ints_and_complex() {
        assert_eq!(r(Tensor::from(array![false, true])), "array([False,  True])");
        assert_eq!(
            r(Tensor::from(array![1i32, -20])),
            "array([  1, -20], dtype=int32)"
        );
        let c = Tensor::from(array![brainstate_core::C128::new(1.0, -2.0)]);
        assert_eq!(r(c), "array([1.-2.j])");
    }

    #[test]
    fn two_d_and_summarised() {
        assert_eq!(
            r(Tensor::from(array![[1i64, 2], [3, 4]])),
            "array([[1, 2],\n       [3, 4]])"
        );
        let big = Tensor::from(Array1::from_iter((0..2000).map(|i| i as i64)));
        assert_eq!(
            r(big),
            "array([   0,    1,    2, ..., 1997, 1998, 1999], shape=(2000,))"
        );
        let big2 = Tensor::from(Array2::<f32>::zeros((256, 10)));
        let s = r(big2);
        assert!(
            s.starts_with("array([[0., 0., 0., ..., 0., 0., 0.],\n       [0., 0., 0., ..., 0., 0., 0.],"),
            "{s}"
        );
        assert!(s.contains("       ...,\n"), "{s}");
        assert_eq!(s.lines().count(), 7, "{s}");
        assert!(s.ends_with("0.]], shape=(256, 10), dtype=float32)"), "{s}");
    }

    #[test]
    fn long_rows_wrap_at_75_columns() {
        // numpy 2.4: repr(np.arange(40) * 1000)
        let t = Tensor::from(Array1::from_iter((0..40).map(|i| i as i64 * 1000)));
        assert_eq!(
            r(t),
            "array([    0,  1000,  2000,  3000,  4000,  5000,  6000,  7000,  8000,
        9000, 10000, 11000, 12000, 13000, 14000, 15000, 16000, 17000,
       18000, 19000, 20000, 21000, 22000, 23000, 24000, 25000, 26000,
       27000, 28000, 29000, 30000, 31000, 32000, 33000, 34000, 35000,
       36000, 37000, 38000, 39000])"
        );
        // numpy 2.4: repr(np.zeros((2, 3, 4)))
        let t = Tensor::from(ndarray::Array3::<f64>::zeros((2, 3, 4)));
        assert_eq!(
            r(t),
            "array([[[0., 0., 0., 0.],
        [0., 0., 0., 0.],
        [0., 0., 0., 0.]],

       [[0., 0., 0., 0.],
        [0., 0., 0., 0.],
        [0., 0., 0., 0.]]])"
        );
    }

    #[test]
    fn python_leaves() {
        let o = PrintOptions::default();
        assert_eq!(leaf_repr(&Pytree::Int(9), &o), "9");
        assert_eq!(leaf_repr(&Pytree::Float(0.5), &o), "0.5");
        assert_eq!(leaf_repr(&Pytree::Float(2.0), &o), "2.0");
        assert_eq!(leaf_repr(&Pytree::Float(1e-5), &o), "1e-05");
        assert_eq!(
            leaf_repr(&Pytree::Scalar(Tensor::scalar(1.5f32)), &o),
            "np.float32(1.5)"
        );
        assert_eq!(leaf_repr(&Pytree::Str("a".into()), &o), "\"a\"");
        assert_eq!(leaf_repr(&Pytree::None, &o), "None");
    }
}
