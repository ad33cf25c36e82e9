//! Image decoding, frame sampling and the image transforms of the field, all seeded.
//!
//! * Decoding: JPEG and PNG through the `image` crate ([`decode_rgb`], [`decode_gray`],
//!   [`decode_depth`]); every failure names the file.
//! * [`segment_indices`]: `T` frames out of `n`, evenly spaced (TSN-style segments). Segment
//!   `k` covers `[k·n/T, (k+1)·n/T)`; evaluation takes its centre `⌊(2k+1)·n / 2T⌋`, training a
//!   uniformly random frame of it, `⌊(k + u_k)·n/T⌋` with `u_k ~ U[0, 1)` from the caller's
//!   generator. With `n < T` frames repeat.
//! * [`random_resized_crop`]: torchvision's `RandomResizedCrop` parameters (scale 0.08–1 of the
//!   area, aspect ratio log-uniform in 3/4–4/3, ten tries, then a centre crop clamped to the
//!   ratio range).
//! * [`crop_resize`]: crop + bilinear resize (half-pixel centres, no antialiasing: PyTorch's
//!   `F.interpolate(mode="bilinear", align_corners=False)`), optional horizontal flip, output
//!   channel-major `[C, H, W]`.
//! * [`normalize`]: `(x − mean_c) / std_c` per channel; [`IMAGENET_MEAN`] / [`IMAGENET_STD`].
//!
//! The evaluation transform is OGM-GE's `Resize((S, S))` of the whole frame (aspect ratio not
//! kept); the training transform `RandomResizedCrop(S)` + `RandomHorizontalFlip()`.
//! Randomness only ever comes from a [`SeededRng`] the caller derives per sample, so a batch
//! does not depend on thread timing.

use modbal_core::{ModbalError, Result};
use modbal_tensors::SeededRng;
use std::path::Path;

/// ImageNet channel means (RGB), as torchvision's pretrained models use them.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A decoded image: `height × width × channels` values, interleaved (HWC), scaled to `[0, 1]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<f32>,
}

impl Image {
    /// A constant image (tests, fixtures).
    pub fn filled(width: usize, height: usize, value: &[f32]) -> Self {
        let mut data = Vec::with_capacity(width * height * value.len());
        for _ in 0..width * height {
            data.extend_from_slice(value);
        }
        Self {
            width,
            height,
            channels: value.len(),
            data,
        }
    }
    #[inline]
    fn at(&self, x: usize, y: usize, c: usize) -> f32 {
        self.data[(y * self.width + x) * self.channels + c]
    }
}

fn open(path: &Path) -> Result<image::DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| ModbalError::io("reading", path, e))?;
    image::load_from_memory(&bytes).map_err(|e| {
        ModbalError::Data(format!(
            "{}: cannot decode image ({e}); the file is corrupt or not a JPEG/PNG",
            path.display()
        ))
    })
}

/// Decode an RGB image (grey images are replicated, alpha dropped), values `/255`.
pub fn decode_rgb(path: &Path) -> Result<Image> {
    let img = open(path)?.into_rgb8();
    let (w, h) = img.dimensions();
    Ok(Image {
        width: w as usize,
        height: h as usize,
        channels: 3,
        data: img
            .into_raw()
            .into_iter()
            .map(|v| v as f32 / 255.0)
            .collect(),
    })
}

/// Decode a one-channel image (colour images are converted to luma), values `/255`.
pub fn decode_gray(path: &Path) -> Result<Image> {
    let img = open(path)?.into_luma8();
    let (w, h) = img.dimensions();
    Ok(Image {
        width: w as usize,
        height: h as usize,
        channels: 1,
        data: img
            .into_raw()
            .into_iter()
            .map(|v| v as f32 / 255.0)
            .collect(),
    })
}

/// Decode a depth map: a 16-bit PNG is read as millimetres and divided by `max_depth_mm`
/// (clipped to `[0, 1]`); an 8-bit image (already scaled by whoever wrote it) is `/255`.
pub fn decode_depth(path: &Path, max_depth_mm: f32) -> Result<Image> {
    let img = open(path)?;
    let sixteen = matches!(
        img.color(),
        image::ColorType::L16 | image::ColorType::La16 | image::ColorType::Rgb16
    );
    if sixteen {
        let g = img.into_luma16();
        let (w, h) = g.dimensions();
        Ok(Image {
            width: w as usize,
            height: h as usize,
            channels: 1,
            data: g
                .into_raw()
                .into_iter()
                .map(|v| (v as f32 / max_depth_mm).clamp(0.0, 1.0))
                .collect(),
        })
    } else {
        let g = img.into_luma8();
        let (w, h) = g.dimensions();
        Ok(Image {
            width: w as usize,
            height: h as usize,
            channels: 1,
            data: g.into_raw().into_iter().map(|v| v as f32 / 255.0).collect(),
        })
    }
}

/// `T` frame indices out of `n` (see the module docs). `rng = None`: segment centres.
pub fn segment_indices(n: usize, t: usize, rng: Option<&mut SeededRng>) -> Vec<usize> {
    if n == 0 || t == 0 {
        return Vec::new();
    }
    match rng {
        None => (0..t).map(|k| (2 * k + 1) * n / (2 * t)).collect(),
        Some(rng) => (0..t)
            .map(|k| {
                let u = rng.uniform();
                let i = ((k as f64 + u) * n as f64 / t as f64).floor() as usize;
                // Keep the draw inside segment k despite rounding.
                i.clamp(k * n / t, ((k + 1) * n).div_ceil(t).max(1) - 1)
                    .min(n - 1)
            })
            .collect(),
    }
}

/// A crop rectangle in pixels of the source image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CropBox {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

impl CropBox {
    pub fn full(width: usize, height: usize) -> Self {
        Self {
            x: 0,
            y: 0,
            width,
            height,
        }
    }
}

/// torchvision's `RandomResizedCrop.get_params` for an image `width × height`: area fraction
/// `U(scale)`, aspect ratio `exp(U(ln ratio))`, up to ten tries; else the whole image clamped
/// to the ratio range, centred.
pub fn random_resized_crop(
    width: usize,
    height: usize,
    scale: [f64; 2],
    ratio: [f64; 2],
    rng: &mut SeededRng,
) -> CropBox {
    let area = (width * height) as f64;
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = area * (scale[0] + (scale[1] - scale[0]) * rng.uniform());
        let aspect = (lr0 + (lr1 - lr0) * rng.uniform()).exp();
        let w = (target * aspect).sqrt().round() as usize;
        let h = (target / aspect).sqrt().round() as usize;
        if w > 0 && h > 0 && w <= width && h <= height {
            let y = rng.below(height - h + 1);
            let x = rng.below(width - w + 1);
            return CropBox {
                x,
                y,
                width: w,
                height: h,
            };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio[0] {
        (width, ((width as f64 / ratio[0]).round() as usize).max(1))
    } else if in_ratio > ratio[1] {
        (((height as f64 * ratio[1]).round() as usize).max(1), height)
    } else {
        (width, height)
    };
    CropBox {
        x: (width - w) / 2,
        y: (height - h) / 2,
        width: w,
        height: h,
    }
}

/// Crop `b` of `img`, resize it bilinearly to `out_h × out_w` (half-pixel centres, edge
/// clamping, no antialiasing), optionally flip horizontally; returns `[C, out_h, out_w]`.
pub fn crop_resize(img: &Image, b: CropBox, out_h: usize, out_w: usize, flip: bool) -> Vec<f32> {
    let c = img.channels;
    let mut out = vec![0.0f32; c * out_h * out_w];
    let sx = b.width as f64 / out_w as f64;
    let sy = b.height as f64 / out_h as f64;
    // Horizontal taps once per output column.
    let xs: Vec<(usize, usize, f32)> = (0..out_w)
        .map(|j| {
            let src = ((j as f64 + 0.5) * sx - 0.5).clamp(0.0, (b.width - 1) as f64);
            let x0 = src.floor() as usize;
            let x1 = (x0 + 1).min(b.width - 1);
            (b.x + x0, b.x + x1, (src - x0 as f64) as f32)
        })
        .collect();
    for i in 0..out_h {
        let src = ((i as f64 + 0.5) * sy - 0.5).clamp(0.0, (b.height - 1) as f64);
        let y0 = src.floor() as usize;
        let y1 = (y0 + 1).min(b.height - 1);
        let fy = (src - y0 as f64) as f32;
        let (y0, y1) = (b.y + y0, b.y + y1);
        for (j, &(x0, x1, fx)) in xs.iter().enumerate() {
            let jj = if flip { out_w - 1 - j } else { j };
            for ch in 0..c {
                let top = img.at(x0, y0, ch) * (1.0 - fx) + img.at(x1, y0, ch) * fx;
                let bot = img.at(x0, y1, ch) * (1.0 - fx) + img.at(x1, y1, ch) * fx;
                out[(ch * out_h + i) * out_w + jj] = top * (1.0 - fy) + bot * fy;
            }
        }
    }
    out
}

/// `(x − mean[c]) / std[c]` in place on a `[C, H, W]` buffer.
pub fn normalize(chw: &mut [f32], mean: &[f32], std: &[f32]) {
    let c = mean.len();
    let plane = chw.len() / c;
    for ch in 0..c {
        for v in &mut chw[ch * plane..(ch + 1) * plane] {
            *v = (*v - mean[ch]) / std[ch];
        }
    }
}

/// The training / evaluation image transform of the field.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageTransform {
    /// Output side `S` (square).
    pub size: usize,
    /// Random crop on training samples (`RandomResizedCrop`); `false`: resize like evaluation.
    pub random_crop: bool,
    pub scale: [f64; 2],
    pub ratio: [f64; 2],
    /// Random horizontal flip (p = 0.5) on training samples.
    pub hflip: bool,
}

impl ImageTransform {
    /// Draw the crop and the flip for one image of `width × height` (training), or the
    /// evaluation transform (`rng = None`: whole image, no flip).
    pub fn draw(
        &self,
        width: usize,
        height: usize,
        rng: Option<&mut SeededRng>,
    ) -> (CropBox, bool) {
        match rng {
            None => (CropBox::full(width, height), false),
            Some(rng) => {
                let b = if self.random_crop {
                    random_resized_crop(width, height, self.scale, self.ratio, rng)
                } else {
                    CropBox::full(width, height)
                };
                let flip = self.hflip && rng.uniform() < 0.5;
                (b, flip)
            }
        }
    }

    /// Checks the parameters (`what` names the config section in errors).
    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |m: String| Err(ModbalError::Config(format!("{what}: {m}")));
        if self.size == 0 {
            return bad("image_size must be > 0".into());
        }
        let [s0, s1] = self.scale;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return bad(format!(
                "crop_scale must satisfy 0 < lo <= hi <= 1, got {:?}",
                self.scale
            ));
        }
        let [r0, r1] = self.ratio;
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            return bad(format!(
                "crop_ratio must satisfy 0 < lo <= hi, got {:?}",
                self.ratio
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize, a: f32, b: f32, c0: f32) -> Image {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.push(a * x as f32 + b * y as f32 + c0);
            }
        }
        Image {
            width: w,
            height: h,
            channels: 1,
            data,
        }
    }

    #[test]
    fn bilinear_halving_of_a_ramp_is_exact() {
        // Closed form: bilinear interpolation reproduces affine functions; halving samples the
        // source at x' = 2j + 0.5, y' = 2i + 0.5 (half-pixel centres).
        let img = ramp(8, 6, 0.5, -0.25, 3.0);
        let out = crop_resize(&img, CropBox::full(8, 6), 3, 4, false);
        for i in 0..3 {
            for j in 0..4 {
                let want = 0.5 * (2.0 * j as f32 + 0.5) - 0.25 * (2.0 * i as f32 + 0.5) + 3.0;
                assert!((out[i * 4 + j] - want).abs() < 1e-5, "{i},{j}");
            }
        }
        // Flip mirrors the columns.
        let f = crop_resize(&img, CropBox::full(8, 6), 3, 4, true);
        assert_eq!(f[3], out[0]);
        // A crop of the ramp equals the ramp shifted by the crop origin.
        let b = CropBox {
            x: 2,
            y: 1,
            width: 4,
            height: 4,
        };
        let c = crop_resize(&img, b, 2, 2, false);
        let want = 0.5 * (2.0 + 0.5) - 0.25 * (1.0 + 0.5) + 3.0;
        assert!((c[0] - want).abs() < 1e-5);
    }

    #[test]
    fn segment_centres_and_random_draws_stay_in_their_segment() {
        // Closed form: centre of segment k = floor((2k+1) n / 2T).
        assert_eq!(segment_indices(10, 3, None), vec![1, 5, 8]);
        assert_eq!(segment_indices(3, 3, None), vec![0, 1, 2]);
        assert_eq!(segment_indices(2, 4, None), vec![0, 0, 1, 1]);
        let mut rng = SeededRng::new(3);
        for n in 1..40 {
            for t in 1..6 {
                let ix = segment_indices(n, t, Some(&mut rng));
                for (k, &i) in ix.iter().enumerate() {
                    assert!(i < n);
                    let lo = k * n / t;
                    let hi = ((k + 1) * n).div_ceil(t).max(lo + 1);
                    assert!(
                        i >= lo.min(n - 1) && i < hi.max(1),
                        "n {n} t {t} k {k} i {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn random_resized_crop_respects_scale_and_ratio() {
        let mut rng = SeededRng::new(7);
        let (w, h) = (320, 240);
        let mut fractions = Vec::new();
        for _ in 0..2000 {
            let b = random_resized_crop(w, h, [0.08, 1.0], [3.0 / 4.0, 4.0 / 3.0], &mut rng);
            assert!(b.x + b.width <= w && b.y + b.height <= h);
            let frac = (b.width * b.height) as f64 / (w * h) as f64;
            let asp = b.width as f64 / b.height as f64;
            // Rounding of w and h moves the fraction and ratio slightly.
            assert!((0.07..=1.0).contains(&frac), "{frac}");
            assert!(asp > 0.70 && asp < 1.40, "{asp}");
            fractions.push(frac);
        }
        // E[area fraction] ≈ (0.08 + 1)/2 = 0.54 minus the rejected large draws (< 0.54).
        let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
        assert!(mean > 0.35 && mean < 0.56, "{mean}");
    }

    #[test]
    fn normalize_closed_form() {
        let mut x = vec![0.5f32; 3 * 4];
        normalize(&mut x, &IMAGENET_MEAN, &IMAGENET_STD);
        for c in 0..3 {
            let want = (0.5 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            assert!(x[c * 4..(c + 1) * 4]
                .iter()
                .all(|v| (v - want).abs() < 1e-6));
        }
    }

    #[test]
    fn corrupt_image_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.jpg");
        std::fs::write(&p, b"\xFF\xD8\xFF\xE0 not really a jpeg").unwrap();
        let e = decode_rgb(&p).unwrap_err().to_string();
        assert!(e.contains("bad.jpg") && e.contains("decode"), "{e}");
        let e = decode_rgb(&dir.path().join("missing.png"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.png"), "{e}");
    }
}
