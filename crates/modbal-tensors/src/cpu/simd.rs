//! Run-time dispatch of the kernels' inner loops to the best instruction set the CPU has
//! (`simd_fn!`), and the element types the kernels take ([`Float`]).

/// Defines `fn name<T: Float>(args) -> ret` whose body is compiled three times: for AVX-512
/// (`x86-64-v4`), for AVX2 + FMA (`x86-64-v3`) and for the build's baseline (SSE2 on x86-64),
/// and picks the best one the running CPU has (`is_x86_feature_detected!`, cached by std).
/// The release build targets the baseline so that the binaries run on any x86-64; without
/// this, the element-wise loops below compile to SSE2 code (scalar for the f64 reductions).
/// Use it for the sequential inner loop of a kernel (one plane, one chunk): closures handed to
/// rayon are separate functions and would not inherit the features.
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident<$T:ident>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<$T: Float>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<$T: Float>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4<$T: Float>($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3<$T: Float>($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU has the features v4 is compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features v3 is compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(super) use simd_fn;

/// Element types of the kernels (f32, f64).
pub(crate) trait Float:
    candle_core::WithDType
    + Send
    + Sync
    + Copy
    + PartialOrd
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::Add<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Sub<Output = Self>
    + 'static
{
}
impl Float for f32 {}
impl Float for f64 {}
