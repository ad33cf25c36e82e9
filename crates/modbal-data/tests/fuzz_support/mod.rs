//! Shared by the fuzz harnesses (issue 17, "Fuzzing"): `tests/fuzz_parsers.rs` of modbal-data
//! and, through `#[path]`, `tests/fuzz_pickle.rs` of modbal-text.
//!
//! No cargo-fuzz: a deterministic mutator (bit flips, truncations, insertions, deletions,
//! header fields overwritten with extreme values, format tokens, repeated chunks, splices of
//! seeds) applied to small valid inputs, each case run under `catch_unwind`, and an allocation
//! guard ([`Guard`], the test binary's global allocator) that turns any single request over
//! [`MAX_REQUEST`] bytes, or more than [`MAX_LIVE`] bytes live, into an abort naming the target
//! and case. The number of cases is bounded for CI; `MODBAL_FUZZ_CASES=200000` runs a long
//! campaign, `MODBAL_FUZZ_SEED` changes the stream, `MODBAL_FUZZ_ONLY=N` replays case `N`
//! alone and prints its input.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The largest single allocation a parser may request on these tiny inputs.
pub const MAX_REQUEST: usize = 256 << 20;
/// The most bytes live at once, all harness threads together.
pub const MAX_LIVE: usize = 2 << 30;

static LIVE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// (target name, case) of the case this thread runs, for the guard's report.
    static CURRENT: Cell<(&'static str, u64)> = const { Cell::new(("-", 0)) };
}

/// Writes `parts` to stderr without allocating (called from inside the allocator).
fn raw_report(parts: &[&[u8]]) {
    let mut e = std::io::stderr().lock();
    for p in parts {
        let _ = e.write_all(p);
    }
}

fn itoa(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

/// A global allocator that refuses absurd requests, naming the fuzz case that made them.
pub struct Guard;

impl Guard {
    fn refuse(size: usize) -> bool {
        let live = LIVE.load(Ordering::Relaxed);
        if size <= MAX_REQUEST && live.saturating_add(size) <= MAX_LIVE {
            return false;
        }
        let (name, case) = CURRENT.with(|c| c.get());
        let (mut a, mut b) = ([0u8; 20], [0u8; 20]);
        raw_report(&[
            b"fuzz guard: target ",
            name.as_bytes(),
            b" case ",
            itoa(case, &mut a),
            b" requested ",
            itoa(size as u64, &mut b),
            b" bytes (replay with MODBAL_FUZZ_ONLY=<case>)\n",
        ]);
        true
    }
}

unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() && Self::refuse(new_size) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

/// xorshift64* seeded through splitmix64: small, deterministic, good enough for mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next_u64() % den < num
    }
}

/// A fixed-width integer field of a binary header (offset in bytes).
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub at: usize,
    pub width: usize,
    pub big_endian: bool,
}

/// Format knowledge for the mutator: header fields worth overwriting with extreme values and
/// tokens worth inserting (opcodes, header keys, extreme numbers as text).
#[derive(Clone, Debug, Default)]
pub struct Hints {
    pub fields: Vec<Field>,
    pub tokens: Vec<Vec<u8>>,
}

/// Values that break size arithmetic: 0, 1, powers of two around 2^8/16/24/31/32/62/63, maxima.
pub const EXTREMES: [u64; 19] = [
    0,
    1,
    2,
    7,
    8,
    0x7f,
    0xff,
    0x100,
    0xffff,
    0x1_0000,
    0x100_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x4000_0000_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
];

fn put_int(b: &mut [u8], f: Field, v: u64) {
    if f.at + f.width > b.len() || f.width > 8 {
        return;
    }
    let le = v.to_le_bytes();
    for k in 0..f.width {
        let byte = le[k];
        let pos = if f.big_endian {
            f.at + f.width - 1 - k
        } else {
            f.at + k
        };
        b[pos] = byte;
    }
}

/// One to three random mutations of `input` (`seeds`: splice sources).
pub fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>], hints: &Hints) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..1 + rng.below(3) {
        match rng.below(13) {
            // A storm: each known header field, with probability 1/2, set to a power of two
            // (products of those overflow to exactly 0), 0 or the maximum of its width.
            11 | 12 => {
                for &f in &hints.fields {
                    if rng.chance(1, 2) {
                        let bits = 8 * f.width as u32;
                        let k = [0u32, 1, 3, 8, 16, 24, 31, 32, 62, 63][rng.below(10)];
                        let v = match rng.below(8) {
                            0 => 0,
                            1 => u64::MAX >> (64 - bits),
                            _ if k < bits => 1u64 << k,
                            _ => 1u64 << (bits - 1),
                        };
                        put_int(&mut b, f, v);
                    }
                }
            }
            // Flip 1-4 bits.
            0 => {
                for _ in 0..1 + rng.below(4) {
                    if !b.is_empty() {
                        let i = rng.below(b.len());
                        b[i] ^= 1 << rng.below(8);
                    }
                }
            }
            // A byte set to an extreme value.
            1 => {
                if !b.is_empty() {
                    let i = rng.below(b.len());
                    b[i] = [0x00, 0x01, 0x7f, 0x80, 0xff, b'\n', b'(', b','][rng.below(8)];
                }
            }
            // Truncate.
            2 => {
                let n = rng.below(b.len() + 1);
                b.truncate(n);
            }
            // Insert 1-16 random bytes.
            3 => {
                let at = rng.below(b.len() + 1);
                let n = 1 + rng.below(16);
                let ins: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                b.splice(at..at, ins);
            }
            // Delete a range.
            4 => {
                if !b.is_empty() {
                    let a = rng.below(b.len());
                    let n = 1 + rng.below((b.len() - a).min(32));
                    b.drain(a..a + n);
                }
            }
            // A known header field overwritten with an extreme value.
            5 | 6 => {
                let v = EXTREMES[rng.below(EXTREMES.len())];
                let f = if !hints.fields.is_empty() && rng.chance(3, 4) {
                    hints.fields[rng.below(hints.fields.len())]
                } else {
                    let width = [1, 2, 4, 8][rng.below(4)];
                    Field {
                        at: rng.below(b.len().max(1)),
                        width,
                        big_endian: rng.chance(1, 2),
                    }
                };
                put_int(&mut b, f, v);
            }
            // Insert a token.
            7 => {
                if !hints.tokens.is_empty() {
                    let t = &hints.tokens[rng.below(hints.tokens.len())];
                    let at = rng.below(b.len() + 1);
                    b.splice(at..at, t.iter().copied());
                }
            }
            // Replace a range by a token.
            8 => {
                if !hints.tokens.is_empty() && !b.is_empty() {
                    let t = &hints.tokens[rng.below(hints.tokens.len())];
                    let a = rng.below(b.len());
                    let n = rng.below((b.len() - a).min(24) + 1);
                    b.splice(a..a + n, t.iter().copied());
                }
            }
            // A chunk repeated many times (nesting and duplication bombs).
            9 => {
                if !b.is_empty() {
                    let a = rng.below(b.len());
                    let n = 1 + rng.below((b.len() - a).min(8));
                    let chunk = b[a..a + n].to_vec();
                    let reps = [2, 10, 100, 1000, 5000][rng.below(5)];
                    let at = rng.below(b.len() + 1);
                    let rep: Vec<u8> = chunk.iter().copied().cycle().take(n * reps).collect();
                    b.splice(at..at, rep);
                }
            }
            // Splice: a prefix of this input + a suffix of a seed.
            _ => {
                let s = &seeds[rng.below(seeds.len())];
                let cut = rng.below(b.len() + 1);
                let from = rng.below(s.len() + 1);
                b.truncate(cut);
                b.extend_from_slice(&s[from..]);
            }
        }
    }
    b
}

fn env_usize(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.trim().parse().ok())
}

/// What a fuzz run did.
#[derive(Debug, Default)]
pub struct Report {
    pub cases: u64,
    pub ok: u64,
    pub err: u64,
    pub panics: Vec<(u64, String, Vec<u8>)>,
    pub seconds: f64,
}

fn hex(b: &[u8]) -> String {
    let mut s: String = b.iter().take(512).map(|x| format!("{x:02x}")).collect();
    if b.len() > 512 {
        s.push_str(&format!("… ({} bytes)", b.len()));
    }
    s
}

/// Runs `parse` on every seed, then on `default_cases` (or `MODBAL_FUZZ_CASES`) mutations of
/// them. `parse` returns `Ok(())` / `Err(message)` (the parser's verdict); a panic is a
/// finding. Every seed must parse (so the harness reaches the success paths). Panics of the
/// test at the end if any case panicked, listing the cases.
pub fn run(
    name: &'static str,
    seeds: &[Vec<u8>],
    hints: &Hints,
    default_cases: u64,
    mut parse: impl FnMut(&[u8]) -> Result<(), String>,
) -> Report {
    for (i, s) in seeds.iter().enumerate() {
        if let Err(e) = parse(s) {
            panic!("{name}: seed {i} does not parse: {e}");
        }
    }
    let cases = env_usize("MODBAL_FUZZ_CASES").unwrap_or(default_cases);
    let only = env_usize("MODBAL_FUZZ_ONLY");
    let base = env_usize("MODBAL_FUZZ_SEED").unwrap_or(17);
    let mut rep = Report::default();
    let t = Instant::now();
    for case in 0..cases {
        if only.is_some_and(|o| o != case) {
            continue;
        }
        // Each case has its own generator: a case replays without the ones before it.
        let mut rng =
            Rng::new(base ^ (case.wrapping_mul(0xA076_1D64_78BD_642F)) ^ name.len() as u64);
        let seed = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed, seeds, hints);
        if only.is_some() {
            eprintln!("{name} case {case}: {} bytes: {}", input.len(), hex(&input));
        }
        CURRENT.with(|c| c.set((name, case)));
        let r = catch_unwind(AssertUnwindSafe(|| parse(&input)));
        CURRENT.with(|c| c.set((name, u64::MAX)));
        rep.cases += 1;
        match r {
            Ok(Ok(())) => rep.ok += 1,
            Ok(Err(e)) => {
                rep.err += 1;
                if only.is_some() {
                    eprintln!("{name} case {case}: Err({e})");
                }
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                rep.panics.push((case, msg, input));
            }
        }
    }
    rep.seconds = t.elapsed().as_secs_f64();
    eprintln!(
        "fuzz {name}: {} cases in {:.2} s: {} Ok, {} Err, {} panics (MODBAL_FUZZ_SEED {base})",
        rep.cases,
        rep.seconds,
        rep.ok,
        rep.err,
        rep.panics.len()
    );
    if !rep.panics.is_empty() {
        let list: Vec<String> = rep
            .panics
            .iter()
            .take(5)
            .map(|(c, m, i)| format!("case {c}: {m}\n  input {}", hex(i)))
            .collect();
        panic!(
            "fuzz {name}: {} of {} cases panicked:\n{}",
            rep.panics.len(),
            rep.cases,
            list.join("\n")
        );
    }
    rep
}
