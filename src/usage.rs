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

/// What a media request used besides tokens (SPEC §13), by how it is
/// priced: images by count (at the per-image price of the request's size
/// and quality), input image tokens (gpt-image-1's
/// `input_tokens_details.image_tokens`), audio by duration in
/// milliseconds (so that a `per_second` price of a 3.42 s clip is exact),
/// and speech input by characters (Unicode scalar values).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Units {
    pub images: u64,
    pub image_input: u64,
    pub audio_ms: u64,
    pub chars: u64,
    /// Output image tokens that the provider counts apart (Gemini's
    /// `candidatesTokensDetails` of modality `IMAGE`), priced as
    /// `image_output`; they are not in `Usage::output` then.
    pub image_output: u64,
}

impl Units {
    pub fn is_empty(&self) -> bool {
        *self == Units::default()
    }

    /// Each kind from `self` where it is set, else from `other`.
    pub fn or(self, other: Units) -> Units {
        let pick = |a: u64, b: u64| if a != 0 { a } else { b };
        Units {
            images: pick(self.images, other.images),
            image_input: pick(self.image_input, other.image_input),
            audio_ms: pick(self.audio_ms, other.audio_ms),
            chars: pick(self.chars, other.chars),
            image_output: pick(self.image_output, other.image_output),
        }
    }
}
