//! TensorBoard event files (`<run>/tensorboard/events.out.tfevents.*`): the run's per-epoch
//! metrics as scalars and its resolved `config.toml` as a text summary, readable by
//! `tensorboard --logdir runs` and by TensorBoard's `EventAccumulator` (see docs/tensorboard.md).
//!
//! # Format
//!
//! An event file is a sequence of TFRecords, each holding one serialized `Event` protobuf:
//!
//! ```text
//! u64 LE  length n
//! u32 LE  masked CRC-32C of the 8 length bytes
//! n bytes the data (an Event)
//! u32 LE  masked CRC-32C of the data
//! ```
//!
//! with `mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8` (wrapping, 32 bits). The first event
//! carries `file_version = "brain.Event:2"`; with that version TensorBoard purges orphaned
//! data only on a `SessionLog { status: START }` event (every earlier event of a step `>=` the
//! START's step is dropped), which is what a resumed run writes first in its new file.
//!
//! The protobuf messages are the subset of TensorBoard's `tensorboard/compat/proto/*.proto`
//! that a writer of scalars and text needs, declared with `prost`'s derive (no protoc, no
//! build script). The two TensorBoard-writer crates were not used: `tboard` 0.1.1 runs
//! `prost-build` in its build script and so needs `protoc` installed to build, and
//! `tensorboard-rs` 0.5.9 is unmaintained (protobuf 2, image 0.23).

use crate::record::EpochRecord;
use modbal_core::{ModbalError, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The protobuf messages, field numbers as in TensorBoard's `tensorboard/compat/proto/`
/// (`event.proto`, `summary.proto`, `tensor.proto`, `tensor_shape.proto`, `types.proto`;
/// checked against tensorflow/tensorboard at commit 70b76c92, June 2026); fields a
/// scalar/text writer never sets are left out (an absent field and an unknown one decode
/// alike).
pub mod proto {
    /// `event.proto`: `message Event`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(double, tag = "1")]
        pub wall_time: f64,
        #[prost(int64, tag = "2")]
        pub step: i64,
        /// `oneof what`: `file_version = 3`, `summary = 5`, `session_log = 7` (also
        /// `graph_def = 4`, `log_message = 6`, `tagged_run_metadata = 8`,
        /// `meta_graph_def = 9`, not written here).
        #[prost(oneof = "event::What", tags = "3, 5, 7")]
        pub what: Option<event::What>,
    }

    pub mod event {
        /// `event.proto`: `oneof what` of `Event`.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum What {
            #[prost(string, tag = "3")]
            FileVersion(String),
            #[prost(message, tag = "5")]
            Summary(super::Summary),
            #[prost(message, tag = "7")]
            SessionLog(super::SessionLog),
        }
    }

    /// `event.proto`: `message SessionLog`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SessionLog {
        /// `SessionStatus`: `STATUS_UNSPECIFIED = 0`, `START = 1`, `STOP = 2`,
        /// `CHECKPOINT = 3`.
        #[prost(int32, tag = "1")]
        pub status: i32,
        #[prost(string, tag = "2")]
        pub checkpoint_path: String,
        #[prost(string, tag = "3")]
        pub msg: String,
    }

    /// `SessionLog.SessionStatus.START`.
    pub const SESSION_START: i32 = 1;

    /// `summary.proto`: `message Summary`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        #[prost(message, repeated, tag = "1")]
        pub value: Vec<summary::Value>,
    }

    pub mod summary {
        /// `summary.proto`: `message Summary.Value`.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Value {
            #[prost(string, tag = "1")]
            pub tag: String,
            #[prost(message, optional, tag = "9")]
            pub metadata: Option<super::SummaryMetadata>,
            /// `oneof value`: `simple_value = 2`, `tensor = 8` (also the obsolete histogram
            /// `3`, `image = 4`, `histo = 5`, `audio = 6`, not written here).
            #[prost(oneof = "value::Value", tags = "2, 8")]
            pub value: Option<value::Value>,
        }

        pub mod value {
            /// `summary.proto`: `oneof value` of `Summary.Value`.
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum Value {
                #[prost(float, tag = "2")]
                SimpleValue(f32),
                #[prost(message, tag = "8")]
                Tensor(super::super::TensorProto),
            }
        }
    }

    /// `summary.proto`: `message SummaryMetadata`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SummaryMetadata {
        #[prost(message, optional, tag = "1")]
        pub plugin_data: Option<PluginData>,
        #[prost(string, tag = "2")]
        pub display_name: String,
        #[prost(string, tag = "3")]
        pub summary_description: String,
    }

    /// `summary.proto`: `message SummaryMetadata.PluginData`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PluginData {
        #[prost(string, tag = "1")]
        pub plugin_name: String,
        /// The plugin's own serialized data: for the text plugin a `TextPluginData` of
        /// version 0, whose encoding is empty (`tensorboard/plugins/text/metadata.py`).
        #[prost(bytes = "vec", tag = "2")]
        pub content: Vec<u8>,
    }

    /// `tensor.proto`: `message TensorProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        /// `types.proto`'s `DataType`.
        #[prost(int32, tag = "1")]
        pub dtype: i32,
        #[prost(message, optional, tag = "2")]
        pub tensor_shape: Option<TensorShapeProto>,
        #[prost(bytes = "vec", repeated, tag = "8")]
        pub string_val: Vec<Vec<u8>>,
    }

    /// `types.proto`: `DataType.DT_STRING`.
    pub const DT_STRING: i32 = 7;

    /// `tensor_shape.proto`: `message TensorShapeProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {
        #[prost(message, repeated, tag = "2")]
        pub dim: Vec<tensor_shape_proto::Dim>,
        #[prost(bool, tag = "3")]
        pub unknown_rank: bool,
    }

    pub mod tensor_shape_proto {
        /// `tensor_shape.proto`: `message TensorShapeProto.Dim`.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Dim {
            #[prost(int64, tag = "1")]
            pub size: i64,
            #[prost(string, tag = "2")]
            pub name: String,
        }
    }
}

use proto::event::What;
use proto::summary::value::Value as ValueKind;

/// The file version of the first event (TensorBoard: 2 or more enables purging on restart).
pub const FILE_VERSION: &str = "brain.Event:2";

/// Where a run's event files live, relative to the run directory.
pub const TENSORBOARD_DIR: &str = "tensorboard";

/// The tag of the resolved `config.toml` (text plugin).
pub const CONFIG_TAG: &str = "config";

const FILE_PREFIX: &str = "events.out.tfevents.";

/// CRC-32C as TFRecord stores it: `((c >> 15) | (c << 17)) + 0xa282ead8`, wrapping.
pub fn mask_crc(c: u32) -> u32 {
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// The masked CRC-32C (Castagnoli) of `data`.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    mask_crc(crc32c::crc32c(data))
}

/// One TFRecord: length, masked CRC of the length, data, masked CRC of the data.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// The records of a TFRecord file's bytes, each checked (both checksums); the error names the
/// byte offset of the bad record.
pub fn read_records(bytes: &[u8]) -> std::result::Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < 12 {
            return Err(format!("record at byte {at}: truncated header"));
        }
        let len_bytes = &rest[..8];
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let len_crc = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes"));
        if len_crc != masked_crc32c(len_bytes) {
            return Err(format!("record at byte {at}: length checksum mismatch"));
        }
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= rest.len().saturating_sub(16))
            .ok_or_else(|| format!("record at byte {at}: length {len} past the end"))?;
        let data = &rest[12..12 + len];
        let data_crc = u32::from_le_bytes(rest[12 + len..16 + len].try_into().expect("4 bytes"));
        if data_crc != masked_crc32c(data) {
            return Err(format!("record at byte {at}: data checksum mismatch"));
        }
        out.push(data.to_vec());
        at += 16 + len;
    }
    Ok(out)
}

/// Every event of the event file at `path` (records checked, events decoded); the error names
/// the file.
pub fn read_events(path: &Path) -> Result<Vec<proto::Event>> {
    use prost::Message;
    let bytes = std::fs::read(path).map_err(|e| ModbalError::io("reading", path, e))?;
    let bad = |m: String| ModbalError::Data(format!("{}: {m}", path.display()));
    read_records(&bytes)
        .map_err(bad)?
        .iter()
        .enumerate()
        .map(|(i, r)| {
            proto::Event::decode(r.as_slice()).map_err(|e| bad(format!("event {i}: {e}")))
        })
        .collect()
}

/// The event files in `dir`, in name order (the order TensorBoard reads them in).
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(ModbalError::io("reading", dir, e)),
    };
    for e in entries {
        let e = e.map_err(|e| ModbalError::io("reading", dir, e))?;
        if e.file_name().to_string_lossy().starts_with(FILE_PREFIX) {
            files.push(e.path());
        }
    }
    files.sort();
    Ok(files)
}

/// This machine's name for event file names: `/proc/sys/kernel/hostname`, else `$HOSTNAME`,
/// else `localhost`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().replace(['/', '\\'], "_"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The seconds field of an event file's name.
fn name_secs(path: &Path) -> Option<u64> {
    let n = path.file_name()?.to_str()?.strip_prefix(FILE_PREFIX)?;
    n.split('.').next()?.parse().ok()
}

/// A writer of one event file.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// A new event file in `dir` (created if needed), named
    /// `events.out.tfevents.<unix secs>.<hostname>.<pid>.<counter>` and starting with the
    /// `file_version` event. TensorBoard reads a directory's files in name order, so when a
    /// file in `dir` would sort after the new one (written in the same second by another
    /// process), the seconds of the name are advanced past it; the events keep their real
    /// wall times.
    pub fn create(dir: &Path) -> Result<Self> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        std::fs::create_dir_all(dir).map_err(|e| ModbalError::io("creating", dir, e))?;
        let existing = event_files(dir)?;
        let (host, pid) = (hostname(), std::process::id());
        let mut secs = now_secs() as u64;
        let name = |secs: u64, n: usize| format!("{FILE_PREFIX}{secs:010}.{host}.{pid}.{n}");
        let mut tries = 0;
        let path = loop {
            let n = COUNTER.fetch_add(1, Ordering::SeqCst);
            let p = dir.join(name(secs, n));
            match existing.last() {
                Some(last) if last.as_path() >= p.as_path() => {
                    tries += 1;
                    if tries > 3 {
                        return Err(ModbalError::Data(format!(
                            "{}: no name for a new event file sorts after {} (TensorBoard reads \
                             the files in name order); move that file away",
                            dir.display(),
                            last.display()
                        )));
                    }
                    secs = secs.max(name_secs(last).unwrap_or(secs) + 1);
                }
                _ if p.exists() => {}
                _ => break p,
            }
        };
        let file = File::create(&path).map_err(|e| ModbalError::io("creating", &path, e))?;
        let mut w = Self {
            path,
            out: BufWriter::new(file),
        };
        w.write(0, What::FileVersion(FILE_VERSION.into()))?;
        Ok(w)
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one event at `step` (wall time now).
    pub fn write(&mut self, step: i64, what: What) -> Result<()> {
        use prost::Message;
        let ev = proto::Event {
            wall_time: now_secs(),
            step,
            what: Some(what),
        };
        self.out
            .write_all(&frame(&ev.encode_to_vec()))
            .map_err(|e| ModbalError::io("writing", &self.path, e))
    }

    /// Scalars at `step`, in one event (`simple_value`, a 32-bit float as TensorBoard stores it).
    pub fn scalars(&mut self, step: i64, values: &[(String, f64)]) -> Result<()> {
        let value = values
            .iter()
            .map(|(tag, v)| proto::summary::Value {
                tag: tag.clone(),
                metadata: None,
                value: Some(ValueKind::SimpleValue(*v as f32)),
            })
            .collect();
        self.write(step, What::Summary(proto::Summary { value }))
    }

    /// A text summary (TensorBoard's text plugin renders it as Markdown): a scalar `DT_STRING`
    /// tensor with plugin metadata `"text"`.
    pub fn text(&mut self, step: i64, tag: &str, markdown: &str) -> Result<()> {
        let tensor = proto::TensorProto {
            dtype: proto::DT_STRING,
            tensor_shape: Some(proto::TensorShapeProto::default()),
            string_val: vec![markdown.as_bytes().to_vec()],
        };
        let value = proto::summary::Value {
            tag: tag.into(),
            metadata: Some(proto::SummaryMetadata {
                plugin_data: Some(proto::PluginData {
                    plugin_name: "text".into(),
                    content: Vec::new(),
                }),
                ..Default::default()
            }),
            value: Some(ValueKind::Tensor(tensor)),
        };
        self.write(step, What::Summary(proto::Summary { value: vec![value] }))
    }

    /// `SessionLog START` at `step`: TensorBoard drops every event of a step `>= step` read
    /// before it (a restarted run's orphaned epochs).
    pub fn session_start(&mut self, step: i64) -> Result<()> {
        self.write(
            step,
            What::SessionLog(proto::SessionLog {
                status: proto::SESSION_START,
                ..Default::default()
            }),
        )
    }

    /// Hand what was written to the OS (a live `tensorboard` sees it).
    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| ModbalError::io("writing", &self.path, e))
    }
}

/// The text of the `config` tag: the TOML in a fenced code block (Markdown).
pub fn config_markdown(config_toml: &str) -> String {
    let body = config_toml.strip_suffix('\n').unwrap_or(config_toml);
    format!("```toml\n{body}\n```")
}

/// `method/<key>` scalars of a record's method log: numbers only, nested objects flattened
/// with `/` (`method/scale/audio`); strings, booleans, arrays and nulls skipped.
fn method_scalars(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((prefix.to_string(), x));
            }
        }
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                method_scalars(&format!("{prefix}/{k}"), v, out);
            }
        }
        _ => {}
    }
}

/// The scalars of one split's record: `<split>/loss`, `<split>/fusion_acc`,
/// `<split>/acc/<modality>`, `<split>/macro_f1`, `<split>/discrepancy_ratio` (when present).
pub fn split_scalars(r: &EpochRecord) -> Vec<(String, f64)> {
    let s = &r.split;
    let mut out = vec![
        (format!("{s}/loss"), r.loss),
        (format!("{s}/fusion_acc"), r.fusion_acc),
    ];
    for (m, a) in &r.modality_acc {
        out.push((format!("{s}/acc/{m}"), *a));
    }
    out.push((format!("{s}/macro_f1"), r.macro_f1));
    if let Some(d) = r.discrepancy_ratio {
        out.push((format!("{s}/discrepancy_ratio"), d));
    }
    out
}

/// Every scalar of one epoch: each record's split scalars, `lr` and the `method/…` values of
/// the training record, and `time/epoch_seconds` (when known).
pub fn epoch_scalars(records: &[&EpochRecord], seconds: Option<f64>) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for r in records {
        out.extend(split_scalars(r));
    }
    if let Some(tr) = records.iter().find(|r| r.split == "train") {
        out.push(("lr".into(), tr.lr));
        for (k, v) in &tr.method {
            method_scalars(&format!("method/{k}"), v, &mut out);
        }
    }
    if let Some(s) = seconds {
        out.push(("time/epoch_seconds".into(), s));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn crc32c_and_its_mask() {
        // The standard CRC-32C (Castagnoli) check value: crc32c(b"123456789") = 0xE3069283
        // (the "check" of CRC-32/ISCSI in the CRC catalogue).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        // The mask of TFRecord, by its formula on the check value, spelled as TFRecord's
        // writers state it; and the number it gives (python3: c = 0xE3069283;
        // hex((((c >> 15) | (c << 17)) & 0xffffffff) + 0xa282ead8 & 0xffffffff)).
        let c: u32 = 0xE306_9283;
        #[allow(clippy::manual_rotate)]
        let want = ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8);
        assert_eq!(masked_crc32c(b"123456789"), want);
        assert_eq!(want, 0xc78a_b0e5);
        assert_eq!(mask_crc(0), 0xa282_ead8);
        assert_eq!(mask_crc(1), (1u32 << 17) + 0xa282_ead8);
    }

    #[test]
    fn a_written_file_decodes_frame_by_frame() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.text(0, CONFIG_TAG, &config_markdown("seed = 1\n"))
            .unwrap();
        w.scalars(3, &[("val/loss".into(), 0.25), ("lr".into(), 0.01)])
            .unwrap();
        w.session_start(2).unwrap();
        w.flush().unwrap();
        let path = w.path().to_path_buf();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        assert!(name.ends_with(&format!(
            ".{}.{}",
            std::process::id(),
            name.rsplit('.').next().unwrap()
        )));
        // Frame by frame, by hand: lengths and both checksums.
        let bytes = std::fs::read(&path).unwrap();
        let mut at = 0;
        let mut events = Vec::new();
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            let lc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(lc, masked_crc32c(&bytes[at..at + 8]));
            let data = &bytes[at + 12..at + 12 + len];
            let dc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(dc, masked_crc32c(data));
            events.push(proto::Event::decode(data).unwrap());
            at += 16 + len;
        }
        assert_eq!(at, bytes.len());
        assert_eq!(events, read_events(&path).unwrap());
        assert_eq!(events.len(), 4);
        assert_eq!(
            events[0].what,
            Some(What::FileVersion("brain.Event:2".into()))
        );
        let Some(What::Summary(s)) = &events[1].what else {
            panic!("{:?}", events[1])
        };
        let v = &s.value[0];
        assert_eq!(v.tag, "config");
        assert_eq!(
            v.metadata
                .as_ref()
                .unwrap()
                .plugin_data
                .as_ref()
                .unwrap()
                .plugin_name,
            "text"
        );
        let Some(ValueKind::Tensor(t)) = &v.value else {
            panic!("{v:?}")
        };
        assert_eq!(t.dtype, proto::DT_STRING);
        assert_eq!(t.string_val, vec![b"```toml\nseed = 1\n```".to_vec()]);
        assert_eq!(events[2].step, 3);
        let Some(What::Summary(s)) = &events[2].what else {
            panic!("{:?}", events[2])
        };
        assert_eq!(s.value[0].value, Some(ValueKind::SimpleValue(0.25)));
        assert_eq!(s.value[1].tag, "lr");
        assert_eq!(events[3].step, 2);
        assert!(matches!(
            &events[3].what,
            Some(What::SessionLog(l)) if l.status == proto::SESSION_START
        ));
        // A flipped byte is caught by the data checksum.
        let mut bad = bytes.clone();
        bad[14] ^= 1;
        assert!(read_records(&bad).unwrap_err().contains("data checksum"));
        // A flipped length by the length checksum.
        let mut bad = bytes;
        bad[0] ^= 1;
        assert!(read_records(&bad).unwrap_err().contains("length checksum"));
    }

    #[test]
    fn field_numbers_on_the_wire() {
        // Hand-encoded bytes of Event { step: 5, file_version: "x" } by event.proto's numbers:
        // field 2 varint (0x10) 5, field 3 length-delimited (0x1a) 1 "x".
        let ev = proto::Event {
            wall_time: 0.0,
            step: 5,
            what: Some(What::FileVersion("x".into())),
        };
        assert_eq!(ev.encode_to_vec(), vec![0x10, 5, 0x1a, 1, b'x']);
        // Summary.Value { tag: "a", simple_value: 1.0 }: field 1 (0x0a), field 2 fixed32 (0x15).
        let v = proto::summary::Value {
            tag: "a".into(),
            metadata: None,
            value: Some(ValueKind::SimpleValue(1.0)),
        };
        let mut want = vec![0x0a, 1, b'a', 0x15];
        want.extend_from_slice(&1.0f32.to_le_bytes());
        assert_eq!(v.encode_to_vec(), want);
    }

    #[test]
    fn a_new_file_sorts_after_the_files_there() {
        let dir = tempfile::tempdir().unwrap();
        // Written "now" by a process on a host and pid that sort after ours.
        let later = dir.path().join(format!(
            "events.out.tfevents.{:010}.zzzz.99999999.0",
            now_secs() as u64
        ));
        std::fs::write(&later, b"").unwrap();
        let w = EventWriter::create(dir.path()).unwrap();
        assert!(w.path() > later.as_path(), "{}", w.path().display());
        assert_eq!(event_files(dir.path()).unwrap().last().unwrap(), w.path());
        // A name no 10-digit time sorts after: an error naming the file, not a loop.
        let odd = dir.path().join("events.out.tfevents.9999999999.zz.1.0");
        std::fs::write(&odd, b"").unwrap();
        let e = EventWriter::create(dir.path()).unwrap_err().to_string();
        assert!(e.contains("9999999999.zz.1.0"), "{e}");
    }

    #[test]
    fn method_logs_are_flattened() {
        let mut r = EpochRecord {
            epoch: 0,
            stage: "main".into(),
            split: "train".into(),
            loss: 1.0,
            fusion_acc: 0.5,
            modality_acc: [("audio".to_string(), 0.4)].into_iter().collect(),
            macro_f1: 0.3,
            discrepancy_ratio: None,
            lr: 0.1,
            method: Default::default(),
            noise: None,
        };
        r.method = serde_json::json!({"scale": {"audio": 0.5, "visual": 2}, "name": "x",
            "flag": true, "list": [1, 2]})
        .as_object()
        .unwrap()
        .clone();
        let s = epoch_scalars(&[&r], Some(1.5));
        let tags: Vec<&str> = s.iter().map(|(t, _)| t.as_str()).collect();
        assert!(tags.contains(&"method/scale/audio"), "{tags:?}");
        assert!(tags.contains(&"method/scale/visual"), "{tags:?}");
        assert!(!tags
            .iter()
            .any(|t| t.contains("name") || t.contains("flag") || t.contains("list")));
        assert!(tags.contains(&"lr") && tags.contains(&"time/epoch_seconds"));
        assert!(tags.contains(&"train/loss") && !tags.contains(&"train/discrepancy_ratio"));
        assert!(tags.contains(&"train/acc/audio"), "{tags:?}");
    }
}
