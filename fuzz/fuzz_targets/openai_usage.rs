//! The OpenAI response adapter (usage extraction, usage-chunk stripping)
//! under arbitrary answers and chunking: never panics; when it does not
//! strip, the client receives the upstream bytes unchanged; when it strips,
//! the client receives a subsequence of whole upstream bytes, never more.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tollgate::providers::openai::OpenAiAdapter;
use tollgate::providers::ResponseAdapter;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let stream = mode & 1 == 1;
    let strip = mode & 2 == 2;
    let mut adapter = OpenAiAdapter::new(stream, strip);
    let mut out = Vec::new();
    let mut at = 0;
    let mut step = mode as usize;
    while at < rest.len() {
        let len = (step % 64 + 1).min(rest.len() - at);
        out.extend_from_slice(&adapter.on_chunk(Bytes::copy_from_slice(&rest[at..at + len])));
        at += len;
        step = step.wrapping_mul(17).wrapping_add(5);
    }
    out.extend_from_slice(&adapter.on_end());
    let _ = adapter.usage();
    let _ = adapter.estimated_output_tokens();
    if stream && strip {
        assert!(out.len() <= rest.len());
    } else {
        assert_eq!(out, rest, "the adapter changed bytes it must pass through");
    }
    if let Some(u) = adapter.usage() {
        // Cached tokens are split out of the prompt, never added to it.
        assert!(u.input.checked_add(u.cached_input).is_some());
    }
});
