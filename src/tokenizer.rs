//! Token counts with OpenAI's cl100k_base encoding, for usage estimates.
//!
//! Gives exactly tiktoken's `encode_ordinary(text).len()` (a test compares
//! it with tiktoken-rs) in ~2 MB instead of ~21 MB: tiktoken keeps each of
//! the 100,256 tokens three times as separate heap vectors (encoder,
//! decoder, sorted list). Counting needs only "rank of these bytes", so the
//! tokens live in one byte buffer behind an open-addressing index. The
//! tokenizer was two thirds of tollgate's idle memory.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::LazyLock;
use std::time::Instant;

use base64::Engine;
use fancy_regex::Regex;
use tracing::info;

/// Token count of a piece of text with the cl100k tokenizer (its
/// vocabulary is compiled in, so this works offline). Used only for
/// estimates: providers' own counts always win. cl100k rather than o200k:
/// estimates are approximate for most providers' models anyway, and its
/// tables are half the size.
pub fn estimate_tokens(text: &str) -> u64 {
    TOKENIZER.count(text)
}

static TOKENIZER: LazyLock<Cl100k> = LazyLock::new(Cl100k::load);

/// Output tokens of a streamed answer, for when it ends without a usage
/// report. Text is tokenized in batches of a few KiB rather than per delta:
/// tokenizing each one- or two-token delta cost ~1.4 µs per event, nearly
/// all of a stream's CPU in the gateway. The last batch is only tokenized
/// if the estimate is asked for, which it rarely is (providers report
/// usage). At most one batch of recent text is held, in memory only.
#[derive(Default)]
pub struct OutputEstimate {
    counted: u64,
    pending: String,
}

impl OutputEstimate {
    const BATCH_BYTES: usize = 2048;

    pub fn push(&mut self, text: &str) {
        self.pending.push_str(text);
        if self.pending.len() >= Self::BATCH_BYTES {
            self.counted += estimate_tokens(&self.pending);
            self.pending.clear();
        }
    }

    pub fn tokens(&self) -> u64 {
        self.counted + estimate_tokens(&self.pending)
    }
}

/// Builds the tokenizer tables (~40 ms, ~2 MB). Called once before the
/// listeners start, so that no request waits for it.
pub fn load_tokenizer() {
    let started = Instant::now();
    LazyLock::force(&TOKENIZER);
    info!(
        ms = started.elapsed().as_millis() as u64,
        "tokenizer loaded"
    );
}

/// One token per line: base64 bytes, space, rank (0, 1, 2, ... in order).
const VOCABULARY: &str = include_str!("../assets/cl100k_base.tiktoken");

/// cl100k's pre-tokenizer: words with their leading space, up to three
/// digits, punctuation runs, newlines, other whitespace. Text is split with
/// it first and BPE runs inside each piece.
const PATTERN: &str = concat!(
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+",
    r"| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"
);

type Rank = u32;

pub struct Cl100k {
    /// Every token's bytes, in rank order.
    bytes: Vec<u8>,
    /// Token `r` is `bytes[starts[r]..starts[r + 1]]`.
    starts: Vec<u32>,
    /// Open addressing, linear probing: `rank + 1`, 0 = empty slot.
    slots: Vec<u32>,
    splitter: Regex,
}

impl Cl100k {
    pub fn load() -> Self {
        let base64 = base64::engine::general_purpose::STANDARD;
        let lines = VOCABULARY.lines().count();
        let mut bytes = Vec::with_capacity(lines * 7);
        let mut starts = Vec::with_capacity(lines + 1);
        for (rank, line) in VOCABULARY.lines().enumerate() {
            let (encoded, listed_rank) = line.split_once(' ').expect("vocabulary line");
            debug_assert_eq!(listed_rank.parse::<usize>().ok(), Some(rank));
            starts.push(bytes.len() as u32);
            base64
                .decode_vec(encoded, &mut bytes)
                .expect("vocabulary token is base64");
        }
        starts.push(bytes.len() as u32);
        bytes.shrink_to_fit();

        let mut tokenizer = Cl100k {
            bytes,
            starts,
            slots: vec![0; (lines * 2).next_power_of_two()],
            splitter: Regex::new(PATTERN).expect("cl100k pattern compiles"),
        };
        for rank in 0..lines as Rank {
            let slot = tokenizer.free_slot(tokenizer.token(rank));
            tokenizer.slots[slot] = rank + 1;
        }
        tokenizer
    }

    /// Number of cl100k tokens in `text` (special tokens are plain text).
    pub fn count(&self, text: &str) -> u64 {
        let mut tokens = 0;
        for piece in self.splitter.find_iter(text) {
            let piece = match piece {
                Ok(piece) => piece.as_str().as_bytes(),
                // The backtracking limit, which this pattern does not reach
                // (every quantifier but one is possessive). An estimate must
                // not fail: count the rest at cl100k's ~4 bytes per token.
                Err(_) => return tokens + (text.len() as u64).div_ceil(4),
            };
            tokens += match self.rank(piece) {
                Some(_) => 1,
                None => self.merged_token_count(piece),
            };
        }
        tokens
    }

    fn token(&self, rank: Rank) -> &[u8] {
        let r = rank as usize;
        &self.bytes[self.starts[r] as usize..self.starts[r + 1] as usize]
    }

    fn rank(&self, piece: &[u8]) -> Option<Rank> {
        let mask = self.slots.len() - 1;
        let mut slot = hash(piece) & mask;
        loop {
            match self.slots[slot] {
                0 => return None,
                stored if self.token(stored - 1) == piece => return Some(stored - 1),
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    fn free_slot(&self, token: &[u8]) -> usize {
        let mask = self.slots.len() - 1;
        let mut slot = hash(token) & mask;
        while self.slots[slot] != 0 {
            slot = (slot + 1) & mask;
        }
        slot
    }

    /// Tokens of a piece that is not itself a token: byte-pair merging,
    /// always merging the adjacent pair whose joined bytes have the lowest
    /// rank (leftmost on ties), until no joined pair is a token. This is
    /// tiktoken's heap variant (`_byte_pair_merge_large`), O(n log n) even
    /// for a hostile megabyte-long word.
    fn merged_token_count(&self, piece: &[u8]) -> u64 {
        // Part starting at `i` ends at `end[i]`; `prev[i]` is the part
        // before it. `pair_rank[i]` is the rank of part `i` joined with
        // the part after it, as last pushed (stale heap entries differ).
        let n = piece.len();
        let mut end: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut pair_rank = vec![Rank::MAX; n];
        let mut heap = BinaryHeap::with_capacity(n);
        for (i, pair) in piece.windows(2).enumerate() {
            if let Some(rank) = self.rank(pair) {
                pair_rank[i] = rank;
                heap.push(Reverse((rank, i)));
            }
        }
        let joined_rank = |start: usize, end: &[usize]| {
            let next = end[start];
            if next < n {
                self.rank(&piece[start..end[next]])
            } else {
                None
            }
        };
        let mut parts = n as u64;
        while let Some(Reverse((rank, left))) = heap.pop() {
            if pair_rank[left] != rank {
                continue; // superseded by a merge next to it
            }
            let right = end[left];
            end[left] = end[right];
            pair_rank[right] = Rank::MAX;
            parts -= 1;
            if end[left] < n {
                prev[end[left]] = left;
            }
            // The merged part pairs anew with its neighbours on both sides.
            for start in [left].into_iter().chain((left > 0).then(|| prev[left])) {
                pair_rank[start] = match joined_rank(start, &end) {
                    Some(rank) => {
                        heap.push(Reverse((rank, start)));
                        rank
                    }
                    None => Rank::MAX,
                };
            }
        }
        parts
    }
}

/// FNV-1a: tokens are a few bytes long, so a simple byte loop is fastest.
fn hash(bytes: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h ^ (h >> 32)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_estimate_in_batches_matches_the_whole_text() {
        let deltas = ["Hello", " there", ",", " how", " are", " you", "?"];
        let mut short = OutputEstimate::default();
        deltas.iter().for_each(|d| short.push(d));
        assert_eq!(short.tokens(), estimate_tokens(&deltas.concat()));
        assert_eq!(short.tokens(), 7); // Hello| there|,| how| are| you|?
                                       // Past a batch, words cut at a batch edge may count once more.
        let mut long = OutputEstimate::default();
        let mut whole = String::new();
        for i in 0..3000 {
            let d = deltas[i % deltas.len()];
            long.push(d);
            whole.push_str(d);
        }
        let exact = estimate_tokens(&whole);
        assert!(
            long.tokens() >= exact && long.tokens() <= exact + 5,
            "{} vs {exact}",
            long.tokens()
        );
    }

    #[test]
    fn tokenizer_counts_offline() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("Hello there"), 2);
        assert_eq!(estimate_tokens("abcdefgh"), 1);
    }

    /// Deterministic text from a palette that hits every branch of the
    /// pattern: letters of several scripts, digits, contractions,
    /// punctuation, spaces, tabs, `\r\n`, emoji.
    fn mixed_text(seed: u64, len: usize) -> String {
        const PALETTE: &[&str] = &[
            "a", "e", "the", " ", "  ", "\t", "\n", "\r\n", "\n\n", "'s", "'LL", "'ve", "0", "7",
            "12345", ",", ".", "!!", "?", "-", "_", "{", "}\"", "é", "ß", "日本", "語", "한", "😀",
            "👍🏽", "Ω", "ж", "حب", "\u{a0}", "\u{3000}", "x", "Q", "ing", "tion",
        ];
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                PALETTE[(state % PALETTE.len() as u64) as usize]
            })
            .collect()
    }

    #[test]
    fn counts_exactly_as_tiktoken() {
        let reference = tiktoken_rs::cl100k_base_singleton();
        let ours = Cl100k::load();
        let mut texts: Vec<String> = [
            "",
            "Hello there",
            "I'm sure you'll see they've done it, haven't they?",
            "fn main() {\n    println!(\"{}\", 42);\n}\n",
            "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
            "   leading and trailing   ",
            "numbers 1 12 123 1234 12345678901234567890",
            "<|endoftext|> is plain text here",
            "\r\n\r\n  \n\t\t x",
            "日本語のテキストと한국어 텍스트",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Long pieces: many merges inside one word, and no merges at all.
        texts.push("supercalifragilistic".repeat(40));
        texts.push("😀".repeat(300));
        texts.push("ab".repeat(5000));
        texts.extend((0..300).map(|seed| mixed_text(seed, 1 + seed as usize % 200)));
        for text in &texts {
            assert_eq!(
                ours.count(text),
                reference.encode_ordinary(text).len() as u64,
                "{text:?}"
            );
        }
    }

    #[test]
    fn every_token_is_found_by_its_bytes() {
        let ours = Cl100k::load();
        for rank in 0..ours.starts.len() as Rank - 1 {
            assert_eq!(ours.rank(ours.token(rank)), Some(rank));
        }
        assert_eq!(ours.rank(b"not-a-token-at-all"), None);
    }
}
