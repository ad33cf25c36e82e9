//! UPMC Food-101 and MVSA-Single on layouts written by the test (tiny JPEGs, the tiny BERT
//! vocabulary and GloVe file of modbal-encoders' fixtures): layouts, label rules, splits,
//! text encodings, augmentation determinism and errors naming the file.

use modbal_text::{Food101, Food101Config, MvsaConfig, MvsaSingle, TextEncoding};
use std::path::{Path, PathBuf};

fn enc_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../modbal-encoders/tests/fixtures")
        .join(name)
}

fn wordpiece(max_len: usize) -> TextEncoding {
    TextEncoding::Wordpiece {
        tokenizer: enc_fixture("bert_tiny/vocab.txt"),
        lowercase: true,
        max_len,
    }
}

fn jpg(path: &Path, shade: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(20, 14, |x, y| {
        image::Rgb([shade, (x * 10) as u8, (y * 15) as u8])
    });
    img.save(path).unwrap();
}

#[test]
fn food101_csv_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("texts")).unwrap();
    let classes = ["apple_pie", "pizza"];
    let mut train = String::new();
    for k in 0..10 {
        let c = classes[k % 2];
        let f = format!("{c}_{k}.jpg");
        jpg(&root.join("images/train").join(c).join(&f), (k * 20) as u8);
        // Original UPMC order: image, text, label (quoted text with a comma).
        train.push_str(&format!(
            "{f},\"The {} is good, dog\",{c}\n",
            if k % 2 == 0 { "cat" } else { "pizza" }
        ));
    }
    std::fs::write(root.join("texts/train_titles.csv"), train).unwrap();
    // Test file with a header and another column order.
    let mut test = String::from("text,label,image_path\n");
    for k in 0..4 {
        let c = classes[k % 2];
        let f = format!("{c}_t{k}.jpg");
        jpg(&root.join("images/test").join(c).join(&f), 100);
        test.push_str(&format!("hello world,{c},{f}\n"));
    }
    std::fs::write(root.join("texts/test_titles.csv"), test).unwrap();

    let mut cfg = Food101Config::new(root, wordpiece(10));
    cfg.image_size = 16;
    cfg.val_fraction = 0.2;
    cfg.workers = 1;
    let s = Food101::splits(&cfg).unwrap();
    assert_eq!((s.train.len(), s.val.len(), s.test.len()), (8, 2, 4));
    assert_eq!(s.train.num_classes(), 2);
    assert_eq!(s.train.modalities(), ["image", "text"]);
    assert_eq!(s.train.input_shapes(), [vec![3, 16, 16], vec![10]]);
    let x = s.test.get(0).unwrap();
    assert_eq!(x.label, 0);
    // [CLS] hello world [SEP] [PAD]… with the tiny vocabulary (ids from transformers' BertTokenizer).
    assert_eq!(x.inputs[1], [2., 31., 32., 3., 0., 0., 0., 0., 0., 0.]);
    assert_eq!(x.inputs[0].len(), 3 * 16 * 16);
    // Training augmentation depends on (seed, epoch, index) only.
    s.train.set_epoch(5, 1);
    let a = s.train.get(3).unwrap();
    let b = s.train.get_many(&[3]).unwrap().remove(0);
    assert_eq!(a, b);
    s.train.set_epoch(5, 2);
    assert_ne!(s.train.get(3).unwrap().inputs[0], a.inputs[0]);

    // GloVe ids and vectors as text encodings.
    cfg.text = TextEncoding::GloveIds {
        glove: enc_fixture("glove_tiny.txt"),
        max_words: 0,
        max_len: 6,
    };
    let s = Food101::splits(&cfg).unwrap();
    // "the cat is good , dog" → the=2 cat=3 is=[UNK] good=9 ,=[UNK] dog=7
    let x = s.train.get(0).unwrap();
    assert_eq!(x.inputs[1], [2., 3., 1., 9., 1., 7.]);
    cfg.text = TextEncoding::GloveVectors {
        glove: enc_fixture("glove_tiny.txt"),
        max_words: 0,
        max_len: 6,
    };
    let s = Food101::splits(&cfg).unwrap();
    assert_eq!(s.train.input_shapes()[1], vec![6, 6]);

    // Missing image: the error names the file; missing titles file: names it too.
    std::fs::remove_file(root.join("images/test/pizza/pizza_t1.jpg")).unwrap();
    let e = s.test.get(1).unwrap_err().to_string();
    assert!(e.contains("pizza_t1.jpg"), "{e}");
    std::fs::write(root.join("texts/test_titles.csv"), "just,two\n").unwrap();
    let e = Food101::splits(&cfg).unwrap_err().to_string();
    assert!(e.contains("test_titles.csv") && e.contains("line 1"), "{e}");
    std::fs::remove_file(root.join("texts/test_titles.csv")).unwrap();
    let e = Food101::splits(&cfg).unwrap_err().to_string();
    assert!(e.contains("test_titles.csv"), "{e}");
}

#[test]
fn mvsa_raw_and_jsonl_layouts() {
    assert_eq!(
        MvsaSingle::merge_labels("positive", "neutral"),
        Some("positive")
    );
    assert_eq!(
        MvsaSingle::merge_labels("neutral", "negative"),
        Some("negative")
    );
    assert_eq!(
        MvsaSingle::merge_labels("neutral", "neutral"),
        Some("neutral")
    );
    assert_eq!(MvsaSingle::merge_labels("positive", "negative"), None);

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pairs = [
        "positive,positive",
        "negative,neutral",
        "positive,negative",
        "neutral,neutral",
        "neutral,positive",
    ];
    let mut lf = String::from("ID\ttext,image\n");
    for id in 1..=12 {
        lf.push_str(&format!("{id}\t{}\n", pairs[id % pairs.len()]));
        jpg(&root.join(format!("data/{id}.jpg")), id as u8);
        std::fs::write(root.join(format!("data/{id}.txt")), b"the cat sat \xff").unwrap();
    }
    std::fs::write(root.join("labelResultAll.txt"), lf).unwrap();
    let items = MvsaSingle::raw_items(root).unwrap();
    assert_eq!(
        items.len(),
        9,
        "ids 2, 7, 12 (positive vs negative) dropped"
    );
    assert_eq!(items[0].label, 0, "id 1: negative,neutral → negative");
    assert_eq!(items[1].label, 2, "id 3: neutral,neutral → neutral");
    assert_eq!(items[2].label, 1, "id 4: neutral,positive → positive");
    let mut cfg = MvsaConfig::new(root, wordpiece(8));
    cfg.image_size = 8;
    cfg.workers = 1;
    let s = MvsaSingle::splits(&cfg).unwrap();
    assert_eq!(
        (s.train.len(), s.val.len(), s.test.len()),
        (5, 1, 3),
        "⌊0.6·9⌋, ⌊0.2·9⌋, rest"
    );
    assert_eq!(s.train.num_classes(), 3);
    // Invalid UTF-8 in a tweet is replaced, not an error.
    assert!(s.test.get(0).is_ok());

    // jsonl layout (QMF / IBML release).
    for (f, n) in [("train.jsonl", 5), ("dev.jsonl", 2), ("test.jsonl", 2)] {
        let rows: String = (0..n)
            .map(|k| format!("{{\"id\": \"{k}\", \"text\": \"good food\", \"img\": \"data/{}.jpg\", \"label\": \"{}\"}}\n", k + 1, ["negative", "positive", "neutral"][k % 3]))
            .collect();
        std::fs::write(root.join(f), rows).unwrap();
    }
    let s = MvsaSingle::splits(&cfg).unwrap();
    assert_eq!((s.train.len(), s.val.len(), s.test.len()), (5, 2, 2));
    assert_eq!(s.train.get(1).unwrap().label, 1);
    std::fs::write(
        root.join("dev.jsonl"),
        "{\"text\": \"x\", \"img\": \"data/1.jpg\", \"label\": \"happy\"}\n",
    )
    .unwrap();
    let e = MvsaSingle::splits(&cfg).unwrap_err().to_string();
    assert!(e.contains("dev.jsonl") && e.contains("happy"), "{e}");
}
