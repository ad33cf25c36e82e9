//! How to spread one matrix product over threads: the gemm crate's own parallelism
//! (`Parallelism::Rayon`) against one single-threaded gemm call per block of output columns
//! (`SplitN`) or rows (`SplitM`), on the products of modbal's convolutions (forward, input
//! gradient, weight gradient) for shapes of the benchmark encoders. The evidence behind
//! `cpu::matmul::Par` (which side each product is cut along).
//!
//! ```sh
//! cargo run --release -p modbal-tensors --example gemm_split [-- THREADS]
//! ```
//! Prints the median ms of 10 runs per variant (after one warm-up run).

use std::time::Instant;

/// Operand layout of one product `dst [m, n] = lhs [m, k] · rhs [k, n]`: element `(i, p)` of
/// lhs at `i·lrs + p·lcs`, element `(p, j)` of rhs at `p·rrs + j·rcs`; dst row-major.
#[derive(Clone, Copy)]
struct Product {
    m: usize,
    n: usize,
    k: usize,
    lcs: usize,
    lrs: usize,
    rcs: usize,
    rrs: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    One,
    GemmRayon,
    SplitN,
    SplitM,
}

/// Raw pointers shared by the tasks (each writes its own block of dst).
#[derive(Clone, Copy)]
struct Ptrs(usize, usize, usize);

/// `dst = ALPHA·dst + BETA·lhs·rhs` (dst is not read when ALPHA is 0); real numbers.
const ALPHA: f32 = 0.0;
const BETA: f32 = 1.0;
const NO_CONJ: bool = false;

fn run(p: Product, v: Variant, threads: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    let ptrs = Ptrs(
        c.as_mut_ptr() as usize,
        a.as_ptr() as usize,
        b.as_ptr() as usize,
    );
    let block = |i0: usize, mi: usize, j0: usize, nj: usize, par: gemm::Parallelism| {
        let (dst, lhs, rhs) = (
            ptrs.0 as *mut f32,
            ptrs.1 as *const f32,
            ptrs.2 as *const f32,
        );
        // SAFETY: the block (rows i0..i0+mi, columns j0..j0+nj) lies inside dst and is written
        // by this call only; the operand offsets stay inside a and b for these strides.
        unsafe {
            gemm::gemm(
                mi,
                nj,
                p.k,
                dst.add(i0 * p.n + j0),
                1,
                p.n as isize,
                false,
                lhs.add(i0 * p.lrs),
                p.lcs as isize,
                p.lrs as isize,
                rhs.add(j0 * p.rcs),
                p.rcs as isize,
                p.rrs as isize,
                ALPHA,
                BETA,
                NO_CONJ,
                NO_CONJ,
                NO_CONJ,
                par,
            )
        }
    };
    let split = |len: usize| {
        let size = len.div_ceil(threads).next_multiple_of(16);
        (0..len.div_ceil(size)).map(move |t| (t * size, size.min(len - t * size)))
    };
    use rayon::prelude::*;
    match v {
        Variant::One => block(0, p.m, 0, p.n, gemm::Parallelism::None),
        Variant::GemmRayon => block(0, p.m, 0, p.n, gemm::Parallelism::Rayon(threads)),
        Variant::SplitN => split(p.n)
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(|(j0, nj)| block(0, p.m, j0, nj, gemm::Parallelism::None)),
        Variant::SplitM => split(p.m)
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(|(i0, mi)| block(i0, mi, 0, p.n, gemm::Parallelism::None)),
    }
}

fn median_ms(p: Product, v: Variant, threads: usize) -> f64 {
    let a: Vec<f32> = (0..p.m * p.k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..p.k * p.n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0f32; p.m * p.n];
    run(p, v, threads, &a, &b, &mut c);
    let mut ts: Vec<f64> = (0..10)
        .map(|_| {
            let t = Instant::now();
            run(p, v, threads, &a, &b, &mut c);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ts.sort_by(f64::total_cmp);
    ts[5]
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("rayon pool");
    println!(
        "{threads} threads; median ms of 10 runs: one thread | gemm Rayon | split N | split M"
    );
    // (output channels, K = C·kh·kw, columns = samples per group × Ho·Wo)
    for (o, kk, ld) in [
        (512, 4608, 256),
        (256, 1152, 576),
        (128, 1152, 256),
        (64, 576, 784),
        (64, 288, 392),
    ] {
        println!("conv: {o} output channels, K {kk}, {ld} columns");
        let products = [
            (
                "forward      W·C  ",
                Product {
                    m: o,
                    n: ld,
                    k: kk,
                    lcs: 1,
                    lrs: kk,
                    rcs: 1,
                    rrs: ld,
                },
            ),
            (
                "input grad   Wᵀ·G ",
                Product {
                    m: kk,
                    n: ld,
                    k: o,
                    lcs: kk,
                    lrs: 1,
                    rcs: 1,
                    rrs: ld,
                },
            ),
            (
                "weight grad  C·Gᵀ ",
                Product {
                    m: kk,
                    n: o,
                    k: ld,
                    lcs: 1,
                    lrs: ld,
                    rcs: 1,
                    rrs: o,
                },
            ),
        ];
        for (name, p) in products {
            let t: Vec<String> = [
                Variant::One,
                Variant::GemmRayon,
                Variant::SplitN,
                Variant::SplitM,
            ]
            .iter()
            .map(|&v| format!("{:8.3}", median_ms(p, v, threads)))
            .collect();
            println!("  {name} {}", t.join(" |"));
        }
    }
}
