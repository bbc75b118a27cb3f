//! Criterion benchmarks of the pure functions on every request:
//! `cargo bench --bench hot_paths`. The load harness is `benches/run.sh`.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::SeedableRng;

use tollgate::body;
use tollgate::config;
use tollgate::health::HealthRegistry;
use tollgate::metering::cost::cost_nanos;
use tollgate::providers::openai::OpenAiAdapter;
use tollgate::providers::{Endpoint, OpenAiOp, ResponseAdapter};
use tollgate::routing;
use tollgate::sse::SseParser;
use tollgate::usage::Usage;

/// Three groups; the model is served by two tiers of three channels each in
/// the second group, so a pick walks a missing group and a weighted tier.
fn snapshot() -> config::Snapshot {
    let mut text = String::from(
        r#"
[server]
data_dir = "/nonexistent"
[[groups]]
name = "first"
ratio = 1.0
[[groups]]
name = "second"
ratio = 0.5
[[groups]]
name = "third"
ratio = 2.0
all_channels = true
[[models]]
name = "gpt-4o-mini"
input = 0.15
output = 0.60
cached_input = 0.075
[[models]]
name = "other"
input = 1
output = 1
[[models]]
name = "claude-sonnet-4-6"
input = 3
output = 15
cached_input = 0.3
cache_write = 3.75
cache_write_1h = 6
tiers = [{ above_input_tokens = 200000, input = 6, output = 22.5, cached_input = 0.6, cache_write = 7.5, cache_write_1h = 12 },
         { above_input_tokens = 1000000, input = 12 }]
"#,
    );
    for (i, priority) in [10, 10, 10, 0, 0, 0].iter().enumerate() {
        let groups = if i == 0 { "first" } else { "second" };
        let model = if i == 0 { "other" } else { "gpt-4o-mini" };
        text.push_str(&format!(
            "[[channels]]\nname = \"c{i}\"\ntype = \"openai\"\nbase_url = \"http://127.0.0.1:9\"\napi_key = \"k\"\ngroups = [\"{groups}\"]\nmodels = [\"{model}\"]\npriority = {priority}\nweight = {}\n",
            i + 1
        ));
    }
    config::load_text(
        "bench.toml",
        text,
        &|_| None,
        &HealthRegistry::default(),
        1,
        &mut Default::default(),
    )
    .expect("bench config loads")
    .snapshot
}

fn channel_pick(c: &mut Criterion) {
    let snap = snapshot();
    let groups: Vec<usize> = (0..snap.groups.len()).collect();
    let mut rng = StdRng::seed_from_u64(1);
    c.bench_function("routing::next_channel (3 groups, 2 tiers)", |b| {
        b.iter(|| {
            let wanted = routing::Wanted {
                groups: black_box(&groups),
                model: black_box("gpt-4o-mini"),
                endpoint: Endpoint::OpenAi(OpenAiOp::Chat),
                sticky: None,
            };
            routing::next_channel(&snap, &wanted, &[], &mut |_| true, &mut rng)
        })
    });
}

/// A chat request of about `size` bytes with `model` and `stream` after the
/// messages, as many SDKs order them.
fn chat_body(size: usize) -> Vec<u8> {
    let filler = "lorem ipsum dolor sit amet ".repeat(size / 27 + 1);
    let content = &filler[..size.saturating_sub(120)];
    format!(
        r#"{{"messages":[{{"role":"system","content":"be brief"}},{{"role":"user","content":"{content}"}}],"model":"gpt-4o-mini","stream":false,"max_tokens":256}}"#
    )
    .into_bytes()
}

fn model_extraction(c: &mut Criterion) {
    let mut g = c.benchmark_group("body::probe");
    for (name, size) in [("1 KB", 1024), ("1 MiB", 1024 * 1024)] {
        let body = chat_body(size);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| b.iter(|| body::probe(black_box(&body)).unwrap()));
    }
    g.finish();
}

const EVENT: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" token\"},\"finish_reason\":null}]}\n\n";
const USAGE: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":64,\"total_tokens\":76}}\n\n";

fn sse_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse::SseParser");
    g.throughput(Throughput::Elements(1));
    g.bench_function("one event per push", |b| {
        let mut parser = SseParser::default();
        let event = Bytes::from_static(EVENT);
        b.iter(|| {
            let mut n = 0;
            parser.push(black_box(&event), &mut |e| n += e.data.len());
            n
        })
    });
    g.finish();
}

fn usage_extraction(c: &mut Criterion) {
    let mut g = c.benchmark_group("OpenAiAdapter");
    let answer = Bytes::from(format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":12,"completion_tokens":180,"total_tokens":192}}}}"#,
        "The quick brown fox jumps over the lazy dog. ".repeat(18)
    ));
    g.bench_function("non-stream 1 KB answer", |b| {
        b.iter(|| {
            let mut a = OpenAiAdapter::new(false, false);
            a.on_chunk(black_box(answer.clone()));
            a.on_end();
            a.usage().unwrap()
        })
    });
    let mut stream = EVENT.repeat(64);
    stream.extend_from_slice(USAGE);
    stream.extend_from_slice(b"data: [DONE]\n\n");
    let events: Vec<Bytes> = stream
        .split_inclusive(|&b| b == b'\n')
        .collect::<Vec<_>>()
        .chunks(2)
        .map(|lines| Bytes::from(lines.concat()))
        .collect();
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("stream of 64 events + usage, strip usage chunk", |b| {
        b.iter_batched(
            || OpenAiAdapter::new(true, true),
            |mut a| {
                for e in &events {
                    black_box(a.on_chunk(e.clone()));
                }
                a.on_end();
                a.usage().unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn cost(c: &mut Criterion) {
    let snap = snapshot();
    let price = &snap.prices["gpt-4o-mini"];
    let ratio = snap.groups[1].ratio;
    let usage = Usage {
        input: 1_234,
        output: 567,
        cached_input: 4_096,
        cache_write: 0,
        cache_write_1h: 0,
    };
    c.bench_function("metering::cost::cost_nanos", |b| {
        b.iter(|| cost_nanos(black_box(price), black_box(ratio), black_box(&usage)))
    });
    // Long-context pricing: two tiers to choose from, the first one passed,
    // and every token kind priced.
    let tiered = &snap.prices["claude-sonnet-4-6"];
    let long = Usage {
        input: 150_000,
        output: 1_000,
        cached_input: 40_000,
        cache_write: 5_000,
        cache_write_1h: 5_001,
    };
    c.bench_function("metering::cost::cost_nanos (tier, 1-hour writes)", |b| {
        b.iter(|| cost_nanos(black_box(tiered), black_box(ratio), black_box(&long)))
    });
}

criterion_group!(
    benches,
    channel_pick,
    model_extraction,
    sse_parse,
    usage_extraction,
    cost
);
criterion_main!(benches);
