//! The Anthropic, Gemini and Bedrock (event stream -> SSE) response
//! adapters under arbitrary answers and chunking: never panic; the ones
//! that promise not to change a byte pass every byte through unchanged.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tollgate::providers::anthropic::AnthropicAdapter;
use tollgate::providers::bedrock::EventStreamAdapter;
use tollgate::providers::gemini::GeminiAdapter;
use tollgate::providers::ResponseAdapter;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let stream = mode & 1 == 1;
    let mut adapter: Box<dyn ResponseAdapter> = match (mode >> 1) % 3 {
        0 => Box::new(AnthropicAdapter::new(stream)),
        1 => Box::new(GeminiAdapter::new(stream)),
        _ => Box::new(EventStreamAdapter::new()),
    };
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
    if !adapter.rewrites_body() {
        assert_eq!(out, rest, "a pass-through adapter changed bytes");
    }
});
