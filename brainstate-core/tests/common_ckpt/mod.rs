//! Shared helpers of the checkpoint tests.
#![allow(dead_code)]

use brainstate_core::{pytree, DType, Pytree, Tensor, C128};

/// A tensor of `dtype` and `shape` with deterministic, varied bytes (bools 0/1).
pub fn tensor(dtype: DType, shape: &[usize], seed: u8) -> Tensor {
    let n: usize = shape.iter().product::<usize>() * dtype.itemsize();
    let bytes: Vec<u8> = (0..n)
        .map(|i| {
            let b = (i as u8).wrapping_mul(31).wrapping_add(seed);
            if dtype == DType::Bool {
                b & 1
            } else {
                b
            }
        })
        .collect();
    Tensor::from_le_bytes(dtype, shape, &bytes).unwrap()
}

/// A tree with every leaf kind and every dtype, including edge values.
pub fn every_kind() -> Pytree {
    let mut tensors = Pytree::map();
    for (i, d) in DType::ALL.into_iter().enumerate() {
        tensors = tensors.with(d.name(), tensor(d, &[2, 3], i as u8));
    }
    let edge = pytree! {
        "nan_payload" => Tensor::from_vec(&[3], vec![f32::from_bits(0x7fc0_1234), -0.0f32, f32::from_bits(1)]).unwrap(),
        "zero_d" => Tensor::scalar(2.5f64),
        "empty" => Tensor::zeros(DType::F32, &[0, 5]).unwrap(),
        "big_dim" => Tensor::zeros(DType::U8, &[300]).unwrap(),
    };
    pytree! {
        "tensors" => tensors,
        "edge" => edge,
        "np_scalar_f32" => Pytree::Scalar(Tensor::scalar(1.5f32)),
        "np_scalar_i64" => Pytree::Scalar(Tensor::scalar(-7i64)),
        "np_scalar_bool" => Pytree::Scalar(Tensor::scalar(true)),
        "int" => 42i64,
        "neg" => i64::MIN,
        "max" => i64::MAX,
        "uint_big" => Pytree::UInt(u64::MAX),
        "uint_small" => Pytree::UInt(5),
        "float" => 0.1f64,
        "float_neg_zero" => -0.0f64,
        "float_nan" => Pytree::Float(f64::from_bits(0x7ff8_0000_0000_0001)),
        "float_inf" => f64::NEG_INFINITY,
        "float_half" => 1.5f64,
        "complex" => C128::new(1.0, -2.5),
        "t" => true,
        "f" => false,
        "s" => "héllo",
        "empty_s" => "",
        "bytes" => vec![0u8, 1, 255],
        "none" => Pytree::None,
        "list" => vec![Pytree::Int(7), Pytree::from("x"), Pytree::List(vec![]), Pytree::map()],
        "zkey_order" => pytree! { "b" => 1, "a" => 2, "aa" => 3 },
    }
}

/// The tutorial's checkpoint: `{"net": state tree, "epoch_i": 9, "train_loss": 0.71}`.
pub fn tutorial() -> Pytree {
    pytree! {
        "net" => pytree! {
            "SNN0" => pytree! { "SNN0.var" => Tensor::zeros(DType::F32, &[1]).unwrap() },
            "Dense0" => Pytree::map(),
            "Lif0" => pytree! {
                "Lif0.V" => tensor(DType::F32, &[10], 1),
                "Lif0.spike" => tensor(DType::Bool, &[10], 2),
            },
        },
        "epoch_i" => 9,
        "train_loss" => 0.71f32,
    }
}

/// Bitwise tree equality that treats Pytree::Float NaN payloads exactly.
pub fn same(a: &Pytree, b: &Pytree) -> bool {
    match (a, b) {
        (Pytree::Float(x), Pytree::Float(y)) => x.to_bits() == y.to_bits(),
        (Pytree::Complex(x), Pytree::Complex(y)) => {
            x.re.to_bits() == y.re.to_bits() && x.im.to_bits() == y.im.to_bits()
        }
        (Pytree::Map(x), Pytree::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((k1, v1), (k2, v2))| k1 == k2 && same(v1, v2))
        }
        (Pytree::List(x), Pytree::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        _ => a == b,
    }
}

/// A fresh empty temp directory under the target dir (no tempfile dependency).
pub fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("bst-ckpt-{}-{}", name, std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
