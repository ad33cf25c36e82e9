//! WAV decoding: bit depths, scaling, downmix, and errors that name the file.
//!
//! Fixtures are written byte by byte here (RIFF/WAVE, `fmt ` + `data` chunks), independent of
//! hound. Expected values are the closed-form scalings of libsndfile / soundfile / torchaudio:
//! `v / 2^(b−1)` for signed b-bit PCM, `(u − 128)/128` for 8-bit.

use modbal_audio::{decode_file, AudioError};
use std::path::{Path, PathBuf};

fn wav_bytes(format_tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
    let block = channels * bits / 8;
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&format_tag.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * block as u32).to_le_bytes());
    v.extend_from_slice(&block.to_le_bytes());
    v.extend_from_slice(&bits.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("modbal-audio-decode-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let p = tmp(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn samples(p: &Path) -> Vec<f32> {
    decode_file(p).unwrap().samples
}

#[test]
fn pcm_bit_depths_scale_to_unit_range() {
    let p = write("u8.wav", &wav_bytes(1, 1, 8000, 8, &[0, 64, 128, 192, 255]));
    assert_eq!(samples(&p), vec![-1.0, -0.5, 0.0, 0.5, 127.0 / 128.0]);

    let d: Vec<u8> = [-32768i16, -16384, 0, 16384, 32767]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let p = write("s16.wav", &wav_bytes(1, 1, 16000, 16, &d));
    let a = decode_file(&p).unwrap();
    assert_eq!(
        (a.sample_rate, a.channels, a.encoding.as_str()),
        (16000, 1, "wav pcm_s16")
    );
    assert_eq!(a.samples, vec![-1.0, -0.5, 0.0, 0.5, 32767.0 / 32768.0]);

    let d: Vec<u8> = [-(1i32 << 23), 1 << 22, 0]
        .iter()
        .flat_map(|v| v.to_le_bytes()[..3].to_vec())
        .collect();
    let p = write("s24.wav", &wav_bytes(1, 1, 16000, 24, &d));
    assert_eq!(samples(&p), vec![-1.0, 0.5, 0.0]);

    let d: Vec<u8> = [i32::MIN, 1 << 29, 0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let p = write("s32.wav", &wav_bytes(1, 1, 16000, 32, &d));
    assert_eq!(samples(&p), vec![-1.0, 0.25, 0.0]);

    let d: Vec<u8> = [0.25f32, -0.75, 1.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let p = write("f32.wav", &wav_bytes(3, 1, 22050, 32, &d));
    assert_eq!(samples(&p), vec![0.25, -0.75, 1.5]);
}

#[test]
fn float64_wav_goes_through_symphonia() {
    let d: Vec<u8> = [0.125f64, -0.5, 0.0, 0.75]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let p = write("f64.wav", &wav_bytes(3, 1, 16000, 64, &d));
    let a = decode_file(&p).unwrap();
    assert_eq!(a.sample_rate, 16000);
    assert_eq!(a.samples, vec![0.125, -0.5, 0.0, 0.75]);
}

#[test]
fn stereo_is_averaged() {
    let d: Vec<u8> = [16384i16, 0, -16384, -16384, 8192, -8192]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let p = write("stereo.wav", &wav_bytes(1, 2, 16000, 16, &d));
    let a = decode_file(&p).unwrap();
    assert_eq!(a.channels, 2);
    assert_eq!(a.samples, vec![0.25, -0.5, 0.0]);
}

#[test]
fn truncated_corrupt_and_missing_files_name_the_file() {
    let d: Vec<u8> = (0..100i16).flat_map(|v| (v * 100).to_le_bytes()).collect();
    let full = wav_bytes(1, 1, 16000, 16, &d);
    let p = write("truncated.wav", &full[..full.len() - 51]);
    let e = decode_file(&p).unwrap_err();
    assert!(matches!(e, AudioError::Decode { .. }), "{e:?}");
    let m = e.to_string();
    assert!(
        m.contains("truncated.wav") && m.contains("truncated"),
        "{m}"
    );

    let p = write("garbage.wav", b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk");
    let m = decode_file(&p).unwrap_err().to_string();
    assert!(m.contains("garbage.wav"), "{m}");

    let p = write("empty.wav", &wav_bytes(1, 1, 16000, 16, &[]));
    let m = decode_file(&p).unwrap_err().to_string();
    assert!(
        m.contains("empty.wav") && m.contains("no audio samples"),
        "{m}"
    );

    let p = write("noise.flac", b"definitely not a flac stream at all");
    let m = decode_file(&p).unwrap_err().to_string();
    assert!(m.contains("noise.flac"), "{m}");

    let m = decode_file(&tmp("absent.wav")).unwrap_err().to_string();
    assert!(m.contains("absent.wav"), "{m}");
}
