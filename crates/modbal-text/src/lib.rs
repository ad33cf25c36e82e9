//! # modbal-text: image–text and sequence benchmarks
//!
//! | item | dataset |
//! |---|---|
//! | [`Food101`] | UPMC Food-101: recipe-page title + image, 101 classes (`texts/{train,test}_titles.csv` + `images/`) |
//! | [`MvsaSingle`] | MVSA-Single: tweet text + image, 3 sentiment classes (QMF/IBML jsonl splits, or the raw release) |
//! | [`CmuMosei`] | CMU-MOSEI: MulT-style pickle (text 300-d, audio 74-d, vision 35-d sequences), binary or 7-class |
//! | [`pickle`] | a pickle reader (protocols 0-5) with numpy arrays (`_reconstruct`/`__setstate__`, `_frombuffer`) |
//! | [`TextEncoding`] | how text becomes a tensor: BERT WordPiece ids, GloVe ids or GloVe vectors |
//!
//! Every dataset implements [`modbal_data::Dataset`] and is built from a root path and an
//! options struct (`Food101::splits(&Food101Config)`, …). `datasets/<name>/README.md` documents
//! the source, the licence, the layout and the caveats of each.
//!
//! # Example
//!
//! ```
//! use modbal_text::pickle::{loads, Value};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // `pickle.dumps({'train': [1, 2.5]}, protocol=2)`
//! let bytes = b"\x80\x02}q\x00X\x05\x00\x00\x00trainq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00es.";
//! let v = loads(bytes)?;
//! assert_eq!(v.keys(), ["train"]);
//! assert_eq!(v.get("train"), Some(&Value::List(vec![Value::Int(1), Value::Float(2.5)])));
//! # Ok(())
//! # }
//! ```

pub mod image_text;
pub mod mosei;
pub mod pickle;
pub mod text;

pub use image_text::{Food101, Food101Config, ImageTextDataset, MvsaConfig, MvsaSingle};
pub use mosei::{CmuMosei, CmuMoseiConfig, CmuMoseiDataset, MoseiLabels};
pub use text::{TextEncoder, TextEncoding};
