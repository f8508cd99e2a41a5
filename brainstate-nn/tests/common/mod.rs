//! Fixture reading shared by the tests.
#![allow(dead_code)]

use brainstate_nn::*;
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::NpzReader;
use std::fs::File;
use std::path::PathBuf;

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub struct Fixture {
    pub json: serde_json::Value,
    npz: NpzReader<File>,
}

impl Fixture {
    pub fn open(name: &str) -> Fixture {
        let json: serde_json::Value =
            serde_json::from_reader(File::open(fixture_path(&format!("{name}.json"))).unwrap()).unwrap();
        let npz = NpzReader::new(File::open(fixture_path(&format!("{name}.npz"))).unwrap()).unwrap();
        Fixture { json, npz }
    }

    pub fn f32(&mut self, key: &str) -> ArrayD<f32> {
        self.npz
            .by_name::<ndarray::OwnedRepr<f32>, IxDyn>(&format!("{key}.npy"))
            .unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    pub fn u8(&mut self, key: &str) -> ArrayD<u8> {
        self.npz
            .by_name::<ndarray::OwnedRepr<u8>, IxDyn>(&format!("{key}.npy"))
            .unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    pub fn i32(&mut self, key: &str) -> ArrayD<i32> {
        self.npz
            .by_name::<ndarray::OwnedRepr<i32>, IxDyn>(&format!("{key}.npy"))
            .unwrap_or_else(|e| panic!("{key}: {e}"))
    }

    pub fn cfg_f32(&self, key: &str) -> f32 {
        self.json["config"][key]
            .as_f64()
            .unwrap_or_else(|| panic!("config.{key}")) as f32
    }

    pub fn cfg_usize(&self, key: &str) -> usize {
        self.json["config"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("config.{key}")) as usize
    }

    pub fn cfg_str(&self, key: &str) -> &str {
        self.json["config"][key]
            .as_str()
            .unwrap_or_else(|| panic!("config.{key}"))
    }

    /// The network configuration the fixture was made with.
    pub fn snn_config(&self) -> SnnConfig {
        let alpha = self.cfg_f32("surrogate_alpha");
        let surrogate = match self.cfg_str("surrogate") {
            "Arctan" => Surrogate::Arctan { alpha },
            "InvSquareGrad" => Surrogate::InvSquareGrad { alpha },
            other => panic!("surrogate {other}"),
        };
        let spk_reset = match self.cfg_str("spk_reset") {
            "soft" => SpikeReset::Soft,
            "hard" => SpikeReset::Hard,
            other => panic!("reset {other}"),
        };
        SnnConfig {
            num_in: self.cfg_usize("num_in"),
            num_rec: self.cfg_usize("num_rec"),
            num_out: self.cfg_usize("num_out"),
            lif: LifParams {
                v_rest: self.cfg_f32("lif_V_rest"),
                v_reset: self.cfg_f32("lif_V_reset"),
                v_th: self.cfg_f32("lif_V_th"),
                r: self.cfg_f32("lif_R"),
                tau: self.cfg_f32("lif_tau"),
                surrogate,
                spk_reset,
                detach_spk: self.json["config"]["detach_spk"].as_bool().unwrap(),
                ..LifParams::default()
            },
            syn_rec_tau: self.cfg_f32("syn_rec_tau"),
            syn_out_tau: self.cfg_f32("syn_out_tau"),
            out_tau: self.cfg_f32("out_tau"),
            w_init: Init::kaiming_normal(self.cfg_f32("W_init_scale_rec")),
        }
    }
}

/// max |a - b| - (atol + rtol |b|) elementwise: the worst excess (<= 0 means within tolerance).
pub fn worst_elementwise(a: &[f32], b: &[f32], atol: f32, rtol: f32) -> (f32, usize) {
    assert_eq!(a.len(), b.len());
    let mut worst = (f32::NEG_INFINITY, 0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let excess = (x - y).abs() - (atol + rtol * y.abs());
        if excess > worst.0 {
            worst = (excess, i);
        }
    }
    worst
}

/// Normwise: |a - b| <= tol * max|b| + tol * |b|.
pub fn assert_normwise(what: &str, a: &[f32], b: &[f32], tol: f32) {
    let maxb = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let (excess, i) = worst_elementwise(a, b, tol * maxb, tol);
    assert!(
        excess <= 0.0,
        "{what}: element {i}: ours {} vs BrainPy {} (max|b| {maxb})",
        a[i],
        b[i]
    );
}

pub fn assert_close(what: &str, a: &[f32], b: &[f32], atol: f32, rtol: f32) {
    let (excess, i) = worst_elementwise(a, b, atol, rtol);
    assert!(
        excess <= 0.0,
        "{what}: element {i}: ours {} vs BrainPy {}",
        a[i],
        b[i]
    );
}
