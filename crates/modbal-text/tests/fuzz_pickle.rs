//! Bounded fuzzing of the pickle reader (issue 17, "Fuzzing"): seeded mutations (see
//! `fuzz_support`, shared with modbal-data's `tests/fuzz_parsers.rs`) of small valid pickles —
//! the committed MulT-style `mosei_tiny.pkl` (protocol 4, `_reconstruct` arrays), plain values at
//! protocols 0-5, `_frombuffer` arrays at protocol 5 and `_reconstruct` arrays with
//! `_codecs.encode` data at protocols 0 and 2 (all written by CPython 3's `pickle`; NumPy's
//! reduce functions imitated by stub modules). Every case must return `Ok` or `Err` — no panic,
//! no stack overflow, no absurd allocation — and everything reachable from an `Ok` value is
//! exercised: each array's `to_f32`, `clone`, `==`, and, for MulT-shaped dicts, the CMU-MOSEI
//! loader and every sample.
//!
//! Long campaign: `MODBAL_FUZZ_CASES=200000 cargo test --release -p modbal-text --test
//! fuzz_pickle -- --nocapture`.

#[path = "../../modbal-data/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use fuzz_support::Hints;
use modbal_data::Dataset;
use modbal_text::pickle::{loads, Value};
use modbal_text::{CmuMosei, CmuMoseiConfig};

#[global_allocator]
static GUARD: fuzz_support::Guard = fuzz_support::Guard;

/// Cases in the normal test run.
const CASES: u64 = 10_000;

const HEX_SEEDS: &[(&str, &str)] = &[
    (
        "values, protocol 0",
        concat!(
            "286470300a56610a70310a286c70320a49310a61492d320a6146332e350a614e614930310a614c31",
            "3039393531313632373737364c0a614c2d393232333337323033363835343737353830384c0a6173",
            "56620a70330a28635f636f646563730a656e636f64650a70340a285678790a70350a566c6174696e",
            "310a70360a7470370a5270380a56e90a70390a28566e0a7031300a2856650a7031310a2856730a70",
            "31320a2856740a7031330a747031340a747031350a747031360a747031370a747031380a7356630a",
            "7031390a63636f6c6c656374696f6e730a4f726465726564446963740a7032300a2874527032310a",
            "566b0a7032320a46312e300a73566a0a7032330a286c7032340a49310a6149320a61737356640a70",
            "32350a635f5f6275696c74696e5f5f0a7365740a7032360a28286c7032370a49310a6149320a6174",
            "7032380a527032390a736731310a635f5f6275696c74696e5f5f0a66726f7a656e7365740a703330",
            "0a28286c7033310a49330a61747033320a527033330a7356660a7033340a635f5f6275696c74696e",
            "5f5f0a6279746561727261790a7033350a2867340a285661620a7033360a67360a747033370a5270",
            "33380a747033390a527034300a7356670a7034310a567368617265640a7034320a7356680a703433",
            "0a286c7034340a6731320a616731320a616731320a617356690a7034350a67320a732e",
        ),
    ),
    (
        "values, protocol 1",
        concat!(
            "7d71002858010000006171015d7102284b014afeffffff47400c0000000000004e4930310a4c3130",
            "39393531313632373737364c0a4c2d393232333337323033363835343737353830384c0a65580100",
            "000062710328635f636f646563730a656e636f64650a71042858020000007879710558060000006c",
            "6174696e3171067471075271085802000000c3a971092858010000006e710a28580100000065710b",
            "28580100000073710c28580100000074710d74710e74710f74711074711174711258010000006371",
            "1363636f6c6c656374696f6e730a4f726465726564446963740a7114295271152858010000006b71",
            "16473ff000000000000058010000006a71175d7118284b014b0265755801000000647119635f5f62",
            "75696c74696e5f5f0a7365740a711a285d711b284b014b026574711c52711d680b635f5f6275696c",
            "74696e5f5f0a66726f7a656e7365740a711e285d711f4b0361747120527121580100000066712263",
            "5f5f6275696c74696e5f5f0a6279746561727261790a712328680428580200000061627124680674",
            "712552712674712752712858010000006771295806000000736861726564712a580100000068712b",
            "5d712c28680c680c680c65580100000069712d6802752e",
        ),
    ),
    (
        "values, protocol 2",
        concat!(
            "80027d71002858010000006171015d7102284b014afeffffff47400c0000000000004e888a060000",
            "000000018a080000000000000080655801000000627103635f636f646563730a656e636f64650a71",
            "0458020000007879710558060000006c6174696e3171068671075271085802000000c3a971095801",
            "0000006e710a580100000065710b580100000073710c580100000074710d85710e86710f86711086",
            "7111877112580100000063711363636f6c6c656374696f6e730a4f726465726564446963740a7114",
            "295271152858010000006b7116473ff000000000000058010000006a71175d7118284b014b026575",
            "5801000000647119635f5f6275696c74696e5f5f0a7365740a711a5d711b284b014b026585711c52",
            "711d680b635f5f6275696c74696e5f5f0a66726f7a656e7365740a711e5d711f4b03618571205271",
            "215801000000667122635f5f6275696c74696e5f5f0a6279746561727261790a7123680458020000",
            "0061627124680686712552712685712752712858010000006771295806000000736861726564712a",
            "580100000068712b5d712c28680c680c680c65580100000069712d6802752e",
        ),
    ),
    (
        "values, protocol 3",
        concat!(
            "80037d71002858010000006171015d7102284b014afeffffff47400c0000000000004e888a060000",
            "000000018a0800000000000000806558010000006271034302787971045802000000c3a971055801",
            "0000006e710658010000006571075801000000737108580100000074710985710a86710b86710c86",
            "710d87710e580100000063710f63636f6c6c656374696f6e730a4f726465726564446963740a7110",
            "295271112858010000006b7112473ff000000000000058010000006a71135d7114284b014b026575",
            "5801000000647115636275696c74696e730a7365740a71165d7117284b014b026585711852711968",
            "07636275696c74696e730a66726f7a656e7365740a711a5d711b4b036185711c52711d5801000000",
            "66711e636275696c74696e730a6279746561727261790a711f430261627120857121527122580100",
            "00006771235806000000736861726564712458010000006871255d71262868086808680865580100",
            "00006971276802752e",
        ),
    ),
    (
        "values, protocol 4",
        concat!(
            "800495f3000000000000007d94288c0161945d94284b014afeffffff47400c0000000000004e888a",
            "060000000000018a080000000000000080658c01629443027879948c02c3a9948c016e948c016594",
            "8c0173948c017494859486948694869487948c0163948c0b636f6c6c656374696f6e73948c0b4f72",
            "646572656444696374949394295294288c016b94473ff00000000000008c016a945d94284b014b02",
            "65758c0164948f94284b014b02906807284b0391948c0166948c086275696c74696e73948c096279",
            "746561727261799493944302616294859452948c0167948c06736861726564948c0168945d942868",
            "0868086808658c0169946802752e",
        ),
    ),
    (
        "values, protocol 5",
        concat!(
            "800595dd000000000000007d94288c0161945d94284b014afeffffff47400c0000000000004e888a",
            "060000000000018a080000000000000080658c01629443027879948c02c3a9948c016e948c016594",
            "8c0173948c017494859486948694869487948c0163948c0b636f6c6c656374696f6e73948c0b4f72",
            "646572656444696374949394295294288c016b94473ff00000000000008c016a945d94284b014b02",
            "65758c0164948f94284b014b02906807284b0391948c0166949602000000000000006162948c0167",
            "948c06736861726564948c0168945d9428680868086808658c0169946802752e",
        ),
    ),
    (
        "_frombuffer arrays (f4, Fortran f8, u1), protocol 5",
        concat!(
            "80059531010000000000007d948c05747261696e947d94288c066c6162656c73948c136e756d7079",
            "2e5f636f72652e6e756d65726963948c0b5f66726f6d62756666657294939428960c000000000000",
            "00000080bf0000003f00000040948c056e756d7079948c0564747970659493948c02663494898887",
            "945294284b038c013c944e4e4e4affffffff4affffffff4b007494624b034b014b0187948c014394",
            "749452948c0474657874946806289630000000000000000000000000000000000000000000f03f00",
            "0000000000004000000000000008400000000000001040000000000000144094680a8c0266389489",
            "8887945294680f624b034b0286948c014694749452948c05617564696f9468062896060000000000",
            "000000010203040594680a8c02753194898887945294680f62681968117494529475732e",
        ),
    ),
    (
        "_reconstruct arrays with _codecs.encode data, protocol 2",
        concat!(
            "80027d71005805000000747261696e71017d71022858060000006c6162656c737103636e756d7079",
            "2e636f72652e6d756c746961727261790a5f7265636f6e7374727563740a7104636e756d70790a6e",
            "6461727261790a71054b00857106635f636f646563730a656e636f64650a71075801000000627108",
            "58060000006c6174696e31710986710a52710b87710c52710d284b014b024b014b0187710e636e75",
            "6d70790a64747970650a710f5802000000663471108988877111527112284b0358010000003c7113",
            "4e4e4e4affffffff4affffffff4b0074711462896807580a0000000000c280c2bf0000003f711568",
            "09867116527117747118625804000000746578747119680468056806680b87711a52711b284b014b",
            "024b0286711c680f58020000006638711d898887711e52711f681462886807582100000000000000",
            "00000000000000000000c3b03f000000000000004000000000000008407120680986712152712274",
            "71236275732e",
        ),
    ),
    (
        "_reconstruct arrays with _codecs.encode data, protocol 0",
        include_str!("fixtures/protocol0_arrays.hex"),
    ),
];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn seeds() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = HEX_SEEDS.iter().map(|(_, h)| unhex(h)).collect();
    v.push(include_bytes!("fixtures/mosei_tiny.pkl").to_vec());
    // The crate docs' example, `pickle.dumps({'train': [1, 2.5]}, protocol=2)`.
    v.push(
        b"\x80\x02}q\x00X\x05\x00\x00\x00trainq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00es."
            .to_vec(),
    );
    v
}

/// Opcodes and arguments worth inserting: memo traffic, nesting, calls, forged lengths and
/// shapes, dtype strings.
fn hints() -> Hints {
    let tokens: &[&[u8]] = &[
        b"h\x00",
        b"h\x01",
        b"q\x00",
        b"\x94",
        b"2",
        b"(",
        b"0",
        b"1",
        b"\x85",
        b"\x86",
        b"\x87",
        b"a",
        b"e",
        b"s",
        b"u",
        b"b",
        b"R",
        b"\x81",
        b"]",
        b"}",
        b")",
        b"l",
        b"t",
        b"d",
        b".",
        b"N",
        b"j\xff\xff\xff\xff",
        b"X\xff\xff\xff\xff",
        b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x8e\x00\x00\x00\x00\x00\x00\x00\x80",
        b"\x96\xff\xff\xff\xff\xff\xff\xff\x7f",
        b"\x8a\x01\xff",
        b"\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x40",
        b"J\xff\xff\xff\x7f",
        b"K\x00",
        b"\x8c\x02f4",
        b"\x8c\x03f16",
        b"\x8c\x02f0",
        b"\x8c\x03U99",
        b"\x8c\x02O8",
        b"\x8c\x01F",
        b"\x8c\x05numpy\x8c\x05dtype\x93",
        b"\x8c\x13numpy._core.numeric\x8c\x0b_frombuffer\x93",
        b"cnumpy.core.multiarray\n_reconstruct\n",
        b"c_codecs\nencode\n",
        b"ccollections\nOrderedDict\n",
        b"V\\u00e9\n",
        b"V\\uZZZZ\n",
        b"S'x'\n",
        b"I99999999999999999999\n",
    ];
    Hints {
        fields: Vec::new(),
        tokens: tokens.iter().map(|t| t.to_vec()).collect(),
    }
}

/// Everything a consumer may do with a decoded value (depth ≤ MAX_DEPTH keeps this recursion
/// short).
fn exercise(v: &Value) {
    match v {
        Value::Array(a) => {
            let _ = a.len();
            let _ = a.is_empty();
            if let Ok(x) = a.to_f32() {
                assert_eq!(Some(x.len()), a.checked_len(), "shape {:?}", a.shape);
            }
            a.objects.iter().for_each(exercise);
        }
        Value::List(items) | Value::Tuple(items) => items.iter().for_each(exercise),
        Value::Dict(items) => {
            let _ = v.keys();
            let _ = v.get("train");
            for (k, x) in items {
                exercise(k);
                exercise(x);
            }
        }
        Value::Object(f, a, s) => {
            exercise(f);
            exercise(a);
            if let Some(s) = s {
                exercise(s);
            }
        }
        other => {
            let _ = other.as_str();
        }
    }
}

#[test]
fn fuzz_pickle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzzed.pkl");
    let mut mult = 0u64;
    fuzz_support::run("pickle", &seeds(), &hints(), CASES, |b| {
        let v = loads(b)?;
        exercise(&v);
        let c = v.clone();
        let _ = c == v;
        // MulT-shaped values (every 4th) through the CMU-MOSEI loader, every sample read.
        if v.get("train").is_some() {
            mult += 1;
            if mult.is_multiple_of(4) {
                std::fs::write(&path, b).unwrap();
                let cfg = CmuMoseiConfig {
                    path: path.clone(),
                    ..Default::default()
                };
                for split in ["train", "valid", "test"] {
                    if let Ok(d) = CmuMosei::split(&cfg, split) {
                        for i in 0..d.len() {
                            d.get(i).map_err(|e| e.to_string())?;
                        }
                    }
                }
            }
        }
        Ok(())
    });
}
