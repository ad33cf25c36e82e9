//! Checking WAV and FLAC headers before a decoder sees them.
//!
//! Decoders trust their headers: symphonia panics on a WAV whose sample rate is 0 (its `TimeBase`
//! refuses a zero denominator) and divides by a zero block align; a sample rate of 4·10⁹ makes
//! the resampler tabulate an 86 GB filter; a data chunk that claims 4 GB sizes a buffer from the
//! claim. [`check_file`] reads only the header (the RIFF chunk list up to `data`, or the FLAC
//! metadata blocks) and refuses, with a message naming the field and its value:
//!
//! * a sample rate outside [`MIN_SAMPLE_RATE`]`..=`[`MAX_SAMPLE_RATE`] (1 Hz to 1 MHz),
//! * zero channels, a zero block align, zero bits per sample (PCM / float WAV), FLAC bits per
//!   sample outside 4..=32,
//! * a chunk or metadata block that reaches past the end of the file (a `data` chunk longer
//!   than the file is reported as *truncated*),
//! * a FLAC stream whose declared length exceeds [`MAX_DECODED_SAMPLES`].
//!
//! It also returns an upper bound on the number of interleaved samples the file can decode to,
//! computed with checked arithmetic from sizes the file actually holds: for WAV twice the bytes
//! of the `data` chunk (no WAV encoding symphonia or hound decode packs more than two samples in
//! a byte — 4-bit ADPCM is the densest), for FLAC the STREAMINFO total times the channels when it
//! is declared, else [`MAX_DECODED_SAMPLES`]. The decoders allocate from this bound and stop with
//! an error when a stream decodes past it (a compressed stream can expand a small file into
//! billions of samples).
//!
//! Files that are neither RIFF/WAVE nor FLAC by content (MP3, MP4, Ogg, ...) are not inspected
//! here (`Ok(None)`): their decoding is bounded by [`MAX_DECODED_SAMPLES`] and isolated against
//! decoder panics by [`crate::decode`].

use crate::error::{AudioError, Result};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Lowest sample rate a header may declare (Hz).
pub const MIN_SAMPLE_RATE: u32 = 1;
/// Highest sample rate a header may declare (Hz). Real audio stops at 768 kHz.
pub const MAX_SAMPLE_RATE: u32 = 1_000_000;
/// Most interleaved samples one compressed stream (FLAC, MP3, AAC, Vorbis, ...) may decode to:
/// 2²⁸ (1 GiB as `f32`; 46 min of 48 kHz stereo, 2.3 h of 32 kHz mono). WAV is bounded by the
/// bytes of its data chunk instead.
pub const MAX_DECODED_SAMPLES: u64 = 1 << 28;
/// Most RIFF chunks before `data`, or FLAC metadata blocks, a header may have (real files have a
/// handful; the bound keeps a file of a million empty chunks from costing a million reads).
pub const MAX_HEADER_BLOCKS: usize = 65536;

/// The container a header was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    Wav,
    Flac,
}

/// What a checked header declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderInfo {
    pub container: Container,
    pub sample_rate: u32,
    pub channels: u16,
    /// Bits per (coded) sample as declared.
    pub bits_per_sample: u16,
    /// WAV format tag (1 PCM, 3 IEEE float, 0xFFFE extensible, ...); `None` for FLAC.
    pub format_tag: Option<u16>,
    /// Upper bound on the interleaved samples the file can decode to (see the module docs).
    pub max_samples: u64,
}

/// Checks the header of the file at `path` (see the module docs). `Ok(None)`: not WAV or FLAC by
/// content, nothing checked. Errors name the file.
pub fn check_file(path: &Path) -> Result<Option<HeaderInfo>> {
    check_file_at(path, 0)
}

/// [`check_file`] for a stream starting `start` bytes into the file. symphonia's probe looks for
/// a container's marker anywhere in the first megabyte (after junk or an ID3 tag), so its decoder
/// checks the header where the probe found it.
pub fn check_file_at(path: &Path, start: u64) -> Result<Option<HeaderInfo>> {
    let meta = std::fs::metadata(path).map_err(|e| AudioError::io(path, e))?;
    if meta.is_dir() {
        return Err(AudioError::decode(
            path,
            "is a directory, not an audio file",
        ));
    }
    let mut f = std::fs::File::open(path).map_err(|e| AudioError::io(path, e))?;
    check_header_at(&mut f, start, meta.len()).map_err(|msg| AudioError::decode(path, msg))
}

/// Checks the header at the start of `r`, a stream of `len` bytes (see the module docs). The
/// error is a message without a file name.
pub fn check_header<R: Read + Seek>(
    r: &mut R,
    len: u64,
) -> std::result::Result<Option<HeaderInfo>, String> {
    check_header_at(r, 0, len)
}

/// [`check_header`] for a header `start` bytes into `r` (offsets in messages are from the start
/// of `r`).
pub fn check_header_at<R: Read + Seek>(
    r: &mut R,
    start: u64,
    len: u64,
) -> std::result::Result<Option<HeaderInfo>, String> {
    if start >= len {
        return Ok(None);
    }
    let mut magic = [0u8; 12];
    r.seek(SeekFrom::Start(start)).map_err(read_err)?;
    let got = read_up_to(r, &mut magic)?;
    if got >= 12 && &magic[..4] == b"RIFF" && &magic[8..12] == b"WAVE" {
        check_wav(r, start, len).map(Some)
    } else if got >= 4 && &magic[..4] == b"fLaC" {
        check_flac(r, start, len).map(Some)
    } else {
        Ok(None)
    }
}

fn read_err(e: std::io::Error) -> String {
    format!("cannot read header: {e}")
}

/// Reads until `buf` is full or the stream ends; the count read.
fn read_up_to<R: Read>(r: &mut R, buf: &mut [u8]) -> std::result::Result<usize, String> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err(e)),
        }
    }
    Ok(n)
}

fn read_exact_at<R: Read + Seek>(
    r: &mut R,
    pos: u64,
    buf: &mut [u8],
    what: &str,
) -> std::result::Result<(), String> {
    r.seek(SeekFrom::Start(pos)).map_err(read_err)?;
    if read_up_to(r, buf)? < buf.len() {
        return Err(format!("truncated {what}: the file ends inside it"));
    }
    Ok(())
}

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn check_rate(container: &str, rate: u32) -> std::result::Result<(), String> {
    if rate == 0 {
        return Err(format!("{container} header declares sample rate 0"));
    }
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        return Err(format!(
            "{container} header declares sample rate {rate} Hz, outside {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE} Hz"
        ));
    }
    Ok(())
}

/// A printable form of a RIFF chunk id.
fn chunk_name(id: &[u8]) -> String {
    id.iter()
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}

struct Fmt {
    tag: u16,
    channels: u16,
    rate: u32,
    block_align: u16,
    bits: u16,
}

fn parse_fmt(b: &[u8]) -> std::result::Result<Fmt, String> {
    let mut f = Fmt {
        tag: u16le(b, 0),
        channels: u16le(b, 2),
        rate: u32le(b, 4),
        block_align: u16le(b, 12),
        bits: u16le(b, 14),
    };
    if f.channels == 0 {
        return Err("wav header declares 0 channels".into());
    }
    check_rate("wav", f.rate)?;
    if f.block_align == 0 {
        return Err("wav header declares block align 0".into());
    }
    // WAVE_FORMAT_EXTENSIBLE: the real format is the first two bytes of the sub-format GUID.
    if f.tag == 0xFFFE && b.len() >= 26 {
        f.tag = u16le(b, 24);
    }
    if matches!(f.tag, 1 | 3) && f.bits == 0 {
        return Err("wav header declares 0 bits per sample".into());
    }
    Ok(f)
}

/// RIFF/WAVE at `start`: walks the chunks from offset 12 to `data`.
fn check_wav<R: Read + Seek>(
    r: &mut R,
    start: u64,
    len: u64,
) -> std::result::Result<HeaderInfo, String> {
    let mut pos: u64 = start + 12;
    let mut fmt: Option<Fmt> = None;
    for _ in 0..MAX_HEADER_BLOCKS {
        let Some(body) = pos.checked_add(8).filter(|&b| b <= len) else {
            return Err(if fmt.is_none() {
                "corrupt wav: no fmt chunk".into()
            } else {
                "corrupt wav: no data chunk".into()
            });
        };
        let mut h = [0u8; 8];
        read_exact_at(r, pos, &mut h, "wav chunk header")?;
        let (id, size) = (&h[..4], u32le(&h, 4) as u64);
        let available = len - body;
        if id == b"data" {
            let Some(f) = fmt else {
                return Err("corrupt wav: data chunk before the fmt chunk".into());
            };
            if size > available {
                return Err(format!(
                    "truncated wav: the data chunk declares {size} bytes, the file holds {available} after the header"
                ));
            }
            return Ok(HeaderInfo {
                container: Container::Wav,
                sample_rate: f.rate,
                channels: f.channels,
                bits_per_sample: f.bits,
                format_tag: Some(f.tag),
                max_samples: size.saturating_mul(2),
            });
        }
        if size > available {
            return Err(format!(
                "corrupt wav: chunk {:?} at byte {pos} declares {size} bytes, past the end of the file ({available} bytes follow its header)",
                chunk_name(id)
            ));
        }
        if id == b"fmt " {
            if size < 16 {
                return Err(format!(
                    "corrupt wav: fmt chunk of {size} bytes (at least 16 needed)"
                ));
            }
            let mut b = vec![0u8; size.min(40) as usize];
            read_exact_at(r, body, &mut b, "wav fmt chunk")?;
            fmt = Some(parse_fmt(&b)?);
        }
        // Chunks are padded to an even size.
        pos = body + size + (size & 1);
    }
    Err(format!(
        "corrupt wav: more than {MAX_HEADER_BLOCKS} chunks before the data chunk"
    ))
}

/// FLAC at `start`: STREAMINFO (the first metadata block) and the extent of every metadata block.
fn check_flac<R: Read + Seek>(
    r: &mut R,
    start: u64,
    len: u64,
) -> std::result::Result<HeaderInfo, String> {
    let mut pos: u64 = start + 4;
    let mut info: Option<HeaderInfo> = None;
    for _ in 0..MAX_HEADER_BLOCKS {
        let mut h = [0u8; 4];
        read_exact_at(r, pos, &mut h, "flac metadata block header")?;
        let (last, kind) = (h[0] & 0x80 != 0, h[0] & 0x7f);
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as u64;
        let body = pos + 4;
        if size > len - body {
            return Err(format!(
                "truncated flac: metadata block {kind} at byte {pos} declares {size} bytes, past the end of the file ({} bytes follow its header)",
                len.saturating_sub(body)
            ));
        }
        if info.is_none() {
            if kind != 0 || size < 34 {
                return Err(format!(
                    "corrupt flac: the first metadata block must be a 34-byte STREAMINFO (found type {kind}, {size} bytes)"
                ));
            }
            let mut s = [0u8; 18];
            read_exact_at(r, body, &mut s, "flac STREAMINFO")?;
            let packed =
                u64::from_be_bytes([s[10], s[11], s[12], s[13], s[14], s[15], s[16], s[17]]);
            let rate = (packed >> 44) as u32;
            let channels = ((packed >> 41) & 0x7) as u16 + 1;
            let bits = ((packed >> 36) & 0x1f) as u16 + 1;
            let total = packed & ((1u64 << 36) - 1);
            check_rate("flac", rate)?;
            if bits < 4 {
                return Err(format!(
                    "flac header declares {bits} bits per sample (4..=32 allowed)"
                ));
            }
            let max_samples = if total == 0 {
                MAX_DECODED_SAMPLES
            } else {
                match total.checked_mul(channels as u64) {
                    Some(n) if n <= MAX_DECODED_SAMPLES => n,
                    _ => {
                        return Err(format!(
                            "flac header declares {total} samples × {channels} channels, more than the limit of {MAX_DECODED_SAMPLES} decoded samples"
                        ))
                    }
                }
            };
            info = Some(HeaderInfo {
                container: Container::Flac,
                sample_rate: rate,
                channels,
                bits_per_sample: bits,
                format_tag: None,
                max_samples,
            });
        } else if kind == 127 {
            return Err(format!(
                "corrupt flac: invalid metadata block type 127 at byte {pos}"
            ));
        }
        pos = body + size;
        if last {
            return Ok(info.expect("STREAMINFO read above"));
        }
    }
    Err(format!(
        "corrupt flac: more than {MAX_HEADER_BLOCKS} metadata blocks"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn wav(rate: u32, channels: u16, align: u16, bits: u16, data_len: u32, data: &[u8]) -> Vec<u8> {
        let mut v = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        v.extend_from_slice(&rate.wrapping_mul(align as u32).to_le_bytes());
        v.extend_from_slice(&align.to_le_bytes());
        v.extend_from_slice(&bits.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&data_len.to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    fn check(b: &[u8]) -> std::result::Result<Option<HeaderInfo>, String> {
        check_header(&mut Cursor::new(b), b.len() as u64)
    }

    #[test]
    fn valid_wav_gives_a_bound_from_the_data_chunk() {
        let h = check(&wav(16000, 1, 2, 16, 8, &[0; 8])).unwrap().unwrap();
        assert_eq!(
            (h.container, h.sample_rate, h.channels, h.max_samples),
            (Container::Wav, 16000, 1, 16)
        );
        assert_eq!(check(b"ID3\x04 not a wav").unwrap(), None);
        assert_eq!(check(b"").unwrap(), None);
    }

    #[test]
    fn forged_wav_fields_are_refused() {
        let e = check(&wav(0, 1, 2, 16, 8, &[0; 8])).unwrap_err();
        assert!(e.contains("sample rate 0"), "{e}");
        let e = check(&wav(4_000_000_000, 1, 2, 16, 8, &[0; 8])).unwrap_err();
        assert!(e.contains("4000000000") && e.contains("1000000"), "{e}");
        let e = check(&wav(16000, 0, 2, 16, 8, &[0; 8])).unwrap_err();
        assert!(e.contains("0 channels"), "{e}");
        let e = check(&wav(16000, 1, 0, 16, 8, &[0; 8])).unwrap_err();
        assert!(e.contains("block align 0"), "{e}");
        let e = check(&wav(16000, 1, 2, 0, 8, &[0; 8])).unwrap_err();
        assert!(e.contains("0 bits"), "{e}");
        let e = check(&wav(16000, 1, 2, 16, u32::MAX, &[0; 8])).unwrap_err();
        assert!(e.contains("truncated") && e.contains("4294967295"), "{e}");
        // after a junk byte (where symphonia's probe would find it)
        let mut b = vec![0xe5];
        b.extend(wav(0, 1, 2, 16, 8, &[0; 8]));
        assert_eq!(check(&b).unwrap(), None);
        let e = check_header_at(&mut Cursor::new(&b), 1, b.len() as u64).unwrap_err();
        assert!(e.contains("sample rate 0"), "{e}");
        let mut b = wav(16000, 1, 2, 16, 8, &[0; 8]);
        b[16..20].copy_from_slice(&u32::MAX.to_le_bytes()); // fmt chunk size
        let e = check(&b).unwrap_err();
        assert!(e.contains("\"fmt \""), "{e}");
        let e = check(&b[..30]).unwrap_err();
        assert!(e.contains("corrupt") || e.contains("truncated"), "{e}");
    }
}
