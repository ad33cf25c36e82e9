//! Fixtures written byte by byte: RIFF/WAVE files with every header field chosen by the caller,
//! and a minimal FLAC encoder (verbatim subframes, CRC-8 / CRC-16 as the format defines them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The header fields of a canonical 44-byte-header WAV; [`Wav::bytes`] writes them unchecked.
#[derive(Clone, Debug)]
pub struct Wav {
    pub format_tag: u16,
    pub channels: u16,
    pub rate: u32,
    pub byte_rate: u32,
    pub block_align: u16,
    pub bits: u16,
    /// `None`: the actual data length.
    pub data_len: Option<u32>,
    pub data: Vec<u8>,
}

impl Wav {
    /// 16-bit PCM of `samples` (interleaved over `channels`).
    pub fn pcm16(rate: u32, channels: u16, samples: &[i16]) -> Wav {
        Wav {
            format_tag: 1,
            channels,
            rate,
            byte_rate: rate.wrapping_mul(2 * channels as u32),
            block_align: 2 * channels,
            bits: 16,
            data_len: None,
            data: samples.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&(36 + self.data.len() as u32).to_le_bytes());
        v.extend_from_slice(b"WAVEfmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&self.format_tag.to_le_bytes());
        v.extend_from_slice(&self.channels.to_le_bytes());
        v.extend_from_slice(&self.rate.to_le_bytes());
        v.extend_from_slice(&self.byte_rate.to_le_bytes());
        v.extend_from_slice(&self.block_align.to_le_bytes());
        v.extend_from_slice(&self.bits.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(
            &self
                .data_len
                .unwrap_or(self.data.len() as u32)
                .to_le_bytes(),
        );
        v.extend_from_slice(&self.data);
        v
    }
}

/// A 24-bit stereo WAVE_FORMAT_EXTENSIBLE file with a `LIST` chunk before `data`.
pub fn wav_extensible_24(rate: u32, frames: &[(i32, i32)]) -> Vec<u8> {
    let data: Vec<u8> = frames
        .iter()
        .flat_map(|&(l, r)| {
            let mut b = l.to_le_bytes()[..3].to_vec();
            b.extend_from_slice(&r.to_le_bytes()[..3]);
            b
        })
        .collect();
    let mut fmt = Vec::new();
    fmt.extend_from_slice(&0xFFFEu16.to_le_bytes());
    fmt.extend_from_slice(&2u16.to_le_bytes());
    fmt.extend_from_slice(&rate.to_le_bytes());
    fmt.extend_from_slice(&(rate * 6).to_le_bytes());
    fmt.extend_from_slice(&6u16.to_le_bytes());
    fmt.extend_from_slice(&24u16.to_le_bytes());
    fmt.extend_from_slice(&22u16.to_le_bytes()); // cbSize
    fmt.extend_from_slice(&24u16.to_le_bytes()); // valid bits
    fmt.extend_from_slice(&3u32.to_le_bytes()); // front left | front right
                                                // KSDATAFORMAT_SUBTYPE_PCM
    fmt.extend_from_slice(&[
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b,
        0x71,
    ]);
    let list = b"INFOISFT\x06\x00\x00\x00modbal";
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&0u32.to_le_bytes()); // patched below
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
    v.extend_from_slice(&fmt);
    v.extend_from_slice(b"LIST");
    v.extend_from_slice(&(list.len() as u32).to_le_bytes());
    v.extend_from_slice(list);
    v.extend_from_slice(b"data");
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(&data);
    let riff = (v.len() - 8) as u32;
    v[4..8].copy_from_slice(&riff.to_le_bytes());
    v
}

fn crc8(bytes: &[u8]) -> u8 {
    let mut c = 0u8;
    for &b in bytes {
        c ^= b;
        for _ in 0..8 {
            c = if c & 0x80 != 0 {
                (c << 1) ^ 0x07
            } else {
                c << 1
            };
        }
    }
    c
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut c = 0u16;
    for &b in bytes {
        c ^= (b as u16) << 8;
        for _ in 0..8 {
            c = if c & 0x8000 != 0 {
                (c << 1) ^ 0x8005
            } else {
                c << 1
            };
        }
    }
    c
}

/// A FLAC stream of 16-bit `channels`-channel audio (`samples` interleaved), in frames of
/// `block` samples (16..=65535; the last may be shorter), verbatim subframes, independent
/// channels, STREAMINFO with the total length.
pub fn flac16(rate: u32, channels: u8, block: u16, samples: &[i16]) -> Vec<u8> {
    assert!((1..=8).contains(&channels) && block >= 16);
    let ch = channels as usize;
    let frames = samples.len() / ch;
    let mut v = b"fLaC".to_vec();
    v.extend_from_slice(&[0x80, 0, 0, 34]); // last block, STREAMINFO, 34 bytes
    v.extend_from_slice(&block.to_be_bytes());
    v.extend_from_slice(&block.to_be_bytes());
    v.extend_from_slice(&[0; 6]); // frame sizes unknown
    let packed: u64 =
        ((rate as u64) << 44) | (((channels - 1) as u64) << 41) | (15u64 << 36) | frames as u64;
    v.extend_from_slice(&packed.to_be_bytes());
    v.extend_from_slice(&[0; 16]); // no MD5
    for (n, chunk) in samples.chunks(block as usize * ch).enumerate() {
        assert!(n < 128, "single-byte frame numbers only");
        let len = chunk.len() / ch;
        let start = v.len();
        v.extend_from_slice(&[0xFF, 0xF8]); // sync, fixed block size
        v.push(0x70); // block size: 16 bits at the end of the header; rate from STREAMINFO
        v.push(((channels - 1) << 4) | (0b100 << 1)); // independent channels, 16 bits
        v.push(n as u8); // frame number, UTF-8 coded
        v.extend_from_slice(&((len - 1) as u16).to_be_bytes());
        v.push(crc8(&v[start..]));
        for c in 0..ch {
            v.push(0x02); // verbatim subframe, no wasted bits
            for f in 0..len {
                v.extend_from_slice(&chunk[f * ch + c].to_be_bytes());
            }
        }
        let crc = crc16(&v[start..]);
        v.extend_from_slice(&crc.to_be_bytes());
    }
    v
}

/// A deterministic test signal.
pub fn tone(n: usize, channels: usize) -> Vec<i16> {
    (0..n * channels)
        .map(|i| (((i * 7919) % 2000) as i32 * 13 - 13000) as i16)
        .collect()
}

/// A fresh folder under the system temp dir for this test binary.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("modbal-audio-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}
