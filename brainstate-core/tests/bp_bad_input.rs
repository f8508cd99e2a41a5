//! Broken and hostile BrainPy files: each gets a typed error naming where, never a panic.

use brainstate_core::bpformat::{self, BpError, MAX_DEPTH};
use brainstate_core::{Pytree, Tensor};
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/brainpy")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn err(b: &[u8]) -> BpError {
    match bpformat::decode(b) {
        Ok(t) => panic!("decoded {t:?}"),
        Err(e) => e,
    }
}

/// An ext-1 payload `[shape, name, data]` with a custom shape encoding.
fn ndarray_ext(shape_enc: &[u8], name: &str, data_hdr: &[u8], data: &[u8]) -> Vec<u8> {
    let mut p = vec![0x93];
    p.extend(shape_enc);
    rmp::encode::write_str(&mut p, name).unwrap();
    p.extend(data_hdr);
    p.extend(data);
    let mut out = Vec::new();
    rmp::encode::write_ext_meta(&mut out, p.len() as u32, 1).unwrap();
    out.extend(p);
    out
}

#[test]
fn bad_fixture_truncated() {
    match err(&fixture("bad/ex2_training_ckpt.truncated.bp")) {
        BpError::Truncated { offset, path, .. } => {
            assert!(offset < 19665);
            assert!(path.starts_with("net/"), "{path}");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn bad_fixture_len_flip() {
    // The ext16 length of net/Lif0/Lif0.V grew by 256: its payload now holds extra data.
    match err(&fixture("bad/ex2_training_ckpt.len_flip.bp")) {
        BpError::ExtraData {
            path, extra, what, ..
        } => {
            assert_eq!(path, "net/Lif0/Lif0.V");
            assert_eq!(extra, 256);
            assert_eq!(what, "ndarray payload");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn bad_fixture_garbage() {
    // As in BrainPy: the first byte 0xbb announces a 27-byte string that is not UTF-8.
    match err(&fixture("bad/ex2_training_ckpt.garbage.bp")) {
        BpError::InvalidUtf8 { offset, path } => {
            assert_eq!(offset, 0);
            assert_eq!(path, "/");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn bad_fixture_data_flip_loads_with_the_wrong_value() {
    // BrainPy's format has no checksum: the flipped byte cannot be detected (see module docs).
    let t = bpformat::decode(&fixture("bad/ex2_training_ckpt.data_flip.bp")).unwrap();
    let v = t
        .at("net/Lif0/Lif0.V")
        .unwrap()
        .tensor()
        .unwrap()
        .as_slice::<f32>()
        .unwrap()[0];
    assert_eq!(v as f64, 6.4149047905755075e+37);
    let good = bpformat::decode(&fixture("ex2_training_ckpt.bp")).unwrap();
    let g = good
        .at("net/Lif0/Lif0.V")
        .unwrap()
        .tensor()
        .unwrap()
        .as_slice::<f32>()
        .unwrap()[0];
    assert_eq!(g as f64, 0.18851710855960846);
}

#[test]
fn empty_input() {
    assert!(matches!(err(b""), BpError::Truncated { offset: 0, .. }));
}

#[test]
fn every_truncation_of_small_fixtures_is_a_truncation_error() {
    for f in [
        "synthetic_tree.bp",
        "ex1_state_dict.bp",
        "toplevel_array.bp",
        "chunked_toplevel_maxchunk64.bp",
    ] {
        let b = fixture(f);
        for n in 0..b.len() {
            match bpformat::decode(&b[..n]) {
                Err(BpError::Truncated { .. }) => {}
                other => panic!("{f} cut at {n}: {other:?}"),
            }
        }
    }
    // A large one, at a stride.
    let b = fixture("ex2_training_ckpt.bp");
    for n in (0..b.len()).step_by(97) {
        assert!(
            matches!(bpformat::decode(&b[..n]), Err(BpError::Truncated { .. })),
            "cut at {n}"
        );
    }
}

#[test]
fn hostile_lengths_are_refused_before_allocating() {
    // str32, bin32, array32, map32 and ext32 claiming 2^32 - 1 bytes or items, in a 10-byte input.
    for h in [
        "dbffffffff",
        "c6ffffffff",
        "ddffffffff",
        "dfffffffff",
        "c9ffffffff01",
    ] {
        let mut b = hex(h);
        b.extend([0u8; 4]);
        match err(&b) {
            BpError::Truncated {
                offset: 0, needed, ..
            } => assert!(needed >= 0xffff_ffff, "{h}"),
            e => panic!("{h}: {e}"),
        }
    }
    // Same inside a map value: the path is named.
    match err(&hex("81 a1 6b dbffffffff 00")) {
        BpError::Truncated {
            offset: 3,
            path,
            what: "str",
            ..
        } => assert_eq!(path, "k"),
        e => panic!("{e}"),
    }
    // map16 of 65535 entries in 3 bytes.
    assert!(matches!(
        err(&hex("deffff")),
        BpError::Truncated {
            what: "map entries",
            ..
        }
    ));
    // Inside an ndarray payload: a bin32 data length of 2^32 - 1.
    let b = ndarray_ext(&hex("9102"), "float32", &hex("c6ffffffff"), &[0; 8]);
    assert!(
        matches!(err(&b), BpError::Truncated { what: "data", .. }),
        "{}",
        err(&b)
    );
    // A shape array claiming 2^32 - 1 dims.
    let b = ndarray_ext(&hex("ddffffffff"), "float32", &hex("c400"), &[]);
    assert!(matches!(err(&b), BpError::Truncated { .. }), "{}", err(&b));
}

#[test]
fn huge_and_negative_dims_are_typed_errors() {
    // 2^32 x 2^32 float32 with 8 bytes of data: overflows 2^64 bytes.
    let b = ndarray_ext(
        &hex("92 cf0000000100000000 cf0000000100000000"),
        "float32",
        &hex("c408"),
        &[0; 8],
    );
    match err(&b) {
        BpError::BadPayload {
            what: "ndarray",
            reason,
            ..
        } => assert!(reason.contains("too large"), "{reason}"),
        e => panic!("{e}"),
    }
    // 2^64 - 1 elements.
    let b = ndarray_ext(&hex("91 cfffffffffffffffff"), "uint8", &hex("c400"), &[]);
    assert!(matches!(err(&b), BpError::BadPayload { .. }), "{}", err(&b));
    // A zero dimension does not excuse a huge one (ndarray would refuse that shape).
    let b = ndarray_ext(&hex("92 00 cf7fffffffffffffff"), "float32", &hex("c400"), &[]);
    assert!(matches!(err(&b), BpError::BadPayload { .. }), "{}", err(&b));
    // 2^40 float32 claimed, 8 bytes present.
    let b = ndarray_ext(&hex("91 cf0000010000000000"), "float32", &hex("c408"), &[0; 8]);
    match err(&b) {
        BpError::DataLength { expected, found, .. } => {
            assert_eq!(expected, Some(4 << 40));
            assert_eq!(found, 8);
        }
        e => panic!("{e}"),
    }
    // Negative dimension.
    let b = ndarray_ext(&hex("92 02 ff"), "float32", &hex("c400"), &[]);
    match err(&b) {
        BpError::NegativeDim { dim, offset, .. } => {
            assert_eq!(dim, -1);
            assert_eq!(offset, 6);
        }
        e => panic!("{e}"),
    }
    // A dimension that is not an int.
    let b = ndarray_ext(&hex("91 a0"), "float32", &hex("c400"), &[]);
    assert!(matches!(err(&b), BpError::BadPayload { .. }));
}

#[test]
fn shape_and_length_mismatch() {
    for (shape, n) in [("9103", 8usize), ("9102", 12), ("90", 0), ("920203", 20)] {
        let b = ndarray_ext(&hex(shape), "float32", &[0xc4, n as u8], &vec![0; n]);
        match err(&b) {
            BpError::DataLength { found, dtype, .. } => {
                assert_eq!(found, n);
                assert_eq!(dtype.name(), "float32");
            }
            e => panic!("{shape}: {e}"),
        }
    }
}

#[test]
fn unknown_dtype_names() {
    for name in ["float8_e4m3fn", "object", "<f4", "", "float32 "] {
        let b = ndarray_ext(&hex("9101"), name, &hex("c401"), &[0]);
        match err(&b) {
            BpError::UnknownDtype { name: n, .. } => assert_eq!(n, name),
            e => panic!("{name}: {e}"),
        }
    }
    // Not UTF-8 at all (as bin).
    let mut p = hex("93 9101 c402 ff fe c401 00");
    let mut b = hex("c7");
    b.push(p.len() as u8);
    b.push(1);
    b.append(&mut p);
    assert!(matches!(err(&b), BpError::UnknownDtype { .. }));
}

#[test]
fn malformed_ext_payloads() {
    let bad_payload = |b: &[u8]| matches!(err(b), BpError::BadPayload { .. });
    // ndarray payload of 2 items, of 4 items, not an array
    assert!(bad_payload(&hex("c7 03 01 92 90 a0")));
    assert!(bad_payload(&hex("c7 06 01 94 90 a0 c400 c0")));
    assert!(bad_payload(&hex("d4 01 c0")));
    // data that is neither bin nor str
    let b = ndarray_ext(&hex("90"), "uint8", &hex("c0"), &[]);
    assert!(bad_payload(&b));
    // numpy scalar (ext 3) of shape [2]
    let mut b = ndarray_ext(&hex("9102"), "uint8", &hex("c402"), &[1, 2]);
    let at = b.iter().position(|&x| x == 1).unwrap(); // the type byte follows the length
    b[at] = 3;
    match err(&b) {
        BpError::BadPayload {
            what: "numpy scalar",
            reason,
            ..
        } => assert!(reason.contains("[2]"), "{reason}"),
        e => panic!("{e}"),
    }
    // complex: 3 parts, a str part
    assert!(bad_payload(&hex("c7 04 02 93 00 00 00")));
    assert!(bad_payload(&hex("c7 03 02 92 a0 a0")));
    // extra bytes after the complex payload
    match err(&hex("c7 14 02 92 cb3ff0000000000000 cb4000000000000000 00")) {
        BpError::ExtraData {
            what: "complex payload",
            extra: 1,
            ..
        } => {}
        e => panic!("{e}"),
    }
    // the payload ends before its inner object does
    assert!(matches!(
        err(&hex("c7 02 01 93 90 a0 c400")),
        BpError::Truncated { .. }
    ));
    // unknown ext types, including the ones msgpack reserves (negative)
    for code in [0u8, 4, 5, 0x7f, 0xff] {
        match err(&[0xd4, code, 0]) {
            BpError::UnknownExt {
                code: c, offset: 0, ..
            } => assert_eq!(c, code as i8),
            e => panic!("{code}: {e}"),
        }
    }
}

#[test]
fn invalid_bool_bytes() {
    let b = ndarray_ext(&hex("9103"), "bool", &hex("c403"), &[1, 0, 2]);
    match err(&b) {
        BpError::InvalidBool { index, byte, .. } => assert_eq!((index, byte), (2, 2)),
        e => panic!("{e}"),
    }
}

#[test]
fn structural_errors() {
    match err(&hex("c1")) {
        BpError::InvalidMarker {
            byte: 0xc1,
            offset: 0,
            ..
        } => {}
        e => panic!("{e}"),
    }
    match err(&hex("81 01 02")) {
        BpError::NonStringKey {
            found: "int",
            offset: 1,
            ..
        } => {}
        e => panic!("{e}"),
    }
    match err(&hex("81 c4 01 61 02")) {
        BpError::NonStringKey { found: "bin", .. } => {}
        e => panic!("{e}"),
    }
    match err(&hex("81 a1 6d 82 a1 61 01 a1 61 02")) {
        BpError::DuplicateKey { key, path, offset } => {
            assert_eq!((key.as_str(), path.as_str(), offset), ("a", "m", 7));
        }
        e => panic!("{e}"),
    }
    match err(&hex("80 00")) {
        BpError::ExtraData {
            offset: 1,
            extra: 1,
            what: "top-level object",
            ..
        } => {}
        e => panic!("{e}"),
    }
    match err(&hex("81 a1 6b a2 ff fe")) {
        BpError::InvalidUtf8 { offset: 3, path } => assert_eq!(path, "k"),
        e => panic!("{e}"),
    }
    match err(&hex("81 a2 ff fe 00")) {
        BpError::InvalidUtf8 { offset: 1, .. } => {}
        e => panic!("{e}"),
    }
}

#[test]
fn nesting_100000_deep_is_refused() {
    for unit in [&hex("91")[..], &hex("81a161")[..]] {
        let mut b: Vec<u8> = unit.repeat(100_000);
        b.push(0xc0);
        match err(&b) {
            BpError::TooDeep { limit, offset, .. } => {
                assert_eq!(limit, MAX_DEPTH);
                assert_eq!(offset, MAX_DEPTH * unit.len());
            }
            e => panic!("{e}"),
        }
    }
    // Exactly MAX_DEPTH levels read fine.
    let mut b = hex("91").repeat(MAX_DEPTH);
    b.push(0xc0);
    bpformat::decode(&b).unwrap();
    // Deep nesting inside a 2 MiB-stack thread (the test harness default) is fine in debug too.
    let mut b = hex("81a161").repeat(MAX_DEPTH);
    b.push(0xc0);
    let t = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || bpformat::decode(&b).map(|t| bpformat::to_vec(&t).map(|v| v.len())))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(t.unwrap().unwrap(), 3 * MAX_DEPTH + 1);
}

fn chunked(shape: &str, chunks: &[&[u8]]) -> Vec<u8> {
    let mut b = hex("83");
    rmp::encode::write_str(&mut b, "__msgpack_chunked_array__").unwrap();
    b.push(0xc3);
    rmp::encode::write_str(&mut b, "shape").unwrap();
    b.extend(hex(shape));
    rmp::encode::write_str(&mut b, "chunks").unwrap();
    rmp::encode::write_map_len(&mut b, chunks.len() as u32).unwrap();
    for (i, c) in chunks.iter().enumerate() {
        rmp::encode::write_str(&mut b, &i.to_string()).unwrap();
        b.extend(*c);
    }
    b
}

#[test]
fn malformed_chunked_arrays() {
    let f32x2 = bpformat::to_vec(&Pytree::Tensor(
        Tensor::from_vec(&[2], vec![1.0f32, 2.0]).unwrap(),
    ))
    .unwrap();
    let i32x2 = bpformat::to_vec(&Pytree::Tensor(Tensor::from_vec(&[2], vec![1i32, 2]).unwrap())).unwrap();
    let f32_2d = bpformat::to_vec(&Pytree::Tensor(
        Tensor::from_vec(&[1, 2], vec![1.0f32, 2.0]).unwrap(),
    ))
    .unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (chunked("81a13004", &[&f32x2, &f32x2]), ""), // valid: 4 elements
        (chunked("81a13005", &[&f32x2, &f32x2]), "needs"),
        (chunked("81a130ff", &[&f32x2]), "non-negative"),
        (chunked("c0", &[&f32x2]), "'shape' is not a map"),
        (chunked("81a13004", &[&f32x2, &i32x2]), "int32"),
        (chunked("81a13002", &[&f32_2d]), "1-d"),
        (chunked("81a13002", &[&hex("c0")]), "1-d"),
        (chunked("81a13000", &[]), "no chunks"),
        (
            chunked(
                "82a13000a131cf7fffffffffffffff",
                &[&bpformat::to_vec(&Pytree::Tensor(
                    Tensor::from_vec(&[0], Vec::<f32>::new()).unwrap(),
                ))
                .unwrap()],
            ),
            "too large",
        ),
    ];
    for (i, (b, want)) in cases.iter().enumerate() {
        match (bpformat::decode(b), *want) {
            (Ok(Pytree::Tensor(t)), "") => assert_eq!(t.shape(), &[4]),
            (
                Err(BpError::BadChunked {
                    reason, offset: 0, ..
                }),
                w,
            ) if !w.is_empty() => {
                assert!(reason.contains(w), "case {i}: {reason:?} lacks {w:?}")
            }
            (other, w) => panic!("case {i} ({w}): {other:?}"),
        }
    }
    // Missing entries.
    let mut b = hex("81");
    rmp::encode::write_str(&mut b, "__msgpack_chunked_array__").unwrap();
    b.push(0xc3);
    assert!(
        matches!(bpformat::decode(&b), Err(BpError::BadChunked { reason, .. }) if reason.contains("shape"))
    );
    let mut b = hex("82");
    rmp::encode::write_str(&mut b, "__msgpack_chunked_array__").unwrap();
    b.extend(hex("c3 a5 7368617065 81a13000"));
    assert!(
        matches!(bpformat::decode(&b), Err(BpError::BadChunked { reason, .. }) if reason.contains("chunks"))
    );
    let mut b = hex("83");
    rmp::encode::write_str(&mut b, "__msgpack_chunked_array__").unwrap();
    b.extend(hex("c3 a5 7368617065 81a13000 a6 6368756e6b73 c0"));
    assert!(
        matches!(bpformat::decode(&b), Err(BpError::BadChunked { reason, .. }) if reason.contains("'chunks' is not a map"))
    );
    // A chunked bool array with a bad byte.
    let bad_bool = {
        let mut p = hex("93 9101 a4 626f6f6c c401 07");
        let mut b = vec![0xc7, p.len() as u8, 1];
        b.append(&mut p);
        b
    };
    match bpformat::decode(&chunked("81a13001", &[&bad_bool])) {
        Err(BpError::InvalidBool { byte: 7, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn random_corruptions_never_panic() {
    // Flip, insert and delete bytes of a real file at many positions: any outcome but a panic.
    let base = fixture("synthetic_tree.bp");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..20_000 {
        let mut b = base.clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() as usize) % b.len();
            match next() % 3 {
                0 => b[at] = next() as u8,
                1 => b.insert(at, next() as u8),
                _ => {
                    b.remove(at);
                }
            }
        }
        let _ = bpformat::decode(&b);
    }
}
