//! The mutation engine of the self-written fuzzer (`mutfuzz`) and of the bounded run in the
//! test suite: byte mutations (bit flips, interesting bytes, chunk deletion, duplication and
//! splicing) and structure-aware ones that keep an input parseable far enough to reach the
//! checks behind the syntax: JSON values re-emitted with fields removed, duplicated or added,
//! numbers replaced by NaN, 1e308, 1e309, -0 or integers past 2⁶⁴; TOML and CSV values
//! replaced field by field; Megatron indexes with header counts, lengths, pointers and
//! document indices rewritten. Deterministic for a given seed (`SplitMix64`).

use mixatlas::rng::SplitMix64;
use serde_json::Value;

/// Numbers and literals that break parsers: non-finite, signed zero, past every integer type.
const NUMBERS: &[&str] = &[
    "NaN",
    "nan",
    "inf",
    "-inf",
    "Infinity",
    "1e308",
    "1e309",
    "-1e309",
    "-0",
    "-0.0",
    "0",
    "-1",
    "1",
    "2",
    "0.5",
    "1e-320",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "100000000",
    "1e18",
    "0.999998",
    "1.000001",
    "null",
    "true",
    "\"1\"",
    "[]",
    "{}",
];

/// Strings that break labels and paths.
const STRINGS: &[&str] = &[
    "",
    "../x",
    "../../victim",
    "/etc/passwd",
    "a/b",
    "a/b/c",
    "/",
    "c00/ocr",
    "c01/vqa",
    "t0001",
    "x y",
    "$(touch PWNED)",
    "\\u0000",
    "\\n",
    "é",
    "\\ud800",
    "c00/ocr ",
];

/// Interesting bytes for byte-level mutation.
const BYTES: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'\n', b'\r', b',', b'"', b'{', b'}', b'[', b']', b':', b'/', b'.',
    b'-', b'e', b'0', b'9', b'\\', b' ',
];

/// A uniform index below `n` (`n` > 0).
fn below(rng: &mut SplitMix64, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

fn chance(rng: &mut SplitMix64, p: f64) -> bool {
    rng.next_f64() < p
}

/// One to four stacked mutations of `input`, some chosen by `target`'s format; `pool` (other
/// inputs of the same target) feeds splicing. The result is at most about 64 KiB.
pub fn mutate(target: &str, input: &[u8], pool: &[Vec<u8>], rng: &mut SplitMix64) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + below(rng, 4) {
        let structural = chance(rng, 0.6);
        out = if structural {
            match target {
                "megatron" => megatron(&out, rng),
                "config" => toml(&out, rng),
                "trials_csv" => csv(&out, rng),
                "steps_log" if out.len() > 2 => {
                    let mut v = out[..2].to_vec();
                    let body = &out[2..];
                    let b = if body.first() == Some(&b'{') {
                        json_lines(body, rng)
                    } else {
                        csv(body, rng)
                    };
                    v.extend(b);
                    v
                }
                _ => json_lines(&out, rng),
            }
        } else {
            bytes(&out, pool, rng)
        };
        out.truncate(1 << 16);
    }
    out
}

/// Byte-level mutations.
pub fn bytes(input: &[u8], pool: &[Vec<u8>], rng: &mut SplitMix64) -> Vec<u8> {
    let mut v = input.to_vec();
    if v.is_empty() {
        v.push(BYTES[below(rng, BYTES.len())]);
        return v;
    }
    let i = below(rng, v.len());
    match below(rng, 7) {
        0 => v[i] ^= 1 << below(rng, 8),
        1 => v[i] = BYTES[below(rng, BYTES.len())],
        2 => {
            let n = 1 + below(rng, (v.len() - i).min(64));
            v.drain(i..i + n);
        }
        3 => {
            let n = 1 + below(rng, (v.len() - i).min(64));
            let chunk = v[i..i + n].to_vec();
            let at = below(rng, v.len() + 1);
            v.splice(at..at, chunk);
        }
        4 => {
            let tok = NUMBERS[below(rng, NUMBERS.len())].as_bytes();
            v.splice(i..i, tok.iter().copied());
        }
        5 if !pool.is_empty() => {
            let other = &pool[below(rng, pool.len())];
            let cut = below(rng, other.len() + 1);
            v.truncate(i);
            v.extend_from_slice(&other[cut..]);
        }
        _ => v.truncate(i),
    }
    v
}

/// Re-emits each JSON line with mutations (lines that are not JSON get a byte mutation).
pub fn json_lines(input: &[u8], rng: &mut SplitMix64) -> Vec<u8> {
    let text = String::from_utf8_lossy(input);
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    if lines.is_empty() {
        return input.to_vec();
    }
    // Mutate one line, or the line structure.
    let i = below(rng, lines.len());
    match below(rng, 8) {
        0 => {
            let l = lines[i].clone();
            lines.insert(i, l);
        }
        1 if lines.len() > 1 => {
            lines.remove(i);
        }
        2 if lines.len() > 1 => {
            let j = below(rng, lines.len());
            lines.swap(i, j);
        }
        _ => match serde_json::from_str::<Value>(&lines[i]) {
            Ok(v) => {
                let nodes = count(&v).max(1);
                let mut s = String::new();
                emit(&v, rng, 1.5 / nodes as f64, &mut s, 0);
                lines[i] = s;
            }
            Err(_) => {
                lines[i] =
                    String::from_utf8_lossy(&bytes(lines[i].as_bytes(), &[], rng)).into_owned()
            }
        },
    }
    lines.join("\n").into_bytes()
}

fn count(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(count).sum::<usize>(),
        Value::Object(o) => 1 + o.values().map(count).sum::<usize>(),
        _ => 1,
    }
}

/// Writes `v` as JSON, mutating each node with probability `p`.
fn emit(v: &Value, rng: &mut SplitMix64, p: f64, out: &mut String, depth: usize) {
    if depth < 64 && chance(rng, p) {
        match v {
            Value::Object(o) => return emit_object(o, rng, p, out, depth, true),
            Value::Array(a) => return emit_array(a, rng, p, out, depth, true),
            Value::String(_) if chance(rng, 0.6) => {
                out.push('"');
                out.push_str(STRINGS[below(rng, STRINGS.len())]);
                out.push('"');
                return;
            }
            _ => {
                out.push_str(NUMBERS[below(rng, NUMBERS.len())]);
                return;
            }
        }
    }
    match v {
        Value::Object(o) => emit_object(o, rng, p, out, depth, false),
        Value::Array(a) => emit_array(a, rng, p, out, depth, false),
        other => out.push_str(&other.to_string()),
    }
}

fn emit_object(
    o: &serde_json::Map<String, Value>,
    rng: &mut SplitMix64,
    p: f64,
    out: &mut String,
    depth: usize,
    mutate: bool,
) {
    let mut entries: Vec<(String, Value)> = o.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if mutate {
        match below(rng, 6) {
            0 if !entries.is_empty() => {
                entries.remove(below(rng, entries.len()));
            }
            1 if !entries.is_empty() => {
                // A duplicated key, with the same or another value.
                let (k, v) = entries[below(rng, entries.len())].clone();
                let v = if chance(rng, 0.5) {
                    v
                } else {
                    Value::from(0.5)
                };
                entries.push((k, v));
            }
            2 => entries.push(("zz_unknown".into(), Value::from(1))),
            3 if !entries.is_empty() => {
                let i = below(rng, entries.len());
                entries[i].0 = STRINGS[below(rng, STRINGS.len())].to_string();
            }
            4 => entries.clear(),
            _ => {
                out.push_str(NUMBERS[below(rng, NUMBERS.len())]);
                return;
            }
        }
    }
    out.push('{');
    for (n, (k, v)) in entries.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        emit(v, rng, p, out, depth + 1);
    }
    out.push('}');
}

fn emit_array(
    a: &[Value],
    rng: &mut SplitMix64,
    p: f64,
    out: &mut String,
    depth: usize,
    mutate: bool,
) {
    let mut items = a.to_vec();
    if mutate {
        match below(rng, 5) {
            0 if !items.is_empty() => {
                items.remove(below(rng, items.len()));
            }
            1 if !items.is_empty() => {
                let x = items[below(rng, items.len())].clone();
                let n = if chance(rng, 0.2) { 300 } else { 1 };
                items.extend(std::iter::repeat_n(x, n));
            }
            2 => items.clear(),
            3 => items.push(Value::from("x")),
            _ => items.push(Value::Array(vec![])),
        }
    }
    out.push('[');
    for (n, v) in items.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        emit(v, rng, p, out, depth + 1);
    }
    out.push(']');
}

/// TOML: a value replaced, a line removed or duplicated, a table header repeated.
pub fn toml(input: &[u8], rng: &mut SplitMix64) -> Vec<u8> {
    let text = String::from_utf8_lossy(input);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        return bytes(input, &[], rng);
    }
    let i = below(rng, lines.len());
    match below(rng, 5) {
        0 => {
            let l = lines[i].clone();
            lines.insert(i, l);
        }
        1 => {
            lines.remove(i);
        }
        _ => {
            if let Some((k, _)) = lines[i].split_once('=') {
                const TOML_VALUES: &[&str] = &[
                    "nan",
                    "inf",
                    "-inf",
                    "-0.0",
                    "0",
                    "-1",
                    "1e308",
                    "9223372036854775807",
                    "18446744073709551616",
                    "100000000",
                    "\"\"",
                    "\"x\"",
                    "[]",
                    "{}",
                    "true",
                    "0.0",
                    "1.5",
                    "4294967296",
                ];
                lines[i] = format!("{k}= {}", TOML_VALUES[below(rng, TOML_VALUES.len())]);
            } else {
                return bytes(input, &[], rng);
            }
        }
    }
    (lines.join("\n") + "\n").into_bytes()
}

/// CSV: a field replaced, a column dropped or duplicated (in every row), a row duplicated.
pub fn csv(input: &[u8], rng: &mut SplitMix64) -> Vec<u8> {
    let text = String::from_utf8_lossy(input);
    let mut rows: Vec<Vec<String>> = text
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    if rows.is_empty() {
        return bytes(input, &[], rng);
    }
    let r = below(rng, rows.len());
    let c = below(rng, rows[r].len().max(1));
    match below(rng, 5) {
        0 => rows.iter_mut().for_each(|row| {
            if c < row.len() {
                row.remove(c);
            }
        }),
        1 => rows.iter_mut().for_each(|row| {
            if c < row.len() {
                let x = row[c].clone();
                row.push(x);
            }
        }),
        2 => {
            let row = rows[r].clone();
            rows.insert(r, row);
        }
        _ => {
            if c < rows[r].len() {
                let pick = if chance(rng, 0.8) { NUMBERS } else { STRINGS };
                rows[r][c] = pick[below(rng, pick.len())].to_string();
            }
        }
    }
    let lines: Vec<String> = rows.iter().map(|r| r.join(",")).collect();
    (lines.join("\n") + "\n").into_bytes()
}

/// A valid Megatron `.idx`/`.bin` pair in the megatron target's input layout.
pub fn megatron_valid(rng: &mut SplitMix64) -> Vec<u8> {
    let code = [1u8, 2, 3, 4, 5, 6, 7, 8][below(rng, 8)];
    let size = [1usize, 1, 2, 4, 8, 8, 4, 2][code as usize - 1];
    let n = below(rng, 6);
    let lens: Vec<i32> = (0..n).map(|_| below(rng, 5) as i32).collect();
    let mut idx = b"MMIDIDX\x00\x00".to_vec();
    idx.extend(1u64.to_le_bytes());
    idx.push(code);
    idx.extend((n as u64).to_le_bytes());
    let mut docs = vec![0i64];
    for i in 1..=n {
        if i == n || chance(rng, 0.5) {
            docs.push(i as i64);
        }
    }
    if n == 0 {
        docs = vec![0];
    }
    idx.extend((docs.len() as u64).to_le_bytes());
    for l in &lens {
        idx.extend(l.to_le_bytes());
    }
    let mut ptr = 0i64;
    for l in &lens {
        idx.extend(ptr.to_le_bytes());
        ptr += *l as i64 * size as i64;
    }
    for d in &docs {
        idx.extend(d.to_le_bytes());
    }
    let bin: Vec<u8> = (0..ptr).map(|_| below(rng, 4) as u8).collect();
    let mut out = (idx.len() as u32).to_le_bytes().to_vec();
    out.extend(idx);
    out.extend(bin);
    out
}

/// Rewrites a header field, a length, a pointer or a document index of a megatron-target
/// input (or starts from a fresh valid one).
pub fn megatron(input: &[u8], rng: &mut SplitMix64) -> Vec<u8> {
    if input.len() < 4 + 34 || chance(rng, 0.1) {
        return megatron_valid(rng);
    }
    let mut v = input.to_vec();
    let idx_len = u32::from_le_bytes(v[..4].try_into().unwrap()) as usize;
    const WORDS: &[i64] = &[
        0,
        1,
        -1,
        2,
        3,
        7,
        i32::MAX as i64,
        i32::MIN as i64,
        i64::MAX,
        i64::MIN,
        1 << 32,
        1 << 40,
        1 << 61,
    ];
    let word = WORDS[below(rng, WORDS.len())];
    match below(rng, 6) {
        0 => v[4 + 17] = below(rng, 11) as u8,
        1 => v[4 + 18..4 + 26].copy_from_slice(&word.to_le_bytes()),
        2 => v[4 + 26..4 + 34].copy_from_slice(&word.to_le_bytes()),
        3 => {
            // Any aligned 4- or 8-byte word of the index body.
            let body = idx_len.min(v.len() - 4).saturating_sub(34);
            if body >= 8 {
                let at = 4 + 34 + below(rng, body - 7) / 4 * 4;
                if chance(rng, 0.5) {
                    v[at..at + 4].copy_from_slice(&(word as i32).to_le_bytes());
                } else {
                    v[at..at + 8].copy_from_slice(&word.to_le_bytes());
                }
            }
        }
        4 => {
            let n = below(rng, v.len() + 1);
            v.truncate(n.max(4));
        }
        _ => {
            let l = idx_len.wrapping_add(below(rng, 17)).wrapping_sub(8) as u32;
            v[..4].copy_from_slice(&l.to_le_bytes());
        }
    }
    v
}
