//! Regression tests of issue 17 for the pickle reader: forged lengths, shapes, item sizes,
//! nesting and memo references are errors naming the value — never a panic, a stack overflow
//! or an out-of-memory abort — and protocol 0 text is decoded as Python writes it.

use modbal_text::pickle::{copy_budget, loads, Value, MAX_DEPTH};
use modbal_text::{CmuMosei, CmuMoseiConfig};

/// `numpy._core.numeric._frombuffer(data, numpy.dtype(descr), shape, 'C')` at protocol 5 (the
/// way NumPy pickles an array with in-band buffers); `shape`: the opcodes pushing the shape.
fn frombuffer(descr: &str, shape: &[u8], data: &[u8]) -> Vec<u8> {
    let mut b = b"\x80\x05\x8c\x13numpy._core.numeric\x8c\x0b_frombuffer\x93(\x96".to_vec();
    b.extend((data.len() as u64).to_le_bytes());
    b.extend(data);
    b.extend(b"\x8c\x05numpy\x8c\x05dtype\x93\x8c");
    b.push(descr.len() as u8);
    b.extend(descr.as_bytes());
    b.extend(b"\x89\x88\x87R");
    b.extend(shape);
    b.extend(b"\x8c\x01CtR.");
    b
}

fn array(v: &Value) -> &modbal_text::pickle::NdArray {
    match v {
        Value::Array(a) => a,
        other => panic!("not an array: {}", other.kind()),
    }
}

#[test]
fn a_valid_frombuffer_array_reads() {
    let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let v = loads(&frombuffer("<f4", b"K\x02K\x03\x86", &data)).unwrap();
    assert_eq!(array(&v).shape, vec![2, 3]);
    assert_eq!(
        array(&v).to_f32().unwrap(),
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );
}

#[test]
fn item_sizes_above_8_or_0_are_errors() {
    // 16-byte floats used to overflow the 8-byte conversion buffer; size 0 made
    // `chunks_exact(0)` panic.
    let v = loads(&frombuffer("<f16", b"K\x01\x85", &[0u8; 16])).unwrap();
    assert_eq!(array(&v).to_f32().unwrap_err(), "unsupported dtype <f16");
    let v = loads(&frombuffer("<f0", b"K\x01\x85", &[])).unwrap();
    assert_eq!(array(&v).to_f32().unwrap_err(), "unsupported dtype <f0");
    // A unicode item size whose ×4 overflows.
    let e = loads(&frombuffer("<U9223372036854775807", b"K\x01\x85", &[])).unwrap_err();
    assert!(
        e.contains("U9223372036854775807") && e.contains("overflows"),
        "{e}"
    );
}

#[test]
fn forged_shapes_are_named() {
    // A negative shape (LONG1 0xff = -1) used to become 2^64 − 1.
    let e = loads(&frombuffer("<f4", b"\x8a\x01\xff\x85", &[0u8; 4])).unwrap_err();
    assert_eq!(e, "array shape entry -1 is negative");
    let e = loads(&frombuffer("<f4", b"\x8a\x01\xff", &[0u8; 4])).unwrap_err();
    assert_eq!(e, "array shape -1 is negative");
    // 2^62 × 4 elements of 4 bytes: the byte count wraps to 0 in unchecked arithmetic.
    let mut shape = b"\x8a\x08".to_vec();
    shape.extend((1u64 << 62).to_le_bytes());
    shape.extend(b"K\x04\x86");
    let v = loads(&frombuffer("<f4", &shape, &[])).unwrap();
    assert_eq!(array(&v).checked_len(), None);
    let e = array(&v).to_f32().unwrap_err();
    assert_eq!(
        e,
        "array [4611686018427387904, 4] of dtype <f4 needs more than usize::MAX bytes, has 0"
    );
    // The same shape in a MulT-style file: an error naming the file and the split, no panic.
    let mut pkl = b"\x80\x05}\x8c\x05train}\x8c\x06labels".to_vec();
    let arr = frombuffer("<f4", &shape, &[]);
    pkl.extend(&arr[2..arr.len() - 1]); // without PROTO and STOP
    pkl.extend(b"ss.");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("forged.pkl");
    std::fs::write(&p, pkl).unwrap();
    let e = CmuMosei::split(
        &CmuMoseiConfig {
            path: p,
            ..Default::default()
        },
        "train",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("forged.pkl")
            && e.contains("train/labels")
            && e.contains("[4611686018427387904, 4]"),
        "{e}"
    );
}

#[test]
fn lengths_beyond_the_input_are_named() {
    // BINUNICODE8 of length 2^64 − 1: `pos + n` used to wrap and the slice to panic.
    let mut b = b"\x80\x04\x8d".to_vec();
    b.extend(u64::MAX.to_le_bytes());
    assert_eq!(
        loads(&b).unwrap_err(),
        "truncated pickle: need 18446744073709551615 bytes at offset 11, 0 left"
    );
    // BINBYTES of 2^32 − 1 bytes over 3.
    assert_eq!(
        loads(b"\x80\x03B\xff\xff\xff\xffabc").unwrap_err(),
        "truncated pickle: need 4294967295 bytes at offset 7, 3 left"
    );
}

#[test]
fn a_mark_below_the_popped_stack_is_an_error() {
    // MARK, then two POPs below it, then LIST: `split_off` used to panic.
    assert_eq!(
        loads(b"\x80\x02NN(00l.").unwrap_err(),
        "MARK below the stack (its items were popped) at offset 8"
    );
}

#[test]
fn nesting_is_bounded() {
    // 100 000 nested 1-tuples: building was fine, dropping the value overflowed the stack.
    let mut b = b"\x80\x02]".to_vec();
    b.extend(std::iter::repeat_n(0x85u8, 100_000));
    b.push(b'.');
    let e = loads(&b).unwrap_err();
    assert_eq!(
        e,
        format!("pickle nests containers deeper than {MAX_DEPTH} levels at offset 258")
    );
    // The same through MARK ... LIST, and through APPEND.
    let mut b = b"\x80\x02".to_vec();
    b.extend(std::iter::repeat_n(b'(', 100_000));
    b.extend(std::iter::repeat_n(b'l', 100_000));
    b.push(b'.');
    assert!(loads(&b).unwrap_err().contains("deeper than 256 levels"));
    let mut b = b"\x80\x02]q\x00".to_vec();
    for _ in 0..1000 {
        b.extend(b"]h\x00aq\x00"); // [m0] → m0
    }
    b.push(b'.');
    assert!(loads(&b).unwrap_err().contains("deeper than 256 levels"));
    // Depth 200 is accepted.
    let mut b = b"\x80\x02]".to_vec();
    b.extend(std::iter::repeat_n(0x85u8, 199));
    b.push(b'.');
    let mut v = loads(&b).unwrap();
    let mut depth = 1;
    while let Value::Tuple(items) = v {
        v = items.into_iter().next().unwrap();
        depth += 1;
    }
    assert_eq!(depth, 200);
}

#[test]
fn memo_references_cannot_multiply_the_size() {
    // "Billion laughs": m0 = (m0, m0) sixty times is 2^60 copies of an empty list.
    let mut b = b"\x80\x02]q\x00".to_vec();
    for _ in 0..60 {
        b.extend(b"h\x00h\x00\x86q\x00");
    }
    b.push(b'.');
    let e = loads(&b).unwrap_err();
    let want = format!(
        "pickle copies more than {} bytes through its memo",
        copy_budget(b.len())
    );
    assert!(e.starts_with(&want), "{e}");
    assert_eq!(copy_budget(b.len()), (64 << 20) + 64 * 426);
    // Ten doublings are fine.
    let mut b = b"\x80\x02]q\x00".to_vec();
    for _ in 0..10 {
        b.extend(b"h\x00h\x00\x86q\x00");
    }
    b.extend(b"h\x00.");
    assert!(loads(&b).is_ok());
}

#[test]
fn protocol_0_text_is_raw_unicode_escape() {
    // pickle.dumps(["é\\n\\u263a", "a\\\\b"], protocol=0): Latin-1 bytes and \uXXXX escapes
    // (Python escapes the backslash and the newline).
    let b = b"(lp0\nV\xe9\\u000a\\u263a\np1\naVa\\u005cb\np2\na.";
    assert_eq!(
        loads(b).unwrap(),
        Value::List(vec![Value::Str("é\n☺".into()), Value::Str("a\\b".into())])
    );
    assert!(loads(b"V\\u12\n.").unwrap_err().contains("bad \\u escape"));
}

/// `{"train": {"labels": f4 [2, 1, 1] = [-1, 0.5], "text": Fortran-order f8 [2, 2] = range(4)}}`
/// as NumPy's `_reconstruct` + `__setstate__` at protocol 0 (CPython 3 `pickle`, NumPy's reduce
/// functions imitated by stub modules): the array bytes travel as `_codecs.encode(V"…",
/// "latin1")` with raw bytes ≥ 0x80 and `\uXXXX` escapes in the text line.
/// (`fixtures/protocol0_arrays.hex`, shared with the fuzz test's seed corpus.)
const PROTOCOL_0_ARRAYS: &str = include_str!("fixtures/protocol0_arrays.hex");

#[test]
fn protocol_0_numpy_arrays_read() {
    let b: Vec<u8> = (0..PROTOCOL_0_ARRAYS.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&PROTOCOL_0_ARRAYS[i..i + 2], 16).unwrap())
        .collect();
    let v = loads(&b).unwrap();
    let train = v.get("train").unwrap();
    let labels = array(train.get("labels").unwrap());
    assert_eq!(labels.shape, vec![2, 1, 1]);
    assert_eq!(labels.to_f32().unwrap(), vec![-1.0, 0.5]);
    let text = array(train.get("text").unwrap());
    assert!(text.fortran);
    assert_eq!(text.to_f32().unwrap(), vec![0.0, 2.0, 1.0, 3.0]);
}
