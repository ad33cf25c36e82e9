//! Forged headers (issue 17): each is an error naming the file and the field — never a panic,
//! never an allocation sized by the forged field. Fixtures are written byte by byte
//! (`common/mod.rs`); each case also goes through `decode_symphonia` directly, the decoder that
//! panicked on a zero sample rate before the header check.

mod common;

use common::{flac16, scratch, tone, wav_extensible_24, write, Wav};
use modbal_audio::decode::{decode_symphonia, decode_wav};
use modbal_audio::header::{check_file, MAX_DECODED_SAMPLES};
use modbal_audio::{decode_file, AudioError, Recipe};
use std::time::Instant;

/// `decode_file`, `decode_wav` and `decode_symphonia` all refuse `bytes` (as `name`) with a
/// Decode error naming the file and containing every `needles`; quickly.
fn refused(name: &str, bytes: &[u8], needles: &[&str]) {
    let dir = scratch(&format!("hostile-{name}"));
    let p = write(&dir, name, bytes);
    let t = Instant::now();
    let results = [
        ("decode_file", decode_file(&p)),
        ("decode_wav", decode_wav(&p)),
        ("decode_symphonia", decode_symphonia(&p, Some("wav"))),
    ];
    for (which, r) in results {
        let e = r.expect_err(which);
        assert!(matches!(e, AudioError::Decode { .. }), "{which}: {e:?}");
        let m = e.to_string();
        assert!(m.contains(name), "{which}: {m}");
        for n in needles {
            assert!(m.contains(n), "{which}: {m:?} lacks {n:?}");
        }
        assert!(!m.contains("panicked"), "{which}: caught a panic: {m}");
    }
    assert!(t.elapsed().as_secs_f64() < 2.0, "{name}: {:?}", t.elapsed());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn wav_with_sample_rate_zero_is_an_error_not_a_panic() {
    // Before: symphonia panicked ("TimeBase cannot have 0 numerator or denominator").
    let w = Wav::pcm16(0, 1, &tone(1600, 1));
    refused("rate0.wav", &w.bytes(), &["sample rate 0"]);
}

#[test]
fn a_forged_wav_behind_junk_bytes_is_checked_where_symphonia_finds_it() {
    // Found by fuzz_headers (seed 1, case 210893): one junk byte before `RIFF` hides the header
    // from a check at offset 0, while symphonia's probe scans for the marker and panicked on the
    // zero sample rate behind it.
    let dir = scratch("hostile-junk");
    let mut b = vec![0xe5];
    b.extend(Wav::pcm16(0, 1, &tone(160, 1)).bytes());
    let p = write(&dir, "junk.wav", &b);
    let m = decode_symphonia(&p, None).unwrap_err().to_string();
    assert!(m.contains("junk.wav") && m.contains("sample rate 0"), "{m}");
    // decode_file keeps hound's message when its symphonia fallback fails too
    let m = decode_file(&p).unwrap_err().to_string();
    assert!(m.contains("junk.wav") && !m.contains("panicked"), "{m}");
    // and a valid one there still decodes
    let mut b = vec![0xe5, 0x00, 0x17];
    b.extend(Wav::pcm16(8000, 1, &[0, 16384]).bytes());
    let p = write(&dir, "prefixed.wav", &b);
    assert_eq!(decode_file(&p).unwrap().samples, vec![0.0, 0.5]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn wav_with_sample_rate_4e9_is_an_error_not_an_86_gb_table() {
    // Before: decoding worked and the resampler tabulated an 86 GB filter (abort).
    let w = Wav::pcm16(4_000_000_000, 1, &tone(1600, 1));
    refused("rate4e9.wav", &w.bytes(), &["4000000000 Hz", "1000000"]);
    refused(
        "rate1000001.wav",
        &Wav::pcm16(1_000_001, 1, &tone(16, 1)).bytes(),
        &["1000001 Hz"],
    );
}

#[test]
fn wav_with_truncated_or_oversized_data_chunk() {
    let w = Wav::pcm16(16000, 1, &tone(1600, 1));
    let b = w.bytes();
    refused(
        "cut.wav",
        &b[..b.len() - 1001],
        &["truncated", "3200 bytes"],
    );
    // A data chunk that claims 4 GB in a 3 kB file: no 4 GB buffer.
    let huge = Wav {
        data_len: Some(u32::MAX),
        ..w.clone()
    };
    refused("claims4gb.wav", &huge.bytes(), &["truncated", "4294967295"]);
}

#[test]
fn wav_with_zero_channels_block_align_or_bits() {
    let w = Wav::pcm16(16000, 1, &tone(160, 1));
    refused(
        "ch0.wav",
        &Wav {
            channels: 0,
            ..w.clone()
        }
        .bytes(),
        &["0 channels"],
    );
    refused(
        "align0.wav",
        &Wav {
            block_align: 0,
            ..w.clone()
        }
        .bytes(),
        &["block align 0"],
    );
    refused(
        "bits0.wav",
        &Wav {
            bits: 0,
            ..w.clone()
        }
        .bytes(),
        &["0 bits"],
    );
    // fmt chunk of 8 bytes; a chunk reaching past the end of the file.
    let mut b = w.bytes();
    b[16..20].copy_from_slice(&8u32.to_le_bytes());
    refused("shortfmt.wav", &b, &["fmt"]);
    let mut b = w.bytes();
    b[16..20].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    refused("longfmt.wav", &b, &["past the end", "2147483632"]);
}

#[test]
fn a_directory_named_like_a_wav_is_an_error() {
    let dir = scratch("hostile-dir");
    let p = dir.join("x.wav");
    std::fs::create_dir_all(&p).unwrap();
    for r in [decode_file(&p), decode_wav(&p), decode_symphonia(&p, None)] {
        let m = r.unwrap_err().to_string();
        assert!(m.contains("x.wav") && m.contains("is a directory"), "{m}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn flac_headers_are_checked_too() {
    let dir = scratch("hostile-flac");
    let s = tone(1000, 2);
    let good = flac16(44100, 2, 256, &s);
    let p = write(&dir, "good.flac", &good);
    let a = decode_file(&p).unwrap();
    assert_eq!(
        (a.sample_rate, a.channels, a.samples.len()),
        (44100, 2, 1000)
    );
    let want: Vec<f32> = s
        .chunks(2)
        .map(|f| ((f[0] as f64 / 32768.0 + f[1] as f64 / 32768.0) / 2.0) as f32)
        .collect();
    assert_eq!(a.samples, want);
    assert_eq!(check_file(&p).unwrap().unwrap().max_samples, 2000);

    // sample rate 0 (the 20 bits after byte 8 + 10 of STREAMINFO)
    let mut b = good.clone();
    b[18] = 0;
    b[19] = 0;
    b[20] &= 0x0f;
    let p = write(&dir, "rate0.flac", &b);
    let m = decode_file(&p).unwrap_err().to_string();
    assert!(
        m.contains("rate0.flac") && m.contains("sample rate 0"),
        "{m}"
    );
    // 2^36 − 1 samples declared: over the decoded-length limit, refused before decoding
    let mut b = good.clone();
    b[21] |= 0x0f;
    b[22..26].copy_from_slice(&[0xff; 4]);
    let p = write(&dir, "long.flac", &b);
    let m = decode_file(&p).unwrap_err().to_string();
    assert!(m.contains(&MAX_DECODED_SAMPLES.to_string()), "{m}");
    // a metadata block that reaches past the end of the file
    let mut b = good.clone();
    b[5..8].copy_from_slice(&[0x7f, 0xff, 0xff]);
    let p = write(&dir, "block.flac", &b);
    let m = decode_file(&p).unwrap_err().to_string();
    assert!(m.contains("truncated flac"), "{m}");
    // fewer samples declared than the frames hold: the decoder stops at the bound
    let mut b = good.clone();
    b[22..26].copy_from_slice(&10u32.to_be_bytes()); // 10 samples declared, 1000 present
    let p = write(&dir, "short.flac", &b);
    let m = decode_file(&p).unwrap_err().to_string();
    assert!(m.contains("more than 20 samples"), "{m}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn valid_unusual_headers_still_decode() {
    let dir = scratch("hostile-valid");
    // extensible 24-bit stereo with a LIST chunk before data
    let p = write(
        &dir,
        "ext24.wav",
        &wav_extensible_24(48000, &[(1 << 22, -(1 << 22)), (1 << 21, 1 << 21)]),
    );
    let a = decode_file(&p).unwrap();
    assert_eq!((a.sample_rate, a.channels), (48000, 2));
    assert_eq!(a.samples, vec![0.0, 0.25]);
    // the lowest and highest rates the check allows
    for rate in [1, 1_000_000] {
        let p = write(
            &dir,
            &format!("r{rate}.wav"),
            &Wav::pcm16(rate, 1, &[0, 16384]).bytes(),
        );
        assert_eq!(decode_file(&p).unwrap().samples, vec![0.0, 0.5]);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_valid_but_extreme_rate_is_bounded_in_the_recipe() {
    // 1 Hz is a legal header; 20000 samples at 1 Hz resampled to 22.05 kHz would be 441 million
    // samples: an error naming the sizes, at once.
    let dir = scratch("hostile-recipe");
    let p = write(&dir, "slow.wav", &Wav::pcm16(1, 1, &tone(20000, 1)).bytes());
    let a = decode_file(&p).unwrap();
    let t = Instant::now();
    let e = Recipe::from_name("ogm-ge")
        .unwrap()
        .compute(&a)
        .unwrap_err();
    assert!(matches!(e, AudioError::Limit(_)), "{e:?}");
    assert!(e.to_string().contains("441000000"), "{e}");
    assert!(t.elapsed().as_secs_f64() < 1.0);
    std::fs::remove_dir_all(&dir).ok();
}
