//! # modbal-audio: audio decoding, resampling and the field's spectrogram recipes
//!
//! Everything `modbal prepare` needs to turn raw audio into the arrays the imbalanced-multimodal
//! papers train on, in Rust (no Python, no ffmpeg for audio files):
//!
//! * [`decode`]: WAV (hound: PCM 8/16/24/32-bit, float 32) and FLAC/MP3/AAC-in-MP4/Vorbis/MKV
//!   (symphonia) → mono `f32`; corrupt or truncated files are errors naming the file.
//! * [`header`]: WAV / FLAC header checks run before any decoder (sample rate, channels, sizes
//!   against the file length) and the bound on the decoded length; decoder panics on malformed
//!   files become errors.
//! * [`mod@resample`]: Kaiser-windowed sinc resampler (resampy `kaiser_best` design; librosa ≥ 0.10
//!   uses soxr — the difference is documented there).
//! * [`stft`] (librosa conventions), [`fbank`] (Kaldi / `torchaudio.compliance.kaldi.fbank`),
//!   [`spectrogram`] (`scipy.signal.spectrogram`), [`window`], [`fft`].
//! * [`recipe`]: `ogm-ge` (257×188 log-STFT), `fbank` (1024×128), `ave` (257×1004) with the
//!   papers' parameters; [`npy`] writes them.
//!
//! Every numeric building block is tested against an independent implementation (numpy / scipy /
//! librosa / torchaudio; the snippets are quoted in `tests/reference.rs`).
//!
//! # Example
//!
//! ```
//! use modbal_audio::{resample, Audio, Recipe, ResampleConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One second of a 440 Hz tone at 22050 Hz.
//! let samples: Vec<f32> = (0..22050)
//!     .map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 22050.0).sin() * 0.5)
//!     .collect();
//! let tone = Audio { samples, sample_rate: 22050, channels: 1, encoding: "example".into() };
//!
//! // OGM-GE's CREMA-D recipe: tile to 3 s, |STFT| (n_fft 512, hop 353), ln(|S| + 1e-7).
//! let recipe = Recipe::from_name("ogm-ge")?;
//! let feature = recipe.compute(&tone)?;
//! assert_eq!(feature.shape, [257, 188]);
//! assert_eq!(feature.shape, recipe.output_shape());
//!
//! // Band-limited resampling, e.g. to the 16 kHz of the `fbank` and `ave` recipes.
//! let x16 = resample(&tone.samples, 22050, 16000, &ResampleConfig::default())?;
//! assert_eq!(x16.len(), 16000);
//! # Ok(())
//! # }
//! ```

pub mod decode;
pub mod error;
pub mod fbank;
pub mod fft;
pub mod header;
pub mod npy;
pub mod recipe;
pub mod resample;
pub mod spectrogram;
pub mod stft;
pub mod window;

pub use decode::{decode_file, Audio};
pub use error::{AudioError, Result};
pub use recipe::{Feature, Recipe, RECIPE_NAMES};
pub use resample::{resample, ResampleConfig};

/// Versions of the decoders compiled in (for manifests).
pub fn decoder_versions() -> serde_json::Value {
    serde_json::json!({
        "modbal-audio": env!("CARGO_PKG_VERSION"),
        "hound": "3.5",
        "symphonia": "0.5",
    })
}
