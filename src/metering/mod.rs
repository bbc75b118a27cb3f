//! Metering: token usage as the providers report it, and estimates for
//! answers that end without a report.

/// Tokens of one request, by how they are priced. `input` excludes cached
/// reads and cache writes, so each token is billed exactly once.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_write: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input + self.output + self.cached_input + self.cache_write
    }
}

/// Rough token count of a text: one token per 4 bytes, rounded up.
pub fn estimate_tokens(text: &str) -> u64 {
    text.len().div_ceil(4) as u64
}
