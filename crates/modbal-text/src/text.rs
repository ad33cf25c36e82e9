//! How a dataset turns text into a fixed-shape tensor ([`TextEncoding`]).
//!
//! | encoding | per-sample shape | values | encoder |
//! |---|---|---|---|
//! | `wordpiece` | `[max_len]` | BERT ids `[CLS] … [SEP] [PAD]…` (`[PAD]` = 0) | `kind = "bert"` |
//! | `glove_ids` | `[max_len]` | GloVe ids (`0` pad, `1` unknown, then the file's words) | `kind = "bigru"` with `glove` |
//! | `glove_vectors` | `[max_len, d]` | the GloVe vectors, zero-padded (IBML looks GloVe up in its dataset) | `kind = "bigru"` without `glove` |
//!
//! The GloVe encodings use `modbal_encoders::glove`'s tokenisation and vocabulary rules (an
//! NLTK-like word split, out-of-vocabulary words → the zero `[UNK]` vector). The encoder of a
//! `glove_ids` dataset must read the same file with the same `max_words`.

use modbal_core::{ModbalError, Result};
use modbal_encoders::glove::GloveTable;
use modbal_encoders::WordPieceTokenizer;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

fn default_true() -> bool {
    true
}
fn default_bert_len() -> usize {
    128
}
fn default_glove_len() -> usize {
    64
}

/// Text → tensor; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TextEncoding {
    /// BERT WordPiece from a `tokenizer.json` or `vocab.txt`.
    Wordpiece {
        tokenizer: PathBuf,
        /// Lower-case and strip accents (`vocab.txt` only; uncased models). Default `true`.
        #[serde(default = "default_true")]
        lowercase: bool,
        /// Sequence length with `[CLS]`/`[SEP]`. Default 128.
        #[serde(default = "default_bert_len")]
        max_len: usize,
    },
    /// GloVe vocabulary ids.
    GloveIds {
        glove: PathBuf,
        /// First `max_words` words of the file (0 = all). Default 0.
        #[serde(default)]
        max_words: usize,
        /// Default 64.
        #[serde(default = "default_glove_len")]
        max_len: usize,
    },
    /// GloVe vectors `[max_len, d]`.
    GloveVectors {
        glove: PathBuf,
        #[serde(default)]
        max_words: usize,
        #[serde(default = "default_glove_len")]
        max_len: usize,
    },
}

/// A loaded [`TextEncoding`] (cheap to clone).
#[derive(Clone, Debug)]
pub enum TextEncoder {
    Wordpiece(Arc<WordPieceTokenizer>),
    GloveIds(Arc<GloveTable>, usize),
    GloveVectors(Arc<GloveTable>, usize),
}

impl TextEncoding {
    /// Read the tokenizer / GloVe file (errors name the file).
    pub fn load(&self) -> Result<TextEncoder> {
        let cfg = |e: modbal_encoders::EncoderError| ModbalError::Config(e.to_string());
        let check = |l: usize| {
            if l == 0 {
                Err(ModbalError::Config("text max_len must be > 0".into()))
            } else {
                Ok(())
            }
        };
        Ok(match self {
            TextEncoding::Wordpiece {
                tokenizer,
                lowercase,
                max_len,
            } => TextEncoder::Wordpiece(Arc::new(
                WordPieceTokenizer::from_file(tokenizer, *lowercase, *max_len).map_err(cfg)?,
            )),
            TextEncoding::GloveIds {
                glove,
                max_words,
                max_len,
            } => {
                check(*max_len)?;
                TextEncoder::GloveIds(
                    Arc::new(GloveTable::vocab_only(glove, *max_words).map_err(cfg)?),
                    *max_len,
                )
            }
            TextEncoding::GloveVectors {
                glove,
                max_words,
                max_len,
            } => {
                check(*max_len)?;
                TextEncoder::GloveVectors(
                    Arc::new(GloveTable::from_file(glove, *max_words).map_err(cfg)?),
                    *max_len,
                )
            }
        })
    }
}

impl TextEncoder {
    /// Per-sample shape of the encoded text.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            TextEncoder::Wordpiece(t) => vec![t.max_len()],
            TextEncoder::GloveIds(_, l) => vec![*l],
            TextEncoder::GloveVectors(g, l) => vec![*l, g.dim()],
        }
    }

    /// The encoded text, row-major, `shape()` values.
    pub fn encode(&self, text: &str) -> Result<Vec<f32>> {
        Ok(match self {
            TextEncoder::Wordpiece(t) => t
                .encode(text)
                .map_err(|e| ModbalError::Data(e.to_string()))?
                .ids
                .into_iter()
                .map(|i| i as f32)
                .collect(),
            TextEncoder::GloveIds(g, l) => {
                g.encode(text, *l).into_iter().map(|i| i as f32).collect()
            }
            TextEncoder::GloveVectors(g, l) => g
                .embed_text(text, *l)
                .map_err(|e| ModbalError::Data(e.to_string()))?,
        })
    }
}
