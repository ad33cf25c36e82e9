//! BERT's WordPiece tokenisation from a local `tokenizer.json` or `vocab.txt`, through the
//! `tokenizers` crate (built without its C dependencies: `fancy-regex` instead of oniguruma).
//!
//! * `tokenizer.json` (what `BertTokenizerFast.save_pretrained` writes) is used as it is:
//!   normaliser, pre-tokeniser, WordPiece model and special tokens come from the file.
//! * `vocab.txt` (one token per line, line number = id) is assembled into BERT's pipeline as
//!   `transformers.BertTokenizer` runs it: `BertNormalizer` (clean text, spaces around CJK
//!   characters, lower-casing + accent stripping when `lowercase`), `BertPreTokenizer`
//!   (whitespace and punctuation split), WordPiece (greedy longest match, `##` continuation,
//!   `[UNK]` for words longer than 100 characters or without a match) and
//!   `[CLS] … [SEP]` around the sequence.
//!
//! [`WordPieceTokenizer::encode`] truncates to `max_len` tokens (specials included: the last
//! real token is dropped, `[SEP]` is kept) and pads to exactly `max_len` with the padding id on
//! the right, returning ids and the attention mask (1 real, 0 padding).

use crate::error::{config_err, EncoderError, Result};
use std::path::Path;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Token ids and attention mask of one text, both of length `max_len`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub mask: Vec<u32>,
}

/// A BERT WordPiece tokeniser with fixed-length output.
#[derive(Clone)]
pub struct WordPieceTokenizer {
    tok: Tokenizer,
    max_len: usize,
    pad_id: u32,
}

impl std::fmt::Debug for WordPieceTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WordPieceTokenizer {{ max_len: {}, pad_id: {} }}",
            self.max_len, self.pad_id
        )
    }
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> EncoderError {
    EncoderError::Config(format!("tokenizer {}: {e}", path.display()))
}

impl WordPieceTokenizer {
    /// From `tokenizer.json` or `vocab.txt` (chosen by the file name's extension: `.json` or
    /// anything else). `lowercase` applies to `vocab.txt` only (uncased models: `true`).
    pub fn from_file(path: &Path, lowercase: bool, max_len: usize) -> Result<Self> {
        if max_len < 2 {
            return config_err(format!(
                "tokenizer {}: max_len {max_len} leaves no room for [CLS] and [SEP]",
                path.display()
            ));
        }
        if !path.is_file() {
            return Err(tok_err(path, "file not found"));
        }
        let is_json = path.extension().is_some_and(|e| e == "json");
        let mut tok = if is_json {
            Tokenizer::from_file(path).map_err(|e| tok_err(path, e))?
        } else {
            let p = path
                .to_str()
                .ok_or_else(|| tok_err(path, "path is not valid UTF-8"))?;
            let text = std::fs::read_to_string(path).map_err(|e| tok_err(path, e))?;
            if text.trim().is_empty() {
                return Err(tok_err(path, "empty vocabulary"));
            }
            let wp = WordPiece::from_file(p)
                .unk_token("[UNK]".into())
                .build()
                .map_err(|e| tok_err(path, e))?;
            let mut tok = Tokenizer::new(wp);
            tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
                .map_err(|e| tok_err(path, e))?;
            tok.with_pre_tokenizer(Some(BertPreTokenizer));
            let id = |t: &str| {
                tok.token_to_id(t)
                    .ok_or_else(|| tok_err(path, format!("vocabulary lacks the special token {t}")))
            };
            let (sep, cls) = (id("[SEP]")?, id("[CLS]")?);
            id("[UNK]")?;
            id("[PAD]")?;
            tok.with_post_processor(Some(BertProcessing::new(
                ("[SEP]".into(), sep),
                ("[CLS]".into(), cls),
            )));
            tok
        };
        let pad_id = tok
            .token_to_id("[PAD]")
            .ok_or_else(|| tok_err(path, "vocabulary lacks the padding token [PAD]"))?;
        tok.with_truncation(Some(TruncationParams {
            max_length: max_len,
            ..Default::default()
        }))
        .map_err(|e| tok_err(path, e))?;
        tok.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_len),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: "[PAD]".into(),
        }));
        Ok(Self {
            tok,
            max_len,
            pad_id,
        })
    }

    /// Sequence length of every encoding.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Id of `[PAD]`.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }

    /// Id of a token, if it is in the vocabulary.
    pub fn token_to_id(&self, t: &str) -> Option<u32> {
        self.tok.token_to_id(t)
    }

    /// `[CLS] tokens… [SEP] [PAD]…`, exactly `max_len` ids, and the attention mask.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let enc = self
            .tok
            .encode(text, true)
            .map_err(|e| EncoderError::Config(format!("tokenising {text:?}: {e}")))?;
        let ids = enc.get_ids().to_vec();
        let mask = enc.get_attention_mask().to_vec();
        if ids.len() != self.max_len {
            return config_err(format!(
                "tokeniser returned {} ids for {text:?}, expected {}",
                ids.len(),
                self.max_len
            ));
        }
        Ok(Encoded { ids, mask })
    }

    /// The word pieces of `text` without specials or padding (for inspection).
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        let enc = self
            .tok
            .encode(text, false)
            .map_err(|e| EncoderError::Config(format!("tokenising {text:?}: {e}")))?;
        Ok(enc
            .get_tokens()
            .iter()
            .zip(enc.get_attention_mask())
            .filter(|(_, &m)| m == 1)
            .map(|(t, _)| t.clone())
            .collect())
    }
}
