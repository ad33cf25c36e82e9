//! GloVe word vectors (Pennington et al., EMNLP'14) read from the standard text files
//! (`glove.6B.300d.txt`, `glove.840B.300d.txt`, …: one word per line followed by its `d`
//! values, separated by single spaces), and the word-level tokenisation of IBML's text input.
//!
//! # Vocabulary and out-of-vocabulary words
//! Ids: `0 = [PAD]`, `1 = [UNK]`, then the file's words in file order (`2, 3, …`; GloVe files
//! are sorted by corpus frequency, so `max_words = n` keeps the `n` most frequent). Both special
//! vectors are **zero**, as in IBML's `GloveBowEncoder` (its special tokens are not in GloVe and
//! keep the zero initialisation). A word that is not in the (possibly truncated) vocabulary
//! maps to `[UNK]`, i.e. to the zero vector. A repeated word keeps its first vector. A word
//! may contain spaces (glove.840B has a few): the last `d` fields of a line are the vector.
//!
//! # Tokenisation ([`word_tokenize`])
//! IBML lower-cases the text and applies NLTK's `word_tokenize`. modbal implements a documented
//! approximation without NLTK: lower-case, then maximal runs of alphanumeric characters
//! (Unicode) are words, every other non-space character is a token of its own, and the
//! English clitics `n't`, `'s`, `'re`, `'ve`, `'ll`, `'d`, `'m` are split off as NLTK does
//! (`don't → do n't`). Differences from NLTK remain for quotes (NLTK turns `"` into `` `` ``/`''`)
//! and for abbreviations with periods. An empty text becomes the single token `[UNK]` (IBML
//! gives empty captions length 1 with a zero vector).

use crate::error::{config_err, EncoderError, Result};
use std::collections::HashMap;
use std::path::Path;

/// Id of `[PAD]`.
pub const PAD_ID: u32 = 0;
/// Id of `[UNK]`.
pub const UNK_ID: u32 = 1;

/// A GloVe vocabulary and, unless read with [`GloveTable::vocab_only`], its vectors.
#[derive(Clone, Debug)]
pub struct GloveTable {
    words: Vec<String>,
    index: HashMap<String, u32>,
    dim: usize,
    /// `(2 + words) × dim` values, row-major; rows 0 and 1 are zero. Empty for a vocabulary
    /// read without vectors.
    vectors: Vec<f32>,
}

fn split_line(line: &str, dim: usize) -> Option<(&str, &str)> {
    // The word is everything before the last `dim` fields.
    let mut cut = line.len();
    for _ in 0..dim {
        cut = line[..cut].rfind(' ')?;
    }
    Some((&line[..cut], &line[cut + 1..]))
}

impl GloveTable {
    /// Read words and vectors; `max_words = 0` keeps every word.
    pub fn from_file(path: &Path, max_words: usize) -> Result<Self> {
        Self::read(path, max_words, true)
    }

    /// Read only the words (what a dataset needs to turn text into ids).
    pub fn vocab_only(path: &Path, max_words: usize) -> Result<Self> {
        Self::read(path, max_words, false)
    }

    fn read(path: &Path, max_words: usize, with_vectors: bool) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            EncoderError::Config(format!("cannot read GloVe file {}: {e}", path.display()))
        })?;
        let mut dim = 0usize;
        let mut words = Vec::new();
        let mut index = HashMap::new();
        let mut vectors = Vec::new();
        for (ln, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            if dim == 0 {
                dim = line.split(' ').count().saturating_sub(1);
                if dim == 0 {
                    return config_err(format!(
                        "{} line {}: expected `word v1 … vd`, got {line:?}",
                        path.display(),
                        ln + 1
                    ));
                }
                if with_vectors {
                    vectors.resize(2 * dim, 0.0);
                }
            }
            let Some((word, values)) = split_line(line, dim).filter(|(w, _)| !w.is_empty()) else {
                return config_err(format!(
                    "{} line {}: expected a word and {dim} values",
                    path.display(),
                    ln + 1
                ));
            };
            if index.contains_key(word) {
                continue;
            }
            if with_vectors {
                let before = vectors.len();
                for v in values.split(' ') {
                    let x: f32 = v.parse().map_err(|_| {
                        EncoderError::Config(format!(
                            "{} line {}: value {v:?} of word {word:?} is not a number",
                            path.display(),
                            ln + 1
                        ))
                    })?;
                    vectors.push(x);
                }
                if vectors.len() - before != dim {
                    return config_err(format!(
                        "{} line {}: word {word:?} has {} values, expected {dim}",
                        path.display(),
                        ln + 1,
                        vectors.len() - before
                    ));
                }
            }
            index.insert(word.to_string(), (words.len() + 2) as u32);
            words.push(word.to_string());
            if max_words > 0 && words.len() == max_words {
                break;
            }
        }
        if words.is_empty() {
            return config_err(format!("GloVe file {} has no word vectors", path.display()));
        }
        Ok(Self {
            words,
            index,
            dim,
            vectors,
        })
    }

    /// Vector width `d`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Vocabulary size including `[PAD]` and `[UNK]`.
    pub fn vocab_size(&self) -> usize {
        self.words.len() + 2
    }

    /// The id of a word (`[UNK]` if absent).
    pub fn id(&self, word: &str) -> u32 {
        self.index.get(word).copied().unwrap_or(UNK_ID)
    }

    /// The word of an id (`[PAD]`, `[UNK]` for the specials).
    pub fn word(&self, id: u32) -> Option<&str> {
        match id {
            PAD_ID => Some("[PAD]"),
            UNK_ID => Some("[UNK]"),
            i => self.words.get(i as usize - 2).map(String::as_str),
        }
    }

    /// The `vocab_size × dim` table (rows 0, 1 zero); empty if read with
    /// [`GloveTable::vocab_only`].
    pub fn vectors(&self) -> &[f32] {
        &self.vectors
    }

    /// Ids of `text` ([`word_tokenize`]), truncated to `max_len`, right-padded with `[PAD]`.
    pub fn encode(&self, text: &str, max_len: usize) -> Vec<u32> {
        let mut ids: Vec<u32> = word_tokenize(text).iter().map(|w| self.id(w)).collect();
        ids.truncate(max_len);
        ids.resize(max_len, PAD_ID);
        ids
    }

    /// The vectors of `text`'s first `max_len` tokens, zero-padded: `[max_len, dim]` row-major
    /// (IBML feeds embedded sequences to its GRU). Needs the vectors.
    pub fn embed_text(&self, text: &str, max_len: usize) -> Result<Vec<f32>> {
        if self.vectors.is_empty() {
            return config_err("GloVe table was read without vectors (vocab_only)");
        }
        let d = self.dim;
        let mut out = vec![0.0f32; max_len * d];
        for (t, id) in self.encode(text, max_len).into_iter().enumerate() {
            let i = id as usize;
            out[t * d..(t + 1) * d].copy_from_slice(&self.vectors[i * d..(i + 1) * d]);
        }
        Ok(out)
    }
}

/// Lower-cased word tokens of `text`; see the [module docs](self).
pub fn word_tokenize(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = lower.chars().collect();
    let mut i = 0;
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if !cur.is_empty() {
            // n't clitic: "don't" arrives as "don" + "'" + "t".
            out.push(std::mem::take(cur));
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() {
            cur.push(c);
            i += 1;
            continue;
        }
        if c == '\'' || c == '’' {
            // Clitics after a word: 's 're 've 'll 'd 'm, and n't.
            let rest: String = chars[i + 1..]
                .iter()
                .take_while(|c| c.is_alphanumeric())
                .collect();
            let clitic = ["s", "re", "ve", "ll", "d", "m", "t"].contains(&rest.as_str());
            if !cur.is_empty() && clitic {
                if rest == "t" && cur.ends_with('n') && cur.len() > 1 {
                    cur.pop();
                    flush(&mut cur, &mut out);
                    out.push("n't".into());
                } else if rest == "t" {
                    cur.push('\'');
                    cur.push('t');
                    flush(&mut cur, &mut out);
                } else {
                    flush(&mut cur, &mut out);
                    out.push(format!("'{rest}"));
                }
                i += 1 + rest.chars().count();
                continue;
            }
        }
        flush(&mut cur, &mut out);
        if !c.is_whitespace() {
            out.push(c.to_string());
        }
        i += 1;
    }
    flush(&mut cur, &mut out);
    if out.is_empty() {
        out.push("[UNK]".into());
    }
    out
}
