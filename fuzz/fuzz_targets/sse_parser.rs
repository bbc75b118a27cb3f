//! SSE framing under arbitrary bytes and arbitrary chunking: never panics,
//! every byte comes out exactly once and in order (as event bytes or as the
//! tail at finish), and the chunking never changes the events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::sse::SseParser;

/// The first byte seeds the chunk sizes (1..=16 bytes, cycling).
fn chunks(data: &[u8]) -> Vec<&[u8]> {
    let Some((&seed, rest)) = data.split_first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut at = 0;
    let mut step = seed as usize;
    while at < rest.len() {
        let len = (step % 16 + 1).min(rest.len() - at);
        out.push(&rest[at..at + len]);
        at += len;
        step = step.wrapping_mul(31).wrapping_add(7);
    }
    out
}

/// (event name, data, raw bytes) of every event, plus the unfinished tail.
fn run(pieces: &[&[u8]]) -> (Vec<(String, String, Vec<u8>)>, Vec<u8>) {
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    for piece in pieces {
        parser.push(piece, &mut |e| {
            events.push((e.event.to_string(), e.data.to_string(), e.raw.to_vec()))
        });
    }
    let held = parser.pending_len();
    let mut tail_events = Vec::new();
    let tail = parser.finish(&mut |e| tail_events.push(e.raw.to_vec()));
    assert_eq!(tail.len(), held);
    assert!(tail_events.len() <= 1);
    (events, tail.to_vec())
}

fuzz_target!(|data: &[u8]| {
    let pieces = chunks(data);
    let whole: Vec<u8> = pieces.concat();
    let (events, tail) = run(&pieces);
    let mut joined: Vec<u8> = events.iter().flat_map(|e| e.2.clone()).collect();
    joined.extend_from_slice(&tail);
    assert_eq!(joined, whole, "bytes lost, duplicated or reordered");
    let (in_one_piece, tail_one) = run(&[&whole]);
    assert_eq!(events, in_one_piece, "chunking changed the events");
    assert_eq!(tail, tail_one);
});
