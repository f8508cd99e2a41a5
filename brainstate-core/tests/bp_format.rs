//! The BrainPy format byte by byte: the reference's test vectors (brainpy.md 4.6), msgpack's
//! minimal header forms, every dtype, chunking, and what the reader accepts beyond BrainPy's own
//! output.

use brainstate_core::bpformat::{self, BpError, WriteOptions, MAX_CHUNK_SIZE};
use brainstate_core::{DType, Pytree, PytreeMap, Tensor, C128};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn roundtrip(tree: &Pytree) -> Vec<u8> {
    let bytes = bpformat::to_vec(tree).unwrap();
    assert_eq!(
        &bpformat::decode(&bytes).unwrap(),
        tree,
        "decode(write(tree)) == tree"
    );
    bytes
}

fn t<T: brainstate_core::Storable>(shape: &[usize], v: Vec<T>) -> Pytree {
    Pytree::Tensor(Tensor::from_vec(shape, v).unwrap())
}

#[test]
fn vector_one_float32_array() {
    let tree = Pytree::map().with("w", t(&[2], vec![1.0f32, 2.0]));
    let want = [
        &hex("81 a1 77 c7 15 01 93 91 02 a7")[..],
        b"float32",
        &hex("c4 08 00 00 80 3f 00 00 00 40"),
    ]
    .concat();
    assert_eq!(roundtrip(&tree), want);
}

#[test]
fn vector_python_scalars_and_a_list() {
    let tree = Pytree::map()
        .with("i", 1)
        .with("f", 0.5)
        .with("s", "ab")
        .with("n", Pytree::None)
        .with("t", true)
        .with("l", Pytree::List(vec![7.into(), "x".into()]));
    let want = hex("86a16901a166cb3fe0000000000000a173a26162a16ec0a174c3a16c82a13007a131a178");
    let bytes = bpformat::to_vec(&tree).unwrap();
    assert_eq!(bytes, want);
    // The list comes back as a map keyed "0", "1", as in BrainPy.
    let back = bpformat::decode(&bytes).unwrap();
    assert_eq!(
        back.at("l").unwrap().value(),
        &Pytree::map().with("0", 7).with("1", "x")
    );
    assert_eq!(bpformat::to_vec(&back).unwrap(), want);
}

#[test]
fn vector_int32_bool_and_0d() {
    let tree = Pytree::map()
        .with("m", t(&[2, 2], vec![1i32, 2, 3, 4]))
        .with("b", t(&[2], vec![true, false]))
        .with("z", Pytree::Tensor(Tensor::scalar(2.5f64)));
    let want = hex("83a16dc71c0193920202a5696e743332c41001000000020000000300000004000000a162c70c01939102a4626f6f6cc4020100a17ac714019390a7666c6f61743634c4080000000000000440");
    assert_eq!(roundtrip(&tree), want);
}

#[test]
fn vector_numpy_scalar_complex_and_empty() {
    let tree = Pytree::map()
        .with("sc", Pytree::Scalar(Tensor::scalar(1.5f32)))
        .with("c", C128::new(1.0, 2.0))
        .with("e", t(&[0], Vec::<f32>::new()));
    let want = hex("83a27363d8039390a7666c6f61743332c4040000c03fa163c7130292cb3ff0000000000000cb4000000000000000a165c70d01939100a7666c6f61743332c400");
    let bytes = roundtrip(&tree);
    assert_eq!(bytes, want);
    // A numpy scalar is not a 0-d array: both survive the round trip as what they were.
    let back = bpformat::decode(&bytes).unwrap();
    assert!(matches!(back.at("sc").unwrap().value(), Pytree::Scalar(_)));
    let zero_d = Pytree::map().with("sc", Pytree::Tensor(Tensor::scalar(1.5f32)));
    assert_ne!(
        bpformat::to_vec(&zero_d).unwrap(),
        bpformat::to_vec(&back).unwrap()
    );
}

#[test]
fn vector_float64_numpy_scalar_is_ext3_not_float() {
    let tree = Pytree::map().with("x", Pytree::Scalar(Tensor::scalar(2.0f64)));
    let bytes = roundtrip(&tree);
    assert_eq!(&bytes[..6], &hex("81 a1 78 c7 14 03")[..]);
}

#[test]
fn ints_use_the_smallest_form() {
    let cases: &[(i64, &str)] = &[
        (0, "00"),
        (127, "7f"),
        (128, "cc80"),
        (255, "ccff"),
        (256, "cd0100"),
        (65535, "cdffff"),
        (65536, "ce00010000"),
        (4294967295, "ceffffffff"),
        (4294967296, "cf0000000100000000"),
        (i64::MAX, "cf7fffffffffffffff"),
        (-1, "ff"),
        (-32, "e0"),
        (-33, "d0df"),
        (-128, "d080"),
        (-129, "d1ff7f"),
        (-32768, "d18000"),
        (-32769, "d2ffff7fff"),
        (-2147483648, "d280000000"),
        (-2147483649, "d3ffffffff7fffffff"),
        (i64::MIN, "d38000000000000000"),
    ];
    for &(v, h) in cases {
        assert_eq!(roundtrip(&Pytree::Int(v)), hex(h), "{v}");
    }
    assert_eq!(roundtrip(&Pytree::UInt(u64::MAX)), hex("cfffffffffffffffff"));
    // An int above i64::MAX reads back as UInt.
    assert_eq!(
        bpformat::decode(&hex("cf8000000000000000")).unwrap(),
        Pytree::UInt(1 << 63)
    );
}

#[test]
fn floats_are_always_float64() {
    assert_eq!(roundtrip(&Pytree::Float(0.5)), hex("cb3fe0000000000000"));
    assert_eq!(roundtrip(&Pytree::Float(-0.0)), hex("cb8000000000000000"));
    let nan = f64::from_bits(0x7ff8_0000_0000_0001);
    let b = bpformat::to_vec(&Pytree::Float(nan)).unwrap();
    assert_eq!(b, hex("cb7ff8000000000001"));
    let Pytree::Float(x) = bpformat::decode(&b).unwrap() else {
        panic!()
    };
    assert_eq!(x.to_bits(), nan.to_bits());
}

#[test]
fn str_bin_and_map_headers_are_minimal() {
    for (n, head) in [
        (0usize, "a0"),
        (31, "bf"),
        (32, "d920"),
        (255, "d9ff"),
        (256, "da0100"),
        (65536, "db00010000"),
    ] {
        let s = "x".repeat(n);
        let b = roundtrip(&Pytree::Str(s));
        assert_eq!(&b[..head.len() / 2], &hex(head)[..], "str of {n}");
        assert_eq!(b.len(), head.len() / 2 + n);
    }
    for (n, head) in [
        (0usize, "c400"),
        (255, "c4ff"),
        (256, "c50100"),
        (65536, "c600010000"),
    ] {
        let b = roundtrip(&Pytree::Bytes(vec![7; n]));
        assert_eq!(&b[..head.len() / 2], &hex(head)[..], "bin of {n}");
    }
    for (n, head) in [(0usize, "80"), (15, "8f"), (16, "de0010"), (65536, "df00010000")] {
        let m: PytreeMap = (0..n).map(|i| (format!("k{i}"), Pytree::None)).collect();
        let b = roundtrip(&Pytree::Map(m));
        assert_eq!(&b[..head.len() / 2], &hex(head)[..], "map of {n}");
    }
    // Non-ASCII keys and strings are UTF-8.
    let tree = Pytree::map().with("τ", "Δt = 0.1 ms");
    roundtrip(&tree);
}

#[test]
fn ext_headers_use_fixext_for_payloads_of_1_2_4_8_16() {
    // An ext-1 payload is 1 (array3) + 1 (shape header) + shape ints + 1 + name + bin header + data.
    // u8 scalar arrays of shape [] give 1 + 1 + 6 ("uint8" + header) + 2 + n bytes; choose n = 6
    // to get 16 (fixext16) and check the neighbours take ext8.
    let payload_len = |n: usize| 1 + 1 + 6 + 2 + n;
    for n in 0..12 {
        let tree = t(&[n], vec![1u8; n]);
        let b = roundtrip(&tree);
        let len = payload_len(n) + 1; // shape [n] adds one byte
        let want_marker = match len {
            16 => 0xd8,
            _ => 0xc7,
        };
        assert_eq!(b[0], want_marker, "u8[{n}]: payload {len}");
        assert_eq!(b.len(), len + if want_marker == 0xd8 { 2 } else { 3 });
    }
    // ext16 and ext32
    let b = roundtrip(&t(&[300], vec![0u8; 300]));
    assert_eq!(b[0], 0xc8);
    let b = roundtrip(&t(&[70000], vec![0u8; 70000]));
    assert_eq!(b[0], 0xc9);
}

#[test]
fn every_dtype_round_trips_with_its_numpy_name() {
    for d in DType::ALL {
        let n = 3 * d.itemsize();
        let bytes: Vec<u8> = (0..n)
            .map(|i| {
                if d == DType::Bool {
                    (i % 2) as u8
                } else {
                    (i as u8).wrapping_mul(37)
                }
            })
            .collect();
        let x = Tensor::from_le_bytes(d, &[3], &bytes).unwrap();
        let b = roundtrip(&Pytree::map().with("a", Pytree::Tensor(x.clone())));
        let name = d.name().as_bytes();
        assert!(b.windows(name.len()).any(|w| w == name), "{d}: name in file");
        assert!(b.ends_with(&bytes), "{d}: raw LE bytes at the end");
        let s = Tensor::from_le_bytes(d, &[], &bytes[..d.itemsize()]).unwrap();
        roundtrip(&Pytree::Scalar(s));
    }
}

#[test]
fn chunked_writes_at_any_threshold_and_reads_back() {
    let x = Tensor::from_vec(&[3, 5], (0..15).map(|i| i as f64).collect()).unwrap();
    for limit in [1usize, 7, 8, 16, 40, 119] {
        let tree = Pytree::map().with("big", Pytree::Tensor(x.clone())).with("n", 1);
        let b = bpformat::to_vec_with(
            &tree,
            &WriteOptions {
                max_chunk_bytes: limit,
            },
        )
        .unwrap();
        assert!(
            b.windows(25).any(|w| w == b"__msgpack_chunked_array__"),
            "limit {limit}"
        );
        let per = (limit / 8).max(1);
        let nchunks = 15usize.div_ceil(per);
        assert_eq!(
            bpformat::decode(&b).unwrap(),
            tree,
            "limit {limit}: {nchunks} chunks"
        );
    }
    // Exactly at the threshold: not chunked (BrainPy chunks only when strictly larger).
    let tree = Pytree::map().with("big", Pytree::Tensor(x.clone()));
    let b = bpformat::to_vec_with(&tree, &WriteOptions { max_chunk_bytes: 120 }).unwrap();
    assert!(!b.windows(25).any(|w| w == b"__msgpack_chunked_array__"));
    assert_eq!(WriteOptions::default().max_chunk_bytes, MAX_CHUNK_SIZE);
    assert_eq!(MAX_CHUNK_SIZE, 1 << 30);
}

/// Builds a chunked map by hand with the given chunk lengths (elements of f32).
fn chunked_map(shape: &[u64], chunks: &[Vec<f32>]) -> Vec<u8> {
    let mut b = vec![0x83];
    let put_str = |b: &mut Vec<u8>, s: &str| {
        rmp::encode::write_str(b, s).unwrap();
    };
    put_str(&mut b, "__msgpack_chunked_array__");
    b.push(0xc3);
    put_str(&mut b, "shape");
    rmp::encode::write_map_len(&mut b, shape.len() as u32).unwrap();
    for (i, d) in shape.iter().enumerate() {
        put_str(&mut b, &i.to_string());
        rmp::encode::write_uint(&mut b, *d).unwrap();
    }
    put_str(&mut b, "chunks");
    rmp::encode::write_map_len(&mut b, chunks.len() as u32).unwrap();
    for (i, c) in chunks.iter().enumerate() {
        put_str(&mut b, &i.to_string());
        let x = Pytree::Tensor(Tensor::from_vec(&[c.len()], c.clone()).unwrap());
        b.extend(bpformat::to_vec(&x).unwrap());
    }
    b
}

#[test]
fn chunked_arrays_read_at_any_chunk_size_and_position() {
    let all: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let want = Pytree::Tensor(Tensor::from_vec(&[3, 4], all.clone()).unwrap());
    for split in [vec![12], vec![1, 11], vec![5, 5, 2], vec![1; 12], vec![0, 12, 0]] {
        let mut chunks = Vec::new();
        let mut at = 0;
        for n in split {
            chunks.push(all[at..at + n].to_vec());
            at += n;
        }
        let b = chunked_map(&[3, 4], &chunks);
        assert_eq!(bpformat::decode(&b).unwrap(), want, "top level");
        // as a map value, nested
        let mut nested = hex("81 a1 61 81 a1 62");
        nested.extend(&b);
        let tree = bpformat::decode(&nested).unwrap();
        assert_eq!(tree.at("a/b").unwrap().value(), &want);
    }
    // Inside a msgpack array BrainPy does not join chunks: the map stays a map.
    let mut in_list = vec![0x91];
    in_list.extend(chunked_map(&[2], &[vec![1.0, 2.0]]));
    let tree = bpformat::decode(&in_list).unwrap();
    let Pytree::List(items) = tree else { panic!("list") };
    assert!(matches!(&items[0], Pytree::Map(m) if m.contains_key("__msgpack_chunked_array__")));
}

#[test]
fn reader_accepts_what_msgpack_allows_beyond_brainpys_output() {
    // float32 values read as floats (as msgpack-python does)
    assert_eq!(bpformat::decode(&hex("ca3fc00000")).unwrap(), Pytree::Float(1.5));
    // msgpack arrays read as lists
    assert_eq!(
        bpformat::decode(&hex("920102")).unwrap(),
        Pytree::List(vec![Pytree::Int(1), Pytree::Int(2)])
    );
    // non-minimal headers: int 1 as uint64, "a" as str32, map as map32, bin as bin32
    assert_eq!(
        bpformat::decode(&hex("cf0000000000000001")).unwrap(),
        Pytree::Int(1)
    );
    assert_eq!(
        bpformat::decode(&hex("d300000000000000ff")).unwrap(),
        Pytree::Int(255)
    );
    assert_eq!(bpformat::decode(&hex("d1ffff")).unwrap(), Pytree::Int(-1));
    assert_eq!(
        bpformat::decode(&hex("df00000001 db0000000161 c6000000020102")).unwrap(),
        Pytree::map().with("a", Pytree::Bytes(vec![1, 2]))
    );
    // dtype name as bin (as a raw-bytes writer would store it), ext as ext32, shape as array16
    let mut payload = hex("dc0001 02");
    payload.extend(hex("c4 07"));
    payload.extend(b"float32");
    payload.extend(hex("c4 08 0000803f 00000040"));
    let mut b = vec![0xc9];
    b.extend(((payload.len() + 1) as u32).to_be_bytes());
    b.push(1);
    b.push(0x93);
    b.extend(&payload);
    assert_eq!(bpformat::decode(&b).unwrap(), t(&[2], vec![1.0f32, 2.0]));
    // complex parts as float32
    assert_eq!(
        bpformat::decode(&hex("c70b0292ca3f800000ca40000000")).unwrap(),
        Pytree::Complex(C128::new(1.0, 2.0))
    );
}

#[test]
fn looks_like_recognises_brainpy_files_only() {
    for f in [
        "ex1_state_dict.bp",
        "ex2_training_ckpt.bp",
        "toplevel_array.bp",
        "chunked_toplevel_maxchunk64.bp",
    ] {
        let b = std::fs::read(format!(
            "{}/tests/fixtures/brainpy/{f}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        for n in [1, 2, 8, 64] {
            assert!(bpformat::looks_like(&b[..n.min(b.len())]), "{f} prefix {n}");
        }
    }
    assert!(bpformat::looks_like(&hex("80")), "empty map");
    assert!(bpformat::looks_like(&roundtrip(&Pytree::Complex(C128::new(
        1.0, 0.0
    )))));
    assert!(!bpformat::looks_like(b""));
    assert!(!bpformat::looks_like(&hex("d9d9f7a1")), "self-described CBOR");
    assert!(!bpformat::looks_like(&hex("a2616101")), "CBOR map");
    assert!(!bpformat::looks_like(b"PK\x03\x04"), "zip/npz");
    assert!(
        !bpformat::looks_like(&hex("8500000000000000 7b")),
        "safetensors with a 133-byte header"
    );
    assert!(!bpformat::looks_like(&hex("8101")), "map with an int key");
    assert!(!bpformat::looks_like(&hex("c70105")), "ext of unknown type");
    assert!(
        !bpformat::looks_like(&hex("c0")),
        "a bare nil is a file, but not one of a tree"
    );
}

#[test]
fn writer_errors_are_typed() {
    // A numpy scalar must be 0-d.
    let bad = Pytree::map().with(
        "s",
        Pytree::Scalar(Tensor::from_vec(&[2], vec![1i32, 2]).unwrap()),
    );
    match bpformat::to_vec(&bad) {
        Err(BpError::ScalarNotZeroD { path, shape }) => {
            assert_eq!(path, "s");
            assert_eq!(shape, vec![2]);
        }
        other => panic!("{other:?}"),
    }
    // Too deep to be read back.
    let mut deep = Pytree::None;
    for _ in 0..bpformat::MAX_DEPTH + 1 {
        deep = Pytree::List(vec![deep]);
    }
    assert!(matches!(bpformat::to_vec(&deep), Err(BpError::TooDeep { .. })));
    let mut ok = Pytree::None;
    for _ in 0..bpformat::MAX_DEPTH {
        ok = Pytree::Map(PytreeMap::from_iter([("k".to_string(), ok)]));
    }
    roundtrip(&ok);
    // A failing writer.
    struct Fail;
    impl std::io::Write for Fail {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::Error::other("disk full"))
        }
    }
    let e = bpformat::write_to(&Pytree::map().with("a", 1), &mut Fail).unwrap_err();
    assert!(matches!(e, BpError::Io(_)), "{e}");
    // More than msgpack's 2^32 - 1 bytes in one ext: refused before writing anything (the 4 GiB
    // zero buffer is never touched, so no memory is used for it).
    let huge = Tensor::zeros(DType::U8, &[1 << 32]).unwrap();
    let mut out = Vec::new();
    let e = bpformat::write_to_with(
        &Pytree::map().with("h", Pytree::Tensor(huge)),
        &mut out,
        &WriteOptions {
            max_chunk_bytes: usize::MAX,
        },
    )
    .unwrap_err();
    assert!(
        matches!(e, BpError::TooLarge { ref path, .. } if path == "h"),
        "{e}"
    );
}
