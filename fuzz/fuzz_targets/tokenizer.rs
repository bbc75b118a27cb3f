//! The compact cl100k token counter behind usage estimates gives exactly
//! tiktoken's count on any text (lossy UTF-8 of the input), and never
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let expected = tiktoken_rs::cl100k_base_singleton()
        .encode_ordinary(&text)
        .len() as u64;
    assert_eq!(tollgate::metering::estimate_tokens(&text), expected);
});
