//! The per-request log's stored form: chunks of entries, one sled value per
//! chunk, each chunk one minute's entries (keyed by the minute's start).
//!
//! A chunk is binary: a format byte, then its entries, each a run of
//! LEB128 varints and length-prefixed UTF-8 strings (~46 bytes, where the
//! same entry as JSON took ~200). sled's cost is per insert, not per byte,
//! so four times the entries per chunk cut the writer's CPU per request
//! by more than half. Chunks written before 2026-12-03 are JSON lines;
//! they start with `{`, and are still read and pruned. Binary chunks of
//! format 1 have no `cache_write_1h` count; they read with none. Format 3
//! turns the last byte into flags (bit 0: estimated; bit 1: media units
//! follow, five varints: images, image_input, audio_ms, chars,
//! image_output), so a
//! token-only entry is as long as in format 2. Older versions cannot read
//! format 3 chunks: the request log is not downgradable either.

use serde_json::{json, Value};

use super::ledger::{Charge, MINUTE_MS};
use crate::usage::{Units, Usage};

/// The first byte of a binary chunk (a JSON chunk starts with `{`).
const BINARY_V1: u8 = 1;
/// Format 2 adds the `cache_write_1h` count after `cache_write`.
const BINARY_V2: u8 = 2;
/// Format 3: the last byte is flags, media units may follow.
const BINARY_V3: u8 = 3;
const ESTIMATED: u8 = 1;
const MEDIA: u8 = 2;
/// A chunk closes once it is this long. sled keeps up to 16 values per
/// page and each of its 256 cache shards holds on to its newest page
/// whatever the cache bound, so the chunk size sets a floor under the
/// store's resident memory: one chunk per batch (~4 KB at 80 requests/s)
/// passed 20 MiB and still grew after 100,000 requests; with 1 KiB chunks it
/// settled near 8 MiB after ~45,000 (JSON entries; measured:
/// examples/ledger_memory.rs). With binary entries the store fills over
/// ~250,000 requests, and lower (docs/operations.md, "Memory").
pub(super) const CHUNK_BYTES: usize = 1024;

/// The batch's log entries in chunks of one minute (keyed by the minute's
/// start) and at most about `CHUNK_BYTES`, in queue order.
pub(super) fn chunks(batch: &[Charge]) -> Vec<(u64, Vec<u8>)> {
    let mut chunks: Vec<(u64, Vec<u8>)> = Vec::new();
    for c in batch {
        let minute = c.at_ms - c.at_ms % MINUTE_MS;
        let open = chunks
            .iter_mut()
            .rev()
            .find(|(m, chunk)| *m == minute && chunk.len() < CHUNK_BYTES);
        let chunk = match open {
            Some((_, chunk)) => chunk,
            None => {
                // Sized for the whole chunk: entries are written in place.
                let mut chunk = Vec::with_capacity(CHUNK_BYTES + 256);
                chunk.push(BINARY_V3);
                chunks.push((minute, chunk));
                &mut chunks.last_mut().expect("just pushed").1
            }
        };
        write_entry(c, chunk);
    }
    chunks
}

/// A stored chunk's entries, as `/admin/requests` shows them. A damaged
/// entry ends the chunk: what precedes it is still shown.
pub(super) fn read(chunk: &[u8]) -> Vec<Value> {
    match binary(chunk) {
        Some(entries) => entries.map(|e| e.to_json()).collect(),
        None => json_lines(chunk)
            .filter_map(|line| serde_json::from_slice(line).ok())
            .map(|mut entry: Value| {
                // JSON chunks predate 1-hour writes: show them as none.
                if let Some(fields) = entry.as_object_mut() {
                    fields.entry("cache_write_1h").or_insert(json!(0));
                }
                entry
            })
            .collect(),
    }
}

/// How many entries a stored chunk holds.
pub(super) fn count(chunk: &[u8]) -> usize {
    match binary(chunk) {
        Some(entries) => entries.count(),
        None => json_lines(chunk).count(),
    }
}

/// The entries of a binary chunk, or `None` for a JSON one.
fn binary(chunk: &[u8]) -> Option<Entries<'_>> {
    match chunk.split_first() {
        Some((&format, rest)) if (BINARY_V1..=BINARY_V3).contains(&format) => {
            Some(Entries { rest, format })
        }
        _ => None,
    }
}

fn json_lines(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    chunk.split(|&b| b == b'\n').filter(|line| !line.is_empty())
}

fn write_entry(c: &Charge, out: &mut Vec<u8>) {
    put_varint(out, c.at_ms);
    for text in [&c.key, &c.user, &c.group, &c.model, &c.channel] {
        put_varint(out, text.len() as u64);
        out.extend_from_slice(text.as_bytes());
    }
    let u = &c.usage;
    for count in [
        u.input,
        u.output,
        u.cached_input,
        u.cache_write,
        u.cache_write_1h,
    ] {
        put_varint(out, count);
    }
    // Zigzag: a refund's negative cost stays short.
    put_varint(out, ((c.cost_nanos << 1) ^ (c.cost_nanos >> 63)) as u64);
    let media = !c.units.is_empty();
    out.push(u8::from(c.estimated) * ESTIMATED + u8::from(media) * MEDIA);
    if media {
        let m = &c.units;
        for count in [m.images, m.image_input, m.audio_ms, m.chars, m.image_output] {
            put_varint(out, count);
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// One stored entry, borrowing its strings from the chunk.
#[derive(Debug, PartialEq)]
struct Entry<'a> {
    at_ms: u64,
    /// key, user, group, model, channel
    names: [&'a str; 5],
    usage: Usage,
    units: Units,
    cost_nanos: i64,
    estimated: bool,
}

impl Entry<'_> {
    /// The fields and names the JSON chunks had.
    fn to_json(&self) -> Value {
        let [key, user, group, model, channel] = self.names;
        let mut entry = json!({
            "at_ms": self.at_ms,
            "key": key,
            "user": user,
            "group": group,
            "model": model,
            "channel": channel,
            "input": self.usage.input,
            "output": self.usage.output,
            "cached_input": self.usage.cached_input,
            "cache_write": self.usage.cache_write,
            "cache_write_1h": self.usage.cache_write_1h,
            "cost_nanos": self.cost_nanos,
            "estimated": self.estimated,
        });
        // Media units only where an entry has any, as in /admin/usage rows.
        let m = &self.units;
        for (name, n) in [
            ("images", m.images),
            ("image_input", m.image_input),
            ("audio_ms", m.audio_ms),
            ("chars", m.chars),
            ("image_output", m.image_output),
        ] {
            if n != 0 {
                entry[name] = json!(n);
            }
        }
        entry
    }
}

/// Decodes a binary chunk's entries (after its format byte).
struct Entries<'a> {
    rest: &'a [u8],
    /// The chunk's format byte.
    format: u8,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        let entry = take_entry(&mut self.rest, self.format);
        if entry.is_none() {
            self.rest = &[];
        }
        entry
    }
}

fn take_entry<'a>(rest: &mut &'a [u8], format: u8) -> Option<Entry<'a>> {
    let at_ms = take_varint(rest)?;
    let mut names = [""; 5];
    for name in &mut names {
        *name = take_str(rest)?;
    }
    let usage = Usage {
        input: take_varint(rest)?,
        output: take_varint(rest)?,
        cached_input: take_varint(rest)?,
        cache_write: take_varint(rest)?,
        cache_write_1h: if format >= BINARY_V2 {
            take_varint(rest)?
        } else {
            0
        },
    };
    let zigzag = take_varint(rest)?;
    let cost_nanos = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
    let (&flags, tail) = rest.split_first()?;
    *rest = tail;
    let mut units = Units::default();
    if format >= BINARY_V3 && flags & MEDIA != 0 {
        for count in [
            &mut units.images,
            &mut units.image_input,
            &mut units.audio_ms,
            &mut units.chars,
            &mut units.image_output,
        ] {
            *count = take_varint(rest)?;
        }
    }
    Some(Entry {
        at_ms,
        names,
        usage,
        units,
        cost_nanos,
        estimated: flags & ESTIMATED != 0,
    })
}

fn take_varint(rest: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, tail) = rest.split_first()?;
        *rest = tail;
        n |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(n);
        }
    }
    None
}

fn take_str<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    let len = usize::try_from(take_varint(rest)?).ok()?;
    if len > rest.len() {
        return None;
    }
    let (text, tail) = rest.split_at(len);
    *rest = tail;
    std::str::from_utf8(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(at_ms: u64, key: &str) -> Charge {
        super::super::ledger::tests::charge(at_ms, key, "default", 1_234)
    }

    /// What the JSON chunks held for `c` (the serializer they used).
    fn as_json_chunks_had_it(c: &Charge) -> Value {
        json!({
            "at_ms": c.at_ms, "key": c.key, "user": c.user, "group": c.group,
            "model": c.model, "channel": c.channel, "input": c.usage.input,
            "output": c.usage.output, "cached_input": c.usage.cached_input,
            "cache_write": c.usage.cache_write, "cache_write_1h": c.usage.cache_write_1h,
            "cost_nanos": c.cost_nanos,
            "estimated": c.estimated,
        })
    }

    #[test]
    fn entries_read_back_exactly_whatever_their_text_and_numbers() {
        let mut odd = charge(u64::MAX, "back\\slash \"quoted\"");
        odd.user = String::new();
        odd.group = "g\u{1}\n\t".into();
        odd.model = "modèle-\u{7f}-😀".into();
        odd.channel = "c".repeat(300);
        odd.usage = Usage {
            input: 0,
            output: 127,
            cached_input: 128,
            cache_write: u64::MAX,
            cache_write_1h: 0,
        };
        odd.estimated = true;
        for cost in [i64::MIN, -42, -1, 0, 63, 64, i64::MAX] {
            odd.cost_nanos = cost;
            let batch = [charge(1_700_000_000_123, "key-1"), odd.clone()];
            let read: Vec<Value> = chunks(&batch).iter().flat_map(|(_, c)| read(c)).collect();
            let want: Vec<Value> = batch.iter().map(as_json_chunks_had_it).collect();
            assert_eq!(read, want);
        }
    }

    #[test]
    fn chunks_close_at_their_size_and_minute() {
        let t = 1_000 * MINUTE_MS;
        let mut batch: Vec<Charge> = (0..100).map(|i| charge(t + i, "k")).collect();
        batch.push(charge(t + MINUTE_MS, "k"));
        let mut one = Vec::new();
        write_entry(&batch[0], &mut one);
        let one = one.len();
        assert!(one < 50, "an entry takes {one} bytes");
        let chunks = chunks(&batch);
        let per_chunk = (CHUNK_BYTES - 1).div_ceil(one);
        assert_eq!(chunks.len(), 100usize.div_ceil(per_chunk) + 1);
        let mut at = Vec::new();
        for (minute, chunk) in &chunks {
            assert!(chunk.len() < CHUNK_BYTES + one, "{}", chunk.len());
            assert_eq!(count(chunk), read(chunk).len());
            for entry in read(chunk) {
                let entry_at = entry["at_ms"].as_u64().unwrap();
                assert_eq!(*minute, entry_at - entry_at % MINUTE_MS);
                at.push(entry_at);
            }
        }
        let sent: Vec<u64> = batch.iter().map(|c| c.at_ms).collect();
        assert_eq!(at, sent, "every entry once, in queue order");
    }

    #[test]
    fn json_chunks_of_earlier_versions_are_read_and_counted() {
        // As tollgate wrote them before binary chunks (serde_json's output).
        let stored = concat!(
            r#"{"at_ms":1764745200123,"key":"bench","user":"","group":"default","model":"gpt-4o-mini","channel":"bench","input":12,"output":64,"cached_input":0,"cache_write":0,"cost_nanos":40200,"estimated":false}"#,
            "\n",
            r#"{"at_ms":1764745201000,"key":"k\"2","user":"bob","group":"vip","model":"m","channel":"c","input":1,"output":2,"cached_input":3,"cache_write":4,"cost_nanos":-5,"estimated":true}"#
        );
        assert_eq!(count(stored.as_bytes()), 2);
        let mut second = charge(1_764_745_201_000, "k\"2");
        second.user = "bob".into();
        second.group = "vip".into();
        second.model = "m".into();
        second.channel = "c".into();
        second.usage = Usage {
            input: 1,
            output: 2,
            cached_input: 3,
            cache_write: 4,
            cache_write_1h: 0,
        };
        second.cost_nanos = -5;
        second.estimated = true;
        let read = read(stored.as_bytes());
        assert_eq!(read[1], as_json_chunks_had_it(&second));
        assert_eq!(read[0]["model"], "gpt-4o-mini");
        assert_eq!(read[0]["cost_nanos"], 40_200);
    }

    #[test]
    fn format_1_chunks_read_with_no_one_hour_writes() {
        // An entry as format 1 wrote it: four token counts.
        let mut chunk = vec![BINARY_V1];
        put_varint(&mut chunk, 1_764_745_200_123);
        for text in ["k", "u", "g", "m", "c"] {
            put_varint(&mut chunk, text.len() as u64);
            chunk.extend_from_slice(text.as_bytes());
        }
        for count in [12, 64, 3, 4] {
            put_varint(&mut chunk, count);
        }
        put_varint(&mut chunk, 40_200 << 1);
        chunk.push(0);
        assert_eq!(count(&chunk), 1);
        let mut want = charge(1_764_745_200_123, "k");
        (want.user, want.group, want.model, want.channel) =
            ("u".into(), "g".into(), "m".into(), "c".into());
        want.usage = Usage {
            input: 12,
            output: 64,
            cached_input: 3,
            cache_write: 4,
            cache_write_1h: 0,
        };
        want.cost_nanos = 40_200;
        assert_eq!(read(&chunk), vec![as_json_chunks_had_it(&want)]);
        // And the current format keeps the count.
        want.usage.cache_write_1h = 300;
        let (_, chunk) = &chunks(std::slice::from_ref(&want))[0];
        assert_eq!(chunk[0], BINARY_V3);
        assert_eq!(read(chunk)[0]["cache_write_1h"], 300);
    }

    #[test]
    fn media_units_are_kept_and_cost_token_entries_nothing() {
        let mut plain = charge(1_764_745_200_123, "k");
        plain.estimated = true;
        let (_, chunk) = &chunks(std::slice::from_ref(&plain))[0];
        // A token-only entry is as long as in format 2, whose last byte
        // was the estimated flag: read as format 2 it is the same entry.
        let mut v2 = chunk.clone();
        v2[0] = BINARY_V2;
        assert_eq!(read(&v2), read(chunk));
        assert_eq!(read(chunk)[0]["estimated"], true);
        assert!(read(chunk)[0].get("images").is_none());
        let mut media = charge(1_764_745_200_124, "m");
        media.units = Units {
            images: 2,
            image_input: 64,
            audio_ms: 8470,
            chars: 0,
            image_output: 1290,
        };
        let (_, chunk) = &chunks(&[plain.clone(), media.clone(), plain])[0];
        assert_eq!(count(chunk), 3);
        let entries = read(chunk);
        assert_eq!(
            (
                &entries[1]["images"],
                &entries[1]["image_input"],
                &entries[1]["audio_ms"],
                entries[1].get("chars")
            ),
            (&json!(2), &json!(64), &json!(8470), None)
        );
        assert_eq!(entries[1]["estimated"], false);
        assert_eq!(entries[2]["key"], "k", "the entry after media units reads");
    }

    #[test]
    fn a_damaged_chunk_shows_the_entries_before_the_damage() {
        let batch = [charge(1, "a"), charge(2, "b"), charge(3, "c")];
        let (_, chunk) = &chunks(&batch)[0];
        let mut second_end = vec![BINARY_V1];
        write_entry(&batch[0], &mut second_end);
        write_entry(&batch[1], &mut second_end);
        let cut = &chunk[..second_end.len() + 3];
        assert_eq!(count(cut), 2);
        assert_eq!(read(cut).len(), 2);
        // A string length past the end, and a varint that never ends.
        assert_eq!(count(&[BINARY_V1, 5, 200, 1]), 0);
        assert_eq!(
            count(&[BINARY_V1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            0
        );
        assert_eq!(count(&[]), 0, "an empty value is no entry");
    }
}
