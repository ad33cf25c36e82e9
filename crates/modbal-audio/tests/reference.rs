//! The recipes against independent implementations.
//!
//! Reference numbers were computed once, at test-writing time, with numpy 2.4.6, scipy 1.17.1,
//! librosa 0.11.0 (soxr 1.1.0) and torch 2.15 + torchaudio 2.11.0's `compliance/kaldi.py` (that file
//! is pure torch; it was loaded on its own because the torchaudio wheel's extension does not match
//! torch 2.15). The snippet (`signal()` is reproduced bit-for-bit by [`signal`] below):
//!
//! ```python
//! def signal(sr, n):
//!     t = np.arange(n, dtype=np.float64)
//!     noise = ((np.arange(n, dtype=np.int64) * 40503) % 65536) / 32768.0 - 1.0
//!     x = (0.5 + 0.3*np.sin(2*np.pi*3*t/sr)) * (0.6*np.sin(2*np.pi*440*t/sr)
//!          + 0.3*np.sin(2*np.pi*3100*t/sr + 0.5)) + 0.1*noise
//!     return x.astype(np.float32).astype(np.float64)
//! # STFT_*: OGM-GE log-STFT at 22050 Hz, 3 s
//! x = signal(22050, 66150)
//! S = np.log(np.abs(librosa.stft(x, n_fft=512, hop_length=353, pad_mode=mode)) + 1e-7)  # 'constant' | 'reflect'
//! # FBANK_*: the field's call (MMPareto / BalanceMM), 16 kHz, 40000 samples
//! w = torch.from_numpy(signal(16000, 40000))[None, :]; w = w - w.mean()
//! fb = kaldi.fbank(w, htk_compat=True, sample_frequency=16000, use_energy=False,
//!                  window_type=win, num_mel_bins=128, dither=0.0, frame_shift=10)  # 'hanning' | 'povey'
//! fb = torch.nn.ZeroPad2d((0, 0, 0, 1024 - fb.shape[0]))(fb)
//! fb = ((fb + 4.503877) / (5.141276 * 2)).numpy()
//! # AVE: PMR's AVE spectrogram, 16 kHz, 40000 samples
//! r = np.tile(signal(16000, 40000), 10)[:160000]; r[r > 1] = 1; r[r < -1] = -1
//! _, _, P = scipy.signal.spectrogram(r, 16000, nperseg=512, noverlap=353)
//! P = np.log(P + 1e-7); P = (P - P.mean()) / (P.std() + 1e-9)
//! # RESAMPLE_POLY_SOXR: (j, resample_poly, soxr_hq) for 16 kHz -> 22050 Hz of signal(16000, 16000)
//! rp = scipy.signal.resample_poly(x, 441, 320)
//! sx = librosa.resample(x, orig_sr=16000, target_sr=22050, res_type='soxr_hq')
//! # each table: [(row, col, value)] at a few rows × columns, plus (mean, std) of the whole array
//! ```

use modbal_audio::fbank::KaldiWindow;
use modbal_audio::recipe::{AveRecipe, FbankRecipe, OgmGeRecipe};
use modbal_audio::stft::PadMode;
use modbal_audio::{resample, Audio, Recipe, ResampleConfig};

fn signal(sr: u32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let t = i as f64;
            let sr = sr as f64;
            let pi = std::f64::consts::PI;
            let noise = ((i as i64 * 40503) % 65536) as f64 / 32768.0 - 1.0;
            let x = (0.5 + 0.3 * (2.0 * pi * 3.0 * t / sr).sin())
                * (0.6 * (2.0 * pi * 440.0 * t / sr).sin()
                    + 0.3 * (2.0 * pi * 3100.0 * t / sr + 0.5).sin())
                + 0.1 * noise;
            x as f32
        })
        .collect()
}

fn audio(sr: u32, n: usize) -> Audio {
    Audio {
        samples: signal(sr, n),
        sample_rate: sr,
        channels: 1,
        encoding: "test".into(),
    }
}

/// Max abs error at the reference points and of (mean, std); asserts both below `tol`.
fn check(
    what: &str,
    got: &modbal_audio::Feature,
    shape: [usize; 2],
    pts: &[(usize, usize, f64)],
    mean_std: (f64, f64),
    tol: f64,
) -> f64 {
    assert_eq!(got.shape, shape, "{what}: shape");
    let mut worst = 0.0f64;
    for &(r, c, want) in pts {
        let v = got.data[r * shape[1] + c] as f64;
        let e = (v - want).abs();
        assert!(
            e < tol,
            "{what}[{r},{c}] = {v}, reference {want} (error {e})"
        );
        worst = worst.max(e);
    }
    let n = got.data.len() as f64;
    let mean = got.data.iter().map(|&v| v as f64).sum::<f64>() / n;
    let std = (got
        .data
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    assert!(
        (mean - mean_std.0).abs() < tol,
        "{what}: mean {mean} vs {}",
        mean_std.0
    );
    assert!(
        (std - mean_std.1).abs() < tol,
        "{what}: std {std} vs {}",
        mean_std.1
    );
    eprintln!("{what}: max abs error at the reference points {worst:.2e}");
    worst
}

#[test]
fn ogm_ge_log_stft_matches_librosa() {
    let r = Recipe::from_name("ogm-ge").unwrap();
    let f = r.compute(&audio(22050, 66150)).unwrap();
    check(
        "stft constant",
        &f,
        [257, 188],
        STFT_CONSTANT,
        STFT_CONSTANT_MEAN_STD,
        2e-5,
    );
    let r = Recipe::OgmGe(OgmGeRecipe {
        stft: modbal_audio::stft::StftConfig {
            pad_mode: PadMode::Reflect,
            ..OgmGeRecipe::default().stft
        },
        ..OgmGeRecipe::default()
    });
    let f = r.compute(&audio(22050, 66150)).unwrap();
    check(
        "stft reflect",
        &f,
        [257, 188],
        STFT_REFLECT,
        STFT_REFLECT_MEAN_STD,
        2e-5,
    );
}

#[test]
fn fbank_matches_torchaudio_kaldi() {
    let f = Recipe::from_name("fbank")
        .unwrap()
        .compute(&audio(16000, 40000))
        .unwrap();
    check(
        "fbank hanning",
        &f,
        [1024, 128],
        FBANK_HANNING,
        FBANK_HANNING_MEAN_STD,
        1e-5,
    );
    let mut p = FbankRecipe::default();
    p.fbank.window = KaldiWindow::Povey;
    let f = Recipe::Fbank(p).compute(&audio(16000, 40000)).unwrap();
    check(
        "fbank povey",
        &f,
        [1024, 128],
        FBANK_POVEY,
        FBANK_POVEY_MEAN_STD,
        1e-5,
    );
}

#[test]
fn ave_spectrogram_matches_scipy() {
    let f = Recipe::Ave(AveRecipe::default())
        .compute(&audio(16000, 40000))
        .unwrap();
    check("ave", &f, [257, 1004], AVE, AVE_MEAN_STD, 2e-5);
}

#[test]
fn resampler_against_scipy_and_soxr() {
    // Our Kaiser-sinc, scipy's resample_poly (Kaiser β=5 FIR) and soxr_hq are three different
    // band-limited designs: they agree on in-band content and differ in the transition band,
    // where the test signal's pseudo-noise has energy. Measured: ≤ 8e-3 from either.
    let y = resample(
        &signal(16000, 16000),
        16000,
        22050,
        &ResampleConfig::default(),
    )
    .unwrap();
    assert_eq!(y.len(), 22050);
    for &(j, poly, soxr) in RESAMPLE_POLY_SOXR {
        let v = y[j] as f64;
        eprintln!("resample[{j}] = {v:.6}: resample_poly {poly:.6}, soxr_hq {soxr:.6}");
        assert!((v - poly).abs() < 1e-2 && (v - soxr).abs() < 1e-2);
    }
}

const STFT_CONSTANT: &[(usize, usize, f64)] = &[
    (0, 0, 0.9097959126661442),
    (0, 1, -2.307661089408761),
    (0, 93, -4.30942421636066),
    (0, 187, 0.1546542872066878),
    (1, 0, 0.9109987637132302),
    (1, 1, -3.873221694075447),
    (1, 93, -2.8740793322007026),
    (1, 187, 0.08297547423499062),
    (20, 0, -0.4564918901052324),
    (20, 1, -2.2041012407965552),
    (20, 93, -2.235387500829597),
    (20, 187, -1.2239403287506687),
    (41, 0, -1.5269839678563786),
    (41, 1, -2.011507789407311),
    (41, 93, -2.147323713081821),
    (41, 187, -1.8484782948472092),
    (100, 0, -1.5746507295835999),
    (100, 1, -2.5523923596311335),
    (100, 93, -2.354478476339248),
    (100, 187, -1.773961189885594),
    (144, 0, -2.5387860709553194),
    (144, 1, -2.0447114699747155),
    (144, 93, -2.1853484234053124),
    (144, 187, -2.2713967629059955),
    (256, 0, -2.0409070056832914),
    (256, 1, -2.5894174337020592),
    (256, 93, -2.4237552174124137),
    (256, 187, -2.0924097117895317),
];
const STFT_CONSTANT_MEAN_STD: (f64, f64) = (-1.560966308627421, 1.1437445865703264);

const STFT_REFLECT: &[(usize, usize, f64)] = &[
    (0, 0, 1.6085809856583382),
    (0, 1, -2.307661089408761),
    (0, 93, -4.30942421636066),
    (0, 187, 0.8080665185739172),
    (1, 0, 1.6097732776531049),
    (1, 1, -3.873221694075447),
    (1, 93, -2.8740793322007026),
    (1, 187, 0.7794583045726586),
    (20, 0, 0.21312436890933675),
    (20, 1, -2.2041012407965552),
    (20, 93, -2.235387500829597),
    (20, 187, -0.5048313416047786),
    (41, 0, -0.981903500528602),
    (41, 1, -2.011507789407311),
    (41, 93, -2.147323713081821),
    (41, 187, -2.310329081423835),
    (100, 0, -1.0604947388176864),
    (100, 1, -2.5523923596311335),
    (100, 93, -2.354478476339248),
    (100, 187, -1.3908788631872901),
    (144, 0, -2.2804751988215406),
    (144, 1, -2.0447114699747155),
    (144, 93, -2.1853484234053124),
    (144, 187, -2.1889126332827917),
    (256, 0, -1.4621591339447921),
    (256, 1, -2.5894174337020592),
    (256, 93, -2.4237552174124137),
    (256, 187, -2.06577030337053),
];
const STFT_REFLECT_MEAN_STD: (f64, f64) = (-1.5583984021829047, 1.147375913284126);

const FBANK_HANNING: &[(usize, usize, f64)] = &[
    (0, 0, -1.0913288699785597),
    (0, 1, -0.9260934285547957),
    (0, 64, 0.07441714000616224),
    (0, 127, 0.4302428120153493),
    (1, 0, -0.588539412710644),
    (1, 1, -1.0499682113252458),
    (1, 64, 0.12280090531650116),
    (1, 127, 0.4233433099327597),
    (100, 0, -0.6690325995027362),
    (100, 1, -0.9382653548961337),
    (100, 64, 0.09205874929233489),
    (100, 127, 0.4283631993103605),
    (247, 0, -0.5949591303733871),
    (247, 1, -0.890991077558476),
    (247, 64, 0.08275799055938139),
    (247, 127, 0.4294649104543988),
    (248, 0, 0.43801159478697504),
    (248, 1, 0.43801159478697504),
    (248, 64, 0.43801159478697504),
    (248, 127, 0.43801159478697504),
    (1023, 0, 0.43801159478697504),
    (1023, 1, 0.43801159478697504),
    (1023, 64, 0.43801159478697504),
    (1023, 127, 0.43801159478697504),
];
const FBANK_HANNING_MEAN_STD: (f64, f64) = (0.3609644097425898, 0.24112394559686331);

const FBANK_POVEY: &[(usize, usize, f64)] = &[
    (0, 0, -0.8192428869923624),
    (0, 1, -0.8776598392149444),
    (0, 64, 0.08311282865108921),
    (0, 127, 0.43591081522935576),
    (1, 0, -0.5331172179132633),
    (1, 1, -0.9429395073888966),
    (1, 64, 0.1270928894628401),
    (1, 127, 0.4304103422906643),
    (100, 0, -0.5915563060294088),
    (100, 1, -0.9059598417507378),
    (100, 64, 0.0993652016737775),
    (100, 127, 0.4343929477353964),
    (247, 0, -0.5685089061927867),
    (247, 1, -0.8310569511700456),
    (247, 64, 0.09091146642750168),
    (247, 127, 0.4352688784781356),
    (248, 0, 0.43801159478697504),
    (248, 1, 0.43801159478697504),
    (248, 64, 0.43801159478697504),
    (248, 127, 0.43801159478697504),
    (1023, 0, 0.43801159478697504),
    (1023, 1, 0.43801159478697504),
    (1023, 64, 0.43801159478697504),
    (1023, 127, 0.43801159478697504),
];
const FBANK_POVEY_MEAN_STD: (f64, f64) = (0.3626127841098866, 0.2380551925316663);

const AVE: &[(usize, usize, f64)] = &[
    (0, 0, -0.469796415911219),
    (0, 1, 0.0024210245956211426),
    (0, 251, -0.5118721760946368),
    (0, 1003, 0.41864479699733587),
    (1, 0, -0.5559630596316886),
    (1, 1, -0.5637302652293092),
    (1, 251, -0.5594028449226394),
    (1, 1003, -0.5643770073584085),
    (20, 0, 0.9773684794133396),
    (20, 1, 0.9882308127167596),
    (20, 251, 0.9968703710099436),
    (20, 1003, 0.8772378581982125),
    (100, 0, 3.839837633791529),
    (100, 1, 3.948252296153518),
    (100, 251, 3.7475834246842794),
    (100, 1003, 3.848484216737282),
    (255, 0, -0.4785531936312356),
    (255, 1, -0.4428260196917172),
    (255, 251, -0.39611785353080037),
    (255, 1003, -0.48831185527261245),
    (256, 0, -0.5624429260780124),
    (256, 1, -0.561278166266055),
    (256, 251, -0.5555018157109461),
    (256, 1003, -0.5641935561519624),
];
const AVE_MEAN_STD: (f64, f64) = (-2.3087379263539925e-16, 0.999999999315352);

const RESAMPLE_POLY_SOXR: &[(usize, f64, f64)] = &[
    (2000, 0.017966855415769853, 0.011769027449190617),
    (5000, -0.17294836071698455, -0.1716105341911316),
    (11025, 0.014697183963111432, 0.010989833623170853),
    (17000, 0.6380037597855704, 0.6392198801040649),
];
