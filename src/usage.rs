//! Token counts of one request, by how they are priced. A leaf: imports
//! nothing from the crate, so providers, metering and the access log share
//! it without depending on each other.

/// Tokens of one request, by how they are priced. `input` excludes cached
/// reads and cache writes, so each token is billed exactly once.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    /// Cache writes priced as `cache_write`: Anthropic's 5-minute writes,
    /// and writes of providers that do not tell their lifetime.
    pub cache_write: u64,
    /// Anthropic's 1-hour cache writes, priced as `cache_write_1h`.
    pub cache_write_1h: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.whole_input().saturating_add(self.output)
    }

    /// The request's whole prompt: fresh, cache-read and cache-written
    /// tokens (what long-context price tiers are chosen by).
    pub fn whole_input(&self) -> u64 {
        self.input
            .saturating_add(self.cached_input)
            .saturating_add(self.cache_write)
            .saturating_add(self.cache_write_1h)
    }
}
