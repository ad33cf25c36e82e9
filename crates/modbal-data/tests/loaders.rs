//! The real-data loaders on tiny generated trees in every supported layout: labels, shapes,
//! values against closed forms, determinism, split counts, and errors that name the file.

use modbal_data::loader::make_batch;
use modbal_data::real::av::{AvConfig, CremaD, CremaDConfig, KineticsSounds, VggSound};
use modbal_data::real::cgmnist::{CgmnistConfig, PALETTE};
use modbal_data::real::fixtures::{self, frame_value, AvFixture};
use modbal_data::real::nyu::NyuDepthConfig;
use modbal_data::real::ucf101::Ucf101Config;
use modbal_data::real::{Layout, OnMissing};
use modbal_data::vision::{IMAGENET_MEAN, IMAGENET_STD};
use modbal_data::Dataset;
use std::path::Path;

fn cremad(root: &Path, frames: usize, size: usize, workers: usize) -> CremaDConfig {
    CremaDConfig {
        root: root.to_path_buf(),
        frames,
        image_size: size,
        val_fraction: 0.25,
        workers,
        ..Default::default()
    }
}

/// Every value of frame `t` of a `[3, T, S, S]` tensor.
fn frame(v: &[f32], c: usize, t: usize, t_n: usize, s: usize) -> &[f32] {
    let p = s * s;
    &v[(c * t_n + t) * p..(c * t_n + t + 1) * p]
}

#[test]
fn prepared_layout_labels_shapes_centres_and_normalisation() {
    let dir = tempfile::tempdir().unwrap();
    AvFixture::default().write_prepared(dir.path()).unwrap();
    let (train, val, test) = cremad(dir.path(), 3, 8, 1).build_splits().unwrap();
    // 6 classes × 4 train clips: round(0.25·4) = 1 per class held out; 2 test clips per class.
    assert_eq!((train.len(), val.len(), test.len()), (18, 6, 12));
    for c in 0..6u32 {
        let n = (0..val.len())
            .filter(|&i| val.get(i).unwrap().label == c)
            .count();
        assert_eq!(n, 1, "class {c}");
    }
    assert_eq!(test.input_shapes(), &[vec![1, 16, 12], vec![3, 3, 8, 8]]);
    assert_eq!(test.classes()[5], "ANG");
    for i in 0..test.len() {
        let s = test.get(i).unwrap();
        // The fixture stores the label in the spectrogram's first element.
        assert_eq!(s.inputs[0][0], s.label as f32);
        assert_eq!(s.label, test.clip_id(i)[2..3].parse::<u32>().unwrap());
        // 5 frames, T = 3: segment centres floor((2k+1)·5/6) = 0, 2, 4.
        assert_eq!(test.frame_indices(i), vec![0, 2, 4]);
        for (t, k) in [0usize, 2, 4].into_iter().enumerate() {
            for c in 0..3 {
                // Closed form: a constant frame stays constant under resize; then ImageNet
                // normalisation (v/255 − mean_c)/std_c.
                let want = (frame_value(k) as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
                let got = frame(&s.inputs[1], c, t, 3, 8);
                assert!(got.iter().all(|x| (x - want).abs() < 1e-5), "{c} {t}");
            }
        }
    }
    // The training split draws a random frame of each segment: [0,1], [1,3], [3,4].
    train.set_epoch(0, 0);
    for i in 0..train.len() {
        let ix = train.frame_indices(i);
        assert!(
            ix[0] <= 1 && (1..=3).contains(&ix[1]) && ix[2] >= 3,
            "{ix:?}"
        );
    }
}

#[test]
fn same_seed_same_batch_bytes_whatever_the_threads() {
    let dir = tempfile::tempdir().unwrap();
    AvFixture {
        texture: true,
        jpeg: true,
        ..Default::default()
    }
    .write_prepared(dir.path())
    .unwrap();
    let ids: Vec<usize> = (0..18).rev().collect();
    let batch = |workers: usize, seed: u64, epoch: usize| {
        let (train, _, _) = cremad(dir.path(), 3, 16, workers).build_splits().unwrap();
        train.set_epoch(seed, epoch);
        let b = make_batch(train.as_ref(), &ids).unwrap();
        b.inputs[1].flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let a = batch(1, 7, 2);
    assert_eq!(a, batch(4, 7, 2));
    assert_eq!(a, batch(3, 7, 2));
    assert_ne!(a, batch(1, 7, 3), "a new epoch draws new crops");
    assert_ne!(a, batch(1, 8, 2), "another run seed draws new crops");
    // Evaluation is deterministic and seed-free.
    let (_, _, t1) = cremad(dir.path(), 3, 16, 1).build_splits().unwrap();
    let (_, _, t2) = cremad(dir.path(), 3, 16, 2).build_splits().unwrap();
    t2.set_epoch(99, 5);
    assert_eq!(t1.get(3).unwrap(), t2.get(3).unwrap());
}

#[test]
fn legacy_cremad_ave_vggsound_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let fx = AvFixture {
        jpeg: true,
        ..Default::default()
    };
    let r = dir.path().join("crema");
    fx.write_legacy_cremad(&r).unwrap();
    let cfg = CremaDConfig {
        visual_dir: "Image-01-FPS".into(),
        ..cremad(&r, 2, 8, 1)
    };
    let (train, _, test) = cfg.build_splits().unwrap();
    assert_eq!((train.len(), test.len()), (18, 12));
    // OGM-GE's class order NEU HAP SAD FEA DIS ANG.
    let classes: Vec<&str> = test.classes().iter().map(String::as_str).collect();
    assert_eq!(classes, ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]);
    let s = test.get(0).unwrap();
    assert_eq!(s.inputs[0][0], s.label as f32);
    assert_eq!(s.inputs[1].len(), 3 * 2 * 64);

    // AVE: `Category&VideoID&...` lists; classes from the sorted labels.
    let r = dir.path().join("ave");
    let ave_fx = AvFixture {
        classes: vec!["Church bell".into(), "Acoustic guitar".into()],
        ..fx.clone()
    };
    ave_fx.write_legacy_ave(&r).unwrap();
    let ave = modbal_data::real::av::AveConfig {
        root: r.clone(),
        image_size: 8,
        val_fraction: 0.25,
        ..Default::default()
    };
    let (tr, va, te) = ave.build_splits().unwrap();
    assert_eq!((tr.len(), va.len(), te.len()), (6, 2, 4));
    assert_eq!(te.classes(), ["Acoustic guitar", "Church bell"]);
    let i = (0..te.len())
        .find(|&i| te.clip_id(i).starts_with("te0"))
        .unwrap();
    assert_eq!(te.get(i).unwrap().label, 1, "Church bell sorts second");

    // VGGSound: one CSV, quoted labels with commas, clip ids <ytid>_<start:06>.
    let r = dir.path().join("vgg");
    fx.write_legacy_vggsound(&r).unwrap();
    let vgg = AvConfig::<VggSound> {
        root: r,
        image_size: 8,
        val_fraction: 0.25,
        ..Default::default()
    };
    let (tr, _, te) = vgg.build_splits().unwrap();
    assert_eq!((tr.len() + 6, te.len()), (24, 12));
    assert!(te.classes().contains(&"ANG, loud".to_string()));
    assert!(te.clip_id(0).ends_with("_000030"));

    // The layout can be forced: legacy lists are not looked for in a prepared tree.
    let p = dir.path().join("prep");
    fx.write_prepared(&p).unwrap();
    let e = AvConfig::<KineticsSounds> {
        root: p,
        layout: Layout::Legacy,
        ..Default::default()
    }
    .build()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("train.csv") && e.contains("does not exist"),
        "{e}"
    );
}

#[test]
fn bad_inputs_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let r = dir.path().join(name);
        AvFixture::default().write_prepared(&r).unwrap();
        r
    };
    let err = |r: &Path| cremad(r, 2, 8, 1).build().unwrap_err().to_string();

    let e = err(&dir.path().join("nope"));
    assert!(e.contains("nope") && e.contains("does not exist"), "{e}");
    let e = CremaDConfig::default().build().unwrap_err().to_string();
    assert!(e.contains("dataset.root is not set"), "{e}");

    let r = fresh("nosplit");
    std::fs::remove_file(r.join("splits/test.csv")).unwrap();
    let e = err(&r);
    assert!(
        e.contains("test.csv") && e.contains("does not exist"),
        "{e}"
    );

    let r = fresh("noframes");
    let d = r.join("visual/tr2_1");
    std::fs::remove_dir_all(&d).unwrap();
    std::fs::create_dir(&d).unwrap();
    let e = err(&r);
    assert!(e.contains("tr2_1") && e.contains("no .jpg"), "{e}");
    // on_missing = "skip" drops the clip and says so.
    let (train, val, _) = CremaDConfig {
        on_missing: OnMissing::Skip,
        ..cremad(&r, 2, 8, 1)
    }
    .build_splits()
    .unwrap();
    assert_eq!(train.len() + val.len(), 23);
    assert!(train.skipped()[0].contains("tr2_1"));

    let r = fresh("noaudio");
    std::fs::remove_file(r.join("audio/te1_0.npy")).unwrap();
    let e = err(&r);
    assert!(
        e.contains("te1_0.npy") && e.contains("does not exist"),
        "{e}"
    );

    let r = fresh("badshape");
    modbal_data::npy::write_npy(&r.join("audio/tr3_2.npy"), &[16, 13], &[0.0f32; 16 * 13]).unwrap();
    let e = err(&r);
    assert!(
        e.contains("tr3_2.npy") && e.contains("[16, 13]") && e.contains("[16, 12]"),
        "{e}"
    );

    let r = fresh("badclass");
    let t = std::fs::read_to_string(r.join("splits/test.csv")).unwrap();
    std::fs::write(
        r.join("splits/test.csv"),
        t.replace("te0_1,NEU", "te0_1,BORED"),
    )
    .unwrap();
    let e = err(&r);
    assert!(e.contains("test.csv line") && e.contains("BORED"), "{e}");

    // A corrupt JPEG is found when the sample is decoded: the error names the clip and file.
    let r = fresh("corrupt");
    std::fs::write(r.join("visual/te4_1/00003.png"), b"\x89PNG garbage").unwrap();
    let (_, _, test) = cremad(&r, 5, 8, 1).build_splits().unwrap();
    let i = (0..test.len())
        .find(|&i| test.clip_id(i) == "te4_1")
        .unwrap();
    let e = test.get(i).unwrap_err().to_string();
    assert!(
        e.contains("te4_1") && e.contains("00003.png") && e.contains("decode"),
        "{e}"
    );
    let e = make_batch(test.as_ref(), &[0, i]).unwrap_err().to_string();
    assert!(e.contains("00003.png"), "{e}");
}

#[test]
fn cgmnist_colour_protocol_within_binomial_bounds() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_mnist(dir.path(), 2000, 1000, 3).unwrap();
    let rho = 0.8;
    let cfg = CgmnistConfig {
        root: dir.path().to_path_buf(),
        color_correlation: rho,
        color_std: 0.0,
        ..Default::default()
    };
    let (train, val, test) = cfg.build_splits().unwrap();
    assert_eq!((train.len(), val.len(), test.len()), (1800, 200, 1000));
    let hit = |d: &modbal_data::real::cgmnist::CgmnistDataset| {
        (0..d.len())
            .filter(|&i| d.painted(i).color_class == d.label(i) as usize)
            .count() as f64
            / d.len() as f64
    };
    // Train: P(colour = label) = ρ + (1 − ρ)/10 = 0.82; test: 1/10. 5σ binomial bounds.
    let p_tr = rho + (1.0 - rho) / 10.0;
    let sd_tr = (p_tr * (1.0 - p_tr) / 1800.0).sqrt();
    assert!((hit(&train) - p_tr).abs() < 5.0 * sd_tr, "{}", hit(&train));
    let sd_te = (0.1f64 * 0.9 / 1000.0).sqrt();
    assert!((hit(&test) - 0.1).abs() < 5.0 * sd_te, "{}", hit(&test));
    // Validation: OOD by default (coloured as test, 1/10); IID colours it as training.
    let sd_va = (0.1f64 * 0.9 / 200.0).sqrt();
    assert!(
        (hit(&val) - 0.1).abs() < 5.0 * sd_va,
        "ood val {}",
        hit(&val)
    );
    let iid = CgmnistConfig {
        validation: modbal_data::ValidationShift::Iid,
        ..cfg.clone()
    };
    let val_iid = iid.build_splits().unwrap().1;
    let sd_vi = (p_tr * (1.0 - p_tr) / 200.0).sqrt();
    assert!(
        (hit(&val_iid) - p_tr).abs() < 5.0 * sd_vi,
        "iid val {}",
        hit(&val_iid)
    );
    // Default jitter: Kim et al.'s variance 0.03 per colour component. Components of 0.5 in the
    // palette (orange's green, purple's red) are unclipped within 2.9σ: their sample variance
    // estimates 0.03 (relative sd of a variance over n draws ≈ √(2/n)).
    let jit = CgmnistConfig {
        color_std: CgmnistConfig::default().color_std,
        ..cfg.clone()
    };
    assert!((jit.color_std.powi(2) - 0.03).abs() < 1e-12);
    let jt = jit.build_splits().unwrap().2;
    let mut dev = Vec::new();
    for i in 0..jt.len() {
        let p = jt.painted(i);
        match p.color_class {
            6 => dev.push(p.color[1] as f64 - 0.5),
            7 => dev.push(p.color[0] as f64 - 0.5),
            _ => {}
        }
    }
    let n = dev.len() as f64;
    let var = dev.iter().map(|d| d * d).sum::<f64>() / n;
    assert!(
        (var - 0.03).abs() < 5.0 * 0.03 * (2.0 / n).sqrt(),
        "jitter variance {var} over {n} draws"
    );
    // Test colours are spread over all 10 colours (independent of the label).
    let mut per = [0usize; 10];
    for i in 0..test.len() {
        per[test.painted(i).color_class] += 1;
    }
    assert!(per.iter().all(|&n| n > 50), "{per:?}");
    // Pixels: colour view = gray view × palette colour (same pairing).
    let s = train.get(5).unwrap();
    let k = train.painted(5).color_class;
    for c in 0..3 {
        for p in 0..784 {
            assert_eq!(s.inputs[1][c * 784 + p], s.inputs[0][p] * PALETTE[k][c]);
        }
    }
    assert_eq!(s.label, train.label(5));
    // Seeded: the same config gives the same colours.
    let again = cfg.build_splits().unwrap().2;
    assert!((0..test.len()).all(|i| again.painted(i) == test.painted(i)));

    // Wrong IDX magic names the file.
    let bad = dir.path().join("bad");
    fixtures::write_mnist(&bad, 20, 10, 0).unwrap();
    let p = bad.join("t10k-labels-idx1-ubyte");
    let mut b = std::fs::read(&p).unwrap();
    b[3] = 0x03;
    std::fs::write(&p, b).unwrap();
    let e = CgmnistConfig {
        root: bad.clone(),
        ..Default::default()
    }
    .build()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("t10k-labels-idx1-ubyte") && e.contains("magic"),
        "{e}"
    );
    // A gzip file under the raw IDX name (RFC 1952 header: 1f 8b, deflate, no flags) gets the
    // unpacking advice, not the bad-magic message.
    let gz = dir.path().join("gz");
    fixtures::write_mnist(&gz, 20, 10, 0).unwrap();
    let mut body = vec![0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03];
    body.extend_from_slice(&[0x4b, 0x4c, 0x4a, 0x06, 0x00]);
    std::fs::write(gz.join("train-images-idx3-ubyte"), body).unwrap();
    let e = CgmnistConfig {
        root: gz,
        ..Default::default()
    }
    .build()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("gzip") && e.contains("gunzip"),
        "{e}"
    );
    std::fs::remove_file(bad.join("train-images-idx3-ubyte")).unwrap();
    let e = CgmnistConfig {
        root: bad,
        ..Default::default()
    }
    .build()
    .unwrap_err()
    .to_string();
    assert!(e.contains("train-images-idx3-ubyte"), "{e}");
}

#[test]
fn ucf101_rgb_and_two_channel_flow() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_ucf101(dir.path(), 3, 4, 2, 5).unwrap();
    let cfg = Ucf101Config {
        root: dir.path().to_path_buf(),
        image_size: 8,
        val_fraction: 0.25,
        ..Default::default()
    };
    let (train, val, test) = cfg.build_splits().unwrap();
    assert_eq!((train.len(), val.len(), test.len()), (9, 3, 6));
    assert_eq!(test.input_shapes(), &[vec![3, 3, 8, 8], vec![2, 3, 8, 8]]);
    let s = test.get(4).unwrap();
    assert_eq!(s.label, 2);
    // RGB: 5 frames → centres 0, 2, 4; flow: 4 frames → floor((2k+1)·4/6) = 0, 2, 3.
    // JPEG keeps a flat grey within one level: tolerance 1.5/255/std.
    for (t, (kr, kf)) in [(0, 0), (2, 2), (4, 3)].into_iter().enumerate() {
        let want = (frame_value(kr) as f32 / 255.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1];
        assert!(frame(&s.inputs[0], 1, t, 3, 8)
            .iter()
            .all(|x| (x - want).abs() < 0.03));
        let u = (frame_value(kf) as f32 / 255.0 - 0.5) / 0.226;
        let v = ((255 - frame_value(kf)) as f32 / 255.0 - 0.5) / 0.226;
        assert!(
            frame(&s.inputs[1], 0, t, 3, 8)
                .iter()
                .all(|x| (x - u).abs() < 0.03),
            "u {t}"
        );
        assert!(
            frame(&s.inputs[1], 1, t, 3, 8)
                .iter()
                .all(|x| (x - v).abs() < 0.03),
            "v {t}"
        );
    }
    // A class subset is relabelled in classInd order.
    let sub = Ucf101Config {
        classes: vec!["Action2".into(), "Action0".into()],
        ..cfg
    };
    let (_, _, te) = sub.build_splits().unwrap();
    assert_eq!(te.classes(), ["Action0", "Action2"]);
    assert_eq!(te.len(), 4);
}

#[test]
fn nyu_depth_list_layout() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::write_nyu(dir.path(), &["bedroom", "kitchen", "office"], 4, 2).unwrap();
    let cfg = NyuDepthConfig {
        root: dir.path().to_path_buf(),
        image_size: 8,
        val_fraction: 0.25,
        ..Default::default()
    };
    let (train, val, test) = cfg.build_splits().unwrap();
    assert_eq!((train.len(), val.len(), test.len()), (9, 3, 6));
    assert_eq!(test.input_shapes(), &[vec![3, 8, 8], vec![1, 8, 8]]);
    for i in 0..test.len() {
        let s = test.get(i).unwrap();
        let c = s.label as f32 + 1.0;
        // Depth: 16-bit PNG of 1000·(c) mm → (1000c/10000 − 0.5)/0.5, exact.
        let want = (1000.0 * c / 10_000.0 - 0.5) / 0.5;
        assert!(s.inputs[1].iter().all(|x| (x - want).abs() < 1e-5));
        let r = (10.0 * c / 255.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0];
        assert!(s.inputs[0][..64].iter().all(|x| (x - r).abs() < 0.03));
    }
    std::fs::remove_file(dir.path().join("depth/kitchen_0001.png")).unwrap();
    let e = cfg.build().unwrap_err().to_string();
    assert!(
        e.contains("kitchen_0001.png") && e.contains("train.txt line"),
        "{e}"
    );
}

#[test]
fn dataset_configs_need_a_root_and_roundtrip() {
    use modbal_data::real::{
        av, cgmnist::CgmnistConfig, nyu::NyuDepthConfig, ucf101::Ucf101Config,
    };
    fn check<C>(name: &str)
    where
        C: Default + PartialEq + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
        C: Build,
    {
        let c = C::default();
        let e = c.splits().unwrap_err().to_string();
        assert!(e.contains("dataset.root is not set"), "{name}: {e}");
        let s = serde_json::to_string(&c).unwrap();
        let back: C = serde_json::from_str(&s).unwrap();
        assert_eq!(back, c);
    }
    trait Build {
        fn splits(&self) -> modbal_core::Result<modbal_data::Splits>;
    }
    macro_rules! build {
        ($($t:ty),*) => {$(impl Build for $t {
            fn splits(&self) -> modbal_core::Result<modbal_data::Splits> { self.build() }
        })*};
    }
    build!(
        av::CremaDConfig,
        av::KineticsSoundsConfig,
        av::AveConfig,
        av::VggSoundConfig,
        Ucf101Config,
        NyuDepthConfig,
        CgmnistConfig
    );
    check::<av::CremaDConfig>("crema-d");
    check::<av::KineticsSoundsConfig>("kinetics-sounds");
    check::<av::AveConfig>("ave");
    check::<av::VggSoundConfig>("vggsound");
    check::<Ucf101Config>("ucf101");
    check::<NyuDepthConfig>("nyu-depth");
    check::<CgmnistConfig>("cgmnist");
    // Per-dataset defaults survive a round trip with only the root given.
    let a: av::AveConfig = serde_json::from_str(r#"{"root": "/x"}"#).unwrap();
    assert_eq!((a.frames, a.train_list.as_str()), (4, "trainSet.txt"));
    let _unused: AvConfig<CremaD> = Default::default();
}
