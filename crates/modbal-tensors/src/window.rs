//! The geometry of a 2-D convolution or pooling window, shared by the ops (the `ops` module) and
//! their CPU kernels (the private `cpu` module).

use candle_core::Result;

/// Geometry of a 2-D convolution or pooling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub dh: usize,
    pub dw: usize,
}

impl Window {
    /// Output size for an `h × w` input; errors if the window does not fit, if the input is
    /// empty (`h` or `w` zero), or if a kernel size, stride or dilation is zero.
    pub fn out_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        if h == 0 || w == 0 {
            candle_core::bail!("window over an empty {h}x{w} input");
        }
        if self.kh == 0 || self.kw == 0 || self.dh == 0 || self.dw == 0 {
            candle_core::bail!(
                "window {}x{} with dilation {}x{}: kernel sizes and dilations must be at least 1",
                self.kh,
                self.kw,
                self.dh,
                self.dw
            );
        }
        let eh = self.dh * (self.kh - 1) + 1;
        let ew = self.dw * (self.kw - 1) + 1;
        if h + 2 * self.ph < eh || w + 2 * self.pw < ew || self.sh == 0 || self.sw == 0 {
            candle_core::bail!(
                "window {}x{} (dilation {}x{}, padding {}x{}, stride {}x{}) does not fit a {h}x{w} input",
                self.kh, self.kw, self.dh, self.dw, self.ph, self.pw, self.sh, self.sw
            );
        }
        Ok((
            (h + 2 * self.ph - eh) / self.sh + 1,
            (w + 2 * self.pw - ew) / self.sw + 1,
        ))
    }
}
