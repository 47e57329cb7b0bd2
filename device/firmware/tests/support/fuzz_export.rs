//! A mutation fuzzer for the export reader and the code generator, shared by the CI test
//! (`tests/fuzz_export.rs`, a few thousand cases) and the long-run example
//! (`bench/src/bin/fuzz_export.rs`, as many as you like); docs/fuzzing.md.
//!
//! It starts from small valid exports, applies seeded mutations to `arch.json` (byte flips,
//! field removals, type swaps, huge and wrapping integers, hostile names, layer shuffles)
//! and to `weights.safetensors` (flips, truncation, a corrupt header length or header), and
//! checks for every case:
//! - `Export::load` returns, without a panic, within the watchdog's time;
//! - a loaded export has names that pass `check_name`, and its generated `model.rs` and
//!   `weights.rs` hold printable ASCII only, with export text only in comments: with the
//!   comments removed and the layer identifiers' name part dropped, the code is the same as
//!   for the same export with every name replaced by a neutral one.

#![allow(dead_code)] // each includer uses part of it

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dnal_export::{Arch, Export, ExportError, Layer, Op, Tensor, check_name};
use dnal_firmware::codegen::generate_model;
use dnal_firmware::synth::{add, conv, linear, pool, random_export, tiny_cnn_arch};
use dnal_kernels::{Activation, Shape3};
use serde_json::Value;

/// xorshift64*: small, seeded, no dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A valid export as files.
#[derive(Clone, Debug)]
pub struct Seed {
    pub name: &'static str,
    pub arch_json: Vec<u8>,
    pub weights: Vec<u8>,
}

/// The valid exports mutations start from: every op, activation and layer-name style.
pub fn seeds() -> Vec<Seed> {
    use Activation::*;
    let mut tiny = tiny_cnn_arch("tiny-cnn");
    tiny.classes = (0..10).map(|i| format!("class {i}/x")).collect();
    tiny.normalization = Some(dnal_export::Normalization {
        mean: vec![0.5, 0.4, 0.3],
        std: vec![0.25, 0.2, 0.3],
    });
    let vgg = Arch::new(
        "vgg-mini",
        Shape3::new(1, 8, 8),
        4,
        vec![
            Layer::new("features.0", vec![0], conv(1, 4, 3, 1, 1, false, Relu)),
            Layer::new("features.2", vec![1], pool(true, 2, 2, 0)),
            Layer::new("features.3", vec![2], conv(4, 6, 3, 1, 1, false, Relu)),
            Layer::new("gap", vec![3], Op::GlobalAvgPool),
            Layer::new("fc", vec![4], linear(6, 4, None)),
        ],
    );
    let res = Arch::new(
        "resnet-mini",
        Shape3::new(2, 6, 6),
        3,
        vec![
            Layer::new("stem", vec![0], conv(2, 4, 3, 1, 1, false, Relu)),
            Layer::new("s1b1.conv1", vec![1], conv(4, 4, 3, 1, 1, false, Relu)),
            Layer::new("s1b1.conv2", vec![2], conv(4, 4, 3, 1, 1, false, None)),
            Layer::new("s1b1.add", vec![1, 3], add(Relu)),
            Layer::new("pool", vec![4], pool(false, 3, 2, 1)),
            Layer::new("gap", vec![5], Op::GlobalAvgPool),
            Layer::new("fc", vec![6], linear(4, 3, None)),
        ],
    );
    let lin = Arch::new(
        "linear+1",
        Shape3::new(1, 4, 4),
        3,
        vec![Layer::new("fc_1", vec![0], linear(16, 3, Relu6))],
    );
    let mut out = Vec::new();
    for (i, (name, arch)) in [
        ("tiny-cnn", tiny),
        ("vgg-mini", vgg),
        ("resnet-mini", res),
        ("linear", lin),
    ]
    .into_iter()
    .enumerate()
    {
        let export = random_export(arch, i as u64 + 1).expect("the seeds are valid");
        let dir = tempfile::tempdir().expect("a temporary folder");
        export.write(dir.path()).expect("the seeds can be written");
        out.push(Seed {
            name,
            arch_json: std::fs::read(dir.path().join("arch.json")).expect("arch.json"),
            weights: std::fs::read(dir.path().join("weights.safetensors")).expect("weights"),
        });
    }
    out
}

/// Numbers that wrap, overflow or sit on a limit.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "-1",
    "65535",
    "65536",
    "65537",
    "2147483647",
    "2147483648",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "1e39",
    "-1e39",
    "1e-45",
    "0.5",
    "1e308",
];

/// Strings that would inject code, TOML or terminal escapes, and some that are valid.
const STRINGS: &[&str] = &[
    "",
    "x\nfn evil() { std::process::exit(7) }\n//",
    "*/ fn evil() {} /*",
    "\"; evil(); \"",
    "\\",
    "\r",
    "a\u{0}b",
    "\u{1b}[2J",
    "é",
    "\u{2028}",
    "{x0}",
    "{w}",
    "T-shirt/top",
    "#![no_main]",
    "conv1",
    "fc",
    "gap",
    "L0_CONV1",
    "input",
    "a.b+c-d_e",
    "relu",
    "relu6",
    "none",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "global_avg_pool",
    "add",
    "linear",
    "dnal-export",
];

/// A path to a node of a JSON tree.
type JsonPath = Vec<PathStep>;

#[derive(Clone, Debug)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn paths(v: &Value, here: &mut JsonPath, out: &mut Vec<JsonPath>) {
    out.push(here.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                here.push(PathStep::Key(k.clone()));
                paths(child, here, out);
                here.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                here.push(PathStep::Index(i));
                paths(child, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn node<'a>(v: &'a mut Value, path: &[PathStep]) -> Option<&'a mut Value> {
    let mut v = v;
    for step in path {
        v = match step {
            PathStep::Key(k) => v.get_mut(k.as_str())?,
            PathStep::Index(i) => v.get_mut(*i)?,
        };
    }
    Some(v)
}

fn node_ref<'a>(v: &'a Value, path: &[PathStep]) -> Option<&'a Value> {
    let mut v = v;
    for step in path {
        v = match step {
            PathStep::Key(k) => v.get(k.as_str())?,
            PathStep::Index(i) => v.get(*i)?,
        };
    }
    Some(v)
}

/// One of `all` whose node is of the kind `is_kind` tells, or `fallback` when none is. Looked
/// up in place: the mutator used to clone the whole document once per candidate path.
fn pick_path_where(
    v: &Value,
    all: &[JsonPath],
    fallback: &JsonPath,
    rng: &mut Rng,
    is_kind: fn(&Value) -> bool,
) -> JsonPath {
    let matching: Vec<&JsonPath> = all
        .iter()
        .filter(|p| node_ref(v, p).is_some_and(is_kind))
        .collect();
    if matching.is_empty() {
        fallback.clone()
    } else {
        (*rng.pick(&matching)).clone()
    }
}

fn describe(path: &[PathStep]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            PathStep::Key(k) => {
                let _ = write!(s, ".{k}");
            }
            PathStep::Index(i) => {
                let _ = write!(s, "[{i}]");
            }
        }
    }
    s
}

fn number(rng: &mut Rng) -> Value {
    let text: &&str = rng.pick(NUMBERS);
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// One structural mutation of the JSON tree; returns what it did.
fn mutate_json(v: &mut Value, rng: &mut Rng) -> String {
    let mut all = Vec::new();
    paths(v, &mut Vec::new(), &mut all);
    let path = rng.pick(&all).clone();
    let at = describe(&path);
    match rng.below(9) {
        0 => {
            // Remove a field or element.
            if let Some((last, parent)) = path.split_last()
                && let Some(p) = node(v, parent)
            {
                match (last, p) {
                    (PathStep::Key(k), Value::Object(m)) => {
                        m.remove(k);
                    }
                    (PathStep::Index(i), Value::Array(a)) if *i < a.len() => {
                        a.remove(*i);
                    }
                    _ => {}
                }
            }
            format!("remove {at}")
        }
        1 => {
            // Swap the node's type.
            let new = match rng.below(6) {
                0 => Value::Null,
                1 => Value::Bool(rng.below(2) == 0),
                2 => number(rng),
                3 => Value::String(rng.pick(STRINGS).to_string()),
                4 => Value::Array(vec![number(rng), number(rng)]),
                _ => serde_json::json!({"channels": 1}),
            };
            let shown = new.to_string();
            if let Some(n) = node(v, &path) {
                *n = new;
            }
            format!("set {at} = {shown}")
        }
        2 | 3 => {
            // A number node (or any node) to a huge, wrapping or limit number.
            let path = pick_path_where(v, &all, &path, rng, Value::is_number);
            let new = number(rng);
            let shown = new.to_string();
            if let Some(n) = node(v, &path) {
                *n = new;
            }
            format!("number {} = {shown}", describe(&path))
        }
        4 | 5 => {
            // A string node (names above all) to a hostile or confusing string.
            let path = pick_path_where(v, &all, &path, rng, Value::is_string);
            let new = rng.pick(STRINGS).to_string();
            if let Some(n) = node(v, &path) {
                *n = Value::String(new.clone());
            }
            format!("string {} = {new:?}", describe(&path))
        }
        6 => {
            // Duplicate, drop or swap layers.
            let Some(Value::Array(layers)) = v.get_mut("layers") else {
                return "no layers".into();
            };
            if layers.is_empty() {
                return "empty layers".into();
            }
            let i = rng.below(layers.len());
            let j = rng.below(layers.len());
            match rng.below(3) {
                0 => {
                    let l = layers[i].clone();
                    layers.insert(j, l);
                    format!("duplicate layer {i} at {j}")
                }
                1 => {
                    layers.remove(i);
                    format!("drop layer {i}")
                }
                _ => {
                    layers.swap(i, j);
                    format!("swap layers {i} {j}")
                }
            }
        }
        7 => {
            // Inputs lists: forward, huge, empty, long.
            let Some(Value::Array(layers)) = v.get_mut("layers") else {
                return "no layers".into();
            };
            if layers.is_empty() {
                return "empty layers".into();
            }
            let i = rng.below(layers.len());
            let new = match rng.below(4) {
                0 => serde_json::json!([]),
                1 => serde_json::json!([i + 1]),
                2 => serde_json::json!([0, 0, 0]),
                _ => Value::Array(vec![number(rng)]),
            };
            let shown = new.to_string();
            let Some(layer) = layers[i].as_object_mut() else {
                return format!("layer {i} is not an object");
            };
            layer.insert("inputs".into(), new);
            format!("layers[{i}].inputs = {shown}")
        }
        _ => {
            // Ops: change one layer's op (its fields stay).
            let Some(Value::Array(layers)) = v.get_mut("layers") else {
                return "no layers".into();
            };
            if layers.is_empty() {
                return "empty layers".into();
            }
            let i = rng.below(layers.len());
            let op = *rng.pick(&[
                "conv2d",
                "max_pool2d",
                "avg_pool2d",
                "global_avg_pool",
                "add",
                "linear",
            ]);
            let Some(layer) = layers[i].as_object_mut() else {
                return format!("layer {i} is not an object");
            };
            layer.insert("op".into(), op.into());
            format!("layers[{i}].op = {op}")
        }
    }
}

/// Raw byte damage: flips, inserted bytes, truncation.
fn mutate_bytes(bytes: &mut Vec<u8>, rng: &mut Rng) -> String {
    if bytes.is_empty() {
        bytes.push(rng.next() as u8);
        return "byte into empty".into();
    }
    match rng.below(4) {
        0 => {
            let n = 1 + rng.below(8);
            for _ in 0..n {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            format!("flip {n} bits")
        }
        1 => {
            let i = rng.below(bytes.len());
            bytes[i] = *rng.pick(b"\"\\{}[]:,\n\r\x00\xff-09e.");
            format!("byte {i} = {:#04x}", bytes[i])
        }
        2 => {
            let i = rng.below(bytes.len());
            let junk = *rng.pick(&[
                &b"\xff\xfe"[..],
                b"\"\\u0000\"",
                b"-",
                b"99999999999999999999",
            ]);
            bytes.splice(i..i, junk.iter().copied());
            format!("insert at {i}")
        }
        _ => {
            let keep = rng.below(bytes.len());
            bytes.truncate(keep);
            format!("truncate to {keep}")
        }
    }
}

/// safetensors damage: the 8-byte header length, the header's JSON, the data.
fn mutate_weights(bytes: &mut Vec<u8>, rng: &mut Rng) -> String {
    if bytes.len() < 8 {
        return mutate_bytes(bytes, rng);
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8])) as usize;
    match rng.below(5) {
        0 => {
            let new = *rng.pick(&[
                0u64,
                1,
                7,
                (header_len as u64).wrapping_add(1),
                (header_len as u64).wrapping_sub(1),
                bytes.len() as u64,
                u32::MAX as u64,
                u64::MAX,
                1 << 63,
            ]);
            bytes[..8].copy_from_slice(&new.to_le_bytes());
            format!("header length = {new}")
        }
        1 if header_len
            .checked_add(8)
            .is_some_and(|end| end <= bytes.len()) =>
        {
            // Edit the header's JSON text: dtypes, shapes, offsets, names.
            let header = String::from_utf8_lossy(&bytes[8..8 + header_len]).into_owned();
            let (from, to) = *rng.pick(&[
                ("F32", "F64"),
                ("F32", "BF16"),
                ("F32", "U8"),
                ("[", "[9223372036854775807,"),
                ("[", "[0,"),
                ("]", ",4294967296]"),
                ("data_offsets\":[", "data_offsets\":[18446744073709551615,"),
                ("weight", "w\\neight"),
                (".bias", ".bias2"),
                ("\"", "\"x"),
                ("0", "1"),
            ]);
            let mut edited = header.replacen(from, to, 1 + rng.below(3));
            // Keep the length field right half the time, so the JSON is what breaks.
            if rng.below(2) == 0 {
                while edited.len() < header.len() {
                    edited.push(' ');
                }
            }
            let mut out = (edited.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(edited.as_bytes());
            out.extend_from_slice(&bytes[8 + header_len..]);
            *bytes = out;
            format!("header {from:?} -> {to:?}")
        }
        2 => {
            // Data bytes: values become NaN, inf, huge or tiny.
            let start = header_len.saturating_add(8).min(bytes.len());
            if start + 4 <= bytes.len() {
                let i = start + rng.below((bytes.len() - start) / 4) * 4;
                let v = *rng.pick(&[f32::NAN, f32::INFINITY, 3e38, -3e38, 1e-45, 0.0]);
                bytes[i..i + 4].copy_from_slice(&v.to_le_bytes());
                format!("value at {i} = {v}")
            } else {
                mutate_bytes(bytes, rng)
            }
        }
        _ => mutate_bytes(bytes, rng),
    }
}

/// One case: the seed it starts from and what was done to it.
#[derive(Clone, Debug)]
pub struct Case {
    pub index: u64,
    pub seed: &'static str,
    pub mutations: Vec<String>,
    pub arch_json: Vec<u8>,
    pub weights: Vec<u8>,
}

/// Case `index` of run `run_seed`: deterministic, independent of the other cases.
pub fn make_case(seeds: &[Seed], run_seed: u64, index: u64) -> Case {
    let mut rng = Rng::new(run_seed ^ index.wrapping_mul(0xd134_2543_de82_ef95));
    let seed = rng.pick(seeds);
    let mut arch_json = seed.arch_json.clone();
    let mut weights = seed.weights.clone();
    let mut mutations = Vec::new();
    for _ in 0..1 + rng.below(3) {
        match rng.below(10) {
            0..=5 => {
                // Structural: through the JSON tree (if it still parses).
                match serde_json::from_slice::<Value>(&arch_json) {
                    Ok(mut v) => {
                        mutations.push(mutate_json(&mut v, &mut rng));
                        arch_json = if rng.below(2) == 0 {
                            serde_json::to_vec_pretty(&v).unwrap_or_default()
                        } else {
                            serde_json::to_vec(&v).unwrap_or_default()
                        };
                    }
                    Err(_) => mutations.push(mutate_bytes(&mut arch_json, &mut rng)),
                }
            }
            6 | 7 => mutations.push(format!("arch {}", mutate_bytes(&mut arch_json, &mut rng))),
            _ => mutations.push(format!(
                "weights {}",
                mutate_weights(&mut weights, &mut rng)
            )),
        }
    }
    Case {
        index,
        seed: seed.name,
        mutations,
        arch_json,
        weights,
    }
}

/// What a case came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Loaded, and its generated code passed the checks.
    Loaded,
    /// Refused with this error (its variant's name).
    Refused(&'static str),
}

fn error_kind(e: &ExportError) -> &'static str {
    match e {
        ExportError::MissingFile { .. } => "MissingFile",
        ExportError::Io { .. } => "Io",
        ExportError::NotAFile { .. } => "NotAFile",
        ExportError::TooLarge { .. } => "TooLarge",
        ExportError::BadName { .. } => "BadName",
        ExportError::Json { .. } => "Json",
        ExportError::UnknownFormat { .. } => "UnknownFormat",
        ExportError::UnknownVersion { .. } => "UnknownVersion",
        ExportError::WrongPrecision { .. } => "WrongPrecision",
        ExportError::InvalidField { .. } => "InvalidField",
        ExportError::InvalidLayer { .. } => "InvalidLayer",
        ExportError::ForwardInput { .. } => "ForwardInput",
        ExportError::OutputShape { .. } => "OutputShape",
        ExportError::TotalMismatch { .. } => "TotalMismatch",
        ExportError::Safetensors { .. } => "Safetensors",
        ExportError::MissingTensor { .. } => "MissingTensor",
        ExportError::UnknownTensor { .. } => "UnknownTensor",
        ExportError::WrongDtype { .. } => "WrongDtype",
        ExportError::TensorShape { .. } => "TensorShape",
        ExportError::NonFinite { .. } => "NonFinite",
        ExportError::InvalidTensor { .. } => "InvalidTensor",
    }
}

/// The identifier part the generator makes of a layer name (`codegen::layer_ident`): ASCII
/// letters and digits upper-cased, anything else `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The code of generated Rust without its comments, with each layer identifier
/// (`L{i}_{NAME}`, `..._W`, `..._B`) written as `L{i}_<name>`: what must not depend on any
/// name.
fn code_only(text: &str, names: &[&str]) -> String {
    let idents: Vec<String> = names.iter().map(|n| sanitize(n)).collect();
    let neutral = |token: &str| -> Option<String> {
        let rest = token.strip_prefix('L')?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let i: usize = rest[..digits].parse().ok()?;
        let name = rest[digits..].strip_prefix('_')?;
        let ident = idents.get(i)?;
        let suffix = name.strip_prefix(ident.as_str())?;
        matches!(suffix, "" | "_W" | "_B").then(|| format!("L{i}_<name>{suffix}"))
    };
    let mut out = String::new();
    for line in text.lines() {
        let code = match line.find("//") {
            Some(p) => &line[..p],
            None => line,
        };
        if code.trim().is_empty() {
            continue;
        }
        let mut token = String::new();
        for c in code.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_alphanumeric() || c == '_' {
                token.push(c);
                continue;
            }
            if !token.is_empty() {
                out.push_str(&neutral(&token).unwrap_or_else(|| token.clone()));
                token.clear();
            }
            out.push(c);
        }
        out.push('\n');
    }
    out
}

/// The same export with neutral names (`n0`, `n1`, ..., model `model`, dataset `data`).
fn renamed(export: &Export) -> Result<Export, String> {
    let mut arch = export.arch().clone();
    arch.name = "model".into();
    if !arch.dataset.is_empty() {
        arch.dataset = "data".into();
    }
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    for (i, layer) in arch.layers.iter_mut().enumerate() {
        let new = format!("n{i}");
        if let Some((w, b)) = export.weight_and_bias(&layer.name) {
            tensors.insert(format!("{new}.weight"), w.clone());
            tensors.insert(format!("{new}.bias"), b.clone());
        }
        layer.name = new;
    }
    Export::new(arch, tensors).map_err(|e| format!("the renamed export is refused: {e}"))
}

/// Checks a loaded export's names and generated code; `Err` says what is wrong.
pub fn check_generated(export: &Export) -> Result<(), String> {
    let arch = export.arch();
    let mut names: Vec<&str> = arch.layers.iter().map(|l| l.name.as_str()).collect();
    names.push(&arch.name);
    if !arch.dataset.is_empty() {
        names.push(&arch.dataset);
    }
    for name in &names {
        check_name(name).map_err(|e| format!("loaded with name {name:?}: {e}"))?;
    }
    let model = generate_model(export).map_err(|e| format!("codegen failed: {e}"))?;
    let neutral = generate_model(&renamed(export)?).map_err(|e| format!("codegen failed: {e}"))?;
    for (file, text, other) in [
        ("model.rs", &model.model_rs, &neutral.model_rs),
        ("weights.rs", &model.weights_rs, &neutral.weights_rs),
    ] {
        if let Some(line) = text
            .lines()
            .find(|l| !l.bytes().all(|b| (0x20..0x7f).contains(&b)))
        {
            return Err(format!("{file}: a line outside printable ASCII: {line:?}"));
        }
        let neutral_names: Vec<String> = (0..arch.layers.len()).map(|i| format!("n{i}")).collect();
        let neutral_names: Vec<&str> = neutral_names.iter().map(String::as_str).collect();
        let layer_names = &names[..arch.layers.len()];
        let (a, b) = (
            code_only(text, layer_names),
            code_only(other, &neutral_names),
        );
        if a != b {
            let line = a
                .lines()
                .zip(b.lines())
                .find(|(x, y)| x != y)
                .map(|(x, y)| format!("{x:?} vs {y:?}"))
                .unwrap_or_else(|| "different lengths".into());
            return Err(format!(
                "{file}: the code (comments aside) depends on the export's names: {line}"
            ));
        }
    }
    Ok(())
}

/// Writes the case into `dir` and runs the checks.
pub fn run_case(dir: &Path, case: &Case) -> Result<Outcome, String> {
    std::fs::write(dir.join("arch.json"), &case.arch_json).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("weights.safetensors"), &case.weights).map_err(|e| e.to_string())?;
    let loaded = catch_unwind(AssertUnwindSafe(|| Export::load(dir)))
        .map_err(|p| format!("Export::load panicked: {}", panic_text(&p)))?;
    match loaded {
        Err(e) => Ok(Outcome::Refused(error_kind(&e))),
        Ok(export) => {
            catch_unwind(AssertUnwindSafe(|| check_generated(&export)))
                .map_err(|p| format!("code generation panicked: {}", panic_text(&p)))??;
            Ok(Outcome::Loaded)
        }
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Counts of a run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub cases: u64,
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Failed cases: the case and what failed.
    pub failures: Vec<(Case, String)>,
}

/// Runs cases `0..cases` of `run_seed` on `threads` threads. A case that runs longer than
/// `hang_after` is reported as a hang (its thread is left behind). `progress` is called
/// now and then with the cases done.
pub fn run(
    run_seed: u64,
    cases: u64,
    threads: usize,
    hang_after: Duration,
    progress: &dyn Fn(u64),
) -> Summary {
    let seeds = Arc::new(seeds());
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = std::sync::mpsc::channel::<(Case, Result<Outcome, String>)>();
    // Each worker announces the case it starts, so that a hang can be named.
    let current: Arc<Vec<AtomicUsize>> =
        Arc::new((0..threads).map(|_| AtomicUsize::new(usize::MAX)).collect());
    let started: Arc<Vec<std::sync::Mutex<Instant>>> = Arc::new(
        (0..threads)
            .map(|_| std::sync::Mutex::new(Instant::now()))
            .collect(),
    );
    for t in 0..threads {
        let (seeds, next, done, tx, current, started) = (
            seeds.clone(),
            next.clone(),
            done.clone(),
            tx.clone(),
            current.clone(),
            started.clone(),
        );
        std::thread::spawn(move || {
            let dir = tempfile::tempdir().expect("a temporary folder");
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed) as u64;
                if index >= cases {
                    break;
                }
                if let Ok(mut s) = started[t].lock() {
                    *s = Instant::now();
                }
                current[t].store(index as usize, Ordering::Relaxed);
                // A panic in the mutator is a bug of the fuzzer, reported like any failure.
                let made = catch_unwind(AssertUnwindSafe(|| make_case(&seeds, run_seed, index)));
                let (case, result) = match made {
                    Ok(case) => {
                        let result = run_case(dir.path(), &case);
                        (case, result)
                    }
                    Err(p) => (
                        Case {
                            index,
                            seed: "?",
                            mutations: Vec::new(),
                            arch_json: Vec::new(),
                            weights: Vec::new(),
                        },
                        Err(format!("the mutator panicked: {}", panic_text(&p))),
                    ),
                };
                current[t].store(usize::MAX, Ordering::Relaxed);
                done.fetch_add(1, Ordering::Relaxed);
                if tx.send((case, result)).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut summary = Summary::default();
    let mut last_progress = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok((case, result)) => {
                summary.cases += 1;
                match result {
                    Ok(outcome) => *summary.outcomes.entry(outcome).or_default() += 1,
                    Err(why) => summary.failures.push((case, why)),
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        for t in 0..threads {
            let index = current[t].load(Ordering::Relaxed);
            let since = started[t].lock().map(|s| s.elapsed()).unwrap_or_default();
            if index != usize::MAX && since > hang_after {
                let case = catch_unwind(AssertUnwindSafe(|| {
                    make_case(&seeds, run_seed, index as u64)
                }))
                .unwrap_or_else(|_| Case {
                    index: index as u64,
                    seed: "?",
                    mutations: Vec::new(),
                    arch_json: Vec::new(),
                    weights: Vec::new(),
                });
                summary
                    .failures
                    .push((case, format!("no answer after {since:?}: a hang")));
                return summary;
            }
        }
        if last_progress.elapsed() > Duration::from_secs(5) {
            progress(done.load(Ordering::Relaxed) as u64);
            last_progress = Instant::now();
        }
    }
    summary
}

/// A failure as text: the case, how to replay it, what failed.
pub fn report(run_seed: u64, case: &Case, why: &str) -> String {
    format!(
        "case {} of seed {run_seed} (from {}; {}): {why}\n  replay: cargo run --release -p \
         dnal-bench --bin fuzz_export -- --seed {run_seed} --case {}",
        case.index,
        case.seed,
        case.mutations.join("; "),
        case.index
    )
}
