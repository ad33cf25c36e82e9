//! ImageNet ResNet18 weights: a checkpoint with torchvision's tensor names (written by the test
//! from a closed-form pattern) loads into modbal's ResNet18 and reproduces torchvision's
//! forward; stem adaptation for 1 and 2 input channels; clear errors.
//!
//! Reference (`tests/fixtures/make_fixtures.py`, torchvision 0.29 / PyTorch 2.15 CPU):
//! ```python
//! net = torchvision.models.resnet18(weights=None).eval()
//! net.load_state_dict({k: pattern(k, v.shape) for k, v in net.state_dict().items()})
//! net.fc = torch.nn.Identity()
//! ref["rgb"] = net(image(3, 64, 48))                 # image: sin(0.1·i), i the flat index
//! net.conv1.weight = w.sum(1, keepdim=True)          # 1 channel  → ref["gray"]
//! net.conv1.weight = w.mean(1, keepdim=True).repeat(1, 2, 1, 1)   # 2 channels → ref["flow"]
//! ```

use candle_core::{DType, Device, Tensor};
use modbal_encoders::resnet_pretrained::{
    adapt_stem, load_resnet18_safetensors, map_resnet18_name, pretrained_resnet18,
};
use modbal_encoders::{Encoder, EncoderConfig, ResNet18Encoder, WeightsSource};
use modbal_tensors::{ParamStore, SeededRng};
use std::collections::HashMap;
use std::path::Path;

/// The closed-form weights of `make_fixtures.py::pattern` (integer hash, exact everywhere).
fn pattern(name: &str, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let key = 97 * name.bytes().map(|b| b as u64).sum::<u64>() + 13 * name.len() as u64;
    let v: Vec<f32> = (0..n as u64)
        .map(|i| {
            let h = (i.wrapping_mul(2654435761).wrapping_add(key)) % (1u64 << 32);
            let u = h as f64 / 4294967296.0 * 2.0 - 1.0;
            let x = if name.ends_with("running_var") {
                1.0 + 0.5 * (1.0 + u)
            } else if name.ends_with("running_mean") || name.ends_with(".bias") {
                0.1 * u
            } else if shape.len() == 1 {
                1.0 + 0.1 * u
            } else {
                let fan_in: usize = shape[1..].iter().product();
                u * (3.0 / fan_in as f64).sqrt()
            };
            x as f32
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn image(c: usize, h: usize, w: usize) -> Tensor {
    let v: Vec<f32> = (0..c * h * w)
        .map(|i| (0.1 * i as f64).sin() as f32)
        .collect();
    Tensor::from_vec(v, (1, c, h, w), &Device::Cpu).unwrap()
}

/// A torchvision-named checkpoint (RGB stem, ImageNet head, num_batches_tracked).
fn write_checkpoint(path: &Path, prefix: &str) {
    let store = ParamStore::new();
    let pb = store.root(DType::F32, &Device::Cpu);
    ResNet18Encoder::new(&pb, &[3, 8, 8], false, &mut SeededRng::new(0)).unwrap();
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for (name, var) in store.all() {
        map.insert(format!("{prefix}{name}"), pattern(&name, var.dims()));
        if name.ends_with("running_var") {
            let base = name.trim_end_matches("running_var");
            map.insert(
                format!("{prefix}{base}num_batches_tracked"),
                Tensor::new(0i64, &Device::Cpu).unwrap(),
            );
        }
    }
    map.insert(
        format!("{prefix}fc.weight"),
        pattern("fc.weight", &[1000, 512]),
    );
    map.insert(format!("{prefix}fc.bias"), pattern("fc.bias", &[1000]));
    candle_core::safetensors::save(&map, path).unwrap();
}

fn reference(key: &str) -> Vec<f32> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resnet18_reference.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn torchvision_checkpoint_matches_torchvision_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("model.safetensors");
    write_checkpoint(&file, "");
    for (key, c) in [("rgb", 3usize), ("gray", 1), ("flow", 2)] {
        let store = ParamStore::new();
        let pb = store
            .root(DType::F32, &Device::Cpu)
            .pp("encoder")
            .pp("visual");
        let enc = ResNet18Encoder::new(&pb, &[c, 64, 48], false, &mut SeededRng::new(7)).unwrap();
        let report = load_resnet18_safetensors(&pb, &file).unwrap();
        assert_eq!(report.loaded.len(), store.all().len(), "every entry set");
        assert!(report.ignored.contains(&"fc.weight".to_string()));
        assert_eq!(
            report
                .ignored
                .iter()
                .filter(|n| n.ends_with("num_batches_tracked"))
                .count(),
            20
        );
        let y = enc.forward_t(&image(c, 64, 48), false).unwrap();
        let got: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        let want = reference(key);
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("resnet18 {key} ({c} ch) vs torchvision: max |Δ| {err:.2e} (max |y| {scale:.3})");
        assert!(err < 1e-5, "{key}: max |Δ| {err}");
    }
}

#[test]
fn timm_and_prefixed_names_and_hub_resolution() {
    assert_eq!(
        map_resnet18_name("module.layer1.0.conv1.weight").as_deref(),
        Some("layer1.0.conv1.weight")
    );
    assert_eq!(map_resnet18_name("fc.bias"), None);
    assert_eq!(map_resnet18_name("bn1.num_batches_tracked"), None);
    // A DataParallel-prefixed file, resolved through a laid-out hub cache by EncoderConfig.
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models--timm--resnet18.tv_in1k");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots/feedbeef")).unwrap();
    std::fs::write(repo.join("refs/main"), "feedbeef").unwrap();
    write_checkpoint(
        &repo.join("snapshots/feedbeef/model.safetensors"),
        "module.",
    );
    let src = WeightsSource::new("timm/resnet18.tv_in1k", None);
    let path = src.resolve_in("model.safetensors", tmp.path()).unwrap();
    let store = ParamStore::new();
    let pb = store.root(DType::F32, &Device::Cpu);
    let enc = ResNet18Encoder::new(&pb, &[3, 64, 48], false, &mut SeededRng::new(1)).unwrap();
    load_resnet18_safetensors(&pb, &path).unwrap();
    let got: Vec<f32> = enc
        .forward_t(&image(3, 64, 48), false)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let err = got
        .iter()
        .zip(reference("rgb"))
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-3, "{err}");
    // The config path: explicit weights directory.
    let cfg = EncoderConfig::ResNet18Pretrained {
        frames_pooling: true,
        repo: "timm/resnet18.tv_in1k".into(),
        revision: "main".into(),
        weights: Some(repo.join("snapshots/feedbeef")),
    };
    assert_eq!(cfg.out_dim(&[2, 3, 32, 32]).unwrap(), 512);
    let store = ParamStore::new();
    let enc = cfg
        .build(
            &store.root(DType::F32, &Device::Cpu),
            &[2, 3, 32, 32],
            &mut SeededRng::new(0),
        )
        .unwrap();
    assert_eq!(enc.out_dim(), 512);
    let _ = pretrained_resnet18; // re-exported constructor, exercised through the config
}

#[test]
fn stem_adaptation_and_errors() {
    let w = pattern("conv1.weight", &[64, 3, 7, 7]);
    let g = adapt_stem(&w, 1).unwrap();
    assert_eq!(g.dims(), &[64, 1, 7, 7]);
    // Σ_c W[:, c] applied to a grey image = the RGB stem applied to R = G = B.
    let s: f32 = (g.sum_all().unwrap() - w.sum_all().unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(s < 1e-3);
    let f = adapt_stem(&w, 2).unwrap();
    assert_eq!(f.dims(), &[64, 2, 7, 7]);
    assert!(adapt_stem(&f, 1).is_err(), "only an RGB stem is adapted");

    let tmp = tempfile::tempdir().unwrap();
    // A checkpoint missing a tensor: the error names the file and the parameter.
    let full = tmp.path().join("full.safetensors");
    write_checkpoint(&full, "");
    let mut map = candle_core::safetensors::load(&full, &Device::Cpu).unwrap();
    map.remove("layer3.1.bn2.running_mean");
    let partial = tmp.path().join("partial.safetensors");
    candle_core::safetensors::save(&map, &partial).unwrap();
    let store = ParamStore::new();
    let pb = store.root(DType::F32, &Device::Cpu);
    ResNet18Encoder::new(&pb, &[3, 32, 32], false, &mut SeededRng::new(0)).unwrap();
    let e = load_resnet18_safetensors(&pb, &partial)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("partial.safetensors") && e.contains("layer3.1.bn2.running_mean"),
        "{e}"
    );
    // A tensor the model does not have.
    map.insert("layer5.0.conv1.weight".into(), pattern("x", &[2, 2]));
    candle_core::safetensors::save(&map, &partial).unwrap();
    let e = load_resnet18_safetensors(&pb, &partial)
        .unwrap_err()
        .to_string();
    assert!(e.contains("layer5.0.conv1.weight"), "{e}");
    // Nothing in the explicit directory nor in the cache.
    let src = WeightsSource::new("timm/resnet18.tv_in1k", Some(tmp.path().join("none")));
    let e = src
        .resolve_in("model.safetensors", tmp.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("none") && e.contains(&tmp.path().display().to_string()),
        "{e}"
    );
}
