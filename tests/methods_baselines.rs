//! The baselines `mmpareto`, `pmr`, `mla` and `arl`: one-step checks of each mechanism against
//! closed forms computed here independently (f64, from the plain gradients of the separately
//! built losses), plus short runs through the registry and the training loop.
//!
//! Reference formulas: MMPareto (ICML'24) two-task min-norm weight
//! `k0 = clamp((⟨g_m,g_m⟩ − ⟨g_mm,g_m⟩)/‖g_mm − g_m‖², 0.001, 0.999)` on conflict (cos ≤ 0), else
//! 1/2, then `γ·g_new·max(1, ‖g_sum‖/‖g_new‖)`; PMR (CVPR'23) PCE = CE(−‖f − c_k‖) added for
//! the modality with the lower prototype score; MLA (CVPR'24) `P ← (P − kkᵀ/(α + rk))/‖·‖_F`,
//! `∇W ← ∇W Pᵀ`; ARL (ICCV'25) `w = softmax(T·(1 − mag')·v)`, encoder gradients × (1 + w).

mod common;

use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};
use modbal::core::{Batch, Method, MultimodalModel, RunContext};
use modbal::encoders::{EncoderConfig, FusionConfig, ModalitySpec, MultimodalNet};
use modbal::methods::arl::{Arl, ArlConfig};
use modbal::methods::mla::{Mla, MlaConfig};
use modbal::methods::mmpareto::{MmParetoMethod, MmParetoMethodConfig};
use modbal::methods::pmr::{Pmr, PmrConfig};
use modbal::tensors::{cross_entropy, Optimizer, OptimizerState, SeededRng};

// ---------------------------------------------------------------- helpers

fn tiny(fusion: FusionConfig) -> (MultimodalNet, Batch) {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(3);
    let specs = [
        ModalitySpec::new("audio", EncoderConfig::Mlp { hidden: vec![8] }, &[4]),
        ModalitySpec::new("visual", EncoderConfig::Mlp { hidden: vec![8] }, &[4]),
    ];
    let net = MultimodalNet::new(&specs, &fusion, 3, &mut rng, &dev).unwrap();
    let b = 12;
    let labels: Vec<u32> = (0..b as u32).map(|i| i % 3).collect();
    // Audio carries the label, visual is noise: audio is the strong modality.
    let a: Vec<f32> = labels
        .iter()
        .flat_map(|&y| (0..4).map(move |j| if j == y as usize { 3.0 } else { 0.0 }))
        .collect();
    let batch = Batch {
        inputs: vec![
            Tensor::from_vec(a, (b, 4), &dev).unwrap(),
            rng.randn((b, 4), 0.0, 1.0, DType::F32, &dev).unwrap(),
        ],
        labels: Tensor::from_vec(labels, b, &dev).unwrap(),
        sample_ids: (0..b).collect(),
    };
    (net, batch)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn grad(g: &GradStore, v: &Var) -> Vec<f64> {
    g.get(v.as_tensor())
        .map(common::v64)
        .unwrap_or_else(|| vec![0.0; v.elem_count()])
}

fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = b.iter().map(|x| x.abs()).fold(0.0, f64::max).max(1e-12);
    for (x, y) in a.iter().zip(b) {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}: {x} vs {y} (scale {scale})"
        );
    }
}

fn per_mod(rec: &modbal::EpochRecord, key: &str, m: &str) -> f64 {
    rec.method[key][m]
        .as_f64()
        .unwrap_or_else(|| panic!("method.{key}.{m} missing in {:?}", rec.method))
}

// ---------------------------------------------------------------- registry

#[test]
fn registry_builds_the_baselines_with_their_defaults() {
    for name in ["mmpareto", "pmr", "mla", "arl"] {
        assert!(common::method_names().iter().any(|n| n == name), "{name}");
        let e = common::build_method(name, &toml::from_str("nope = 1").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{name}: {e}");
    }
    let b = |n: &str| common::build_method(n, &toml::Table::new()).unwrap();
    let m = b("mmpareto");
    assert_eq!(m.resolved["gamma"].as_float(), Some(1.5));
    assert_eq!(m.fusion, FusionConfig::Concat);
    let p = b("pmr");
    assert_eq!(p.resolved["alpha"].as_float(), Some(2.0));
    // The official PMR window `0 <= epoch <= 100` of its 150-epoch schedule.
    assert_eq!(p.resolved["window"]["end"].as_integer(), Some(101));
    assert_eq!(p.resolved["schedule_epochs"].as_integer(), Some(150));
    let l = b("mla");
    assert_eq!(l.resolved["fusion"].as_str(), Some("entropy"));
    assert_eq!(l.fusion, FusionConfig::Sum);
    let a = b("arl");
    assert_eq!(a.resolved["gamma"].as_float(), Some(4.0));
    assert_eq!(a.resolved["temperature"].as_float(), Some(8.0));
    assert_eq!(a.resolved["clip_grad_norm"].as_float(), Some(40.0));
    assert_eq!(a.resolved["start_epoch"].as_integer(), Some(6));
    assert_eq!(a.resolved["schedule_epochs"].as_integer(), Some(100));
    let bad = |n: &str, o: &str| {
        common::build_method(n, &toml::from_str(o).unwrap())
            .unwrap_err()
            .to_string()
    };
    assert!(bad("mmpareto", "gamma = 0.0").contains("gamma"));
    assert!(bad("pmr", "sample_ratio = 0.0").contains("sample_ratio"));
    assert!(bad("mla", "alpha_base = -1.0").contains("alpha_base"));
    assert!(bad("arl", "temperature = 0.0").contains("temperature"));
}

// ---------------------------------------------------------------- MMPareto

#[test]
fn mmpareto_integrates_conflicting_gradients_by_the_closed_form() {
    let (net, batch) = tiny(FusionConfig::Concat);
    let mut method = MmParetoMethod::new(MmParetoMethodConfig::default()).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 3);
    // First call builds the unimodal heads; then make them oppose the fused head's slices
    // (V_m = −W[:, slice_m], c_m = 0) so that the unimodal and fused gradients conflict.
    method.gradients(&net, &batch, &mut ctx).unwrap();
    let w = common::var(&net, "head.fc.weight");
    for (m, name) in ["audio", "visual"].iter().enumerate() {
        let hp = method.head_params();
        let get = |k: &str| {
            hp.iter()
                .find(|(n, _)| n == &format!("uni_head.{name}.{k}"))
                .unwrap()
                .1
                .clone()
        };
        let slice = w.as_tensor().narrow(1, m * 8, 8).unwrap();
        get("weight").set(&slice.neg().unwrap()).unwrap();
        let c = get("bias");
        c.set(&c.as_tensor().zeros_like().unwrap()).unwrap();
    }
    let (_, _, _, total, plain) = method.gradients(&net, &batch, &mut ctx).unwrap();
    let report = method.last_report().unwrap().clone();

    // Independent gradients of L_mm and L_m.
    let out = net.forward_t(&batch.inputs, true).unwrap();
    let hp = method.head_params();
    let g_mm = cross_entropy(&out.fused_logits, &batch.labels)
        .unwrap()
        .backward()
        .unwrap();
    let gamma = 1.5;
    let mut conflicts = 0;
    for (m, name) in ["audio", "visual"].iter().enumerate() {
        let hv = |k: &str| {
            hp.iter()
                .find(|(n, _)| n == &format!("uni_head.{name}.{k}"))
                .unwrap()
                .1
                .as_tensor()
                .clone()
        };
        let u = out.features[m]
            .matmul(&hv("weight").t().unwrap())
            .unwrap()
            .broadcast_add(&hv("bias"))
            .unwrap();
        let g_m = cross_entropy(&u, &batch.labels)
            .unwrap()
            .backward()
            .unwrap();
        let params: Vec<(String, Var)> = net
            .params()
            .trainable_with_prefix(&format!("encoder.{name}"));
        let (mut v11, mut v12, mut v22) = (0.0, 0.0, 0.0);
        for (_, p) in &params {
            let (a, b) = (grad(&g_mm, p), grad(&g_m, p));
            v11 += dot(&a, &a);
            v12 += dot(&a, &b);
            v22 += dot(&b, &b);
        }
        let cos = v12 / (v11.sqrt() * v22.sqrt());
        let k0 = if cos > 0.0 {
            0.5
        } else {
            conflicts += 1;
            ((v22 - v12) / (v11 + v22 - 2.0 * v12)).clamp(0.001, 0.999)
        };
        eprintln!("{name}: cos {cos:.4} k0 {k0:.4} (report {:?})", report);
        assert!((report.cos[m] - cos).abs() < 1e-5, "{name} cos");
        assert!((report.k_mm[m] - k0).abs() < 1e-5, "{name} k0");
        assert!((report.k_mm[m] + report.k_uni[m] - 1.0).abs() < 1e-12);
        for (pname, p) in &params {
            let (a, b) = (grad(&g_mm, p), grad(&g_m, p));
            let g_new: Vec<f64> = a
                .iter()
                .zip(&b)
                .map(|(x, y)| 2.0 * k0 * x + 2.0 * (1.0 - k0) * y)
                .collect();
            let g_sum: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
            let (nn, ns) = (dot(&g_new, &g_new).sqrt(), dot(&g_sum, &g_sum).sqrt());
            let expect: Vec<f64> = g_new
                .iter()
                .map(|x| gamma * x * (ns / nn).max(1.0))
                .collect();
            let got = grad(&total, p);
            assert_close(&got, &expect, 1e-4, pname);
            // The rescaled norm: γ·max(‖g_sum‖, ‖g_new‖).
            let n_got = dot(&got, &got).sqrt();
            assert!(
                (n_got - gamma * ns.max(nn)).abs() <= 1e-4 * n_got,
                "{pname} norm"
            );
        }
    }
    assert!(
        conflicts >= 1,
        "the opposed heads must make at least one encoder conflict"
    );
    // The fused head and the unimodal heads keep their plain gradients, bit for bit.
    let mut heads = net.params().trainable_with_prefix("head");
    heads.extend(hp.clone());
    for (n, v) in &heads {
        assert_eq!(grad(&total, v), grad(&plain, v), "{n}");
        assert!(
            grad(&total, v).iter().any(|x| *x != 0.0),
            "{n} has no gradient"
        );
    }
    // Every encoder parameter gets a non-zero integrated gradient.
    for (n, v) in net.params().trainable_with_prefix("encoder") {
        assert!(grad(&total, &v).iter().any(|x| *x != 0.0), "{n}");
    }
}

// ---------------------------------------------------------------- PMR

/// `(1/B) Σ_i −log softmax(−‖f_i − c‖)[y_i]`, in f64.
fn pce_f64(f: &Tensor, protos: &[Vec<f32>], y: &[usize]) -> f64 {
    let rows: Vec<Vec<f64>> = f.to_dtype(DType::F64).unwrap().to_vec2().unwrap();
    let mut total = 0.0;
    for (r, &yi) in rows.iter().zip(y) {
        let s: Vec<f64> = protos
            .iter()
            .map(|c| {
                -r.iter()
                    .zip(c)
                    .map(|(a, b)| (a - *b as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = mx + s.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
        total += lse - s[yi];
    }
    total / rows.len() as f64
}

fn class_means(f: &Tensor, y: &[usize], c: usize) -> Vec<Vec<f32>> {
    let rows: Vec<Vec<f64>> = f.to_dtype(DType::F64).unwrap().to_vec2().unwrap();
    (0..c)
        .map(|k| {
            let sel: Vec<&Vec<f64>> = rows
                .iter()
                .zip(y)
                .filter(|(_, &l)| l == k)
                .map(|(r, _)| r)
                .collect();
            (0..rows[0].len())
                .map(|j| (sel.iter().map(|r| r[j]).sum::<f64>() / sel.len() as f64) as f32)
                .collect()
        })
        .collect()
}

#[test]
fn pmr_prototypes_are_class_means_and_pce_goes_to_the_weak_modality_only() {
    let (net, batch) = tiny(FusionConfig::Concat);
    let y: Vec<usize> = batch
        .labels
        .to_vec1::<u32>()
        .unwrap()
        .into_iter()
        .map(|v| v as usize)
        .collect();
    let mut method = Pmr::new(PmrConfig::default()).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 3);
    // One prototype batch (batches_per_epoch = 0 → ⌈0.1·0⌉ → 1): prototypes = class means.
    let out = method.forward(&net, &batch, &mut ctx).unwrap();
    let l0 = method.loss(&net, &batch, &out, &mut ctx).unwrap();
    assert!(
        l0.parts.keys().all(|k| !k.starts_with("pce")),
        "no PCE before prototypes"
    );
    method.after_step(&net, &batch, &out, &mut ctx).unwrap();
    let means: Vec<Vec<Vec<f32>>> = (0..2)
        .map(|m| class_means(&out.features[m], &y, 3))
        .collect();
    for m in 0..2 {
        let p = method.prototypes(m, &Device::Cpu).unwrap().unwrap();
        let got: Vec<Vec<f32>> = p.to_vec2().unwrap();
        for (a, b) in got.iter().flatten().zip(means[m].iter().flatten()) {
            assert!((a - b).abs() < 1e-5, "prototype {a} vs class mean {b}");
        }
    }
    let ce = cross_entropy(&out.fused_logits, &batch.labels).unwrap();
    let plain = ce.backward().unwrap();
    let alpha = 2.0;
    // Case 1: audio's class means (informative), visual's prototypes all near the visual mean
    // (uninformative) ⇒ s_audio > s_visual, ρ = s_a/s_v > 1 ⇒ PCE for visual only.
    // Case 2: the reverse.
    for weak in [1usize, 0] {
        let strong = 1 - weak;
        let mut protos = means.clone();
        let centre: Vec<f32> = (0..8)
            .map(|j| (0..3).map(|k| means[weak][k][j]).sum::<f32>() / 3.0)
            .collect();
        protos[weak] = (0..3)
            .map(|k| {
                centre
                    .iter()
                    .enumerate()
                    .map(|(j, v)| v + if j == k { 0.05 } else { 0.0 })
                    .collect()
            })
            .collect();
        if weak == 0 {
            // Make visual clearly informative: prototypes at exaggerated class means.
            protos[strong] = means[strong].clone();
        }
        method.set_prototypes(protos.clone());
        let loss = method.loss(&net, &batch, &out, &mut ctx).unwrap();
        let names = ["audio", "visual"];
        let s: Vec<f64> = (0..2)
            .map(|m| (-pce_f64(&out.features[m], &protos[m], &y)).exp())
            .collect();
        eprintln!(
            "weak {weak}: parts {:?} (exp(-PCE) {s:?})",
            loss.parts.keys()
        );
        assert!(
            loss.parts.contains_key(&format!("pce.{}", names[weak])),
            "{weak}"
        );
        assert!(
            !loss.parts.contains_key(&format!("pce.{}", names[strong])),
            "{weak}"
        );
        let extra = common::v64(&loss.total)[0] - common::v64(&ce)[0];
        let expect = alpha * pce_f64(&out.features[weak], &protos[weak], &y);
        assert!(
            (extra - expect).abs() < 1e-4 * expect.abs().max(1.0),
            "{extra} vs {expect}"
        );
        let g = loss.total.backward().unwrap();
        for (n, v) in net.params().trainable() {
            let (a, b) = (grad(&g, &v), grad(&plain, &v));
            if n.starts_with(&format!("encoder.{}", names[weak])) {
                if v.rank() == 2 {
                    assert!(a != b, "{n}: PCE must reach the weak encoder");
                }
            } else {
                assert_close(&a, &b, 1e-6, &n);
            }
            assert!(a.iter().any(|x| *x != 0.0), "{n} has no gradient");
        }
    }
}

// ---------------------------------------------------------------- MLA

/// An optimizer that records the gradients it is given and changes nothing.
struct Recorder {
    vars: Vec<(String, Var)>,
    seen: Vec<Vec<(String, Option<Vec<f64>>)>>,
}

impl Optimizer for Recorder {
    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.seen.push(
            self.vars
                .iter()
                .map(|(n, v)| (n.clone(), grads.get(v.as_tensor()).map(common::v64)))
                .collect(),
        );
        Ok(())
    }
    fn lr(&self) -> f64 {
        0.0
    }
    fn set_lr(&mut self, _: f64) {}
    fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }
    fn state(&self) -> OptimizerState {
        OptimizerState::default()
    }
    fn load_state(&mut self, _: &OptimizerState) -> candle_core::Result<()> {
        Ok(())
    }
}

/// `(P − k kᵀ/(α + r k)) / ‖·‖_F` with `k = P r` (row-major d×d); also returns `k` and the
/// factor `α/(α + r k)/‖·‖_F` with which the updated P maps r: `P_new r = factor · k`.
fn owm_update(p: &[f64], r: &[f64], alpha: f64) -> (Vec<f64>, Vec<f64>, f64) {
    let d = r.len();
    let k: Vec<f64> = (0..d)
        .map(|i| (0..d).map(|j| p[i * d + j] * r[j]).sum())
        .collect();
    let denom = alpha + dot(r, &k);
    let mut q: Vec<f64> = (0..d * d)
        .map(|ij| p[ij] - k[ij / d] * k[ij % d] / denom)
        .collect();
    let fro = dot(&q, &q).sqrt();
    q.iter_mut().for_each(|x| *x /= fro);
    (q, k, alpha / denom / fro)
}

#[test]
fn mla_projects_the_shared_head_gradient_orthogonally_to_the_recorded_features() {
    let (net, batch) = tiny(FusionConfig::Sum);
    let mut method = Mla::new(MlaConfig::default()).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 3);
    let mut rec = Recorder {
        vars: net.params().trainable(),
        seen: Vec::new(),
    };
    method
        .train_step(&net, batch.clone(), &mut rec, &mut ctx)
        .unwrap();
    assert_eq!(rec.seen.len(), 2, "one optimizer step per modality");
    // The recorder changed nothing, so the plain gradients can be recomputed here.
    let w = common::var(&net, "head.audio.weight");
    let b = common::var(&net, "head.audio.bias");
    let d = 8;
    let alpha = 0.1; // α_0^(1 + 0/1)
    let mut p: Vec<f64> = (0..d * d)
        .map(|ij| if ij / d == ij % d { 1.0 } else { 0.0 })
        .collect();
    for (m, name) in ["audio", "visual"].iter().enumerate() {
        let f = net.encode(m, &batch.inputs[m], true).unwrap();
        let z = f
            .matmul(&w.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap();
        let g = cross_entropy(&z, &batch.labels)
            .unwrap()
            .backward()
            .unwrap();
        let raw = grad(&g, &w); // [C, d] row-major
        let rows: Vec<Vec<f64>> = f.to_dtype(DType::F64).unwrap().to_vec2().unwrap();
        let r: Vec<f64> = (0..d)
            .map(|j| rows.iter().map(|x| x[j]).sum::<f64>() / rows.len() as f64)
            .collect();
        let (q, k, factor) = owm_update(&p, &r, alpha);
        p = q;
        // ∇W Pᵀ (P symmetric).
        let c = raw.len() / d;
        let expect: Vec<f64> = (0..c * d)
            .map(|ij| {
                (0..d)
                    .map(|l| raw[(ij / d) * d + l] * p[(ij % d) * d + l])
                    .sum()
            })
            .collect();
        let seen = &rec.seen[m];
        let got = seen
            .iter()
            .find(|(n, _)| n == "head.audio.weight")
            .unwrap()
            .1
            .clone()
            .unwrap();
        assert_close(
            &got,
            &expect,
            1e-5,
            &format!("{name}: projected head gradient"),
        );
        // Orthogonality to the recorded feature direction: each projected row's response to r
        // is the raw row's response to P r = α/(α + r k)·k/‖·‖_F (closed form, k = P_old r),
        // a small fraction of the raw response.
        let (mut raw_resp, mut proj_resp) = (0.0f64, 0.0f64);
        for i in 0..c {
            let row = &got[i * d..(i + 1) * d];
            let want = factor * dot(&raw[i * d..(i + 1) * d], &k);
            assert!(
                (dot(row, &r) - want).abs() < 1e-5 * (1.0 + want.abs()),
                "{name} row {i}"
            );
            raw_resp = raw_resp.max(dot(&raw[i * d..(i + 1) * d], &r).abs());
            proj_resp = proj_resp.max(dot(row, &r).abs());
        }
        eprintln!(
            "{name}: |r| {:.3} factor {factor:.3e} raw response {raw_resp:.3e} projected {proj_resp:.3e}",
            dot(&r, &r).sqrt()
        );
        assert!(
            proj_resp < 0.1 * raw_resp,
            "{name}: {proj_resp} vs {raw_resp}"
        );
        // The bias gradient is not projected; the encoder of the modality trained gets one, the
        // other encoder none; the tied copy of the head none.
        let bias = seen
            .iter()
            .find(|(n, _)| n == "head.audio.bias")
            .unwrap()
            .1
            .clone()
            .unwrap();
        assert_close(&bias, &grad(&g, &b), 1e-6, "bias");
        for (n, gv) in seen {
            let trained = n.starts_with(&format!("encoder.{name}")) || n.starts_with("head.audio");
            assert_eq!(gv.is_some(), trained, "{name} step: {n}");
            if let Some(gv) = gv {
                assert!(gv.iter().any(|x| *x != 0.0), "{n} zero gradient");
            }
        }
    }
    assert_close(
        method.projector().unwrap().p(),
        &p,
        1e-9,
        "P after two updates",
    );
    // With a real optimizer the heads stay tied.
    let mut sgd = modbal::tensors::OptimizerConfig::default()
        .build(net.params().trainable())
        .unwrap();
    method
        .train_step(&net, batch, sgd.as_mut(), &mut ctx)
        .unwrap();
    assert_eq!(
        common::v64(common::var(&net, "head.visual.weight").as_tensor()),
        common::v64(w.as_tensor())
    );
}

// ---------------------------------------------------------------- ARL

#[test]
fn arl_scales_encoder_gradients_by_one_plus_w_only_after_the_start_epoch() {
    let (net, batch) = tiny(FusionConfig::Concat);
    // start_epoch taken literally (schedule_epochs = 0): epoch 1 is the first active one.
    let cfg = ArlConfig {
        start_epoch: 1,
        schedule_epochs: 0,
        clip_grad_norm: 0.0,
        ..Default::default()
    };
    let (gamma, warm, t) = (cfg.gamma, cfg.warmup_gamma, cfg.temperature);
    let mut method = Arl::new(cfg).unwrap();
    let mut ctx = RunContext::new(0, Device::Cpu, 3);
    let wv = common::var(&net, "head.fc.weight");
    let bv = common::var(&net, "head.fc.bias");
    // Plain losses built here: u_m = W_m f_m + b (full bias).
    let plain = |g: f64| -> (GradStore, Vec<Vec<Vec<f64>>>) {
        let out = net.forward_t(&batch.inputs, true).unwrap();
        let mut total = cross_entropy(&out.fused_logits, &batch.labels).unwrap();
        let mut logits = Vec::new();
        for m in 0..2 {
            let u = out.features[m]
                .matmul(&wv.as_tensor().narrow(1, m * 8, 8).unwrap().t().unwrap())
                .unwrap()
                .broadcast_add(bv.as_tensor())
                .unwrap();
            logits.push(u.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap());
            total = (total + (cross_entropy(&u, &batch.labels).unwrap() * g).unwrap()).unwrap();
        }
        (total.backward().unwrap(), logits)
    };
    for epoch in [0usize, 1] {
        ctx.epoch = epoch;
        let out = method.forward(&net, &batch, &mut ctx).unwrap();
        let loss = method.loss(&net, &batch, &out, &mut ctx).unwrap();
        let grads = method
            .backward(&net, &batch, &out, &loss, &mut ctx)
            .unwrap();
        let (reference, logits) = plain(if epoch == 0 { warm } else { gamma });
        let scale: Vec<f64> = if epoch == 0 {
            assert!(method.current_weights().is_none());
            vec![1.0, 1.0]
        } else {
            // The documented softmax, computed here from the logits.
            let mag: Vec<f64> = logits
                .iter()
                .map(|z| {
                    (0..3)
                        .map(|j| z.iter().map(|r| r[j].abs()).sum::<f64>() / z.len() as f64)
                        .sum()
                })
                .collect();
            let ent: Vec<f64> = logits
                .iter()
                .map(|z| {
                    z.iter()
                        .map(|r| {
                            let mx = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                            let e: Vec<f64> = r.iter().map(|v| (v - mx).exp()).collect();
                            let s: f64 = e.iter().sum();
                            -e.iter().map(|x| x / s * (x / s).ln()).sum::<f64>()
                        })
                        .sum::<f64>()
                        / z.len() as f64
                })
                .collect();
            let magn: Vec<f64> = mag.iter().map(|x| x / (mag[0] + mag[1])).collect();
            let hn: Vec<f64> = ent
                .iter()
                .map(|x| (x / (ent[0] + ent[1])).max(0.3))
                .collect();
            let inv: Vec<f64> = hn.iter().map(|h| 1.0 / h).collect();
            let v: Vec<f64> = inv.iter().map(|x| x / (inv[0] + inv[1])).collect();
            let s = [magn[1] * v[0] * t, magn[0] * v[1] * t];
            let w0 = s[0].exp() / (s[0].exp() + s[1].exp());
            let w = method.current_weights().unwrap().w.clone();
            eprintln!("w {w:?} (closed form {w0})");
            assert!((w[0] - w0).abs() < 1e-9 && (w[1] - (1.0 - w0)).abs() < 1e-9);
            vec![1.0 + w0, 2.0 - w0]
        };
        for (n, v) in net.params().trainable() {
            let f = if n.starts_with("encoder.audio") {
                scale[0]
            } else if n.starts_with("encoder.visual") {
                scale[1]
            } else {
                1.0
            };
            let expect: Vec<f64> = grad(&reference, &v).iter().map(|x| x * f).collect();
            let got = grad(&grads, &v);
            assert_close(&got, &expect, 1e-5, &format!("epoch {epoch} {n}"));
            assert!(got.iter().any(|x| *x != 0.0), "{n} has no gradient");
        }
    }
}

/// The default start epoch is the official `epoch > 5` of 100 epochs, scaled to the run:
/// `round(6·N/100)`: 6 of 100, 1 of 12 (0.72 → 1), 0 of 3 (0.18 → 0), 3 of 50.
#[test]
fn arl_start_epoch_is_scaled_to_the_run() {
    let (net, batch) = tiny(FusionConfig::Concat);
    let mut method = Arl::new(ArlConfig::default()).unwrap();
    for (n, start) in [(100, 6), (12, 1), (3, 0), (50, 3)] {
        assert_eq!(method.run_start_epoch(n), start, "N = {n}");
    }
    let literal = Arl::new(ArlConfig {
        schedule_epochs: 0,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(literal.run_start_epoch(12), 6);
    // Through the hooks on a 12-epoch run: no weights in epoch 0, weights from epoch 1.
    let mut ctx = RunContext::new(0, Device::Cpu, 12);
    for (epoch, active) in [(0, false), (1, true), (11, true)] {
        ctx.epoch = epoch;
        let out = method.forward(&net, &batch, &mut ctx).unwrap();
        assert_eq!(method.current_weights().is_some(), active, "epoch {epoch}");
        let loss = method.loss(&net, &batch, &out, &mut ctx).unwrap();
        let want = if active { 4.0 } else { 1.0 };
        assert_eq!(
            ctx.log.take()["gamma"].as_f64(),
            Some(want),
            "epoch {epoch}"
        );
        let _ = loss;
    }
}

// ---------------------------------------------------------------- runs

#[test]
fn same_seed_gives_identical_metrics_for_every_baseline() {
    for name in ["mmpareto", "pmr", "mla", "arl"] {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let extra = ["method.start_epoch=1", "method.schedule_epochs=0"];
        let extra: &[&str] = if name == "arl" { &extra } else { &[] };
        let ra = common::run_method(a.path(), name, 5, 2, extra);
        let rb = common::run_method(b.path(), name, 5, 2, extra);
        let read = |d: &std::path::Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
        assert_eq!(read(&ra.run_dir), read(&rb.run_dir), "{name}");
    }
}

#[test]
fn runs_log_each_mechanism() {
    let dir = tempfile::tempdir().unwrap();
    let val_acc = |o: &modbal::RunOutcome| o.summary.as_ref().unwrap().test.fusion_acc;
    // MMPareto: cosines, weights and conflict counts per encoder.
    let o = common::run_method(dir.path(), "mmpareto", 0, 3, &[]);
    for r in o.history.iter().filter(|r| r.split == "train") {
        eprintln!(
            "mmpareto {}: cos {} k_mm {} conflicts {} val_uni {}",
            r.epoch,
            r.method["cos"],
            r.method["k_mm"],
            r.method["conflicts"],
            r.method["val_uni_acc"]
        );
        for m in ["audio", "visual"] {
            let (c, k) = (per_mod(r, "cos", m), per_mod(r, "k_mm", m));
            assert!((-1.0..=1.0).contains(&c) && (0.001..=0.999).contains(&k));
            assert!(per_mod(r, "conflict_rate", m) <= 1.0);
            assert!(per_mod(r, "val_uni_acc", m) > 1.0 / 6.0);
        }
    }
    assert!(val_acc(&o) > 0.5, "{}", val_acc(&o));
    // PMR: prototypes each epoch, PCE for the weak (visual) modality inside the window: the
    // official [0, 101) of 150 epochs scaled to 3 is [0, round(2.02)) = [0, 2).
    let o = common::run_method(dir.path(), "pmr", 0, 3, &[]);
    let train: Vec<_> = o.history.iter().filter(|r| r.split == "train").collect();
    for r in &train {
        eprintln!(
            "pmr {}: rho {:?} pce {:?} s {:?} spread {:?}",
            r.epoch,
            r.method.get("rho"),
            r.method.get("pce"),
            r.method.get("s"),
            r.method.get("proto.spread")
        );
        assert!(per_mod(r, "proto.spread", "visual") > 0.0);
        assert!(r.method["proto.samples"].as_f64().unwrap() >= 64.0);
        assert_eq!(r.method["window.end"].as_f64(), Some(2.0));
        if r.epoch < 2 {
            assert!(
                r.method["rho"].as_f64().unwrap() > 1.0,
                "audio dominates synth-vec"
            );
            assert!(per_mod(r, "pce", "visual") > per_mod(r, "pce", "audio"));
        } else {
            // Outside the scaled window: no PCE at all.
            assert_eq!(r.method["active"].as_f64(), Some(0.0));
            assert!(r.method.get("pce").is_none());
        }
    }
    assert!(val_acc(&o) > 0.5);
    // MLA: projection activity and fusion weights.
    let o = common::run_method(dir.path(), "mla", 0, 3, &[]);
    for r in o.history.iter().filter(|r| r.split == "train") {
        eprintln!(
            "mla {}: residual {:?} ratio {:?} lambda {:?} val_lambda {:?}",
            r.epoch,
            r.method.get("projection.residual"),
            r.method.get("projection.grad_ratio"),
            r.method.get("lambda"),
            r.method.get("val_lambda")
        );
        let res = r.method["projection.residual"].as_f64().unwrap();
        assert!((0.0..0.5).contains(&res), "{res}");
        let l = per_mod(r, "val_lambda", "audio") + per_mod(r, "val_lambda", "visual");
        assert!((l - 1.0).abs() < 1e-9);
        assert!(per_mod(r, "projection.grad_ratio", "visual") < 1.0);
    }
    assert!(val_acc(&o) > 0.4, "{}", val_acc(&o));
    // ARL: no re-weighting before the start epoch, w from then on.
    let o = common::run_method(
        dir.path(),
        "arl",
        0,
        3,
        &["method.start_epoch=1", "method.schedule_epochs=0"],
    );
    for r in o.history.iter().filter(|r| r.split == "train") {
        eprintln!(
            "arl {}: w {:?} scale {:?} active {:?}",
            r.epoch,
            r.method.get("w"),
            r.method.get("scale"),
            r.method.get("active")
        );
        if r.epoch == 0 {
            assert_eq!(r.method["active"].as_f64(), Some(0.0));
            assert!(r.method.get("w").is_none());
            assert_eq!(per_mod(r, "scale", "audio"), 1.0);
        } else {
            assert_eq!(r.method["active"].as_f64(), Some(1.0));
            let (wa, wv) = (per_mod(r, "w", "audio"), per_mod(r, "w", "visual"));
            assert!((wa + wv - 1.0).abs() < 1e-9);
            assert!((per_mod(r, "scale", "audio") - 1.0 - wa).abs() < 1e-9);
        }
    }
    assert!(val_acc(&o) > 0.5);
}

/// A run stopped after its first epoch and resumed (`modbal::resume`) writes the same
/// metrics as an uninterrupted run, for each baseline; MMPareto's unimodal heads and their
/// optimizer state come back from the checkpoint's `method.safetensors` (control: without that
/// file the resume is refused, naming it).
#[test]
fn resumed_runs_match_uninterrupted_ones() {
    let read = |d: &std::path::Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    for name in ["mmpareto", "pmr", "mla", "arl"] {
        let mut sets = vec![format!("method.name={name}")];
        if name == "arl" {
            sets.push("method.start_epoch=1".into());
            sets.push("method.schedule_epochs=0".into());
        }
        let cfg =
            |out: &std::path::Path| common::small_vec(out, 3, 3).with_overrides(&sets).unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let full = common::train(&cfg(a.path()));
        let stop = common::stop_after(1);
        let part = modbal::train(&cfg(b.path()), &stop).unwrap();
        assert_ne!(
            read(&full.run_dir),
            read(&part.run_dir),
            "{name}: the stop took effect"
        );
        if name == "mmpareto" {
            // Control: the same stopped run without the heads' file cannot be resumed.
            let c = tempfile::tempdir().unwrap();
            let ctl = modbal::train(&cfg(c.path()), &stop).unwrap();
            let f = ctl.run_dir.join("checkpoints/last/method.safetensors");
            assert!(
                f.exists(),
                "MMPareto checkpoints its unimodal heads: {}",
                f.display()
            );
            std::fs::remove_file(&f).unwrap();
            let e = modbal::resume(&ctl.run_dir, &common::quiet())
                .expect_err("resume without method.safetensors")
                .to_string();
            assert!(e.contains("method"), "{e}");
        }
        modbal::resume(&part.run_dir, &common::quiet()).unwrap();
        assert_eq!(read(&full.run_dir), read(&part.run_dir), "{name}");
    }
}
