//! A small pickle virtual machine (protocols 0-5, in-band data only) that understands the
//! numpy arrays inside MulT-style data files.
//!
//! The opcodes follow Python's `pickletools` documentation. Objects are built as [`Value`]s;
//! calls (`REDUCE`, `NEWOBJ`) of unknown callables become [`Value::Object`] without running
//! anything. Recognised callables:
//! * `numpy.core.multiarray._reconstruct` / `numpy._core.multiarray._reconstruct` followed by
//!   `BUILD` with numpy's `__setstate__` state `(version, shape, dtype, is_fortran, data)`
//!   (protocols 0-4; `data` is bytes, a latin-1 string in Python-2 pickles, or a list for
//!   object arrays);
//! * `numpy.core.numeric._frombuffer` / `numpy._core.numeric._frombuffer` `(buffer, dtype,
//!   shape, order)` (protocol 5, in-band buffers);
//! * `numpy.dtype(descr, align, copy)` with its `BUILD` state `(version, byteorder, …)`;
//! * `_codecs.encode(text, "latin1")` (how Python 3 stores bytes at protocol ≤ 2);
//! * `collections.OrderedDict` and `builtins.set/frozenset/list/dict/bytearray`.
//!
//! Out-of-band buffers (`NEXT_BUFFER`) are rejected with a clear error.

use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

/// A decoded pickle object.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Rc<Vec<u8>>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// A reference to `module.name`.
    Global(String, String),
    Array(Rc<NdArray>),
    Dtype(Dtype),
    /// An object built by an unknown callable: callable, arguments, `BUILD` state.
    Object(Box<Value>, Box<Value>, Option<Box<Value>>),
    /// A numpy array between `_reconstruct` and its `BUILD`.
    PendingArray,
}

/// A numpy dtype: kind (`f`, `i`, `u`, `b`, `U`, `S`, `O`, …), item size, byte order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dtype {
    pub kind: char,
    pub size: usize,
    pub big_endian: bool,
}

impl Dtype {
    fn parse(descr: &str) -> Result<Self, String> {
        let (order, rest) = match descr.chars().next() {
            Some(c @ ('<' | '>' | '|' | '=')) => (Some(c), &descr[1..]),
            _ => (None, descr),
        };
        let mut chars = rest.chars();
        let kind = chars
            .next()
            .ok_or_else(|| format!("empty dtype {descr:?}"))?;
        let num: String = chars.collect();
        let size = match (kind, num.as_str()) {
            ('O', "") => 8,
            ('b', "") | ('?', "") => 1,
            (_, "") => return Err(format!("dtype {descr:?} has no item size")),
            (_, n) => n
                .parse::<usize>()
                .map_err(|_| format!("unsupported dtype {descr:?}"))?,
        };
        let size = if kind == 'U' {
            size.checked_mul(4)
                .ok_or_else(|| format!("dtype {descr:?}: item size overflows"))?
        } else {
            size
        };
        Ok(Self {
            kind: if kind == '?' { 'b' } else { kind },
            size,
            big_endian: order == Some('>'),
        })
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}",
            if self.big_endian { '>' } else { '<' },
            self.kind,
            self.size
        )
    }
}

/// A numpy array: C-order shape and raw data (or objects for `dtype=object`).
#[derive(Clone, Debug, PartialEq)]
pub struct NdArray {
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub fortran: bool,
    pub data: Rc<Vec<u8>>,
    pub objects: Vec<Value>,
}

impl NdArray {
    /// The element count of the shape, `None` if it overflows `usize` (a corrupt shape; as
    /// NumPy, the non-zero axes of an empty array must not overflow either).
    pub fn checked_len(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d.max(1)))
            .map(|n| if self.shape.contains(&0) { 0 } else { n })
    }
    /// The element count of the shape (`usize::MAX` if it overflows: see [`Self::checked_len`]).
    pub fn len(&self) -> usize {
        self.checked_len().unwrap_or(usize::MAX)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as `f32` in C order (numeric and bool dtypes). The shape's element count ×
    /// item size (checked arithmetic) must equal the bytes of data.
    pub fn to_f32(&self) -> Result<Vec<f32>, String> {
        let s = self.dtype.size;
        if self.dtype.kind == 'O' || !matches!(self.dtype.kind, 'f' | 'i' | 'u' | 'b') {
            return Err(format!("array of dtype {} is not numeric", self.dtype));
        }
        if !matches!(
            (self.dtype.kind, s),
            ('f', 2 | 4 | 8) | ('i' | 'u', 1 | 2 | 4 | 8) | ('b', 1)
        ) {
            return Err(format!("unsupported dtype {}", self.dtype));
        }
        let need = self.checked_len().and_then(|n| n.checked_mul(s));
        if need != Some(self.data.len()) {
            return Err(format!(
                "array {:?} of dtype {} needs {} bytes, has {}",
                self.shape,
                self.dtype,
                need.map_or_else(|| "more than usize::MAX".into(), |n| n.to_string()),
                self.data.len()
            ));
        }
        let n = self.data.len() / s;
        let be = self.dtype.big_endian;
        let mut out = Vec::with_capacity(n);
        for chunk in self.data.chunks_exact(s) {
            let mut b = [0u8; 8];
            b[..s].copy_from_slice(chunk);
            if be {
                b[..s].reverse();
            }
            let v = match (self.dtype.kind, s) {
                ('f', 4) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                ('f', 8) => f64::from_le_bytes(b) as f32,
                ('f', 2) => half_to_f32(u16::from_le_bytes([b[0], b[1]])),
                ('i', 1) => b[0] as i8 as f32,
                ('i', 2) => i16::from_le_bytes([b[0], b[1]]) as f32,
                ('i', 4) => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
                ('i', 8) => i64::from_le_bytes(b) as f32,
                ('u', 1) | ('b', 1) => b[0] as f32,
                ('u', 2) => u16::from_le_bytes([b[0], b[1]]) as f32,
                ('u', 4) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
                ('u', 8) => u64::from_le_bytes(b) as f32,
                _ => return Err(format!("unsupported dtype {}", self.dtype)),
            };
            out.push(v);
        }
        if self.fortran && self.shape.len() > 1 {
            out = fortran_to_c(&out, &self.shape);
        }
        Ok(out)
    }
}

fn half_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    sign * match exp {
        0 => frac * 2f32.powi(-24),
        31 => {
            if frac == 0.0 {
                f32::INFINITY
            } else {
                f32::NAN
            }
        }
        e => (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

fn fortran_to_c(v: &[f32], shape: &[usize]) -> Vec<f32> {
    let n = v.len();
    let r = shape.len();
    let mut out = vec![0f32; n];
    let mut idx = vec![0usize; r];
    for (c_pos, o) in out.iter_mut().enumerate() {
        // C-order multi-index of c_pos.
        let mut rem = c_pos;
        for k in (0..r).rev() {
            idx[k] = rem % shape[k];
            rem /= shape[k];
        }
        let mut f_pos = 0;
        let mut stride = 1;
        for k in 0..r {
            f_pos += idx[k] * stride;
            stride *= shape[k];
        }
        *o = v[f_pos];
    }
    out
}

impl Value {
    /// The string of a `Str` (or latin-1 `Bytes`, as Python 2 `str` arrive).
    pub fn as_str(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.clone()),
            Value::Bytes(b) => Some(b.iter().map(|&c| c as char).collect()),
            _ => None,
        }
    }

    /// `dict[key]` for a string key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_str().as_deref() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string keys of a dict.
    pub fn keys(&self) -> Vec<String> {
        match self {
            Value::Dict(items) => items.iter().filter_map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// What kind of value this is (`"list"`, `"ndarray"`, …), for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Global(..) => "global",
            Value::Array(_) => "ndarray",
            Value::Dtype(_) => "dtype",
            Value::Object(..) => "object",
            Value::PendingArray => "ndarray (unbuilt)",
        }
    }
}

/// The deepest nesting of containers [`loads`] accepts. MulT pickles nest 3 levels; the bound
/// keeps the recursive `Drop`, `Clone` and `PartialEq` of [`Value`] off the end of the stack
/// whatever the file says.
pub const MAX_DEPTH: usize = 256;

/// How many bytes [`loads`] may copy through the memo and `DUP` (copies of strings and containers:
/// a memo reference is a copy here, not a shared object) beyond the input's own size: 64 MiB plus
/// 64 bytes per input byte. A file whose references would multiply its size (a "billion laughs"
/// pickle) is an error instead of an out-of-memory abort.
pub fn copy_budget(input_len: usize) -> usize {
    (64usize << 20).saturating_add(input_len.saturating_mul(64))
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let left = self.b.len() - self.pos;
        if n > left {
            return Err(format!(
                "truncated pickle: need {n} bytes at offset {}, {left} left",
                self.pos
            ));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, String> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]) as usize)
    }
    fn u32(&mut self) -> Result<usize, String> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
    }
    fn u64(&mut self) -> Result<usize, String> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        usize::try_from(u64::from_le_bytes(a)).map_err(|_| "length overflows usize".to_string())
    }
    fn line_bytes(&mut self) -> Result<&'a [u8], String> {
        let start = self.pos;
        while self.pos < self.b.len() && self.b[self.pos] != b'\n' {
            self.pos += 1;
        }
        if self.pos >= self.b.len() {
            return Err("truncated pickle: unterminated text line".into());
        }
        let s = &self.b[start..self.pos];
        self.pos += 1;
        Ok(s)
    }
    fn line(&mut self) -> Result<&'a str, String> {
        let start = self.pos;
        std::str::from_utf8(self.line_bytes()?)
            .map_err(|_| format!("non-UTF-8 text argument at offset {start}"))
    }
}

/// Python's `raw-unicode-escape` decoding (the text of protocol 0's `UNICODE` opcode): bytes
/// are Latin-1 characters, except `\uXXXX` and `\UXXXXXXXX` escapes (the pickler escapes `\`
/// and newlines that way).
fn raw_unicode_escape(b: &[u8], at: usize) -> Result<String, String> {
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && matches!(b.get(i + 1), Some(b'u' | b'U')) {
            let n = if b[i + 1] == b'u' { 4 } else { 8 };
            let c = b
                .get(i + 2..i + 2 + n)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32)
                .ok_or_else(|| format!("bad \\u escape in a UNICODE argument at offset {at}"))?;
            out.push(c);
            i += 2 + n;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    Ok(out)
}

fn int_from_le(bytes: &[u8]) -> Result<i64, String> {
    if bytes.is_empty() {
        return Ok(0);
    }
    if bytes.len() > 8 {
        return Err(format!("integer of {} bytes is too large", bytes.len()));
    }
    let neg = bytes[bytes.len() - 1] & 0x80 != 0;
    let mut a = if neg { [0xffu8; 8] } else { [0u8; 8] };
    a[..bytes.len()].copy_from_slice(bytes);
    Ok(i64::from_le_bytes(a))
}

/// A value on the VM's stack or in its memo, with an upper bound on its nesting depth and on
/// the bytes a copy of it costs (kept up to date without walking the value).
struct Item {
    v: Value,
    depth: usize,
    size: usize,
}

const NODE: usize = std::mem::size_of::<Value>();

impl Item {
    /// A value without children (strings are copied, bytes and arrays are shared).
    fn leaf(v: Value) -> Item {
        let size = NODE + if let Value::Str(s) = &v { s.len() } else { 0 };
        Item { v, depth: 1, size }
    }
}

/// The largest depth and the total size of `items`, and their values.
fn unzip(items: Vec<Item>) -> (usize, usize, Vec<Value>) {
    let depth = items.iter().map(|it| it.depth).max().unwrap_or(0);
    let size = items
        .iter()
        .fold(0usize, |acc, it| acc.saturating_add(it.size));
    (depth, size, items.into_iter().map(|it| it.v).collect())
}

/// Decode a pickle stream.
///
/// Bounded by design: nesting deeper than [`MAX_DEPTH`] and copies through the memo beyond
/// [`copy_budget`] are errors, lengths are checked against the bytes left, and no size read
/// from the stream is allocated before it is known to be present.
pub fn loads(bytes: &[u8]) -> Result<Value, String> {
    let mut r = Reader { b: bytes, pos: 0 };
    let mut stack: Vec<Item> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<usize, Item> = HashMap::new();
    let budget = copy_budget(bytes.len());
    let mut copied = 0usize;
    macro_rules! pop {
        () => {
            stack
                .pop()
                .ok_or_else(|| format!("stack underflow at offset {}", r.pos))?
        };
    }
    macro_rules! pop_mark {
        () => {{
            let m = marks
                .pop()
                .ok_or_else(|| format!("missing MARK at offset {}", r.pos))?;
            if m > stack.len() {
                return Err(format!(
                    "MARK below the stack (its items were popped) at offset {}",
                    r.pos
                ));
            }
            stack.split_off(m)
        }};
    }
    // A copy (memo PUT / GET, DUP) of `item`, charged to the copy budget.
    macro_rules! copy {
        ($item:expr, $at:expr) => {{
            let it: &Item = $item;
            copied = copied.saturating_add(it.size);
            if copied > budget {
                return Err(format!(
                    "pickle copies more than {budget} bytes through its memo (at offset {}): \
                     refusing a file whose references multiply its size",
                    $at
                ));
            }
            Item {
                v: it.v.clone(),
                depth: it.depth,
                size: it.size,
            }
        }};
    }
    // Push, refusing values nested deeper than MAX_DEPTH.
    macro_rules! push {
        ($item:expr, $at:expr) => {{
            let it: Item = $item;
            if it.depth > MAX_DEPTH {
                return Err(format!(
                    "pickle nests containers deeper than {MAX_DEPTH} levels at offset {}",
                    $at
                ));
            }
            stack.push(it);
        }};
    }
    macro_rules! leaf {
        ($v:expr) => {
            stack.push(Item::leaf($v))
        };
    }
    // The container on top of the stack now holds values of `depth` and `size`, `levels`
    // below it (depth checked).
    macro_rules! absorb_top {
        ($depth:expr, $size:expr, $levels:expr, $at:expr) => {{
            if let Some(top) = stack.last_mut() {
                top.depth = top.depth.max($depth + $levels);
                top.size = top.size.saturating_add($size);
                if top.depth > MAX_DEPTH {
                    return Err(format!(
                        "pickle nests containers deeper than {MAX_DEPTH} levels at offset {}",
                        $at
                    ));
                }
            }
        }};
    }
    loop {
        let at = r.pos;
        let op = r.u8()?;
        match op {
            0x80 => {
                let p = r.u8()?;
                if p > 5 {
                    return Err(format!("unsupported pickle protocol {p}"));
                }
            }
            0x95 => {
                r.u64()?;
            }
            b'.' => {
                return stack
                    .pop()
                    .map(|it| it.v)
                    .ok_or_else(|| "empty stack at STOP".to_string())
            }
            b'(' => marks.push(stack.len()),
            b'0' => {
                pop!();
            }
            b'1' => {
                let _ = pop_mark!();
            }
            b'2' => {
                let top = stack.last().ok_or("DUP on an empty stack")?;
                let v = copy!(top, at);
                stack.push(v);
            }
            b'N' => leaf!(Value::None),
            0x88 => leaf!(Value::Bool(true)),
            0x89 => leaf!(Value::Bool(false)),
            b'J' => {
                let s = r.take(4)?;
                leaf!(Value::Int(i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as i64));
            }
            b'K' => {
                let v = r.u8()?;
                leaf!(Value::Int(v as i64))
            }
            b'M' => {
                let v = r.u16()?;
                leaf!(Value::Int(v as i64))
            }
            0x8a => {
                let n = r.u8()? as usize;
                leaf!(Value::Int(int_from_le(r.take(n)?)?));
            }
            0x8b => {
                let n = r.u32()?;
                leaf!(Value::Int(int_from_le(r.take(n)?)?));
            }
            b'I' => {
                let l = r.line()?;
                leaf!(match l {
                    "00" => Value::Bool(false),
                    "01" => Value::Bool(true),
                    _ => Value::Int(l.parse().map_err(|_| format!("bad INT {l:?}"))?),
                });
            }
            b'L' => {
                let l = r.line()?.trim_end_matches('L');
                leaf!(Value::Int(l.parse().map_err(|_| format!("bad LONG {l:?}"))?));
            }
            b'G' => {
                let s = r.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(s);
                leaf!(Value::Float(f64::from_be_bytes(a)));
            }
            b'F' => {
                let l = r.line()?;
                leaf!(Value::Float(l.parse().map_err(|_| format!("bad FLOAT {l:?}"))?));
            }
            0x8c | b'X' | 0x8d => {
                let n = match op {
                    0x8c => r.u8()? as usize,
                    b'X' => r.u32()?,
                    _ => r.u64()?,
                };
                let s = std::str::from_utf8(r.take(n)?)
                    .map_err(|_| format!("invalid UTF-8 string at offset {at}"))?;
                leaf!(Value::Str(s.to_string()));
            }
            b'V' => {
                let l = r.line_bytes()?;
                leaf!(Value::Str(raw_unicode_escape(l, at)?));
            }
            b'S' => {
                let l = r.line()?;
                let t = l.trim();
                let t = t
                    .strip_prefix('\'')
                    .and_then(|t| t.strip_suffix('\''))
                    .or_else(|| t.strip_prefix('"').and_then(|t| t.strip_suffix('"')))
                    .unwrap_or(t);
                leaf!(Value::Bytes(Rc::new(t.as_bytes().to_vec())));
            }
            b'C' | b'B' | 0x8e | 0x96 | b'U' | b'T' => {
                let n = match op {
                    b'C' | b'U' => r.u8()? as usize,
                    b'B' | b'T' => r.u32()?,
                    _ => r.u64()?,
                };
                leaf!(Value::Bytes(Rc::new(r.take(n)?.to_vec())));
            }
            0x97 | 0x98 => {
                return Err(
                    "out-of-band buffers (pickle protocol 5 NEXT_BUFFER) are not supported: re-save the file with protocol ≤ 4 or in-band buffers"
                        .into(),
                )
            }
            b'}' => leaf!(Value::Dict(Vec::new())),
            b'd' => {
                let (depth, size, values) = unzip(pop_mark!());
                push!(
                    Item {
                        v: Value::Dict(pairs(values)?),
                        depth: depth + 1,
                        size: size.saturating_add(NODE),
                    },
                    at
                );
            }
            b']' | 0x8f => leaf!(Value::List(Vec::new())),
            b'l' | 0x91 | b't' => {
                let (depth, size, values) = unzip(pop_mark!());
                push!(
                    Item {
                        v: if op == b't' {
                            Value::Tuple(values)
                        } else {
                            Value::List(values)
                        },
                        depth: depth + 1,
                        size: size.saturating_add(NODE),
                    },
                    at
                );
            }
            b')' => leaf!(Value::Tuple(Vec::new())),
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(format!("stack underflow at offset {at}"));
                }
                let (depth, size, values) = unzip(stack.split_off(stack.len() - n));
                push!(
                    Item {
                        v: Value::Tuple(values),
                        depth: depth + 1,
                        size: size.saturating_add(NODE),
                    },
                    at
                );
            }
            0x90 | b'e' => {
                let (depth, size, values) = unzip(pop_mark!());
                match stack.last_mut().map(|it| &mut it.v) {
                    Some(Value::List(l)) => l.extend(values),
                    other => {
                        return Err(format!(
                            "{} to {} at offset {at}",
                            if op == b'e' { "APPENDS" } else { "ADDITEMS" },
                            other.map_or("nothing", |o| o.kind())
                        ))
                    }
                }
                absorb_top!(depth, size, 1, at);
            }
            b'a' => {
                let Item { v, depth, size } = pop!();
                match stack.last_mut().map(|it| &mut it.v) {
                    Some(Value::List(l)) => l.push(v),
                    other => {
                        return Err(format!(
                            "APPEND to {} at offset {at}",
                            other.map_or("nothing", |o| o.kind())
                        ))
                    }
                }
                absorb_top!(depth, size, 1, at);
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop!();
                    let k = pop!();
                    vec![k, v]
                } else {
                    pop_mark!()
                };
                let (depth, size, values) = unzip(items);
                dict_insert(stack.last_mut().map(|it| &mut it.v), pairs(values)?, at)?;
                // An opaque object keeps the items in its state dict: two levels down.
                absorb_top!(depth, size, 2, at);
            }
            b'c' => {
                let module = r.line()?.to_string();
                let name = r.line()?.to_string();
                leaf!(Value::Global(module, name));
            }
            0x93 => {
                let name = pop!();
                let module = pop!();
                match (module.v.as_str(), name.v.as_str()) {
                    (Some(m), Some(n)) => leaf!(Value::Global(m, n)),
                    _ => return Err(format!("STACK_GLOBAL with non-string names at offset {at}")),
                }
            }
            b'R' | 0x81 | 0x92 => {
                if op == 0x92 {
                    let _kwargs = pop!();
                }
                let args = pop!();
                let f = pop!();
                let (depth, size, mut v) = unzip(vec![f, args]);
                let args = v.pop().expect("two values");
                let f = v.pop().expect("two values");
                push!(
                    Item {
                        v: call(f, args)?,
                        depth: depth + 1,
                        size: size.saturating_add(NODE),
                    },
                    at
                );
            }
            b'b' => {
                let state = pop!();
                let obj = pop!();
                let (depth, size, mut v) = unzip(vec![obj, state]);
                let state = v.pop().expect("two values");
                let obj = v.pop().expect("two values");
                push!(
                    Item {
                        v: build(obj, state)?,
                        depth: depth + 1,
                        size: size.saturating_add(NODE),
                    },
                    at
                );
            }
            b'p' | b'q' | b'r' | 0x94 => {
                let i = match op {
                    b'p' => r.line()?.parse().map_err(|_| "bad PUT index".to_string())?,
                    b'q' => r.u8()? as usize,
                    b'r' => r.u32()?,
                    _ => memo.len(),
                };
                let top = stack.last().ok_or(if op == 0x94 {
                    "MEMOIZE on an empty stack"
                } else {
                    "PUT on an empty stack"
                })?;
                let v = copy!(top, at);
                memo.insert(i, v);
            }
            b'g' | b'h' | b'j' => {
                let i = match op {
                    b'g' => r.line()?.parse().map_err(|_| "bad GET index".to_string())?,
                    b'h' => r.u8()? as usize,
                    _ => r.u32()?,
                };
                let m = memo
                    .get(&i)
                    .ok_or_else(|| format!("memo key {i} not found at offset {at}"))?;
                let v = copy!(m, at);
                stack.push(v);
            }
            other => {
                return Err(format!(
                    "unsupported pickle opcode 0x{other:02x} at offset {at}"
                ))
            }
        }
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of items for a dict".into());
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn dict_insert(
    target: Option<&mut Value>,
    items: Vec<(Value, Value)>,
    at: usize,
) -> Result<(), String> {
    match target {
        Some(Value::Dict(d)) => {
            for (k, v) in items {
                if let Some(slot) = d.iter_mut().find(|(kk, _)| *kk == k) {
                    slot.1 = v;
                } else {
                    d.push((k, v));
                }
            }
            Ok(())
        }
        Some(Value::Object(_, _, state)) => {
            // Attributes set on an opaque object: keep them as its state dict.
            let mut d = match state.take().map(|b| *b) {
                Some(Value::Dict(d)) => d,
                _ => Vec::new(),
            };
            d.extend(items);
            *state = Some(Box::new(Value::Dict(d)));
            Ok(())
        }
        other => Err(format!(
            "SETITEM(S) on {} at offset {at}",
            other.map_or("nothing", |o| o.kind())
        )),
    }
}

fn tuple_items(args: &Value) -> &[Value] {
    match args {
        Value::Tuple(v) | Value::List(v) => v,
        _ => &[],
    }
}

fn call(f: Value, args: Value) -> Result<Value, String> {
    let (m, n) = match &f {
        Value::Global(m, n) => (m.as_str(), n.as_str()),
        _ => return Ok(Value::Object(Box::new(f), Box::new(args), None)),
    };
    let a = tuple_items(&args);
    let numpy = |mods: &[&str]| mods.contains(&m);
    Ok(match n {
        "_reconstruct" if numpy(&["numpy.core.multiarray", "numpy._core.multiarray"]) => {
            Value::PendingArray
        }
        "dtype" if numpy(&["numpy", "numpy.core.multiarray", "numpy._core.multiarray"]) => {
            let descr = a
                .first()
                .and_then(Value::as_str)
                .ok_or("numpy.dtype without a descriptor")?;
            Value::Dtype(Dtype::parse(&descr)?)
        }
        "_frombuffer" if numpy(&["numpy.core.numeric", "numpy._core.numeric"]) => {
            let [buf, dtype, shape, order] = a else {
                return Err("numpy _frombuffer expects (buffer, dtype, shape, order)".into());
            };
            let data = match buf {
                Value::Bytes(b) => b.clone(),
                other => return Err(format!("numpy _frombuffer buffer is a {}", other.kind())),
            };
            let Value::Dtype(dtype) = dtype else {
                return Err("numpy _frombuffer without a dtype".into());
            };
            Value::Array(Rc::new(NdArray {
                shape: shape_of(shape)?,
                dtype: dtype.clone(),
                fortran: order.as_str().as_deref() == Some("F"),
                data,
                objects: Vec::new(),
            }))
        }
        "encode" if m == "_codecs" => {
            let s = a
                .first()
                .and_then(Value::as_str)
                .ok_or("_codecs.encode without text")?;
            let enc = a
                .get(1)
                .and_then(Value::as_str)
                .unwrap_or_else(|| "utf-8".into());
            let bytes: Vec<u8> =
                if enc.eq_ignore_ascii_case("latin1") || enc.eq_ignore_ascii_case("latin-1") {
                    s.chars().map(|c| c as u32 as u8).collect()
                } else {
                    s.into_bytes()
                };
            Value::Bytes(Rc::new(bytes))
        }
        "OrderedDict" if m == "collections" => Value::Dict(match a.first() {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(|p| match p {
                    Value::Tuple(kv) | Value::List(kv) if kv.len() == 2 => {
                        Some((kv[0].clone(), kv[1].clone()))
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }),
        "set" | "frozenset" | "list" if matches!(m, "builtins" | "__builtin__") => Value::List(
            a.first()
                .map(|v| tuple_items(v).to_vec())
                .unwrap_or_default(),
        ),
        "bytearray" if matches!(m, "builtins" | "__builtin__") => match a.first() {
            Some(Value::Bytes(b)) => Value::Bytes(b.clone()),
            _ => Value::Bytes(Rc::new(Vec::new())),
        },
        _ => Value::Object(Box::new(f), Box::new(args), None),
    })
}

fn shape_of(v: &Value) -> Result<Vec<usize>, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(vec![*i as usize]),
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                Value::Int(i) => Err(format!("array shape entry {i} is negative")),
                other => Err(format!("array shape entry is a {}", other.kind())),
            })
            .collect(),
        Value::Int(i) => Err(format!("array shape {i} is negative")),
        other => Err(format!("array shape is a {}", other.kind())),
    }
}

fn build(obj: Value, state: Value) -> Result<Value, String> {
    match obj {
        Value::PendingArray => {
            let s = tuple_items(&state);
            // (version, shape, dtype, is_fortran, data) or, from old numpy, without version.
            let s = if s.len() == 5 { &s[1..] } else { s };
            let [shape, dtype, fortran, data] = s else {
                return Err(format!(
                    "numpy array state has {} fields, expected 4 or 5",
                    s.len()
                ));
            };
            let Value::Dtype(dtype) = dtype else {
                return Err(format!("numpy array state: dtype is a {}", dtype.kind()));
            };
            let fortran = matches!(fortran, Value::Bool(true) | Value::Int(1));
            let (data, objects) = match data {
                Value::Bytes(b) => (b.clone(), Vec::new()),
                Value::Str(s) => (
                    Rc::new(s.chars().map(|c| c as u32 as u8).collect()),
                    Vec::new(),
                ),
                Value::List(items) => (Rc::new(Vec::new()), items.clone()),
                other => return Err(format!("numpy array data is a {}", other.kind())),
            };
            Ok(Value::Array(Rc::new(NdArray {
                shape: shape_of(shape)?,
                dtype: dtype.clone(),
                fortran,
                data,
                objects,
            })))
        }
        Value::Dtype(mut d) => {
            if let Some(order) = tuple_items(&state).get(1).and_then(Value::as_str) {
                d.big_endian = order == ">";
            }
            Ok(Value::Dtype(d))
        }
        Value::Dict(mut d) => {
            if let Value::Dict(items) = state {
                d.extend(items);
            }
            Ok(Value::Dict(d))
        }
        Value::Object(f, a, _) => Ok(Value::Object(f, a, Some(Box::new(state)))),
        other => Ok(other),
    }
}
