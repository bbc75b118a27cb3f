//! Payloads follow the shapes the Anthropic Messages API and the OpenAI
//! Chat Completions API document (and DeepSeek's `reasoning_content`).

use super::common::*;
use super::stream::*;
use super::to_anthropic::*;
use super::to_chat::*;
use super::*;
use bytes::BytesMut;
use serde_json::{json, Value};

fn to_chat(request: Value) -> Value {
    let body = anthropic_request_to_chat(&to_bytes(&request), "gpt-4o").expect("translates");
    serde_json::from_slice(&body).expect("json")
}

fn to_anthropic(request: Value) -> Value {
    let body = chat_request_to_anthropic(&to_bytes(&request), "claude-sonnet-4-5", 4096)
        .expect("translates");
    serde_json::from_slice(&body).expect("json")
}

fn refused_to_chat(request: Value) -> String {
    anthropic_request_to_chat(&to_bytes(&request), "gpt-4o")
        .expect_err("refused")
        .field
}

fn refused_to_anthropic(request: Value) -> String {
    chat_request_to_anthropic(&to_bytes(&request), "claude-sonnet-4-5", 4096)
        .expect_err("refused")
        .field
}

fn answer_to_anthropic(answer: Value) -> Value {
    let body = chat_response_to_anthropic(&to_bytes(&answer), "claude-client").expect("translates");
    serde_json::from_slice(&body).expect("json")
}

fn answer_to_chat(answer: Value) -> Value {
    let body = anthropic_response_to_chat(&to_bytes(&answer), "gpt-client").expect("translates");
    serde_json::from_slice(&body).expect("json")
}

/// A user turn of text, as both dialects accept it.
fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

// ---------------------------------------------------------------------
// Anthropic request → chat.

#[test]
fn anthropic_text_request_keeps_system_sampling_and_stops() {
    let chat = to_chat(json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": "You are terse.",
        "messages": [user("Hello")],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "stop_sequences": ["END", "STOP"],
        "metadata": {"user_id": "u-42"},
        "service_tier": "auto",
    }));
    assert_eq!(
        chat,
        json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hello"},
            ],
            "max_tokens": 1024,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": ["END", "STOP"],
            "user": "u-42",
        })
    );
}

#[test]
fn anthropic_stream_request_asks_for_the_usage_chunk() {
    let chat = to_chat(json!({"max_tokens": 10, "stream": true, "messages": [user("Hi")]}));
    assert_eq!(chat["stream"], json!(true));
    assert_eq!(chat["stream_options"], json!({"include_usage": true}));
    let chat = to_chat(json!({"max_tokens": 10, "stream": false, "messages": [user("Hi")]}));
    assert!(chat.get("stream").is_none() && chat.get("stream_options").is_none());
}

#[test]
fn anthropic_system_blocks_join_and_lose_cache_control() {
    let chat = to_chat(json!({
        "max_tokens": 100,
        "system": [
            {"type": "text", "text": "You are Claude Code."},
            {"type": "text", "text": "Be careful.", "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}},
        ]}],
    }));
    assert_eq!(
        chat["messages"],
        json!([
            {"role": "system", "content": "You are Claude Code.\n\nBe careful."},
            {"role": "user", "content": "Hi"},
        ])
    );
}

/// Claude Code's first request for a model it does not know (e.g.
/// `deepseek-chat` behind a gateway) carries its environment as a
/// mid-conversation `system` message after the user's turn.
#[test]
fn anthropic_system_messages_stay_chat_system_messages_in_place() {
    let chat = to_chat(json!({
        "max_tokens": 100,
        "system": [{"type": "text", "text": "You are Claude Code."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>Attribution</system-reminder>"},
                {"type": "text", "text": "Hello there"},
            ]},
            {"role": "system", "content": [
                {"type": "text", "text": "# Environment"},
                {"type": "text", "text": "cwd: /tmp", "cache_control": {"type": "ephemeral"}},
            ]},
            {"role": "assistant", "content": "Hi."},
            {"role": "system", "content": "Be brief."},
            user("Again"),
        ],
    }));
    assert_eq!(
        chat["messages"],
        json!([
            {"role": "system", "content": "You are Claude Code."},
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>Attribution</system-reminder>"},
                {"type": "text", "text": "Hello there"},
            ]},
            {"role": "system", "content": "# Environment\n\ncwd: /tmp"},
            {"role": "assistant", "content": "Hi."},
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Again"},
        ])
    );
    let image = json!({"type": "image", "source": {"type": "url", "url": "https://x/y.png"}});
    let refused = |message: Value| {
        refused_to_chat(json!({"max_tokens": 1, "messages": [user("Hi"), message]}))
    };
    assert_eq!(
        refused(json!({"role": "system", "content": [image]})),
        "messages[1].content"
    );
    assert_eq!(
        refused(json!({"role": "developer", "content": "x"})),
        "messages[1].role"
    );
}

#[test]
fn anthropic_images_become_image_url_parts() {
    let chat = to_chat(json!({
        "max_tokens": 100,
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
            {"type": "text", "text": "Compare them."},
        ]}],
    }));
    assert_eq!(
        chat["messages"][0]["content"],
        json!([
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "text", "text": "Compare them."},
        ])
    );
}

#[test]
fn anthropic_documents_become_file_or_text_parts() {
    let chat = to_chat(json!({
        "max_tokens": 100,
        "messages": [{"role": "user", "content": [
            {"type": "document", "title": "report.pdf", "citations": {"enabled": true},
             "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain notes"}},
        ]}],
    }));
    assert_eq!(
        chat["messages"][0]["content"],
        json!([
            {"type": "file", "file": {"filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
            {"type": "text", "text": "plain notes"},
        ])
    );
}

#[test]
fn anthropic_tool_turns_become_tool_calls_and_tool_messages() {
    let chat = to_chat(json!({
        "max_tokens": 1024,
        "messages": [
            user("Weather in Paris and Rome?"),
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Two lookups.", "signature": "sig=="},
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18°C"},
                {"type": "tool_result", "tool_use_id": "toolu_01B", "is_error": true,
                 "content": [{"type": "text", "text": "timeout"}]},
                {"type": "text", "text": "Summarize."},
            ]},
        ],
    }));
    assert_eq!(
        chat["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": "Checking both.", "reasoning_content": "Two lookups.",
             "tool_calls": [
                {"id": "toolu_01A", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_01B", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
             ]},
            {"role": "tool", "tool_call_id": "toolu_01A", "content": "18°C"},
            {"role": "tool", "tool_call_id": "toolu_01B", "content": "Error: timeout"},
            {"role": "user", "content": "Summarize."},
        ])
    );
}

#[test]
fn anthropic_tool_only_assistant_turn_has_null_content_and_tool_images_follow() {
    let chat = to_chat(json!({
        "max_tokens": 1024,
        "messages": [
            user("Look at the screenshot."),
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                    {"type": "text", "text": "captured"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                ]},
            ]},
        ],
    }));
    assert_eq!(chat["messages"][1]["content"], Value::Null);
    assert_eq!(
        chat["messages"][1]["tool_calls"][0]["function"]["arguments"],
        json!("{}")
    );
    assert_eq!(
        chat["messages"][2],
        json!({"role": "tool", "tool_call_id": "toolu_1", "content": "captured"})
    );
    assert_eq!(
        chat["messages"][3],
        json!({"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
        ]})
    );
}

#[test]
fn anthropic_tools_and_tool_choice_map_to_functions() {
    let tools = json!([{
        "name": "get_weather",
        "description": "Current weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "cache_control": {"type": "ephemeral"},
    }]);
    let cases = [
        (json!({"type": "auto"}), json!("auto"), None),
        (json!({"type": "any"}), json!("required"), None),
        (json!({"type": "none"}), json!("none"), None),
        (
            json!({"type": "tool", "name": "get_weather"}),
            json!({"type": "function", "function": {"name": "get_weather"}}),
            None,
        ),
        (
            json!({"type": "auto", "disable_parallel_tool_use": true}),
            json!("auto"),
            Some(json!(false)),
        ),
    ];
    for (choice, want, parallel) in cases {
        let chat = to_chat(json!({
            "max_tokens": 100, "messages": [user("Hi")], "tools": tools, "tool_choice": choice,
        }));
        assert_eq!(chat["tool_choice"], want, "{choice}");
        assert_eq!(
            chat.get("parallel_tool_calls").cloned(),
            parallel,
            "{choice}"
        );
        assert_eq!(
            chat["tools"],
            json!([{"type": "function", "function": {
                "name": "get_weather",
                "description": "Current weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            }}])
        );
    }
    let chat = to_chat(json!({
        "max_tokens": 100, "messages": [user("Hi")], "tool_choice": {"type": "auto"},
    }));
    assert!(chat.get("tool_choice").is_none() && chat.get("tools").is_none());
}

#[test]
fn anthropic_thinking_budget_becomes_reasoning_effort() {
    let cases = [
        (1024, "low"),
        (4096, "low"),
        (4097, "medium"),
        (16384, "medium"),
        (16385, "high"),
    ];
    for (budget, effort) in cases {
        let chat = to_chat(json!({
            "max_tokens": 64000,
            "thinking": {"type": "enabled", "budget_tokens": budget},
            "messages": [user("Think.")],
        }));
        assert_eq!(chat["reasoning_effort"], json!(effort), "budget {budget}");
        // Reasoning models on OpenAI refuse `max_tokens`.
        assert_eq!(chat["max_completion_tokens"], json!(64000));
        assert!(chat.get("max_tokens").is_none());
    }
    let chat = to_chat(json!({
        "max_tokens": 100, "thinking": {"type": "disabled"}, "messages": [user("Hi")],
    }));
    assert!(chat.get("reasoning_effort").is_none());
    assert_eq!(chat["max_tokens"], json!(100));
}

#[test]
fn anthropic_output_format_becomes_response_format() {
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"}},
                        "required": ["name"], "additionalProperties": false});
    let want = json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema, "strict": true}});
    let chat = to_chat(json!({
        "max_tokens": 100, "messages": [user("Extract.")],
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
    }));
    assert_eq!(chat["response_format"], want);
    let chat = to_chat(json!({
        "max_tokens": 100, "messages": [user("Extract.")],
        "output_format": {"type": "json_schema", "schema": schema},
    }));
    assert_eq!(chat["response_format"], want);
}

#[test]
fn anthropic_requests_chat_cannot_express_are_refused_by_field() {
    let cases = [
        (
            json!({"max_tokens": 1, "messages": [user("Hi")],
                   "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
            "tools[0].type",
        ),
        (
            json!({"max_tokens": 1, "messages": [user("Hi")], "mcp_servers": [{"type": "url"}]}),
            "mcp_servers",
        ),
        (
            json!({"max_tokens": 1, "messages": [user("Hi"), {"role": "assistant", "content": "{"}]}),
            "messages[1].role",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "url", "url": "https://x/y.pdf"}},
            ]}]}),
            "messages[0].content[0].source",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
            ]}]}),
            "messages[0].content[0].source.type",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [
                {"type": "search_result", "source": "x", "title": "t", "content": []},
            ]}]}),
            "messages[0].content[0].type",
        ),
        (
            json!({"max_tokens": 1, "system": [{"type": "image"}], "messages": [user("Hi")]}),
            "system[0].type",
        ),
    ];
    for (request, field) in cases {
        assert_eq!(refused_to_chat(request), field);
    }
    let bad = anthropic_request_to_chat(b"{not json", "m").expect_err("bad json");
    assert_eq!(bad.field, "body");
}

// ---------------------------------------------------------------------
// Chat request → Anthropic.

#[test]
fn chat_text_request_keeps_system_sampling_and_stops() {
    let anthropic = to_anthropic(json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hello", "name": "ann"},
        ],
        "max_tokens": 300,
        "temperature": 0.5,
        "top_p": 0.8,
        "stop": "END",
        "user": "u-7",
        "n": 1,
        "logprobs": false,
        "seed": 3,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "service_tier": "default",
        "stream": true,
        "stream_options": {"include_usage": true},
    }));
    assert_eq!(
        anthropic,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 300,
            "system": [
                {"type": "text", "text": "You are terse."},
                {"type": "text", "text": "Answer in French."},
            ],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
            "temperature": 0.5,
            "top_p": 0.8,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u-7"},
            "stream": true,
        })
    );
}

#[test]
fn chat_max_tokens_prefers_max_completion_tokens_then_default() {
    let cases = [
        (
            json!({"max_completion_tokens": 500, "max_tokens": 100}),
            500,
        ),
        (json!({"max_tokens": 100}), 100),
        (json!({}), 4096),
    ];
    for (limits, want) in cases {
        let mut request = json!({"messages": [user("Hi")], "stop": ["a", "b"]});
        for (key, value) in limits.as_object().into_iter().flatten() {
            request[key] = value.clone();
        }
        let anthropic = to_anthropic(request);
        assert_eq!(anthropic["max_tokens"], json!(want));
        assert_eq!(anthropic["system"], Value::Null);
        assert_eq!(anthropic["stop_sequences"], json!(["a", "b"]));
    }
}

#[test]
fn chat_history_merges_into_alternating_turns() {
    let anthropic = to_anthropic(json!({
        "messages": [
            {"role": "system", "content": "Be brief."},
            user("Part one."),
            user("Part two."),
            {"role": "assistant", "content": "Calling tools.", "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
            ]},
            {"role": "tool", "tool_call_id": "call_a", "content": "18°C"},
            {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "12:00"}]},
            user("Thanks, and?"),
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": "Done."},
        ],
    }));
    assert_eq!(anthropic["system"], json!("Be brief."));
    assert_eq!(
        anthropic["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "Part one."},
                {"type": "text", "text": "Part two."},
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Calling tools."},
                {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_a", "content": "18°C"},
                {"type": "tool_result", "tool_use_id": "call_b", "content": [{"type": "text", "text": "12:00"}]},
                {"type": "text", "text": "Thanks, and?"},
            ]},
            {"role": "assistant", "content": [{"type": "text", "text": "Done."}]},
        ])
    );
}

#[test]
fn chat_images_and_pdfs_become_anthropic_blocks() {
    let anthropic = to_anthropic(json!({
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
        ]}],
    }));
    assert_eq!(
        anthropic["messages"][0]["content"],
        json!([
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
        ])
    );
}

#[test]
fn chat_tools_tool_choice_and_parallel_map_to_anthropic() {
    let tools = json!([
        {"type": "function", "function": {
            "name": "get_weather", "description": "Current weather", "strict": true,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }},
        {"type": "function", "function": {"name": "now"}},
    ]);
    let cases = [
        (json!("auto"), None, Some(json!({"type": "auto"}))),
        (json!("required"), None, Some(json!({"type": "any"}))),
        (json!("none"), Some(false), Some(json!({"type": "none"}))),
        (
            json!({"type": "function", "function": {"name": "now"}}),
            None,
            Some(json!({"type": "tool", "name": "now"})),
        ),
        (
            json!("required"),
            Some(false),
            Some(json!({"type": "any", "disable_parallel_tool_use": true})),
        ),
        (
            Value::Null,
            Some(false),
            Some(json!({"type": "auto", "disable_parallel_tool_use": true})),
        ),
        (Value::Null, Some(true), None),
    ];
    for (choice, parallel, want) in cases {
        let mut request = json!({"messages": [user("Hi")], "tools": tools, "tool_choice": choice});
        if let Some(parallel) = parallel {
            request["parallel_tool_calls"] = json!(parallel);
        }
        let anthropic = to_anthropic(request);
        assert_eq!(
            anthropic.get("tool_choice").cloned(),
            want,
            "{choice} {parallel:?}"
        );
        assert_eq!(
            anthropic["tools"],
            json!([
                {"name": "get_weather", "description": "Current weather", "strict": true,
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "now", "input_schema": {"type": "object"}},
            ])
        );
    }
}

#[test]
fn chat_reasoning_effort_becomes_a_thinking_budget_below_max_tokens() {
    let cases = [
        ("minimal", 64000, Some(1024)),
        ("low", 64000, Some(4096)),
        ("medium", 64000, Some(16384)),
        ("high", 64000, Some(32768)),
        ("high", 8000, Some(7999)),
        ("low", 1024, None),
        ("none", 64000, None),
    ];
    for (effort, max_tokens, budget) in cases {
        let anthropic = to_anthropic(json!({
            "messages": [user("Think.")], "reasoning_effort": effort, "max_completion_tokens": max_tokens,
        }));
        let want = budget.map(|b| json!({"type": "enabled", "budget_tokens": b}));
        assert_eq!(
            anthropic.get("thinking").cloned(),
            want,
            "{effort} {max_tokens}"
        );
    }
}

#[test]
fn chat_response_format_json_schema_becomes_output_config() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": false});
    let anthropic = to_anthropic(json!({
        "messages": [user("Give a.")],
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": true, "schema": schema}},
    }));
    assert_eq!(
        anthropic["output_config"],
        json!({"format": {"type": "json_schema", "schema": schema}})
    );
    let anthropic =
        to_anthropic(json!({"messages": [user("Hi")], "response_format": {"type": "text"}}));
    assert!(anthropic.get("output_config").is_none());
}

#[test]
fn chat_requests_anthropic_cannot_express_are_refused_by_field() {
    let cases = [
        (json!({"messages": [user("Hi")], "n": 2}), "n"),
        (
            json!({"messages": [user("Hi")], "logprobs": true, "top_logprobs": 2}),
            "logprobs",
        ),
        (
            json!({"messages": [user("Hi")], "response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (
            json!({"messages": [user("Hi")], "modalities": ["text", "audio"]}),
            "modalities",
        ),
        (
            json!({"messages": [user("Hi")], "logit_bias": {"50256": -100}}),
            "logit_bias",
        ),
        (
            json!({"messages": [user("Hi")], "functions": [{"name": "f"}]}),
            "functions",
        ),
        (
            json!({"messages": [user("Hi")], "web_search_options": {}}),
            "web_search_options",
        ),
        (
            json!({"messages": [{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
            ]}]}),
            "messages[0].content[0].type",
        ),
        (
            json!({"messages": [{"role": "user", "content": [
                {"type": "file", "file": {"file_id": "file-abc"}},
            ]}]}),
            "messages[0].content[0].file",
        ),
        (
            json!({"messages": [user("Hi"), {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\":"}},
            ]}]}),
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            json!({"messages": [user("Hi"), {"role": "function", "name": "f", "content": "x"}]}),
            "messages[1].role",
        ),
        (
            json!({"messages": [user("Hi")], "tools": [{"type": "custom", "custom": {"name": "x"}}]}),
            "tools[0].type",
        ),
    ];
    for (request, field) in cases {
        assert_eq!(refused_to_anthropic(request), field);
    }
    let bad = chat_request_to_anthropic(b"[1]", "m", 1).expect_err("not an object");
    assert_eq!(bad.field, "body");
}

#[test]
fn chat_history_restores_signed_thinking_and_drops_unsigned() {
    let call = |id: &str| json!({"id": id, "type": "function", "function": {"name": "ls", "arguments": "{}"}});
    let turn = |assistant: Value, tool_id: &str| {
        to_anthropic(json!({"messages": [
            user("List files."),
            assistant,
            {"role": "tool", "tool_call_id": tool_id, "content": "a.txt"},
        ]}))
    };
    let thinking = json!({"type": "thinking", "thinking": "Use ls.", "signature": "EqQBCg=="});
    let tool_use = json!({"type": "tool_use", "id": "toolu_9", "name": "ls", "input": {}});
    let result = json!({"type": "tool_result", "tool_use_id": "toolu_9", "content": "a.txt"});

    // The signature beside reasoning_content.
    let anthropic = turn(
        json!({"role": "assistant", "content": null, "reasoning_content": "Use ls.",
               "reasoning_signature": "EqQBCg==", "tool_calls": [call("toolu_9")]}),
        "toolu_9",
    );
    assert_eq!(
        anthropic["messages"][1]["content"],
        json!([thinking, tool_use])
    );
    // The signature carried in the tool call id, stripped from every id.
    let carried = format!("toolu_9{SIGNATURE_IN_ID}EqQBCg==");
    let anthropic = turn(
        json!({"role": "assistant", "content": null, "reasoning_content": "Use ls.",
               "tool_calls": [call(&carried)]}),
        &carried,
    );
    assert_eq!(
        anthropic["messages"][1]["content"],
        json!([thinking, tool_use])
    );
    assert_eq!(anthropic["messages"][2]["content"], json!([result]));
    // LiteLLM-style thinking_blocks, redacted ones included.
    let redacted = json!({"type": "redacted_thinking", "data": "EmwKAhgB"});
    let anthropic = turn(
        json!({"role": "assistant", "content": null, "thinking_blocks": [thinking, redacted],
               "tool_calls": [call("toolu_9")]}),
        "toolu_9",
    );
    assert_eq!(
        anthropic["messages"][1]["content"],
        json!([thinking, redacted, tool_use])
    );
    // Unsigned reasoning (a DeepSeek answer) cannot be sent to Anthropic.
    let anthropic = turn(
        json!({"role": "assistant", "content": null, "reasoning_content": "Use ls.",
               "tool_calls": [call("toolu_9")]}),
        "toolu_9",
    );
    assert_eq!(anthropic["messages"][1]["content"], json!([tool_use]));
}

// ---------------------------------------------------------------------
// Whole answers.

fn chat_answer(message: Value, finish_reason: &str, usage: Value) -> Value {
    json!({
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
        "usage": usage,
        "system_fingerprint": "fp_44709d6fcb",
    })
}

#[test]
fn chat_text_answer_becomes_an_anthropic_message_with_cache_usage() {
    let anthropic = answer_to_anthropic(chat_answer(
        json!({"role": "assistant", "content": "Hello!", "refusal": null, "annotations": []}),
        "stop",
        json!({
            "prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }),
    ));
    assert_eq!(
        anthropic,
        json!({
            "id": "msg_B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "type": "message",
            "role": "assistant",
            "model": "claude-client",
            "content": [{"type": "text", "text": "Hello!"}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": 86, "output_tokens": 300,
                      "cache_read_input_tokens": 1920, "cache_creation_input_tokens": 0},
        })
    );
}

#[test]
fn chat_tool_call_answer_with_reasoning_becomes_blocks() {
    let anthropic = answer_to_anthropic(chat_answer(
        json!({
            "role": "assistant",
            "content": null,
            "reasoning_content": "Two cities, two calls.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
            ],
        }),
        "tool_calls",
        // DeepSeek's usage shape.
        json!({"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140,
               "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36}),
    ));
    assert_eq!(
        anthropic["content"],
        json!([
            {"type": "thinking", "thinking": "Two cities, two calls.", "signature": ""},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
        ])
    );
    assert_eq!(anthropic["stop_reason"], json!("tool_use"));
    assert_eq!(anthropic["usage"]["input_tokens"], json!(36));
    assert_eq!(anthropic["usage"]["cache_read_input_tokens"], json!(64));
}

#[test]
fn chat_finish_reasons_map_to_stop_reasons() {
    let tool_call =
        json!([{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]);
    let cases = [
        ("stop", json!(null), "end_turn"),
        ("length", json!(null), "max_tokens"),
        ("content_filter", json!(null), "refusal"),
        ("tool_calls", tool_call.clone(), "tool_use"),
        // Some hosts say `stop` after tool calls.
        ("stop", tool_call, "tool_use"),
    ];
    for (finish, calls, want) in cases {
        let mut message = json!({"role": "assistant", "content": "x"});
        if !calls.is_null() {
            message["tool_calls"] = calls;
        }
        let anthropic = answer_to_anthropic(chat_answer(message, finish, json!(null)));
        assert_eq!(anthropic["stop_reason"], json!(want), "{finish}");
    }
    let refusal = answer_to_anthropic(chat_answer(
        json!({"role": "assistant", "content": null, "refusal": "I can't help with that."}),
        "stop",
        json!(null),
    ));
    assert_eq!(
        refusal["content"],
        json!([{"type": "text", "text": "I can't help with that."}])
    );
    assert_eq!(refusal["stop_reason"], json!("refusal"));
}

#[test]
fn anthropic_text_answer_becomes_a_chat_completion() {
    let chat = answer_to_chat(json!({
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "Hi! My name is Claude."}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 2095, "output_tokens": 503,
                  "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1800},
    }));
    assert!(chat["created"].as_u64().is_some_and(|t| t > 1_700_000_000));
    assert_eq!(
        chat_without_created(&chat),
        json!({
            "id": "chatcmpl-013Zva2CMHLNnXjNJJKqJ2EF",
            "object": "chat.completion",
            "model": "gpt-client",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "Hi! My name is Claude.", "refusal": null},
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": 3995, "completion_tokens": 503, "total_tokens": 4498,
                      "prompt_tokens_details": {"cached_tokens": 1800}},
        })
    );
}

fn chat_without_created(chat: &Value) -> Value {
    let mut chat = chat.clone();
    if let Some(object) = chat.as_object_mut() {
        object.remove("created");
    }
    chat
}

#[test]
fn anthropic_thinking_and_tool_answer_carries_the_signature() {
    let chat = answer_to_chat(json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
        "content": [
            {"type": "thinking", "thinking": "Need both.", "signature": "EqQBCg=="},
            {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_B", "name": "get_weather", "input": {"city": "Rome"}},
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 20},
    }));
    let choice = &chat["choices"][0];
    assert_eq!(choice["finish_reason"], json!("tool_calls"));
    assert_eq!(
        choice["message"],
        json!({
            "role": "assistant",
            "content": null,
            "refusal": null,
            "reasoning_content": "Need both.",
            "reasoning_signature": "EqQBCg==",
            "tool_calls": [
                {"id": format!("toolu_A{SIGNATURE_IN_ID}EqQBCg=="), "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_B", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
            ],
        })
    );
}

#[test]
fn anthropic_stop_reasons_map_to_finish_reasons() {
    let cases = [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ];
    for (stop, want) in cases {
        let chat = answer_to_chat(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "content": [],
            "stop_reason": stop, "usage": {"input_tokens": 1, "output_tokens": 1},
        }));
        assert_eq!(chat["choices"][0]["finish_reason"], json!(want), "{stop}");
    }
}

#[test]
fn signed_thinking_survives_a_round_trip_through_a_chat_client() {
    let anthropic_answer = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
        "content": [
            {"type": "thinking", "thinking": "List first.", "signature": "c2lnbmF0dXJl"},
            {"type": "text", "text": "Listing."},
            {"type": "tool_use", "id": "toolu_L", "name": "ls", "input": {"path": "."}},
        ],
        "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 7},
    });
    let chat = answer_to_chat(anthropic_answer.clone());
    // A client that keeps only the standard fields and reasoning_content
    // (as DeepSeek clients do) echoes the message back.
    let echoed = &chat["choices"][0]["message"];
    let message = json!({
        "role": "assistant",
        "content": echoed["content"],
        "reasoning_content": echoed["reasoning_content"],
        "tool_calls": echoed["tool_calls"],
    });
    let tool_id = echoed["tool_calls"][0]["id"].clone();
    let next = to_anthropic(json!({"messages": [
        user("What is here?"),
        message,
        {"role": "tool", "tool_call_id": tool_id, "content": "a.txt"},
    ]}));
    assert_eq!(next["messages"][1]["content"], anthropic_answer["content"]);
    assert_eq!(
        next["messages"][2]["content"],
        json!([{"type": "tool_result", "tool_use_id": "toolu_L", "content": "a.txt"}])
    );
}

#[test]
fn error_answers_are_errors() {
    let openai = br#"{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}"#;
    assert_eq!(
        chat_response_to_anthropic(openai, "m"),
        Err("Rate limit reached".to_string())
    );
    let anthropic =
        br#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#;
    assert_eq!(
        anthropic_response_to_chat(anthropic, "m"),
        Err("Overloaded".to_string())
    );
    assert!(chat_response_to_anthropic(b"<html>", "m").is_err());
    assert!(anthropic_response_to_chat(b"{\"type\": \"message\"}", "m").is_err());
    assert!(chat_response_to_anthropic(b"{\"choices\": []}", "m").is_err());
}

#[test]
fn upstream_error_messages_are_found_in_any_dialect() {
    let cases: [(&[u8], &str); 6] = [
        (
            br#"{"error": {"message": "bad key", "type": "invalid_request_error"}}"#,
            "bad key",
        ),
        (
            br#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#,
            "Overloaded",
        ),
        (
            br#"[{"error": {"code": 429, "message": "Quota", "status": "RESOURCE_EXHAUSTED"}}]"#,
            "Quota",
        ),
        (br#"{"error": "plain"}"#, "plain"),
        (br#"{"detail": "Not Found"}"#, "Not Found"),
        (b"  upstream timed out\n", "upstream timed out"),
    ];
    for (body, want) in cases {
        assert_eq!(upstream_error_message(body), want);
    }
    assert_eq!(
        upstream_error_message("é".repeat(3000).as_bytes())
            .chars()
            .count(),
        2000
    );
}

// ---------------------------------------------------------------------
// Streams: chat → Anthropic.

/// The events of an SSE text: (event name, data), `[DONE]` as a string.
fn events(out: &[u8]) -> Vec<(Option<String>, Value)> {
    let text = std::str::from_utf8(out).expect("utf-8");
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "whole events: {text:?}"
    );
    text.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            let mut name = None;
            let mut data = Value::Null;
            for line in event.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap_or_else(|_| json!(d));
                }
            }
            (name, data)
        })
        .collect()
}

fn chunk(delta: Value, finish_reason: Value) -> String {
    json!({
        "id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1694268190,
        "model": "gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        "usage": null,
    })
    .to_string()
}

fn usage_chunk(prompt: u64, cached: u64, completion: u64) -> String {
    json!({
        "id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1694268190,
        "model": "gpt-4o-mini", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": cached},
                  "completion_tokens_details": {"reasoning_tokens": 0}},
    })
    .to_string()
}

/// Feeds chat events one at a time, checking that each call writes whole
/// events only, and returns the Anthropic events written.
fn run_chat_stream(datas: &[String], finish: bool) -> Vec<(Option<String>, Value)> {
    let mut stream = ChatToAnthropicStream::new("claude-client");
    let mut all = BytesMut::new();
    for data in datas {
        let mut out = BytesMut::new();
        stream.on_event(data, &mut out);
        events(&out);
        all.extend_from_slice(&out);
    }
    if finish {
        stream.finish(&mut all);
    }
    events(&all)
}

fn ev(name: &str, data: Value) -> (Option<String>, Value) {
    (Some(name.to_string()), data)
}

fn message_start() -> (Option<String>, Value) {
    ev(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": "msg_abc", "type": "message", "role": "assistant", "model": "claude-client",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }}),
    )
}

fn block_start(index: u64, block: Value) -> (Option<String>, Value) {
    ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": index, "content_block": block}),
    )
}

fn block_delta(index: u64, delta: Value) -> (Option<String>, Value) {
    ev(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

fn block_stop(index: u64) -> (Option<String>, Value) {
    ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    )
}

fn message_end(stop: &str, usage: Value) -> Vec<(Option<String>, Value)> {
    vec![
        ev(
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": usage}),
        ),
        ev("message_stop", json!({"type": "message_stop"})),
    ]
}

fn anthropic_usage(input: u64, output: u64, cache_read: u64) -> Value {
    json!({"input_tokens": input, "output_tokens": output,
           "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": 0})
}

#[test]
fn chat_text_stream_becomes_anthropic_events() {
    let datas = [
        chunk(
            json!({"role": "assistant", "content": "", "refusal": null}),
            Value::Null,
        ),
        chunk(json!({"content": "Hello"}), Value::Null),
        chunk(json!({"content": " world"}), Value::Null),
        chunk(json!({}), json!("stop")),
        usage_chunk(1200, 1024, 5),
        "[DONE]".to_string(),
    ];
    let mut want = vec![
        message_start(),
        block_start(0, json!({"type": "text", "text": ""})),
        block_delta(0, json!({"type": "text_delta", "text": "Hello"})),
        block_delta(0, json!({"type": "text_delta", "text": " world"})),
        block_stop(0),
    ];
    want.extend(message_end("end_turn", anthropic_usage(176, 5, 1024)));
    assert_eq!(run_chat_stream(&datas, false), want);
    // finish() after the end writes nothing more.
    assert_eq!(run_chat_stream(&datas, true), want);
}

#[test]
fn chat_parallel_tool_call_stream_becomes_tool_use_blocks() {
    let call = |index: u64, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut call = json!({"index": index, "function": {"arguments": args}});
        if let (Some(id), Some(name)) = (id, name) {
            call = json!({"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": args}});
        }
        chunk(json!({"tool_calls": [call]}), Value::Null)
    };
    let datas = [
        chunk(json!({"role": "assistant", "content": null}), Value::Null),
        chunk(json!({"content": "Checking."}), Value::Null),
        call(0, Some("call_P"), Some("get_weather"), ""),
        call(0, None, None, "{\"ci"),
        call(0, None, None, "ty\": \"Paris\"}"),
        call(1, Some("call_R"), Some("get_weather"), ""),
        call(1, None, None, "{\"city\": \"Rome\"}"),
        chunk(json!({}), json!("tool_calls")),
        usage_chunk(80, 0, 30),
        "[DONE]".to_string(),
    ];
    let mut want = vec![
        message_start(),
        block_start(0, json!({"type": "text", "text": ""})),
        block_delta(0, json!({"type": "text_delta", "text": "Checking."})),
        block_stop(0),
        block_start(
            1,
            json!({"type": "tool_use", "id": "call_P", "name": "get_weather", "input": {}}),
        ),
        block_delta(
            1,
            json!({"type": "input_json_delta", "partial_json": "{\"ci"}),
        ),
        block_delta(
            1,
            json!({"type": "input_json_delta", "partial_json": "ty\": \"Paris\"}"}),
        ),
        block_stop(1),
        block_start(
            2,
            json!({"type": "tool_use", "id": "call_R", "name": "get_weather", "input": {}}),
        ),
        block_delta(
            2,
            json!({"type": "input_json_delta", "partial_json": "{\"city\": \"Rome\"}"}),
        ),
        block_stop(2),
    ];
    want.extend(message_end("tool_use", anthropic_usage(80, 30, 0)));
    assert_eq!(run_chat_stream(&datas, false), want);
}

#[test]
fn chat_reasoning_stream_becomes_a_thinking_block_then_text() {
    let datas = [
        chunk(
            json!({"role": "assistant", "content": null, "reasoning_content": ""}),
            Value::Null,
        ),
        chunk(
            json!({"content": null, "reasoning_content": "Let me"}),
            Value::Null,
        ),
        chunk(
            json!({"content": null, "reasoning_content": " think."}),
            Value::Null,
        ),
        chunk(
            json!({"content": "Answer", "reasoning_content": null}),
            Value::Null,
        ),
        // The usage arrives with the finish reason (Gemini's OpenAI API).
        json!({"id": "chatcmpl-abc", "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}})
        .to_string(),
        "[DONE]".to_string(),
    ];
    let mut want = vec![
        message_start(),
        block_start(
            0,
            json!({"type": "thinking", "thinking": "", "signature": ""}),
        ),
        block_delta(0, json!({"type": "thinking_delta", "thinking": "Let me"})),
        block_delta(0, json!({"type": "thinking_delta", "thinking": " think."})),
        block_stop(0),
        block_start(1, json!({"type": "text", "text": ""})),
        block_delta(1, json!({"type": "text_delta", "text": "Answer"})),
        block_stop(1),
    ];
    want.extend(message_end("max_tokens", anthropic_usage(10, 20, 0)));
    assert_eq!(run_chat_stream(&datas, false), want);
}

#[test]
fn chat_stream_without_usage_ends_at_done_or_finish() {
    let datas = [
        chunk(json!({"content": "Hi"}), Value::Null),
        chunk(json!({}), json!("stop")),
    ];
    let mut want = vec![
        message_start(),
        block_start(0, json!({"type": "text", "text": ""})),
        block_delta(0, json!({"type": "text_delta", "text": "Hi"})),
        block_stop(0),
    ];
    want.extend(message_end("end_turn", anthropic_usage(0, 0, 0)));
    let mut with_done = datas.to_vec();
    with_done.push("[DONE]".to_string());
    assert_eq!(run_chat_stream(&with_done, false), want);
    assert_eq!(run_chat_stream(&datas, true), want);
}

#[test]
fn chat_stream_with_usage_on_every_chunk_reports_the_last_count() {
    let counting = |delta: Value, finish: Value, completion: u64| {
        json!({"id": "chatcmpl-abc", "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
               "usage": {"prompt_tokens": 9, "completion_tokens": completion, "total_tokens": 9 + completion}})
        .to_string()
    };
    let datas = [
        counting(json!({"content": "A"}), Value::Null, 1),
        chunk(json!({}), json!("stop")),
        usage_chunk(9, 0, 2),
    ];
    let mut want = vec![
        message_start(),
        block_start(0, json!({"type": "text", "text": ""})),
        block_delta(0, json!({"type": "text_delta", "text": "A"})),
        block_stop(0),
    ];
    want.extend(message_end("end_turn", anthropic_usage(9, 2, 0)));
    assert_eq!(run_chat_stream(&datas, true), want);
}

#[test]
fn chat_stream_cut_mid_answer_still_ends_well_formed() {
    // Cut in a text block.
    let mut want = vec![
        message_start(),
        block_start(0, json!({"type": "text", "text": ""})),
        block_delta(0, json!({"type": "text_delta", "text": "Half"})),
        block_stop(0),
    ];
    want.extend(message_end("end_turn", anthropic_usage(0, 0, 0)));
    assert_eq!(
        run_chat_stream(&[chunk(json!({"content": "Half"}), Value::Null)], true),
        want
    );
    // Cut in a tool call's arguments.
    let call = json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                      "function": {"name": "f", "arguments": "{\"a\""}}]});
    let mut want = vec![
        message_start(),
        block_start(
            0,
            json!({"type": "tool_use", "id": "call_1", "name": "f", "input": {}}),
        ),
        block_delta(
            0,
            json!({"type": "input_json_delta", "partial_json": "{\"a\""}),
        ),
        block_stop(0),
    ];
    want.extend(message_end("tool_use", anthropic_usage(0, 0, 0)));
    assert_eq!(run_chat_stream(&[chunk(call, Value::Null)], true), want);
    // Nothing at all: a fresh message id, then an empty answer.
    let got = run_chat_stream(&[], true);
    assert_eq!(got[0].0.as_deref(), Some("message_start"));
    assert_eq!(got[0].1["message"]["content"], json!([]));
    assert_eq!(got[1..], message_end("end_turn", anthropic_usage(0, 0, 0)));
}

#[test]
fn chat_stream_error_becomes_an_anthropic_error_event() {
    let datas = [
        chunk(json!({"content": "Hi"}), Value::Null),
        json!({"error": {"message": "The server had an error", "type": "server_error"}})
            .to_string(),
        chunk(json!({"content": "late"}), Value::Null),
    ];
    let got = run_chat_stream(&datas, true);
    assert_eq!(
        got[3..],
        [ev(
            "error",
            json!({"type": "error", "error": {"type": "api_error", "message": "The server had an error"}})
        )]
    );
    assert_eq!(got.len(), 4);
}

#[test]
fn chat_stream_refusal_delta_ends_with_refusal() {
    let datas = [
        chunk(
            json!({"role": "assistant", "content": null, "refusal": ""}),
            Value::Null,
        ),
        chunk(json!({"refusal": "I can't."}), Value::Null),
        chunk(json!({}), json!("stop")),
        "[DONE]".to_string(),
    ];
    let got = run_chat_stream(&datas, false);
    assert_eq!(
        got[2],
        block_delta(0, json!({"type": "text_delta", "text": "I can't."}))
    );
    assert_eq!(got[4].1["delta"]["stop_reason"], json!("refusal"));
}

#[test]
fn stream_output_is_the_same_fed_at_once_or_one_event_at_a_time() {
    let datas = [
        chunk(json!({"reasoning_content": "Hmm"}), Value::Null),
        chunk(json!({"content": "Hi"}), Value::Null),
        chunk(json!({}), json!("stop")),
        usage_chunk(5, 0, 2),
    ];
    let mut stream = ChatToAnthropicStream::new("claude-client");
    let mut together = BytesMut::new();
    for data in &datas {
        stream.on_event(data, &mut together);
    }
    stream.finish(&mut together);
    let one_by_one = run_chat_stream(&datas, true);
    assert_eq!(events(&together), one_by_one);
}

// ---------------------------------------------------------------------
// Streams: Anthropic → chat.

/// A real Anthropic stream: `(event name, data)`.
fn anthropic_events(events: &[(&str, Value)]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|(name, data)| (name.to_string(), data.to_string()))
        .collect()
}

/// Feeds Anthropic events one at a time and returns each chat chunk as
/// `{delta, finish_reason}`, `{usage}` for the usage chunk, or `"[DONE]"`.
fn run_anthropic_stream(
    input: &[(String, String)],
    include_usage: bool,
    finish: bool,
) -> Vec<Value> {
    let mut stream = AnthropicToChatStream::new("gpt-client", include_usage);
    let mut all = BytesMut::new();
    for (name, data) in input {
        let mut out = BytesMut::new();
        stream.on_event(Some(name), data, &mut out);
        all.extend_from_slice(&out);
    }
    if finish {
        stream.finish(&mut all);
    }
    events(&all)
        .into_iter()
        .map(|(name, data)| {
            assert_eq!(name, None);
            if data == json!("[DONE]") || data.get("error").is_some() {
                return data;
            }
            assert_eq!(data["object"], json!("chat.completion.chunk"));
            assert_eq!(data["model"], json!("gpt-client"));
            assert_eq!(data["id"], json!("chatcmpl-01Abc"));
            assert!(data["created"].is_u64());
            match data["choices"].as_array().map(Vec::as_slice) {
                Some([]) => json!({"usage": data["usage"]}),
                Some([choice]) => {
                    assert_eq!(choice["index"], json!(0));
                    json!({"delta": choice["delta"], "finish_reason": choice["finish_reason"]})
                }
                _ => panic!("unexpected chunk {data}"),
            }
        })
        .collect()
}

fn message_start_event() -> (&'static str, Value) {
    (
        "message_start",
        json!({"type": "message_start", "message": {
            "id": "msg_01Abc", "type": "message", "role": "assistant", "content": [],
            "model": "claude-sonnet-4-5-20250929", "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 472, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 2048, "output_tokens": 2},
        }}),
    )
}

fn delta(delta: Value) -> Value {
    json!({"delta": delta, "finish_reason": null})
}

fn finish(reason: &str) -> Value {
    json!({"delta": {}, "finish_reason": reason})
}

fn role_chunk() -> Value {
    delta(json!({"role": "assistant", "content": ""}))
}

#[test]
fn anthropic_text_stream_becomes_chat_chunks_with_usage() {
    let input = anthropic_events(&[
        message_start_event(),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 15}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    let usage = json!({"usage": {"prompt_tokens": 2520, "completion_tokens": 15, "total_tokens": 2535,
                                 "prompt_tokens_details": {"cached_tokens": 2048}}});
    let text = [
        role_chunk(),
        delta(json!({"content": "Hello"})),
        delta(json!({"content": "!"})),
        finish("stop"),
    ];
    let mut want = text.to_vec();
    want.extend([usage, json!("[DONE]")]);
    assert_eq!(run_anthropic_stream(&input, true, false), want);
    assert_eq!(run_anthropic_stream(&input, true, true), want);
    let mut want = text.to_vec();
    want.push(json!("[DONE]"));
    assert_eq!(run_anthropic_stream(&input, false, false), want);
}

#[test]
fn anthropic_tool_stream_becomes_indexed_tool_call_chunks() {
    let input = anthropic_events(&[
        message_start_event(),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking."}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_P", "name": "get_weather", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Pa"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "ris\"}"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_R", "name": "get_weather", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Rome\"}"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 2}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 89}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    let tool = |index: u64, id: &str| {
        delta(
            json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                     "function": {"name": "get_weather", "arguments": ""}}]}),
        )
    };
    let args = |index: u64, piece: &str| {
        delta(json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    };
    assert_eq!(
        run_anthropic_stream(&input, false, false),
        [
            role_chunk(),
            delta(json!({"content": "Checking."})),
            tool(0, "toolu_P"),
            args(0, "{\"city\": \"Pa"),
            args(0, "ris\"}"),
            tool(1, "toolu_R"),
            args(1, "{\"city\": \"Rome\"}"),
            finish("tool_calls"),
            json!("[DONE]"),
        ]
    );
}

#[test]
fn anthropic_thinking_stream_becomes_reasoning_content_with_signature() {
    let input = anthropic_events(&[
        message_start_event(),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "I need"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": " a tool."}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAh=="}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_X", "name": "ls", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 40}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    assert_eq!(
        run_anthropic_stream(&input, false, false),
        [
            role_chunk(),
            delta(json!({"reasoning_content": "I need"})),
            delta(json!({"reasoning_content": " a tool."})),
            delta(json!({"reasoning_signature": "EqQBCgIYAh=="})),
            delta(
                json!({"tool_calls": [{"index": 0, "id": format!("toolu_X{SIGNATURE_IN_ID}EqQBCgIYAh=="),
                                         "type": "function", "function": {"name": "ls", "arguments": ""}}]})
            ),
            delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]})),
            finish("tool_calls"),
            json!("[DONE]"),
        ]
    );
}

#[test]
fn anthropic_server_tool_blocks_are_skipped_in_streams() {
    let input = anthropic_events(&[
        message_start_event(),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"query\": \"x\"}"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Found."}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    assert_eq!(
        run_anthropic_stream(&input, false, false),
        [
            role_chunk(),
            delta(json!({"content": "Found."})),
            finish("stop"),
            json!("[DONE]")
        ]
    );
}

#[test]
fn anthropic_stream_cut_mid_answer_still_ends_well_formed() {
    let input = anthropic_events(&[
        message_start_event(),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Half"}}),
        ),
    ]);
    let usage = json!({"usage": {"prompt_tokens": 2520, "completion_tokens": 2, "total_tokens": 2522,
                                 "prompt_tokens_details": {"cached_tokens": 2048}}});
    assert_eq!(
        run_anthropic_stream(&input, true, true),
        [
            role_chunk(),
            delta(json!({"content": "Half"})),
            finish("stop"),
            usage,
            json!("[DONE]")
        ]
    );
    // Cut after the stop reason: the finish chunk is not repeated.
    let input = anthropic_events(&[
        message_start_event(),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 9}}),
        ),
    ]);
    assert_eq!(
        run_anthropic_stream(&input, false, true),
        [role_chunk(), finish("length"), json!("[DONE]")]
    );
}

#[test]
fn anthropic_stream_error_becomes_a_chat_error_payload() {
    let input = anthropic_events(&[
        message_start_event(),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "late"}}),
        ),
    ]);
    assert_eq!(
        run_anthropic_stream(&input, true, true),
        [
            role_chunk(),
            json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": null}}),
        ]
    );
}

#[test]
fn anthropic_stream_reads_the_type_when_the_event_name_is_missing() {
    let mut stream = AnthropicToChatStream::new("gpt-client", false);
    let mut out = BytesMut::new();
    let (_, start) = message_start_event();
    stream.on_event(None, &start.to_string(), &mut out);
    let text = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}});
    stream.on_event(None, &text.to_string(), &mut out);
    stream.on_event(None, r#"{"type": "message_stop"}"#, &mut out);
    let got = events(&out);
    assert_eq!(got.len(), 4);
    assert_eq!(got[1].1["choices"][0]["delta"], json!({"content": "Hi"}));
    assert_eq!(got[3].1, json!("[DONE]"));
}
