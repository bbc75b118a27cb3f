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
    pub cache_write: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input
            .saturating_add(self.output)
            .saturating_add(self.cached_input)
            .saturating_add(self.cache_write)
    }
}
