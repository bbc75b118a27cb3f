//! What the ledger records: one billed request ([`Charge`]) and the sums
//! it keeps per aggregate row and per total ([`Counts`]), with the
//! fixed-size byte layout of those sums in sled and the older layouts it
//! still reads.

use serde::Serialize;

use crate::usage::{Units, Usage};

/// One billed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// When it was billed: the hour of its aggregate row.
    pub at_ms: u64,
    /// When it was admitted: the day whose budget it counts in.
    pub admitted_ms: u64,
    pub key: String,
    /// "" when the key has no user.
    pub user: String,
    pub group: String,
    pub model: String,
    pub channel: String,
    pub usage: Usage,
    /// Media units (images, audio, characters) besides the tokens.
    pub units: Units,
    pub cost_nanos: i64,
    pub estimated: bool,
}

/// Summed usage: what the ledger stores per aggregate row and per total.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub requests: i64,
    pub input: i64,
    pub output: i64,
    pub cached_input: i64,
    pub cache_write: i64,
    pub cost_nanos: i64,
    /// Requests whose usage was estimated (the provider reported none).
    pub estimated: i64,
    /// Anthropic 1-hour cache writes (stored after the first seven: see
    /// `COUNTS_LEN_V1`).
    pub cache_write_1h: i64,
    /// Media units (SPEC §13), stored after `cache_write_1h`.
    pub images: i64,
    pub image_input: i64,
    pub audio_ms: i64,
    pub chars: i64,
    /// Output image tokens counted apart (Gemini), stored last.
    pub image_output: i64,
}

/// Stored counts are big-endian i64 fields in [`Counts::fields`] order.
/// Values written before `cache_write_1h` existed hold the first seven
/// fields only, values written before the media units the first eight,
/// values written before `image_output` the first twelve; they read with
/// none of the missing kinds and are rewritten whole the next time a batch
/// adds to them. A store written by this version is not readable by older
/// ones (they take a 104-byte value for a damaged one and read it as
/// zero): not downgradable.
const FIELDS: usize = 13;
pub(super) const COUNTS_LEN: usize = FIELDS * 8;
pub(super) const COUNTS_LEN_V1: usize = 7 * 8;
pub(super) const COUNTS_LEN_V2: usize = 8 * 8;
pub(super) const COUNTS_LEN_V3: usize = 12 * 8;

impl Counts {
    pub fn of(c: &Charge) -> Counts {
        let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Counts {
            requests: 1,
            input: tokens(c.usage.input),
            output: tokens(c.usage.output),
            cached_input: tokens(c.usage.cached_input),
            cache_write: tokens(c.usage.cache_write),
            cost_nanos: c.cost_nanos,
            estimated: i64::from(c.estimated),
            cache_write_1h: tokens(c.usage.cache_write_1h),
            images: tokens(c.units.images),
            image_input: tokens(c.units.image_input),
            audio_ms: tokens(c.units.audio_ms),
            chars: tokens(c.units.chars),
            image_output: tokens(c.units.image_output),
        }
    }

    /// Every token of every kind.
    pub fn tokens(&self) -> i64 {
        [
            self.input,
            self.output,
            self.cached_input,
            self.cache_write,
            self.cache_write_1h,
        ]
        .iter()
        .fold(0i64, |sum, n| sum.saturating_add(*n))
    }

    fn fields(&self) -> [i64; FIELDS] {
        [
            self.requests,
            self.input,
            self.output,
            self.cached_input,
            self.cache_write,
            self.cost_nanos,
            self.estimated,
            self.cache_write_1h,
            self.images,
            self.image_input,
            self.audio_ms,
            self.chars,
            self.image_output,
        ]
    }

    pub fn add(&mut self, other: &Counts) {
        let (a, b) = (self.fields(), other.fields());
        let sum: [i64; FIELDS] = std::array::from_fn(|i| a[i].saturating_add(b[i]));
        *self = Counts::from_fields(&sum);
    }

    fn from_fields(f: &[i64; FIELDS]) -> Counts {
        Counts {
            requests: f[0],
            input: f[1],
            output: f[2],
            cached_input: f[3],
            cache_write: f[4],
            cost_nanos: f[5],
            estimated: f[6],
            cache_write_1h: f[7],
            images: f[8],
            image_input: f[9],
            audio_ms: f[10],
            chars: f[11],
            image_output: f[12],
        }
    }

    pub(super) fn to_bytes(self) -> [u8; COUNTS_LEN] {
        let mut out = [0u8; COUNTS_LEN];
        for (i, v) in self.fields().iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
        }
        out
    }

    pub(super) fn from_bytes(b: &[u8]) -> Counts {
        if ![COUNTS_LEN, COUNTS_LEN_V1, COUNTS_LEN_V2, COUNTS_LEN_V3].contains(&b.len()) {
            return Counts::default();
        }
        let mut f = [0i64; FIELDS];
        for (field, bytes) in f.iter_mut().zip(b.chunks_exact(8)) {
            *field = i64::from_be_bytes(bytes.try_into().expect("8 bytes"));
        }
        Counts::from_fields(&f)
    }
}
