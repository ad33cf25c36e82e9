//! Property: every gradient modulator leaves the gradients of parameters outside its scope
//! bit-identical. Real gradients from a backward pass through a small `MultimodalNet` (two
//! small-CNN encoders with conv kernels and BatchNorm, concat head).

mod common;

use common::*;
use modbal_core::MultimodalModel;
use modbal_modulate::*;
use modbal_tensors::{cross_entropy, SeededRng};

#[test]
fn ogm_ge_touches_only_the_conv_kernels_of_its_groups() {
    let net = small_net(1);
    let params = net.params().trainable();
    for (scope, seed) in [(OgmScope::ConvKernels, 2), (OgmScope::AllEncoder, 3)] {
        let mut grads = fused_grads(&net, seed);
        let before = snapshot(&grads, &params);
        let ogm = OgmGe::new(OgmGeConfig {
            scope,
            ..Default::default()
        })
        .unwrap();
        // Only the audio group is passed: visual and head are out of scope.
        let report = ogm
            .apply(
                &mut grads,
                &params,
                &[AUDIO.to_string()],
                &[5.0],
                0,
                &mut SeededRng::new(4),
            )
            .unwrap();
        let after = snapshot(&grads, &params);
        let changed = assert_outside_untouched(&before, &after, &[AUDIO], "OGM-GE");
        let audio: Vec<_> = params
            .iter()
            .filter(|(n, _)| modbal_tensors::params::in_group(n, AUDIO))
            .collect();
        let expected: Vec<String> = audio
            .iter()
            .filter(|(_, v)| scope == OgmScope::AllEncoder || v.rank() == 4)
            .map(|(n, _)| n.clone())
            .collect();
        assert_eq!(changed, expected, "{scope:?}: the modulated tensors");
        assert_eq!(report.tensors, vec![expected.len()]);
        if scope == OgmScope::ConvKernels {
            // BatchNorm weights/biases of the audio encoder are 1-D and untouched.
            assert!(audio.iter().any(|(_, v)| v.rank() == 1));
            assert_eq!(expected.len(), 2, "two conv kernels");
        }
    }
}

#[test]
fn ogm_ge_outside_the_window_touches_nothing() {
    let net = small_net(1);
    let params = net.params().trainable();
    let mut grads = fused_grads(&net, 5);
    let before = snapshot(&grads, &params);
    let ogm = OgmGe::new(OgmGeConfig::default()).unwrap();
    let groups = [AUDIO.to_string(), VISUAL.to_string()];
    let report = ogm
        .apply(
            &mut grads,
            &params,
            &groups,
            &[8.0, 4.0],
            51,
            &mut SeededRng::new(0),
        )
        .unwrap();
    assert!(!report.active);
    assert_eq!(before, snapshot(&grads, &params));
}

#[test]
fn cal_scales_only_its_groups() {
    let net = small_net(1);
    let params = net.params().trainable();
    let mut grads = fused_grads(&net, 6);
    let before = snapshot(&grads, &params);
    let cal = CalReinforcement::new(CalReinforcementConfig::default()).unwrap();
    cal.apply(&mut grads, &params, &[VISUAL.to_string()], &[0.7])
        .unwrap();
    let after = snapshot(&grads, &params);
    let changed = assert_outside_untouched(&before, &after, &[VISUAL], "CAL");
    let n_visual = params
        .iter()
        .filter(|(n, _)| modbal_tensors::params::in_group(n, VISUAL))
        .count();
    assert_eq!(changed.len(), n_visual, "every visual tensor is scaled");
}

#[test]
fn mmpareto_rewrites_only_the_encoders_and_heads_keep_plain_gradients() {
    let net = small_net(2);
    let params = net.params().trainable();
    let (x, y) = small_inputs(7, 6);
    let out = forward(&net, &x);
    // Two (here three) backward passes over one graph.
    let l_mm = cross_entropy(&out.fused_logits, &y).unwrap();
    let l_a = cross_entropy(&out.per_modality_logits[0], &y).unwrap();
    let l_v = cross_entropy(&out.per_modality_logits[1], &y).unwrap();
    let g_mm = l_mm.backward().unwrap();
    let g_a = l_a.backward().unwrap();
    let g_v = l_v.backward().unwrap();
    let mut total = sum_grads(&[&g_mm, &g_a, &g_v], &params).unwrap();
    // The summed store agrees with a backward of the total loss.
    let g_total = ((&l_mm + &l_a).unwrap() + &l_v)
        .unwrap()
        .backward()
        .unwrap();
    for (n, v) in &params {
        let a = vec_f64(total.get(v.as_tensor()).unwrap());
        let b = vec_f64(g_total.get(v.as_tensor()).unwrap());
        assert_close(&a, &b, 1e-5, n);
    }
    let before = snapshot(&total, &params);
    let mmp = MmPareto::new(MmParetoConfig::default()).unwrap();
    // Only the audio encoder: the visual encoder and the head must be untouched.
    let report = mmp
        .apply(&mut total, &g_mm, &[&g_a], &params, &[AUDIO.to_string()])
        .unwrap();
    let after = snapshot(&total, &params);
    let changed = assert_outside_untouched(&before, &after, &[AUDIO], "MMPareto");
    assert!(!changed.is_empty());
    assert!(report.k_mm[0] + report.k_uni[0] == 1.0);
    for (n, bits) in &after {
        for b in bits.as_ref().unwrap() {
            assert!(f32::from_bits(*b).is_finite(), "{n}");
        }
    }
}

#[test]
fn mla_projects_only_the_head_weight() {
    let net = small_net(3);
    let params = net.params().trainable();
    let mut grads = fused_grads(&net, 8);
    let before = snapshot(&grads, &params);
    let (name, w) = params
        .iter()
        .find(|(n, v)| n.starts_with("head") && v.rank() == 2)
        .unwrap()
        .clone();
    let d = w.dims()[1];
    let mut proj = MlaProjector::new(MlaProjectionConfig::default(), d).unwrap();
    let mut rng = SeededRng::new(9);
    let feats = rng
        .randn(
            vec![6, d],
            0.0,
            1.0,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
    proj.apply(&mut grads, &w, &feats, 0, 10).unwrap();
    let after = snapshot(&grads, &params);
    let changed = assert_outside_untouched(&before, &after, &[&name], "MLA");
    assert_eq!(changed, vec![name]);
}

#[test]
fn udi_controller_only_reads() {
    let net = small_net(4);
    let params = net.params().trainable();
    let (x, y) = small_inputs(10, 6);
    let out = forward(&net, &x);
    let g_cls = cross_entropy(&out.fused_logits, &y)
        .unwrap()
        .backward()
        .unwrap();
    let g_aux = cross_entropy(&out.per_modality_logits[1], &y)
        .unwrap()
        .backward()
        .unwrap();
    let before = (snapshot(&g_cls, &params), snapshot(&g_aux, &params));
    let ctl = UdiController::new(UdiControllerConfig::default()).unwrap();
    let shared = net.params().trainable_with_prefix(VISUAL);
    let report = ctl.weights(&g_cls, &[&g_aux], &shared).unwrap();
    assert_eq!(report.shared_tensors, vec![shared.len()]);
    assert_eq!(before.0, snapshot(&g_cls, &params));
    assert_eq!(before.1, snapshot(&g_aux, &params));
}
