//! Decoding audio files to mono `f32` samples in [−1, 1].
//!
//! * **WAV** (`.wav`, `.wave`) is read with [`hound`]: PCM integer 8, 16, 24 and 32 bit and IEEE
//!   float 32 bit, plain or `WAVE_FORMAT_EXTENSIBLE`. Integers are scaled the way libsndfile,
//!   `soundfile`, `torchaudio.load` and `librosa.load` scale them: a `b`-bit signed value `v` becomes
//!   `v / 2^(b−1)` (8-bit WAV is unsigned: `(u − 128) / 128`). WAVs hound does not handle (64-bit
//!   float, A-law, µ-law, ...) are handed to symphonia.
//! * **Other containers** are read with [`symphonia`]: FLAC, MP3, AAC in MP4/M4A, Vorbis in Ogg,
//!   Matroska/WebM audio tracks. Decoded samples are converted to `f32` by symphonia with the same
//!   full-scale convention.
//! * **Mono downmix**: the mean over channels, as `librosa.load(mono=True)`. (The field's fbank
//!   scripts call `torchaudio.compliance.kaldi.fbank` on a multi-channel tensor, which silently uses
//!   channel 0; CREMA-D, AVE, Kinetics-Sounds and VGGSound audio prepared by the field's ffmpeg
//!   scripts is mono, where both agree.)
//!
//! A truncated file (a data chunk shorter than its header says), a corrupt header or a file with
//! no samples is an error naming the file — never a silently shortened signal.
//!
//! **Hostile files.** Every entry point ([`decode_file`], [`decode_wav`], [`decode_symphonia`])
//! first checks the WAV / FLAC header ([`crate::header::check_file`]: sample rate in 1 Hz..=1 MHz,
//! channels ≥ 1, block align and bits non-zero, chunks inside the file) and takes from it an upper
//! bound on the decoded length; buffers are sized from that bound, never from a bare header field,
//! and a stream that decodes past it is an error. A panic inside hound or symphonia on a malformed
//! file is caught ([`std::panic::catch_unwind`]) and returned as a [`AudioError::Decode`] naming
//! the file, so one bad clip cannot take down a batch. (The panic hook still runs: a program that
//! wants no message on stderr for such files installs a quieter hook, as `modbal prepare` does.)

use crate::error::{AudioError, Result};
use crate::header::{
    check_file, check_file_at, MAX_DECODED_SAMPLES, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE,
};
use std::path::Path;

/// A decoded clip, downmixed to mono.
#[derive(Clone, Debug, PartialEq)]
pub struct Audio {
    /// Mono samples in [−1, 1] (float sources may exceed it; the recipes clip where the field does).
    pub samples: Vec<f32>,
    /// Sampling rate of `samples`, in Hz.
    pub sample_rate: u32,
    /// Channel count of the source before the downmix.
    pub channels: u16,
    /// Human-readable source encoding, e.g. `"wav pcm_s16"`, `"flac"`.
    pub encoding: String,
}

impl Audio {
    /// Duration in seconds.
    pub fn duration(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// File extensions [`decode_file`] accepts (lower case, without the dot).
pub const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "wave", "flac", "mp3", "m4a", "mp4", "aac", "ogg", "oga", "mkv", "webm", "mka",
];

/// Decodes an audio file (format chosen by extension, WAV by content too) to mono `f32`.
pub fn decode_file(path: &Path) -> Result<Audio> {
    let limit = decoded_limit(path)?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    isolated(path, || {
        if ext == "wav" || ext == "wave" {
            match wav_unchecked(path, limit) {
                // A header hound refuses (64-bit float, A-law, µ-law, ...) may still be valid WAV:
                // symphonia gets a try, and hound's message is kept if it fails too.
                Err(e @ AudioError::Decode { .. }) if !e.to_string().contains("truncated") => {
                    symphonia_unchecked(path, Some("wav"), limit).map_err(|_| e)
                }
                other => other,
            }
        } else {
            symphonia_unchecked(path, (!ext.is_empty()).then_some(ext.as_str()), limit)
        }
    })
}

/// The header check of [`check_file`]: the bound on interleaved decoded samples.
fn decoded_limit(path: &Path) -> Result<u64> {
    Ok(check_file(path)?.map_or(MAX_DECODED_SAMPLES, |h| h.max_samples))
}

/// Runs a decoder, turning a panic into an error naming the file.
fn isolated(path: &Path, f: impl FnOnce() -> Result<Audio>) -> Result<Audio> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(AudioError::decode(
            path,
            format!(
                "malformed file: the decoder panicked ({})",
                panic_message(payload.as_ref())
            ),
        ))
    })
}

/// The message of a panic payload (`&str` or `String`; anything else is "unknown panic").
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Decodes a WAV file with hound (see the module docs for the scaling).
pub fn decode_wav(path: &Path) -> Result<Audio> {
    let limit = decoded_limit(path)?;
    isolated(path, || wav_unchecked(path, limit))
}

/// [`decode_wav`] after the header check: at most `limit` interleaved samples.
fn wav_unchecked(path: &Path, limit: u64) -> Result<Audio> {
    let file = std::fs::File::open(path).map_err(|e| AudioError::io(path, e))?;
    let reader = hound::WavReader::new(std::io::BufReader::new(file)).map_err(|e| match e {
        hound::Error::IoError(io) => AudioError::decode(path, format!("corrupt wav header: {io}")),
        hound::Error::Unsupported => AudioError::decode(path, "unsupported wav encoding"),
        other => AudioError::decode(path, format!("corrupt wav: {other}")),
    })?;
    let spec = reader.spec();
    let channels = spec.channels;
    if channels == 0 {
        return Err(AudioError::decode(path, "wav header declares 0 channels"));
    }
    if spec.sample_rate == 0 {
        return Err(AudioError::decode(
            path,
            "wav header declares sample rate 0",
        ));
    }
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&spec.sample_rate) {
        return Err(AudioError::decode(
            path,
            format!("wav header declares sample rate {} Hz", spec.sample_rate),
        ));
    }
    if reader.len() as u64 > limit {
        return Err(AudioError::decode(
            path,
            format!(
                "wav header declares {} samples, more than the data chunk can hold ({limit})",
                reader.len()
            ),
        ));
    }
    let declared = reader.len() as usize;
    let (interleaved, encoding): (Vec<f32>, String) = match spec.sample_format {
        hound::SampleFormat::Int => {
            let bits = spec.bits_per_sample;
            if !(1..=32).contains(&bits) {
                return Err(AudioError::decode(path, "unsupported integer bit depth"));
            }
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            let mut v = Vec::with_capacity(declared);
            for s in reader.into_samples::<i32>() {
                let s = s.map_err(|e| truncated(path, v.len(), declared, e))?;
                v.push((s as f64 * scale) as f32);
            }
            (v, format!("wav pcm_s{bits}"))
        }
        hound::SampleFormat::Float => {
            if spec.bits_per_sample != 32 {
                return Err(AudioError::decode(path, "unsupported float bit depth"));
            }
            let mut v = Vec::with_capacity(declared);
            for s in reader.into_samples::<f32>() {
                v.push(s.map_err(|e| truncated(path, v.len(), declared, e))?);
            }
            (v, "wav f32".to_string())
        }
    };
    if interleaved.len() != declared {
        return Err(AudioError::decode(
            path,
            format!(
                "truncated wav: header declares {declared} samples, read {}",
                interleaved.len()
            ),
        ));
    }
    finish(path, interleaved, channels, spec.sample_rate, encoding)
}

fn truncated(path: &Path, read: usize, declared: usize, e: hound::Error) -> AudioError {
    AudioError::decode(
        path,
        format!("truncated or corrupt wav: header declares {declared} samples, read {read} before error: {e}"),
    )
}

fn finish(
    path: &Path,
    interleaved: Vec<f32>,
    channels: u16,
    sample_rate: u32,
    encoding: String,
) -> Result<Audio> {
    if interleaved.is_empty() {
        return Err(AudioError::decode(path, "no audio samples"));
    }
    if !interleaved.len().is_multiple_of(channels as usize) {
        return Err(AudioError::decode(
            path,
            format!(
                "truncated audio: {} samples is not a multiple of {channels} channels",
                interleaved.len()
            ),
        ));
    }
    if let Some(i) = interleaved.iter().position(|x| !x.is_finite()) {
        return Err(AudioError::decode(
            path,
            format!("non-finite sample at index {i}"),
        ));
    }
    Ok(Audio {
        samples: downmix(&interleaved, channels as usize),
        sample_rate,
        channels,
        encoding,
    })
}

/// Mean over channels of interleaved samples (`[s0c0, s0c1, s1c0, ...]`).
pub fn downmix(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return interleaved.to_vec();
    }
    interleaved
        .chunks_exact(channels)
        .map(|f| (f.iter().map(|&x| x as f64).sum::<f64>() / channels as f64) as f32)
        .collect()
}

/// Decodes any container/codec symphonia was built with (FLAC, MP3, AAC/MP4, Vorbis/Ogg, MKV,
/// WAV variants hound refuses).
pub fn decode_symphonia(path: &Path, ext_hint: Option<&str>) -> Result<Audio> {
    let limit = decoded_limit(path)?;
    isolated(path, || symphonia_unchecked(path, ext_hint, limit))
}

/// [`decode_symphonia`] after the header check: at most `limit` interleaved samples.
fn symphonia_unchecked(path: &Path, ext_hint: Option<&str>, limit: u64) -> Result<Audio> {
    use symphonia::core::audio::SampleBuffer;
    use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
    use symphonia::core::errors::Error as SErr;
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::io::{MediaSourceStream, ReadBytes};
    use symphonia::core::meta::MetadataOptions;
    use symphonia::core::probe::Instantiate;

    let file = std::fs::File::open(path).map_err(|e| AudioError::io(path, e))?;
    let mut mss = MediaSourceStream::new(Box::new(file), Default::default());
    // symphonia 0.5's probe ignores hints: it takes the first container marker in the first
    // megabyte, after junk or metadata (ID3). This is `Probe::format` with the header check at
    // the position the marker was found (a WAV behind one junk byte is still a WAV to it).
    let _ = ext_hint;
    let probe = symphonia::default::get_probe();
    let corrupt =
        |e: SErr| AudioError::decode(path, format!("unrecognised or corrupt container: {e}"));
    let mut limit = limit;
    let mut format = loop {
        match probe.next(&mut mss).map_err(corrupt)? {
            Instantiate::Format(make) => {
                let at = mss.pos();
                if at != 0 {
                    if let Some(h) = check_file_at(path, at)? {
                        limit = limit.min(h.max_samples);
                    }
                }
                break make(mss, &FormatOptions::default()).map_err(corrupt)?;
            }
            Instantiate::Metadata(meta) => {
                meta(&MetadataOptions::default())
                    .read_all(&mut mss)
                    .map_err(corrupt)?;
            }
        }
    };
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL && t.codec_params.sample_rate.is_some())
        .ok_or_else(|| AudioError::decode(path, "no decodable audio track"))?;
    let track_id = track.id;
    let sample_rate = track.codec_params.sample_rate.unwrap_or(0);
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&sample_rate) {
        return Err(AudioError::decode(
            path,
            format!("stream declares sample rate {sample_rate} Hz, outside {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE} Hz"),
        ));
    }
    let codec = symphonia::default::get_codecs()
        .get_codec(track.codec_params.codec)
        .map(|d| d.short_name)
        .unwrap_or("unknown");
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| AudioError::decode(path, format!("unsupported codec {codec}: {e}")))?;
    let mut interleaved: Vec<f32> = Vec::new();
    let mut channels: u16 = track
        .codec_params
        .channels
        .map(|c| c.count() as u16)
        .unwrap_or(0);
    let mut buf: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SErr::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SErr::ResetRequired) => break,
            Err(e) => return Err(AudioError::decode(path, format!("corrupt stream: {e}"))),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            Err(e) => {
                return Err(AudioError::decode(
                    path,
                    format!(
                        "corrupt {codec} packet after {} samples: {e}",
                        interleaved.len()
                    ),
                ))
            }
        };
        let spec = *decoded.spec();
        channels = spec.channels.count() as u16;
        let need = decoded.capacity() as u64;
        if buf.as_ref().map(|b| b.capacity() as u64) != Some(need * channels as u64) {
            buf = Some(SampleBuffer::new(need, spec));
        }
        let b = buf.as_mut().expect("sample buffer");
        b.copy_interleaved_ref(decoded);
        if (interleaved.len() as u64).saturating_add(b.samples().len() as u64) > limit {
            return Err(AudioError::decode(
                path,
                format!(
                    "stream decodes to more than {limit} samples (the bound from its header, or the limit for compressed streams)"
                ),
            ));
        }
        interleaved.extend_from_slice(b.samples());
    }
    if channels == 0 || sample_rate == 0 {
        return Err(AudioError::decode(
            path,
            "stream without channel count or sample rate",
        ));
    }
    finish(path, interleaved, channels, sample_rate, codec.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decoder_panic_is_an_error_naming_the_file() {
        let p = Path::new("clips/bad.wav");
        let e = isolated(p, || panic!("TimeBase cannot have 0 denominator")).unwrap_err();
        assert!(matches!(e, AudioError::Decode { .. }));
        let m = e.to_string();
        assert!(
            m.contains("clips/bad.wav") && m.contains("panicked (TimeBase cannot have 0"),
            "{m}"
        );
        let e = isolated(p, || std::panic::panic_any(7u8)).unwrap_err();
        assert!(e.to_string().contains("unknown panic"));
    }
}
