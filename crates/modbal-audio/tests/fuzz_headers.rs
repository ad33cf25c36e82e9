//! Bounded arbitrary-bytes fuzzing of the header check + decode path (issue 17).
//!
//! Seeded mutations of small valid files — 16-bit mono and 24-bit extensible stereo WAV (with a
//! `LIST` chunk), 32-bit float WAV, mono and stereo FLAC — are written to a file and decoded with
//! `decode_file`: every case must return `Ok` or `Err`; a panic escaping it, a decoder panic that
//! it caught (the header check should have refused the file first) or a case slower than a
//! second fails the test with the seed and case number to replay it.
//!
//! Mutations favour the header: bit flips and byte sets in the first 64 bytes, header fields
//! (sizes, rates, channels, block align, bits, STREAMINFO) overwritten with boundary values,
//! truncation, appended junk, spliced ranges, and the other extension (`.wav` ↔ `.flac`).
//!
//! `MODBAL_FUZZ_CASES` (default 4000, a few seconds in release) and `MODBAL_FUZZ_SEED` (default
//! 17) select the run; e.g. `MODBAL_FUZZ_CASES=1000000 cargo test --release -p modbal-audio
//! --test fuzz_headers -- --nocapture` for a long one.
//!
//! Runs so far (2-core machine, release, shared with other builds):
//! * default (seed 17, 4000 cases): 1.3 s; ~1300 decode, ~2700 are refused. With the header
//!   check removed it fails at case 484 on symphonia's zero-sample-rate panic.
//! * seed 1, 1 000 000 cases: found one escape — a WAV with sample rate 0 behind one junk byte
//!   (case 210893): the check looked at offset 0, symphonia's probe scans for `RIFF` and panicked.
//!   Fixed (the header is checked where the probe finds the marker; `tests/hostile.rs`), then the
//!   same million ran clean in 687 s, slowest case 38 ms.
//! * seed 2, 500 000 cases: clean, 245 s, slowest case 27 ms.

mod common;

use common::{flac16, scratch, tone, wav_extensible_24, Wav};
use modbal_audio::decode_file;
use std::time::{Duration, Instant};

/// splitmix64: small, seedable, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
}

const U32S: &[u32] = &[
    0,
    1,
    2,
    15,
    16,
    40,
    255,
    8000,
    44100,
    65535,
    999_999,
    1_000_000,
    1_000_001,
    0x7fff_ffff,
    0x8000_0000,
    4_000_000_000,
    u32::MAX - 1,
    u32::MAX,
];
const U16S: &[u16] = &[
    0, 1, 2, 3, 4, 7, 8, 12, 16, 24, 32, 64, 255, 0x7fff, 0xfffe, 0xffff,
];

/// Offsets of header fields worth forging: WAV (RIFF size, fmt size, tag, channels, rate, byte
/// rate, align, bits, data id/size) and FLAC (block header, block sizes, frame sizes, packed
/// rate/channels/bits/total, first frame header).
const WAV_FIELDS: &[usize] = &[4, 16, 20, 22, 24, 28, 32, 34, 36, 40];
const FLAC_FIELDS: &[usize] = &[
    4, 5, 8, 10, 12, 15, 18, 19, 20, 21, 22, 24, 42, 43, 44, 45, 46,
];

fn mutate(seed: &[u8], is_flac: bool, rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    let fields = if is_flac { FLAC_FIELDS } else { WAV_FIELDS };
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            b.push(0);
        }
        let head = b.len().min(64);
        match rng.below(10) {
            0 | 1 => {
                let i = rng.below(head);
                b[i] ^= 1 << rng.below(8);
            }
            2 => {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            3 | 4 => {
                let at = rng.pick(fields);
                let v = rng.pick(U32S);
                let bytes = if is_flac {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                for (k, x) in bytes.iter().enumerate() {
                    if let Some(d) = b.get_mut(at + k) {
                        *d = *x;
                    }
                }
            }
            5 => {
                let at = rng.pick(fields);
                let v = rng.pick(U16S);
                let bytes = if is_flac {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                for (k, x) in bytes.iter().enumerate() {
                    if let Some(d) = b.get_mut(at + k) {
                        *d = *x;
                    }
                }
            }
            6 => {
                let n = rng.below(b.len() + 1);
                b.truncate(n);
            }
            7 => {
                for _ in 0..rng.below(64) {
                    b.push(rng.next() as u8);
                }
            }
            8 => {
                // splice: copy a random range over another place
                let (a, c) = (rng.below(b.len()), rng.below(b.len()));
                let n = rng.below(32).min(b.len() - a).min(b.len() - c);
                let src = b[a..a + n].to_vec();
                b[c..c + n].copy_from_slice(&src);
            }
            _ => {
                let i = rng.below(b.len());
                b.insert(i, rng.next() as u8);
            }
        }
    }
    b
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn mutated_wav_and_flac_headers_never_panic() {
    let cases = env("MODBAL_FUZZ_CASES", 4000);
    let seed = env("MODBAL_FUZZ_SEED", 17);
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("wav", Wav::pcm16(16000, 1, &tone(200, 1)).bytes()),
        (
            "wav",
            wav_extensible_24(48000, &[(1 << 20, -(1 << 20)), (5, -5), (0, 1 << 22)]),
        ),
        (
            "wav",
            Wav {
                format_tag: 3,
                byte_rate: 22050 * 4,
                block_align: 4,
                bits: 32,
                ..Wav::pcm16(22050, 1, &tone(64, 1))
            }
            .bytes(),
        ),
        ("flac", flac16(44100, 1, 64, &tone(150, 1))),
        ("flac", flac16(16000, 2, 16, &tone(40, 2))),
    ];
    for (ext, s) in &seeds {
        let dir = scratch("fuzz-seed");
        let p = dir.join(format!("seed.{ext}"));
        std::fs::write(&p, s).unwrap();
        decode_file(&p).unwrap_or_else(|e| panic!("seed {ext} must decode: {e}"));
    }
    let dir = scratch("fuzz");
    let mut rng = Rng(seed);
    let (mut ok, mut err) = (0u64, 0u64);
    let mut slowest = (Duration::ZERO, 0u64);
    let mut reasons: std::collections::BTreeMap<String, u64> = Default::default();
    let t0 = Instant::now();
    for case in 0..cases {
        let (ext, s) = &seeds[rng.below(seeds.len())];
        let is_flac = *ext == "flac";
        let bytes = mutate(s, is_flac, &mut rng);
        // now and then the other extension: WAV is recognised by content too
        let ext = match (rng.below(10), is_flac) {
            (0, true) => "wav",
            (0, false) => "flac",
            _ => ext,
        };
        let p = dir.join(format!("case.{ext}"));
        std::fs::write(&p, &bytes).unwrap();
        let t = Instant::now();
        let r = std::panic::catch_unwind(|| decode_file(&p));
        let dt = t.elapsed();
        if dt > slowest.0 {
            slowest = (dt, case);
        }
        let keep = || {
            let f = dir.join(format!("finding-{seed}-{case}.{ext}"));
            std::fs::write(&f, &bytes).unwrap();
            f
        };
        match r {
            Err(_) => panic!(
                "seed {seed} case {case}: a panic escaped decode_file (input kept as {})",
                keep().display()
            ),
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => {
                let m = e.to_string();
                assert!(
                    !m.contains("panicked"),
                    "seed {seed} case {case}: the decoder panicked behind the header check: {m} (input kept as {})",
                    keep().display()
                );
                err += 1;
                // group by the message without the path and numbers
                let msg = m.rsplit(": ").next().unwrap_or(&m).to_string();
                let class: String = msg
                    .chars()
                    .map(|c| if c.is_ascii_digit() { '#' } else { c })
                    .take(70)
                    .collect();
                *reasons.entry(class).or_default() += 1;
            }
        }
        assert!(
            dt < Duration::from_secs(1),
            "seed {seed} case {case}: {dt:?} (input kept as {})",
            keep().display()
        );
    }
    eprintln!(
        "fuzz_headers: {cases} cases (seed {seed}) in {:.2} s: {ok} decoded, {err} refused; slowest case {} took {:?}",
        t0.elapsed().as_secs_f64(),
        slowest.1,
        slowest.0
    );
    let mut top: Vec<_> = reasons.into_iter().collect();
    top.sort_by_key(|r| std::cmp::Reverse(r.1));
    for (m, n) in top.iter().take(25) {
        eprintln!("  {n:7}  {m}");
    }
    assert!(
        ok > 0 && err > 0,
        "the mutations should both keep and break files"
    );
    std::fs::remove_dir_all(&dir).ok();
}
