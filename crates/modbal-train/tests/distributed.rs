//! Data-parallel building blocks: the CPU collective, the sharded sampler, gradient averaging
//! and buffer broadcast; and the equivalence "N ranks with batch B follow one process with
//! batch N·B".

use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};
use modbal_tensors::{
    cross_entropy, AdamW, AdamWConfig, BatchNorm2d, Linear, Optimizer, ParamStore, SeededRng, Sgd,
    SgdConfig,
};
use modbal_train::distributed::{broadcast_state, DEFAULT_TIMEOUT};
use modbal_train::{
    broadcast_buffers, shard_batches, shard_order, AllReduced, Collective, LocalCollective,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Runs `f(rank, handle)` on one thread per rank of a fresh group; the results by rank.
fn on_ranks<T: Send>(
    n: usize,
    timeout: Duration,
    f: impl Fn(usize, LocalCollective) -> T + Sync,
) -> Vec<T> {
    let handles = LocalCollective::group_with_timeout(n, timeout);
    std::thread::scope(|s| {
        let f = &f;
        let joins: Vec<_> = handles
            .into_iter()
            .enumerate()
            .map(|(r, h)| s.spawn(move || f(r, h)))
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    })
}

fn rank_tensor(r: usize, len: usize, dtype: DType) -> Tensor {
    let mut rng = SeededRng::new(100 + r as u64);
    rng.randn(len, 0.0, 1.0, dtype, &Device::Cpu).unwrap()
}

fn bits(t: &Tensor) -> Vec<u64> {
    match t.dtype() {
        DType::F64 => t
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect(),
        _ => t
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits() as u64)
            .collect(),
    }
}

#[test]
fn all_reduce_and_broadcast_match_serial_closed_form_bitwise() {
    for dtype in [DType::F32, DType::F64] {
        for n in [1, 3, 4] {
            // Serial closed form: the sum in rank order.
            let mut want = rank_tensor(0, 37, dtype);
            for r in 1..n {
                want = (&want + &rank_tensor(r, 37, dtype)).unwrap();
            }
            let want_bits = bits(&want);
            for _repeat in 0..5 {
                let got = on_ranks(n, DEFAULT_TIMEOUT, |r, c| {
                    let mine = rank_tensor(r, 37, dtype);
                    let s = c.all_reduce_sum(&mine).unwrap();
                    let b = c.broadcast(&mine, n - 1).unwrap();
                    c.barrier().unwrap();
                    // The input is untouched, the result a private copy.
                    assert_eq!(bits(&mine), bits(&rank_tensor(r, 37, dtype)));
                    (bits(&s), bits(&b), s.dtype())
                });
                for (r, (s, b, dt)) in got.into_iter().enumerate() {
                    assert_eq!(dt, dtype);
                    assert_eq!(s, want_bits, "rank {r} of {n}: sum differs from rank order");
                    assert_eq!(
                        b,
                        bits(&rank_tensor(n - 1, 37, dtype)),
                        "rank {r}: broadcast"
                    );
                }
            }
        }
    }
}

#[test]
fn mismatched_calls_are_an_error_naming_both() {
    // Different lengths.
    let errs = on_ranks(2, DEFAULT_TIMEOUT, |r, c| {
        let t = Tensor::zeros(3 + r, DType::F32, &Device::Cpu).unwrap();
        c.all_reduce_sum(&t).unwrap_err().to_string()
    });
    for e in &errs {
        assert!(e.contains("mismatched"), "{e}");
        assert!(e.contains("all_reduce_sum(f32 [3])"), "{e}");
        assert!(e.contains("all_reduce_sum(f32 [4])"), "{e}");
    }
    // Different dtypes.
    let errs = on_ranks(2, DEFAULT_TIMEOUT, |r, c| {
        let dt = if r == 0 { DType::F32 } else { DType::F64 };
        let t = Tensor::zeros(3, dt, &Device::Cpu).unwrap();
        c.all_reduce_sum(&t).unwrap_err().to_string()
    });
    assert!(
        errs[1].contains("f32 [3]") && errs[1].contains("f64 [3]"),
        "{}",
        errs[1]
    );
    // Different operations, different roots.
    let errs = on_ranks(3, DEFAULT_TIMEOUT, |r, c| {
        let t = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        let first = match r {
            0 => c.barrier().map(|_| ()),
            _ => c.all_reduce_sum(&t).map(|_| ()),
        };
        first.unwrap_err().to_string()
    });
    assert!(errs[0].contains("rank 0 called barrier()"), "{}", errs[0]);
    assert!(
        errs[0].contains("rank 1 called all_reduce_sum"),
        "{}",
        errs[0]
    );
    let errs = on_ranks(2, DEFAULT_TIMEOUT, |r, c| {
        let t = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        c.broadcast(&t, r).unwrap_err().to_string()
    });
    assert!(
        errs[0].contains("root 0") && errs[0].contains("root 1"),
        "{}",
        errs[0]
    );
    // A root outside the group.
    let errs = on_ranks(2, DEFAULT_TIMEOUT, |_, c| {
        let t = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        c.broadcast(&t, 2).unwrap_err().to_string()
    });
    assert!(errs[0].contains("root 2 is not a rank"), "{}", errs[0]);
}

#[test]
fn a_dropped_or_failed_rank_makes_the_others_fail_not_hang() {
    let t0 = std::time::Instant::now();
    // Rank 2 drops its handle after one successful call; the others fail on the next.
    let out = on_ranks(3, DEFAULT_TIMEOUT, |r, c| {
        let t = Tensor::ones(2, DType::F32, &Device::Cpu).unwrap();
        let s = c.all_reduce_sum(&t).unwrap();
        assert_eq!(s.to_vec1::<f32>().unwrap(), vec![3.0, 3.0]);
        if r == 2 {
            drop(c);
            return None;
        }
        Some(c.all_reduce_sum(&t).unwrap_err().to_string())
    });
    for e in out.iter().take(2) {
        let e = e.as_ref().unwrap();
        assert!(
            e.contains("rank 2 left the group") && e.contains("dropped"),
            "{e}"
        );
    }
    // Diverging call sequences fail every rank at the first differing call.
    let out = on_ranks(2, DEFAULT_TIMEOUT, |r, c| {
        let t = Tensor::ones(2, DType::F32, &Device::Cpu).unwrap();
        if r == 1 {
            // Rank 1 calls barrier twice while rank 0 calls it once and then all_reduce; the
            // mismatch fails both.
            c.barrier().unwrap();
            return c.barrier().unwrap_err().to_string();
        }
        c.barrier().unwrap();
        c.all_reduce_sum(&t).unwrap_err().to_string()
    });
    assert!(
        out[0].contains("mismatched") && out[1].contains("mismatched"),
        "{out:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "failing took {:?}",
        t0.elapsed()
    );
}

#[test]
fn a_rank_that_stops_calling_times_out_with_a_clear_error() {
    let timeout = Duration::from_millis(200);
    let out = on_ranks(2, timeout, |r, c| {
        if r == 1 {
            // Alive but silent for longer than the timeout.
            std::thread::sleep(Duration::from_millis(600));
            // Rank 0 has given up on this very call meanwhile: it fails here too, and so
            // does the next call (rank 0 has left the group).
            let late = c.barrier().unwrap_err().to_string();
            let next = c.barrier().unwrap_err().to_string();
            assert!(next.contains("already left"), "{next}");
            return late;
        }
        c.barrier().unwrap_err().to_string()
    });
    assert!(
        out[0].contains("timed out") && out[0].contains("[1]"),
        "{}",
        out[0]
    );
    assert!(out[1].contains("timed out"), "{}", out[1]);
}

#[test]
fn shards_cover_the_single_process_batches_in_order() {
    let order: Vec<usize> = SeededRng::new(7).permutation(23);
    for world in 1..=4 {
        for b in 1..=5 {
            let shards: Vec<Vec<Vec<usize>>> = (0..world)
                .map(|r| shard_batches(&order, world, b, r).unwrap())
                .collect();
            // Padded to a multiple of world with the leading elements.
            let mut padded = order.clone();
            while !padded.len().is_multiple_of(world) {
                padded.push(order[padded.len() - order.len()]);
            }
            let single: Vec<&[usize]> = padded.chunks(world * b).collect();
            for r in 0..world {
                assert_eq!(shards[r].len(), single.len(), "world {world} B {b}: steps");
                assert_eq!(
                    shard_order(&order, world, b, r).unwrap(),
                    shards[r].concat(),
                    "shard_order is the concatenation"
                );
            }
            for (k, batch) in single.iter().enumerate() {
                let size = shards[0][k].len();
                assert!(size >= 1 && size <= b);
                let union: Vec<usize> = (0..world).flat_map(|r| shards[r][k].clone()).collect();
                assert_eq!(&union[..], *batch, "world {world} B {b} step {k}");
                for r in 0..world {
                    assert_eq!(shards[r][k].len(), size, "equal sizes at step {k}");
                }
            }
            if world == 1 {
                let plain: Vec<Vec<usize>> = order.chunks(b).map(|c| c.to_vec()).collect();
                assert_eq!(shards[0], plain);
            }
        }
    }
}

#[test]
fn shard_padding_rule_on_a_small_example() {
    // n = 10, world 3, B 2: padded to 12 by repeating order[0..2]; chunks of 6.
    let order: Vec<usize> = (10..20).collect();
    let got: Vec<Vec<Vec<usize>>> = (0..3)
        .map(|r| shard_batches(&order, 3, 2, r).unwrap())
        .collect();
    assert_eq!(got[0], vec![vec![10, 11], vec![16, 17]]);
    assert_eq!(got[1], vec![vec![12, 13], vec![18, 19]]);
    assert_eq!(got[2], vec![vec![14, 15], vec![10, 11]]);
    // A last chunk shorter than world·B is split into equal parts: n = 8, world 2, B 3.
    let order: Vec<usize> = (0..8).collect();
    assert_eq!(
        shard_batches(&order, 2, 3, 0).unwrap(),
        vec![vec![0, 1, 2], vec![6]]
    );
    assert_eq!(
        shard_batches(&order, 2, 3, 1).unwrap(),
        vec![vec![3, 4, 5], vec![7]]
    );
    // Fewer samples than ranks: padded cyclically to [5, 6, 5, 6, 5].
    let tiny: Vec<Vec<Vec<usize>>> = (0..5)
        .map(|r| shard_batches(&[5, 6], 5, 1, r).unwrap())
        .collect();
    assert_eq!(tiny, [5, 6, 5, 6, 5].map(|i| vec![vec![i]]));
    // Errors.
    let e = |r: candle_core::Result<Vec<Vec<usize>>>| r.unwrap_err().to_string();
    assert!(e(shard_batches(&[], 2, 2, 0)).contains("empty"));
    assert!(e(shard_batches(&[1], 0, 2, 0)).contains("world size"));
    assert!(e(shard_batches(&[1], 2, 0, 0)).contains("batch size"));
    assert!(e(shard_batches(&[1], 2, 2, 2)).contains("rank 2"));
}

#[test]
fn all_reduced_averages_with_presence_rules_over_mixed_dtypes() {
    // a: f32, gradient on both ranks; b: f64, on no rank; c: f64, on rank 1 only.
    let out = on_ranks(2, DEFAULT_TIMEOUT, |r, coll| {
        let dev = Device::Cpu;
        let a = Var::from_tensor(&Tensor::new(&[1f32, 2.0], &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::new(&[5f64], &dev).unwrap()).unwrap();
        let c = Var::from_tensor(&Tensor::new(&[[1f64, 1.0], [1.0, 1.0]], &dev).unwrap()).unwrap();
        let vars = vec![
            ("a".to_string(), a.clone()),
            ("b".to_string(), b.clone()),
            ("c".to_string(), c.clone()),
        ];
        let cfg = SgdConfig {
            lr: 1.0,
            momentum: 0.0,
            weight_decay: 0.0,
            ..Default::default()
        };
        let mut opt = AllReduced::new(Box::new(Sgd::new(vars, cfg)), Arc::new(coll));
        let mut g = GradStore::default();
        let ga = if r == 0 { [1f32, 10.0] } else { [3f32, 30.0] };
        g.insert(a.as_tensor(), Tensor::new(&ga, &dev).unwrap());
        if r == 1 {
            let gc = Tensor::new(&[[2f64, 4.0], [6.0, 8.0]], &dev).unwrap();
            g.insert(c.as_tensor(), gc);
        }
        let avg = opt.average(&g).unwrap();
        assert!(
            avg.get(b.as_tensor()).is_none(),
            "no rank had a gradient for b"
        );
        assert_eq!(avg.get(a.as_tensor()).unwrap().dtype(), DType::F32);
        opt.step(&g).unwrap();
        (
            a.as_tensor().to_vec1::<f32>().unwrap(),
            b.as_tensor().to_vec1::<f64>().unwrap(),
            c.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap(),
        )
    });
    for (r, (a, b, c)) in out.into_iter().enumerate() {
        assert_eq!(
            a,
            vec![1.0 - 2.0, 2.0 - 20.0],
            "rank {r}: a −= mean(1,3), mean(10,30)"
        );
        assert_eq!(b, vec![5.0], "rank {r}: b untouched");
        assert_eq!(c, vec![0.0, -1.0, -2.0, -3.0], "rank {r}: c −= (0 + g1)/2");
    }
}

#[test]
fn broadcast_buffers_gives_every_rank_rank_0s_running_statistics() {
    let n = 3;
    let out = on_ranks(n, DEFAULT_TIMEOUT, |r, c| {
        let params = ParamStore::new();
        let pb = params.root(DType::F32, &Device::Cpu);
        let bn = BatchNorm2d::new(&pb.pp("bn"), 4, &mut SeededRng::new(1)).unwrap();
        // A local training step with a rank-specific batch moves the running statistics.
        let x = SeededRng::new(50 + r as u64)
            .randn((6, 4), r as f64, 1.0 + r as f64, DType::F32, &Device::Cpu)
            .unwrap();
        bn.forward_t(&x, true).unwrap();
        let before: BTreeMap<String, Vec<f32>> = params
            .buffers()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().to_vec1::<f32>().unwrap()))
            .collect();
        let weights_before = bn.weight.to_vec1::<f32>().unwrap();
        assert_eq!(broadcast_buffers(&c, &params).unwrap(), 2);
        let after: BTreeMap<String, Vec<f32>> = params
            .buffers()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().to_vec1::<f32>().unwrap()))
            .collect();
        // Trainable entries are not touched.
        assert_eq!(bn.weight.to_vec1::<f32>().unwrap(), weights_before);
        (before, after)
    });
    let rank0 = &out[0].0;
    assert_eq!(rank0.len(), 2);
    for (r, (before, after)) in out.iter().enumerate() {
        if r > 0 {
            assert_ne!(before, rank0, "rank {r}'s local statistics differ before");
        }
        assert_eq!(after, rank0, "rank {r} holds rank 0's statistics after");
    }
}

// ---------------------------------------------------------------------------------------------
// N shards of batch B equal one run of batch N·B.

const N_SAMPLES: usize = 44; // not a multiple of 8: the last global batch has 4 samples
const D_IN: usize = 5;
const HIDDEN: usize = 8;
const CLASSES: usize = 3;
const EPOCHS: u64 = 3;

fn dataset() -> (Tensor, Tensor) {
    let mut rng = SeededRng::new(2024);
    let x = rng
        .randn((N_SAMPLES, D_IN), 0.0, 1.0, DType::F64, &Device::Cpu)
        .unwrap();
    let y: Vec<u32> = (0..N_SAMPLES).map(|_| rng.below(CLASSES) as u32).collect();
    (x, Tensor::new(y, &Device::Cpu).unwrap())
}

struct Mlp {
    params: ParamStore,
    l1: Linear,
    l2: Linear,
}

impl Mlp {
    fn new(seed: u64) -> Self {
        let params = ParamStore::new();
        let pb = params.root(DType::F64, &Device::Cpu);
        let mut rng = SeededRng::new(seed);
        let l1 = Linear::new(&pb.pp("l1"), D_IN, HIDDEN, &mut rng).unwrap();
        let l2 = Linear::new(&pb.pp("l2"), HIDDEN, CLASSES, &mut rng).unwrap();
        Self { params, l1, l2 }
    }
    fn loss(&self, x: &Tensor, y: &Tensor, idx: &[usize]) -> Tensor {
        let ids = Tensor::new(
            idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            x.device(),
        )
        .unwrap();
        let (xb, yb) = (
            x.index_select(&ids, 0).unwrap(),
            y.index_select(&ids, 0).unwrap(),
        );
        let logits = self
            .l2
            .forward(&self.l1.forward_relu(&xb).unwrap())
            .unwrap();
        cross_entropy(&logits, &yb).unwrap()
    }
    fn values(&self) -> BTreeMap<String, Vec<f64>> {
        self.params
            .all()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()))
            .collect()
    }
}

#[derive(Clone, Copy, Debug)]
enum Opt {
    Sgd,
    Adam,
}

fn optimizer(kind: Opt, vars: Vec<(String, Var)>) -> Box<dyn Optimizer> {
    match kind {
        Opt::Sgd => Box::new(Sgd::new(
            vars,
            SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 1e-3,
                ..Default::default()
            },
        )),
        Opt::Adam => Box::new(AdamW::new(
            vars,
            AdamWConfig {
                lr: 0.01,
                weight_decay: 1e-2,
                ..Default::default()
            },
        )),
    }
}

fn epoch_order(epoch: u64) -> Vec<usize> {
    SeededRng::new(9000 + epoch).permutation(N_SAMPLES)
}

/// One process, batch `global_batch`.
fn train_single(kind: Opt, global_batch: usize) -> BTreeMap<String, Vec<f64>> {
    let (x, y) = dataset();
    let m = Mlp::new(1);
    let mut opt = optimizer(kind, m.params.trainable());
    for e in 0..EPOCHS {
        for batch in epoch_order(e).chunks(global_batch) {
            opt.step(&m.loss(&x, &y, batch).backward().unwrap())
                .unwrap();
        }
    }
    m.values()
}

/// `world` ranks (threads) with batch `b` each; `reduce: false` skips the all-reduce (each
/// rank trains alone on its shard). Every rank's final parameters.
fn train_ranks(kind: Opt, world: usize, b: usize, reduce: bool) -> Vec<BTreeMap<String, Vec<f64>>> {
    let (x, y) = dataset();
    on_ranks(world, DEFAULT_TIMEOUT, |r, c| {
        // Different initialisations per rank: the initial broadcast makes them rank 0's.
        let m = Mlp::new(if r == 0 { 1 } else { 77 + r as u64 });
        broadcast_state(&c, &m.params).unwrap();
        let inner = optimizer(kind, m.params.trainable());
        let mut opt: Box<dyn Optimizer> = if reduce {
            Box::new(AllReduced::new(inner, Arc::new(c)))
        } else {
            inner
        };
        for e in 0..EPOCHS {
            for batch in shard_batches(&epoch_order(e), world, b, r).unwrap() {
                opt.step(&m.loss(&x, &y, &batch).backward().unwrap())
                    .unwrap();
            }
        }
        m.values()
    })
}

/// max over parameters of max|a − b| / max|b|.
fn max_rel_diff(a: &BTreeMap<String, Vec<f64>>, b: &BTreeMap<String, Vec<f64>>) -> f64 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .map(|(k, va)| {
            let vb = &b[k];
            let scale = vb.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-300);
            va.iter()
                .zip(vb)
                .fold(0f64, |m, (p, q)| m.max((p - q).abs()))
                / scale
        })
        .fold(0.0, f64::max)
}

#[test]
fn n_shards_of_batch_b_equal_one_run_of_batch_n_times_b() {
    for kind in [Opt::Sgd, Opt::Adam] {
        for (world, b) in [(2, 4), (4, 2)] {
            let single = train_single(kind, world * b);
            let ranks = train_ranks(kind, world, b, true);
            for (r, p) in ranks.iter().enumerate() {
                assert_eq!(
                    p, &ranks[0],
                    "{kind:?} world {world}: rank {r} drifted from rank 0"
                );
            }
            let d = max_rel_diff(&ranks[0], &single);
            eprintln!(
                "{kind:?} world {world} B {b}: max rel diff vs batch {} = {d:.3e}",
                world * b
            );
            assert!(d < 1e-12, "{kind:?} world {world}: max rel diff {d:e}");
            // Without the all-reduce the ranks' trajectories differ from the single run: the
            // comparison above can fail.
            let alone = train_ranks(kind, world, b, false);
            let d_alone = max_rel_diff(&alone[0], &single);
            eprintln!("{kind:?} world {world}: without all-reduce {d_alone:.3e}");
            assert!(d_alone > 1e-3, "{kind:?} world {world}: {d_alone:e}");
            // And a single run with batch B is a different trajectory too.
            assert!(max_rel_diff(&train_single(kind, b), &single) > 1e-3);
        }
    }
}
