// Runs the element-wise kernels of src/kernels.cu on the host (one thread does every element
// through the grid-stride loops), to check that the CUDA C source computes what the Rust CPU
// paths compute. Used by tests/cuda_source_on_host.rs; compiled with -ffp-contract=off (the
// nvrtc flag --fmad=false). Prints one hexadecimal bit pattern per element.
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define __device__
#define __forceinline__ inline
#define __global__
#define __shared__ static
struct Dim3 {
    unsigned x, y, z;
};
static Dim3 blockIdx = {0, 0, 0}, threadIdx = {0, 0, 0}, blockDim = {1, 1, 1},
            gridDim = {1, 1, 1};
static void __syncthreads() {}
using std::cos;
using std::exp;
using std::log;
using std::sqrt;

#include "../../src/kernels.cu"

int main(int argc, char **argv) {
    if (argc != 6) {
        std::fprintf(stderr, "usage: harness KERNEL N SEED OFFSET PARAM\n");
        return 2;
    }
    const char *kernel = argv[1];
    u64 n = std::strtoull(argv[2], nullptr, 10);
    u64 seed = std::strtoull(argv[3], nullptr, 10);
    u64 offset = std::strtoull(argv[4], nullptr, 10);
    double param = std::strtod(argv[5], nullptr);
    // x_i = i / 1000 - 1 (exact in both dtypes for the sizes used).
    if (std::strcmp(kernel, "scale_add_noise_f64") == 0) {
        std::vector<double> x(n), out(n);
        for (u64 i = 0; i < n; ++i) x[i] = (double)i / 1000.0 - 1.0;
        scale_add_noise_f64(x.data(), out.data(), n, param, 0.25, seed, offset);
        for (double v : out) {
            uint64_t b;
            std::memcpy(&b, &v, 8);
            std::printf("%016" PRIx64 "\n", b);
        }
    } else if (std::strcmp(kernel, "scale_add_noise_f32") == 0) {
        std::vector<float> x(n), out(n);
        for (u64 i = 0; i < n; ++i) x[i] = (float)((double)i / 1000.0 - 1.0);
        scale_add_noise_f32(x.data(), out.data(), n, (float)param, 0.25f, seed, offset);
        for (float v : out) {
            uint32_t b;
            std::memcpy(&b, &v, 4);
            std::printf("%08" PRIx32 "\n", b);
        }
    } else if (std::strcmp(kernel, "salt_pepper_f64") == 0) {
        std::vector<double> x(n), out(n);
        for (u64 i = 0; i < n; ++i) x[i] = (double)i / 1000.0 - 1.0;
        salt_pepper_f64(x.data(), out.data(), n, param / 2.0, param, -7.0, 9.0, seed, offset);
        for (double v : out) {
            uint64_t b;
            std::memcpy(&b, &v, 8);
            std::printf("%016" PRIx64 "\n", b);
        }
    } else if (std::strcmp(kernel, "club_prep_f64") == 0) {
        // lv_i,d = (i·D + d)/N/D·2 − 1 for D = 5; prints w then c.
        unsigned rows = (unsigned)n, d = 5;
        std::vector<double> lv(rows * d), w(rows * d), c(rows);
        for (unsigned k = 0; k < rows * d; ++k) lv[k] = (double)k / (rows * d) * 2.0 - 1.0;
        for (unsigned i = 0; i < rows; ++i) {
            blockIdx.x = i;
            club_prep_f64(lv.data(), w.data(), c.data(), rows, d);
        }
        blockIdx.x = 0;
        for (double v : w) {
            uint64_t b;
            std::memcpy(&b, &v, 8);
            std::printf("%016" PRIx64 "\n", b);
        }
        for (double v : c) {
            uint64_t b;
            std::memcpy(&b, &v, 8);
            std::printf("%016" PRIx64 "\n", b);
        }
    } else {
        std::fprintf(stderr, "unknown kernel %s\n", kernel);
        return 2;
    }
    return 0;
}
