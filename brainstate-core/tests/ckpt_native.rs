//! Native format: round trips, determinism, layout, and the bad-input sweeps (D.2).

mod common_ckpt;
use brainstate_core::ckpt::native::{self, decode, encode};
use brainstate_core::ckpt::FormatError;
use brainstate_core::{pytree, DType, Pytree, Tensor};
use common_ckpt::*;

/// Decodes through both readers (from memory, and streamed as from a file) and checks that
/// they agree on success or failure.
fn decode_both(bytes: &[u8]) -> Result<Pytree, FormatError> {
    let a = decode(bytes);
    let b = native::read(&mut std::io::Cursor::new(bytes), bytes.len() as u64, None);
    assert_eq!(a.is_ok(), b.is_ok(), "slice: {a:?}\nstream: {b:?}");
    if let (Ok(x), Ok(y)) = (&a, &b) {
        assert!(same(x, y));
    }
    a
}

#[test]
fn every_kind_round_trips_bitwise() {
    let t = every_kind();
    let bytes = encode(&t).unwrap();
    let back = decode_both(&bytes).unwrap();
    assert!(same(&t, &back), "round trip differs:\n{t}\n{back}");
    // Order of map keys is kept (not sorted).
    let keys: Vec<_> = back
        .get("zkey_order")
        .unwrap()
        .map()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, ["b", "a", "aa"]);
    assert!(matches!(back.get("uint_small").unwrap().value(), Pytree::UInt(5)));
    assert!(matches!(
        back.get("np_scalar_f32").unwrap().value(),
        Pytree::Scalar(_)
    ));
    assert!(matches!(
        back.get("edge").unwrap().get("zero_d").unwrap().value(),
        Pytree::Tensor(_)
    ));
}

#[test]
fn same_tree_gives_same_bytes() {
    let a = encode(&every_kind()).unwrap();
    let b = encode(&every_kind().clone()).unwrap();
    assert_eq!(a, b);
    assert_eq!(encode(&tutorial()).unwrap(), encode(&tutorial()).unwrap());
}

#[test]
fn layout_magic_alignment_and_typed_array_tags() {
    let t = pytree! {
        "a" => Tensor::from_vec(&[3], vec![1.0f32, 2.0, 3.0]).unwrap(),
        "b" => tensor(DType::BF16, &[5], 3),
        "c" => tensor(DType::I64, &[2, 2], 4),
    };
    let bytes = encode(&t).unwrap();
    assert_eq!(&bytes[..3], &[0xd9, 0xd9, 0xf7]);
    let (h, _) = native::read_header(&mut std::io::Cursor::new(&bytes), bytes.len() as u64).unwrap();
    assert_eq!(h.align, 64);
    assert_eq!(h.data_base % 64, 0);
    assert_eq!(h.tensors.len(), 3);
    for (e, (name, tag)) in h
        .tensors
        .iter()
        .zip([("a", Some(85u8)), ("b", None), ("c", Some(79))])
    {
        let start = (h.data_base + e.off) as usize;
        assert_eq!(start % 64, 0, "{name} unaligned");
        let t = t.get(name).unwrap().tensor().unwrap();
        assert_eq!(&bytes[start..start + e.len as usize], &*t.le_bytes());
        assert_eq!(e.crc32c, crc32c::crc32c(&t.le_bytes()));
        // The byte-string head (1 byte for < 24 bytes) and the tag just before it.
        let head: Vec<u8> = if e.len < 24 {
            vec![0x40 | e.len as u8]
        } else {
            vec![0x58, e.len as u8]
        };
        let hs = start - head.len();
        assert_eq!(&bytes[hs..start], &head[..]);
        match tag {
            Some(tag) => assert_eq!(&bytes[hs - 2..hs], &[0xd8, tag]),
            None => assert_ne!(bytes[hs - 2], 0xd8),
        }
    }
}

#[test]
fn generic_cbor_decoder_reads_the_sequence() {
    // ciborium's generic Value decoder sees header, padding, payloads and trailer as items.
    let bytes = encode(&tutorial()).unwrap();
    let mut r = &bytes[..];
    let mut items = Vec::new();
    while !r.is_empty() {
        let v: ciborium::Value = ciborium::de::from_reader(&mut r).unwrap();
        items.push(v);
    }
    assert!(matches!(&items[0], ciborium::Value::Tag(55799, _)));
    let last = items.last().unwrap().as_map().unwrap();
    assert!(last
        .iter()
        .any(|(k, v)| k.as_text() == Some("end") && v.as_text() == Some("brainstate-ckpt")));
}

#[test]
fn padding_items_have_the_exact_size() {
    for g in 0..5000usize {
        let mut v = Vec::new();
        native::push_padding(&mut v, g);
        assert_eq!(v.len(), g, "gap {g}");
        let mut r = &v[..];
        while !r.is_empty() {
            let item: ciborium::Value = ciborium::de::from_reader(&mut r).unwrap();
            assert!(item.as_bytes().unwrap().iter().all(|&b| b == 0));
        }
    }
}

#[test]
fn align_4096_round_trips() {
    let t = tutorial();
    let plan = native::Plan::new(&t, None, 4096).unwrap();
    let bytes = plan.to_vec();
    let (h, _) = native::read_header(&mut std::io::Cursor::new(&bytes), bytes.len() as u64).unwrap();
    assert!(h.tensors.iter().all(|e| (h.data_base + e.off) % 4096 == 0));
    assert!(same(&decode(&bytes).unwrap(), &t));
    assert!(matches!(
        native::Plan::new(&t, None, 48),
        Err(native::EncodeError::BadAlign(48))
    ));
}

#[test]
fn writer_refuses_what_readers_reject() {
    let mut deep = Pytree::Int(1);
    for _ in 0..100 {
        deep = Pytree::List(vec![deep]);
    }
    assert!(matches!(encode(&deep), Err(native::EncodeError::TooDeep { .. })));
    let bad_scalar = pytree! { "s" => Pytree::Scalar(tensor(DType::F32, &[2], 0)) };
    assert!(matches!(
        encode(&bad_scalar),
        Err(native::EncodeError::ScalarNotZeroD { .. })
    ));
}

// ------------------------------------------------------------------ bad input (D.2)

fn small_file() -> Vec<u8> {
    pytree! {
        "w" => tensor(DType::F32, &[4], 1),
        "b" => tensor(DType::Bool, &[3], 2),
        "n" => 3,
        "s" => "x",
    }
    .pipe(|t| encode(&t).unwrap())
}

/// A small file whose tensor entries repeat one dtype and shape (as runs of layers do): the
/// reader matches each entry against the previous one's bytes, a path of its own.
fn small_file_repeated() -> Vec<u8> {
    pytree! {
        "a" => tensor(DType::F32, &[4], 1),
        "b" => tensor(DType::F32, &[4], 2),
        "c" => tensor(DType::F32, &[4], 3),
        "d" => tensor(DType::I32, &[2, 2], 4),
        "e" => tensor(DType::I32, &[2, 2], 5),
    }
    .pipe(|t| encode(&t).unwrap())
}

trait Pipe: Sized {
    fn pipe<R>(self, f: impl FnOnce(Self) -> R) -> R {
        f(self)
    }
}
impl<T> Pipe for T {}

#[test]
fn every_truncation_is_a_typed_error() {
    for bytes in [small_file(), small_file_repeated()] {
        for n in 0..bytes.len() {
            let e = decode_both(&bytes[..n]).expect_err(&format!("prefix of {n} bytes loaded"));
            let _ = e.to_string();
        }
        assert!(decode(&bytes).is_ok());
    }
    assert!(matches!(decode(&[]), Err(FormatError::BadMagic)));
}

#[test]
fn trailing_garbage_is_rejected() {
    let mut bytes = small_file();
    bytes.push(0);
    assert!(matches!(
        decode(&bytes),
        Err(FormatError::TrailingData { .. }) | Err(FormatError::BadTrailer { .. })
    ));
}

#[test]
fn every_single_bit_flip_is_caught() {
    every_single_bit_flip_is_caught_in(small_file());
    every_single_bit_flip_is_caught_in(small_file_repeated());
}

fn every_single_bit_flip_is_caught_in(bytes: Vec<u8>) {
    let (h, _) = native::read_header(&mut std::io::Cursor::new(&bytes), bytes.len() as u64).unwrap();
    let payload_w = (h.data_base + h.tensors[0].off) as usize;
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            let e = decode_both(&b).expect_err(&format!("flip of bit {bit} at byte {i} went unnoticed"));
            let name = format!("{e:?}");
            *kinds
                .entry(name.split([' ', '{', '(']).next().unwrap().to_string())
                .or_default() += 1;
            if (payload_w..payload_w + 16).contains(&i) {
                assert!(
                    matches!(e, FormatError::Checksum { index: 0, .. }),
                    "payload flip: {e:?}"
                );
            }
        }
    }
    assert!(
        kinds.contains_key("Checksum") && kinds.contains_key("HeaderChecksum"),
        "{kinds:?}"
    );
}

/// Builds a file by hand from a header map body (after the map head) without the tree's
/// help: a header item, padding to 64 and a trailer whose hcrc is right.
fn hand_file(header_body: &[u8], nkeys: u8, payload: &[u8], n: u8) -> Vec<u8> {
    let mut h = vec![0xd9, 0xd9, 0xf7, 0xa0 | nkeys];
    h.extend_from_slice(header_body);
    let hcrc = crc32c::crc32c(&h);
    let mut f = h.clone();
    let b = f.len().div_ceil(64) * 64;
    native::push_padding(&mut f, b - h.len());
    f.extend_from_slice(payload);
    let datalen = payload.len() as u64;
    f.extend_from_slice(&[0xa4, 0x61, b'n', n, 0x63, b'e', b'n', b'd', 0x6f]);
    f.extend_from_slice(b"brainstate-ckpt");
    f.extend_from_slice(&[0x64, b'h', b'c', b'r', b'c', 0x1a]);
    f.extend_from_slice(&hcrc.to_be_bytes());
    f.extend_from_slice(&[0x67]);
    f.extend_from_slice(b"datalen");
    f.push(0x1b);
    f.extend_from_slice(&datalen.to_be_bytes());
    f
}

fn text(s: &str) -> Vec<u8> {
    let mut v = vec![0x60 | s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

/// Ends a header body with `align = 64` and `tensors` = the CBOR array `tensors` (head and
/// entries).
fn align_and_tensors(body: &mut Vec<u8>, tensors: &[u8]) {
    body.extend(text("align"));
    body.extend([0x18, 64]);
    body.extend(text("tensors"));
    body.extend_from_slice(tensors);
}

fn header_prefix(major: u8) -> Vec<u8> {
    let mut v = text("fmt");
    v.extend(text("brainstate-ckpt"));
    v.extend(text("ver"));
    v.extend([0x82, major, 0]);
    v
}

#[test]
fn hand_built_valid_file_loads() {
    // fmt, ver, tree = 7, align = 64, tensors = [] -> loads as Int(7).
    let mut body = header_prefix(1);
    body.extend(text("tree"));
    body.push(7);
    align_and_tensors(&mut body, &[0x80]);
    let f = hand_file(&body, 5, &[], 0);
    assert_eq!(decode(&f).unwrap(), Pytree::Int(7));
}

#[test]
fn newer_major_version_is_a_clear_error() {
    let mut body = header_prefix(2);
    body.extend(text("tree"));
    body.push(7);
    let f = hand_file(&body, 3, &[], 0);
    let e = decode(&f).unwrap_err();
    assert_eq!(e, FormatError::UnsupportedVersion { major: 2, minor: 0 });
    assert!(e.to_string().contains("written by format version 2.0"), "{e}");
}

#[test]
fn newer_minor_with_unknown_keys_loads() {
    let mut body = header_prefix(1);
    let last = body.len() - 1;
    body[last] = 7; // ver [1, 7]
    body.extend(text("tree"));
    body.push(7);
    body.extend(text("zz_future"));
    body.push(0xf5);
    align_and_tensors(&mut body, &[0x80]);
    assert_eq!(decode(&hand_file(&body, 6, &[], 0)).unwrap(), Pytree::Int(7));
}

#[test]
fn indefinite_length_items_are_syntax_errors() {
    // Bytes, text, array and map of indefinite length, as a tree value and (text) as a map key.
    for (bad, as_key) in [
        (&[0x5f, 0xff][..], false),
        (&[0x7f, 0xff][..], false),
        (&[0x9f, 0xff][..], false),
        (&[0xbf, 0xff][..], false),
        (&[0xa1, 0x7f, 0xff, 0x00][..], true),
    ] {
        let mut body = header_prefix(1);
        body.extend(text("tree"));
        body.extend_from_slice(bad);
        align_and_tensors(&mut body, &[0x80]);
        let e = decode_both(&hand_file(&body, 5, &[], 0)).unwrap_err();
        assert!(
            matches!(e, FormatError::Syntax { .. }) && e.to_string().contains("indefinite-length"),
            "{bad:x?} (key: {as_key}): {e}"
        );
    }
}

fn with_tensor_entry(entry: &[u8], tree: &[u8]) -> Vec<u8> {
    let mut body = header_prefix(1);
    body.extend(text("tree"));
    body.extend_from_slice(tree);
    align_and_tensors(&mut body, &[&[0x81][..], entry].concat());
    hand_file(&body, 5, &[0u8; 64], 1)
}

fn entry(dtype: &str, shape: &[u8], len_head: &[u8]) -> Vec<u8> {
    let mut e = vec![0xa5];
    e.extend(text("len"));
    e.extend_from_slice(len_head);
    e.extend(text("off"));
    e.extend([0x18, 64]);
    e.extend(text("dtype"));
    e.extend(text(dtype));
    e.extend(text("shape"));
    e.push(0x80 | shape.len() as u8);
    e.extend_from_slice(shape);
    e.extend(text("crc32c"));
    e.push(0);
    e
}

const TREE_REF0: [u8; 4] = [0xd9, 0xb3, 0xb0, 0x00]; // tag 46000 (0xb3b0), index 0

#[test]
fn unknown_dtype_is_typed() {
    let f = with_tensor_entry(&entry("float8_e4m3fn", &[4], &[4]), &TREE_REF0);
    assert_eq!(
        decode(&f).unwrap_err(),
        FormatError::UnknownDtype {
            index: 0,
            name: "float8_e4m3fn".into()
        }
    );
}

#[test]
fn hostile_lengths_are_rejected_before_allocating() {
    // A tensor claiming 2^32 .. 2^64-1 bytes, with a shape to match.
    for (shape, len) in [
        (
            vec![0x1b, 0, 0, 0, 1, 0, 0, 0, 0],
            vec![0x1b, 0, 0, 0, 1, 0, 0, 0, 0],
        ),
        (
            vec![0x1b, 0, 0, 0, 1, 0, 0, 0, 0, 0x1b, 0, 0, 0, 1, 0, 0, 0, 0],
            vec![0x1b, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
        (
            vec![0x1b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            vec![0x1b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ),
        (
            vec![0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            vec![0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ),
    ] {
        let ndim = if shape.len() == 18 { 2 } else { 1 };
        let mut e = entry("uint8", &[], &len);
        // Patch the shape in place: rebuild with the dims.
        let at = e.windows(6).position(|w| w == b"eshape").unwrap() + 6;
        e[at] = 0x80 | ndim;
        e.splice(at + 1..at + 1, shape.iter().copied());
        let err = decode(&with_tensor_entry(&e, &TREE_REF0)).unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::TooLarge { .. }
                    | FormatError::BadShape { .. }
                    | FormatError::LengthMismatch { .. }
            ),
            "{err:?}"
        );
    }
    // Hostile byte-string, text, array and map lengths inside the header.
    for head in [
        vec![0x5a, 0xff, 0xff, 0xff, 0xff],
        vec![0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0x7b, 0x80, 0, 0, 0, 0, 0, 0, 0],
        vec![0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0xbb, 0x80, 0, 0, 0, 0, 0, 0, 0],
        vec![0x9b, 0, 0, 0, 1, 0, 0, 0, 0], // array of 2^32 items
    ] {
        let mut body = header_prefix(1);
        body.extend(text("tree"));
        body.extend_from_slice(&head);
        let f = hand_file(&body, 3, &[], 0);
        let err = decode(&f).unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::Truncated { .. } | FormatError::Syntax { .. } | FormatError::NonTextKey { .. }
            ),
            "{head:x?}: {err:?}"
        );
    }
}

#[test]
fn nesting_100000_deep_is_rejected() {
    for open in [0x81u8, 0xa1, 0xc6] {
        let mut body = header_prefix(1);
        body.extend(text("tree"));
        for _ in 0..100_000 {
            if open == 0xa1 {
                body.push(0xa1);
                body.extend(text("k"));
            } else {
                body.push(open);
            }
        }
        body.push(0);
        let err = decode(&hand_file(&body, 3, &[], 0)).unwrap_err();
        assert!(matches!(err, FormatError::TooDeep { limit: 64, .. }), "{err:?}");
    }
}

#[test]
fn duplicate_keys_are_rejected_everywhere() {
    // In the header.
    let mut body = header_prefix(1);
    body.extend(text("fmt"));
    body.extend(text("brainstate-ckpt"));
    let err = decode(&hand_file(&body, 3, &[], 0)).unwrap_err();
    assert!(
        matches!(err, FormatError::DuplicateKey { ref key, .. } if key == "fmt"),
        "{err:?}"
    );
    // In the tree.
    let mut tree = vec![0xa2];
    tree.extend(text("a"));
    tree.push(1);
    tree.extend(text("a"));
    tree.push(2);
    let mut body = header_prefix(1);
    body.extend(text("tree"));
    body.extend(tree);
    let err = decode(&hand_file(&body, 3, &[], 0)).unwrap_err();
    assert!(
        matches!(err, FormatError::DuplicateKey { ref key, .. } if key == "a"),
        "{err:?}"
    );
}

#[test]
fn non_text_keys_and_bad_utf8_are_rejected() {
    let mut body = header_prefix(1);
    body.extend(text("tree"));
    body.extend([0xa1, 0xf9, 0x7e, 0x00, 0x01]); // {NaN: 1}
    assert!(matches!(
        decode(&hand_file(&body, 3, &[], 0)),
        Err(FormatError::NonTextKey { .. })
    ));
    let mut body = header_prefix(1);
    body.extend(text("tree"));
    body.extend([0x62, 0xff, 0xfe]);
    assert!(matches!(
        decode(&hand_file(&body, 3, &[], 0)),
        Err(FormatError::Syntax { .. })
    ));
}

#[test]
fn other_formats_are_not_native() {
    // BrainPy msgpack (reference vector), safetensors, a zip, npy, random bytes.
    let bp = hex("81a177c71501939102a7666c6f617433320c40800000803f00000040");
    let st = {
        let mut v = 10u64.to_le_bytes().to_vec();
        v.extend(b"{}        ");
        v
    };
    for f in [
        bp,
        st,
        b"PK\x03\x04rest".to_vec(),
        b"\x93NUMPY\x01\x00".to_vec(),
        vec![0xd9, 0xd9],
    ] {
        assert!(matches!(decode(&f), Err(FormatError::BadMagic)), "{f:x?}");
    }
    // Self-described CBOR that is not ours.
    let other = [0xd9, 0xd9, 0xf7, 0xa1, 0x63, b'f', b'm', b't', 0x61, b'x'];
    assert_eq!(decode(&other).unwrap_err(), FormatError::NotNative);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn inconsistent_tensor_entries_are_rejected() {
    // len does not match shape x itemsize.
    let f = with_tensor_entry(&entry("float32", &[4], &[15]), &TREE_REF0);
    assert!(matches!(
        decode(&f),
        Err(FormatError::LengthMismatch {
            index: 0,
            expected: 16,
            found: 15
        })
    ));
    // Tree refers to a tensor that does not exist / tensor unreferenced / wrong CRC.
    let f = with_tensor_entry(&entry("uint8", &[4], &[4]), &[0xd9, 0xb3, 0xb0, 0x05]);
    assert!(matches!(
        decode(&f),
        Err(FormatError::BadTensorRef { index: 5, .. })
            | Err(FormatError::BadPadding { .. })
            | Err(FormatError::Checksum { .. })
    ));
    // Unknown tag in the tree.
    let mut body = header_prefix(1);
    body.extend(text("tree"));
    body.extend([0xd9, 0x12, 0x34, 0x00]);
    align_and_tensors(&mut body, &[0x80]);
    assert_eq!(
        decode(&hand_file(&body, 5, &[], 0)).unwrap_err(),
        FormatError::UnknownTag { tag: 0x1234 }
    );
    // Wrong alignment value.
    let mut body = header_prefix(1);
    body.extend(text("tree"));
    body.push(0);
    body.extend(text("align"));
    body.push(3);
    body.extend(text("tensors"));
    body.push(0x80);
    assert_eq!(
        decode(&hand_file(&body, 5, &[], 0)).unwrap_err(),
        FormatError::BadAlign { align: 3 }
    );
    // Missing key.
    let mut body = header_prefix(1);
    body.extend(text("tree"));
    body.push(0);
    assert!(matches!(
        decode(&hand_file(&body, 3, &[], 0)),
        Err(FormatError::MissingKey { key: "align", .. })
    ));
}

#[test]
fn bool_payload_must_be_zero_or_one() {
    // A hand-built file whose bool payload byte is 2 with a matching CRC (a hostile writer).
    let mut e = entry("bool", &[1], &[1]);
    e.pop(); // crc32c 0
    e.push(0x1a);
    e.extend_from_slice(&crc32c::crc32c(&[2]).to_be_bytes());
    let mut body = header_prefix(1);
    body.extend(text("tree"));
    body.extend_from_slice(&TREE_REF0);
    align_and_tensors(&mut body, &[&[0x81][..], &e].concat());
    let mut payload = Vec::new();
    native::push_padding(&mut payload, 63);
    payload.extend([0x41, 2]);
    let f = hand_file(&body, 5, &payload, 1);
    let err = decode_both(&f).unwrap_err();
    assert!(matches!(err, FormatError::Tensor { index: 0, .. }), "{err:?}");
    assert!(err.to_string().contains("invalid bool byte 0x02"), "{err}");
}

#[test]
fn random_inputs_never_panic() {
    // Deterministic xorshift: mutate bytes of a valid file and feed garbage of every length.
    let base = encode(&every_kind()).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let mut b = base.clone();
        for _ in 0..(next() % 8 + 1) {
            let i = (next() as usize) % b.len();
            b[i] = next() as u8;
        }
        let cut = (next() as usize) % (b.len() + 1);
        let _ = decode_both(&b[..cut.max(b.len() / 2)]);
        let _ = decode_both(&b);
    }
}

#[test]
fn two_thread_decode_matches_one_thread() {
    // Enough tensors and bytes (about 9 MB) for the split; errors in either half (or both)
    // are the same as with one thread: the lowest index wins.
    let mut t = Pytree::map();
    for i in 0..3000usize {
        t = t.with(
            format!("t{i}"),
            tensor(DType::F32, &[i % 7 + 740], (i % 251) as u8),
        );
    }
    let bytes = encode(&t).unwrap();
    assert!(same(&native::decode_threads(&bytes, 2).unwrap(), &t));
    let (h, _) = native::read_header(&mut std::io::Cursor::new(&bytes), bytes.len() as u64).unwrap();
    let at = |i: usize| (h.data_base + h.tensors[i].off) as usize;
    for flips in [vec![2900], vec![10], vec![100, 2900], vec![1499, 1500, 1501]] {
        let mut b = bytes.clone();
        for &i in &flips {
            b[at(i)] ^= 1;
        }
        let one = native::decode_threads(&b, 1).unwrap_err();
        let two = native::decode_threads(&b, 2).unwrap_err();
        assert_eq!(one, two, "{flips:?}");
        assert!(
            matches!(one, FormatError::Checksum { index, .. } if index == flips[0]),
            "{one:?}"
        );
    }
}

#[test]
fn many_small_tensors_decode_and_any_damage_is_one_error() {
    // Many tensors (600) of mixed dtypes and shapes, too few bytes for the split: the direct
    // decode, whatever the threads allowed, gives the same tree from a valid file and, from a
    // damaged one (a bit flipped anywhere: header, tree, entries, payloads, trailer), the same
    // error as the general decode.
    let mut groups = brainstate_core::PytreeMap::default();
    for i in 0..600usize {
        let x = match i % 5 {
            0 => Pytree::Scalar(Tensor::scalar(i as f64)),
            1 => Pytree::Tensor(tensor(DType::Bool, &[i % 3 + 1], (i % 2) as u8)),
            2 => Pytree::Tensor(tensor(DType::I16, &[2, i % 4 + 1], i as u8)),
            _ => Pytree::Tensor(tensor(DType::F32, &[i % 9 + 1], i as u8)),
        };
        let group = groups
            .entry(format!("g{}", i / 50))
            .or_insert_with(|| Pytree::List(Vec::new()));
        if let Pytree::List(l) = group {
            l.push(x);
        }
    }
    let t = Pytree::Map(groups);
    let bytes = encode(&t).unwrap();
    assert!(same(&native::decode_threads(&bytes, 2).unwrap(), &t));
    for bit in (0..bytes.len() * 8).step_by(397) {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let one = decode_both(&b);
        let two = native::decode_threads(&b, 2);
        match (&one, &two) {
            (Err(x), Err(y)) => assert_eq!(x, y, "bit {bit}"),
            _ => panic!("bit {bit}: one thread {one:?}, two {two:?}"),
        }
    }
}

#[test]
fn unused_simple_values_and_stray_breaks_are_syntax_errors() {
    // In the tree (the direct tree parser) and in an unknown header key (the generic one):
    // simple(16), undefined (0xf7) and a stray break (0xff), each a typed error naming it.
    for (bad, what) in [
        (&[0xf0][..], "simple value 16"),
        (&[0xf7], "simple value 23"),
        (&[0xff], "unexpected break"),
    ] {
        for in_tree in [true, false] {
            let mut body = header_prefix(1);
            body.extend(text("tree"));
            if in_tree {
                body.extend([0x81]); // [bad]
                body.extend(bad);
            } else {
                body.push(7);
                body.extend(text("zz_future"));
                body.extend(bad);
            }
            align_and_tensors(&mut body, &[0x80]);
            let f = hand_file(&body, if in_tree { 5 } else { 6 }, &[], 0);
            let e = decode_both(&f).unwrap_err();
            assert!(
                matches!(e, FormatError::Syntax { .. }) && e.to_string().contains(what),
                "{bad:x?} in tree {in_tree}: {e}"
            );
        }
    }
}
