// CUDA kernels of modbal-kernels, compiled at run time with nvrtc (src/cuda.rs) with
// `--fmad=false`, so that multiplications and additions round exactly as in the Rust CPU paths.
// Every function here mirrors one in src/rng.rs, src/club.rs or src/noise.rs; keep them in step.
// Self-contained: no headers (nvrtc provides the math functions and fixed-width types are
// declared below).

typedef unsigned int u32;
typedef unsigned long long u64;

// ---------------------------------------------------------------------------------------------
// Philox4x32-10 (Salmon et al. 2011; src/rng.rs).

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

__device__ __forceinline__ void philox4x32_10(u32 c[4], u32 k0, u32 k1) {
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        u64 p0 = (u64)PHILOX_M0 * (u64)c[0];
        u64 p1 = (u64)PHILOX_M1 * (u64)c[2];
        u32 hi0 = (u32)(p0 >> 32), lo0 = (u32)p0;
        u32 hi1 = (u32)(p1 >> 32), lo1 = (u32)p1;
        u32 n0 = hi1 ^ c[1] ^ k0;
        u32 n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
    }
}

__device__ __forceinline__ void philox_words(u64 seed, u32 stream, u64 index, u32 r[4]) {
    r[0] = (u32)index;
    r[1] = (u32)(index >> 32);
    r[2] = stream;
    r[3] = 0u;
    philox4x32_10(r, (u32)seed, (u32)(seed >> 32));
}

#define STREAM_GAUSSIAN 0u
#define STREAM_SALT_PEPPER 1u
#define TWO_POW_M53 (1.0 / 9007199254740992.0)
#define TWO_POW_M24 (1.0f / 16777216.0f)
#define TAU_F64 6.283185307179586
#define TAU_F32 6.2831855f

__device__ __forceinline__ double normal_f64(u64 seed, u64 index) {
    u32 r[4];
    philox_words(seed, STREAM_GAUSSIAN, index, r);
    u64 a = ((((u64)r[0]) << 32) | (u64)r[1]) >> 11;
    u64 b = ((((u64)r[2]) << 32) | (u64)r[3]) >> 11;
    double u1 = (double)(a + 1) * TWO_POW_M53;
    double u2 = (double)b * TWO_POW_M53;
    return sqrt(-2.0 * log(u1)) * cos(TAU_F64 * u2);
}

__device__ __forceinline__ float normal_f32(u64 seed, u64 index) {
    u32 r[4];
    philox_words(seed, STREAM_GAUSSIAN, index, r);
    float u1 = (float)((r[0] >> 8) + 1u) * TWO_POW_M24;
    float u2 = (float)(r[1] >> 8) * TWO_POW_M24;
    return sqrtf(-2.0f * logf(u1)) * cosf(TAU_F32 * u2);
}

__device__ __forceinline__ double salt_pepper_uniform(u64 seed, u64 index) {
    u32 r[4];
    philox_words(seed, STREAM_SALT_PEPPER, index, r);
    u64 a = ((((u64)r[0]) << 32) | (u64)r[1]) >> 11;
    return (double)a * TWO_POW_M53;
}

// ---------------------------------------------------------------------------------------------
// out[i] = k * x[i] + sigma * z(seed, offset + i)   (src/noise.rs, ScaleAddNoise)

extern "C" __global__ void scale_add_noise_f32(const float *x, float *out, u64 n, float k,
                                               float sigma, u64 seed, u64 offset) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (u64)blockDim.x * gridDim.x) {
        float z = normal_f32(seed, offset + i);
        out[i] = k * x[i] + sigma * z;
    }
}

extern "C" __global__ void scale_add_noise_f64(const double *x, double *out, u64 n, double k,
                                               double sigma, u64 seed, u64 offset) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (u64)blockDim.x * gridDim.x) {
        double z = normal_f64(seed, offset + i);
        out[i] = k * x[i] + sigma * z;
    }
}

// ---------------------------------------------------------------------------------------------
// Salt-and-pepper: u < eps/2 -> lo, else u < eps -> hi, else x   (src/noise.rs, SaltPepper)

extern "C" __global__ void salt_pepper_f32(const float *x, float *out, u64 n, double half_eps,
                                           double eps, float lo, float hi, u64 seed,
                                           u64 offset) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (u64)blockDim.x * gridDim.x) {
        double u = salt_pepper_uniform(seed, offset + i);
        out[i] = u < half_eps ? lo : (u < eps ? hi : x[i]);
    }
}

extern "C" __global__ void salt_pepper_f64(const double *x, double *out, u64 n, double half_eps,
                                           double eps, double lo, double hi, u64 seed,
                                           u64 offset) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (u64)blockDim.x * gridDim.x) {
        double u = salt_pepper_uniform(seed, offset + i);
        out[i] = u < half_eps ? lo : (u < eps ? hi : x[i]);
    }
}

// ---------------------------------------------------------------------------------------------
// CLUB log-likelihood matrix (src/club.rs):
//   w[i,d] = 0.5 * exp(-lv[i,d]),  c[i] = 0.5 * sum_d lv[i,d] + D * 0.5 * ln(2 pi)
//   L[i,j] = -(sum_d w[i,d] * (y[j,d] - mu[i,d])^2) - c[i]
// Pass 1 (one thread per row i) writes w and c; pass 2 tiles 16 x 16 outputs per block and walks
// d in order 0..D-1 in tiles of 16 through shared memory (the CPU's summation order).

#define HALF_LN_2PI 0.9189385332046728
#define TILE 16

#define CLUB_KERNELS(T, SUFFIX, EXP)                                                           \
    extern "C" __global__ void club_prep_##SUFFIX(const T *lv, T *w, T *c, u32 n, u32 d) {      \
        u32 i = blockIdx.x * blockDim.x + threadIdx.x;                                          \
        if (i >= n) return;                                                                     \
        T s = (T)0;                                                                             \
        for (u32 e = 0; e < d; ++e) {                                                           \
            T v = lv[(u64)i * d + e];                                                           \
            w[(u64)i * d + e] = (T)0.5 * EXP(-v);                                               \
            s += v;                                                                             \
        }                                                                                       \
        c[i] = (T)0.5 * s + (T)((double)d * HALF_LN_2PI);                                       \
    }                                                                                           \
    extern "C" __global__ void club_llmat_##SUFFIX(const T *mu, const T *w, const T *c,        \
                                                    const T *y, T *out, u32 n, u32 m, u32 d) {  \
        __shared__ T s_mu[TILE][TILE + 1];                                                      \
        __shared__ T s_w[TILE][TILE + 1];                                                       \
        __shared__ T s_y[TILE][TILE + 1];                                                       \
        u32 tx = threadIdx.x, ty = threadIdx.y;                                                 \
        u32 i = blockIdx.y * TILE + ty; /* row of mu / out */                                   \
        u32 j = blockIdx.x * TILE + tx; /* row of y, column of out */                           \
        u32 i_load = blockIdx.y * TILE + tx;                                                    \
        u32 j_load = blockIdx.x * TILE + ty;                                                    \
        T acc = (T)0;                                                                           \
        for (u32 d0 = 0; d0 < d; d0 += TILE) {                                                  \
            /* thread (tx, ty) loads element d0 + ty of row i_load and d0 + tx of row j_load */ \
            u32 e = d0 + ty;                                                                    \
            bool ok = i_load < n && e < d;                                                      \
            s_mu[tx][ty] = ok ? mu[(u64)i_load * d + e] : (T)0;                                 \
            s_w[tx][ty] = ok ? w[(u64)i_load * d + e] : (T)0;                                   \
            u32 e2 = d0 + tx;                                                                   \
            s_y[ty][tx] = (j_load < m && e2 < d) ? y[(u64)j_load * d + e2] : (T)0;              \
            __syncthreads();                                                                    \
            u32 len = d - d0 < TILE ? d - d0 : TILE;                                            \
            for (u32 t = 0; t < len; ++t) {                                                     \
                T diff = s_y[tx][t] - s_mu[ty][t];                                              \
                acc += s_w[ty][t] * diff * diff;                                                \
            }                                                                                   \
            __syncthreads();                                                                    \
        }                                                                                       \
        if (i < n && j < m) out[(u64)i * m + j] = -acc - c[i];                                  \
    }

CLUB_KERNELS(float, f32, expf)
CLUB_KERNELS(double, f64, exp)
