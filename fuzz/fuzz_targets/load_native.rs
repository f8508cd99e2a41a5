//! Fuzzes the native checkpoint loader: raw bytes, and bytes spliced into a valid file.
//!
//! `cargo +nightly fuzz run load_native` (from the repository root). The loader must return
//! a typed error or a tree, never panic or allocate beyond the input's size; a tree that loads
//! must re-encode to a file that loads to the same tree.
#![no_main]

use brainstate_core::ckpt::native::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Raw input.
    if let Ok(tree) = decode(data) {
        let again = encode(&tree).expect("a loaded tree re-encodes");
        assert!(decode(&again).is_ok());
    }
    // Structure-aware: the input overwrites part of a valid file after its magic.
    if data.len() > 2 {
        let mut base = encode(&brainstate_core::pytree! {
            "w" => brainstate_core::Tensor::from_vec(&[4], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap(),
            "n" => 3,
        })
        .unwrap();
        let at = 3 + (data[0] as usize * 256 + data[1] as usize) % (base.len() - 3);
        let end = (at + data.len() - 2).min(base.len());
        base[at..end].copy_from_slice(&data[2..2 + end - at]);
        let _ = decode(&base);
    }
});
