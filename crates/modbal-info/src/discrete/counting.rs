//! The counting machinery of the plug-in estimators: labels as dense symbols (relabelled by
//! sorting when the alphabet is large), occurrence counts, the non-empty cells of a pair of
//! symbol sequences, and the plug-in entropy of a count vector. Every count costs
//! O(N + |alphabet|), with flat arrays instead of hash maps.

use std::borrow::Cow;

/// Largest flat table (alphabet or `kx·ky`) used without relabelling: O(N) memory.
fn dense_limit(n: usize) -> usize {
    n.saturating_mul(4).max(1 << 12)
}

/// Labels as symbols `0..k`; borrowed when the labels are already small enough.
pub(super) struct Symbols<'a> {
    pub(super) ids: Cow<'a, [u32]>,
    pub(super) k: usize,
}

/// `x` as symbols: itself when `max(x) + 1 ≤ dense_limit`, else relabelled by sorting.
pub(super) fn symbols(x: &[u32]) -> Symbols<'_> {
    let max = x.iter().copied().max().unwrap_or(0) as usize;
    if max < dense_limit(x.len()) {
        return Symbols {
            ids: Cow::Borrowed(x),
            k: max + 1,
        };
    }
    let mut order: Vec<u32> = (0..x.len() as u32).collect();
    order.sort_unstable_by_key(|&i| x[i as usize]);
    let mut ids = vec![0u32; x.len()];
    let mut k = 0u32;
    let mut prev = None;
    for &i in &order {
        let v = x[i as usize];
        if prev != Some(v) {
            if prev.is_some() {
                k += 1;
            }
            prev = Some(v);
        }
        ids[i as usize] = k;
    }
    Symbols {
        ids: Cow::Owned(ids),
        k: k as usize + 1,
    }
}

/// Occurrence counts of symbols `0..k`.
pub(super) fn counts(ids: &[u32], k: usize) -> Vec<u32> {
    let mut c = vec![0u32; k];
    for &s in ids {
        c[s as usize] += 1;
    }
    c
}

/// The non-empty cells of a pair of symbol sequences.
pub(super) struct Cells {
    /// Per sample: its cell, in `0..counts.len()`.
    pub(super) ids: Vec<u32>,
    /// Per cell: the number of samples.
    pub(super) counts: Vec<u32>,
    /// Per cell: the index of one of its samples.
    pub(super) rep: Vec<u32>,
}

/// Joint symbols of `(x, y)` (`x` in `0..kx`, `y` in `0..ky`): O(N + kx + ky) time and memory.
pub(super) fn cells(x: &[u32], kx: usize, y: &[u32], ky: usize) -> Cells {
    let n = x.len();
    let mut ids = vec![0u32; n];
    let mut cnt: Vec<u32> = Vec::new();
    let mut rep: Vec<u32> = Vec::new();
    match kx.checked_mul(ky) {
        Some(kk) if kk <= dense_limit(n) => {
            let mut table = vec![u32::MAX; kk];
            for i in 0..n {
                let key = x[i] as usize * ky + y[i] as usize;
                let mut c = table[key];
                if c == u32::MAX {
                    c = cnt.len() as u32;
                    table[key] = c;
                    cnt.push(0);
                    rep.push(i as u32);
                }
                cnt[c as usize] += 1;
                ids[i] = c;
            }
        }
        _ => {
            // Counting sort by x, then cells of y inside each x-group through a scratch slot
            // array that is reset after each group.
            let mut start = vec![0usize; kx + 1];
            for &a in x {
                start[a as usize + 1] += 1;
            }
            for g in 0..kx {
                start[g + 1] += start[g];
            }
            let mut pos = start.clone();
            let mut order = vec![0u32; n];
            for (i, &a) in x.iter().enumerate() {
                order[pos[a as usize]] = i as u32;
                pos[a as usize] += 1;
            }
            let mut slot = vec![u32::MAX; ky];
            for g in 0..kx {
                let group = &order[start[g]..start[g + 1]];
                for &i in group {
                    let b = y[i as usize] as usize;
                    let mut c = slot[b];
                    if c == u32::MAX {
                        c = cnt.len() as u32;
                        slot[b] = c;
                        cnt.push(0);
                        rep.push(i);
                    }
                    cnt[c as usize] += 1;
                    ids[i as usize] = c;
                }
                for &i in group {
                    slot[y[i as usize] as usize] = u32::MAX;
                }
            }
        }
    }
    Cells {
        ids,
        counts: cnt,
        rep,
    }
}

/// `Σ_c (n_c/N)(log N − log n_c)` over the non-empty counts: the plug-in entropy.
pub(super) fn entropy_of_counts(c: &[u32], n: usize) -> f64 {
    let nf = n as f64;
    let ln_n = nf.ln();
    c.iter()
        .filter(|&&v| v > 0)
        .map(|&v| {
            let v = v as f64;
            (v / nf) * (ln_n - v.ln())
        })
        .sum()
}
