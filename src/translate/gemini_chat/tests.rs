//! Payloads follow the shapes the Gemini API (generateContent,
//! streamGenerateContent with `alt=sse`) and the OpenAI Chat Completions
//! API document.

use super::common::*;
use super::*;
use crate::sse::SseParser;
use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

fn to_chat(request: Value) -> Value {
    let body = gemini_request_to_chat(&to_bytes(&request), "gpt-4o", false).expect("translates");
    serde_json::from_slice(&body).expect("json")
}

fn to_gemini(request: Value) -> Value {
    let body = chat_request_to_gemini(&to_bytes(&request)).expect("translates");
    serde_json::from_slice(&body).expect("json")
}

fn refused_to_chat(request: Value) -> String {
    gemini_request_to_chat(&to_bytes(&request), "gpt-4o", false)
        .expect_err("refused")
        .field
}

fn refused_to_gemini(request: Value) -> String {
    chat_request_to_gemini(&to_bytes(&request))
        .expect_err("refused")
        .field
}

fn answer_to_chat(answer: Value) -> Value {
    let body = gemini_response_to_chat(&to_bytes(&answer), "gpt-client").expect("translates");
    let mut chat: Value = serde_json::from_slice(&body).expect("json");
    assert!(chat["created"].is_u64());
    chat.as_object_mut().unwrap().remove("created");
    chat
}

fn answer_to_gemini(answer: Value) -> Value {
    let body = chat_response_to_gemini(&to_bytes(&answer), "gemini-client").expect("translates");
    serde_json::from_slice(&body).expect("json")
}

fn user_text(text: &str) -> Value {
    json!({"role": "user", "parts": [{"text": text}]})
}

// ---------------------------------------------------------------------
// Gemini request → chat.

#[test]
fn gemini_text_request_keeps_system_sampling_stops_and_drops_top_k() {
    let chat = to_chat(json!({
        "systemInstruction": {"parts": [{"text": "You are terse."}, {"text": "Be kind."}]},
        "contents": [user_text("Hello")],
        "generationConfig": {
            "temperature": 0.2, "topP": 0.9, "topK": 40, "maxOutputTokens": 256,
            "stopSequences": ["END"], "presencePenalty": 0.5, "frequencyPenalty": 0.25,
            "seed": 7, "responseModalities": ["TEXT"],
        },
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
    }));
    assert_eq!(
        chat,
        json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "You are terse.\nBe kind."},
                {"role": "user", "content": "Hello"},
            ],
            "max_tokens": 256,
            "temperature": 0.2,
            "top_p": 0.9,
            "presence_penalty": 0.5,
            "frequency_penalty": 0.25,
            "seed": 7,
            "stop": ["END"],
        })
    );
}

#[test]
fn gemini_streaming_comes_from_the_path_and_asks_for_usage() {
    let body = to_bytes(&json!({"contents": [user_text("Hi")]}));
    let chat: Value =
        serde_json::from_slice(&gemini_request_to_chat(&body, "m", true).unwrap()).unwrap();
    assert_eq!(chat["stream"], json!(true));
    assert_eq!(chat["stream_options"], json!({"include_usage": true}));
    let chat = to_chat(json!({"contents": [{"parts": [{"text": "no role is user"}]}]}));
    assert!(chat.get("stream").is_none());
    assert_eq!(chat["messages"][0]["role"], "user");
}

#[test]
fn gemini_history_maps_calls_and_responses_by_name_and_order() {
    let chat = to_chat(json!({
        "contents": [
            user_text("Weather in Paris and Rome?"),
            {"role": "model", "parts": [
                {"text": "Let me look.", "thought": true},
                {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnLTE="},
                {"functionCall": {"name": "weather", "args": {"city": "Rome"}}},
                {"functionCall": {"name": "time", "args": {}}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "time", "response": {"now": "12:00"}}},
                {"functionResponse": {"name": "weather", "response": {"result": "sunny"}}},
                {"functionResponse": {"name": "weather", "response": {"result": "rain"}}},
                {"text": "Thanks"},
            ]},
        ],
    }));
    assert_eq!(
        chat["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "reasoning_content": "Let me look.", "tool_calls": [
                {"id": "call_1_1~sig~c2lnLTE=", "type": "function",
                 "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_1_2", "type": "function",
                 "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}},
                {"id": "call_1_3", "type": "function", "function": {"name": "time", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1_3", "content": "{\"now\":\"12:00\"}"},
            {"role": "tool", "tool_call_id": "call_1_1~sig~c2lnLTE=", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_1_2", "content": "rain"},
            {"role": "user", "content": "Thanks"},
        ])
    );
}

/// Gemini CLI answers a call with `{"output": text}` (Google's documented
/// key for a function's output): a chat host gets the text, as a Gemini
/// model would read it, not the object's JSON. An `error` stays JSON, so
/// the model still sees that the call failed.
#[test]
fn gemini_output_responses_reach_chat_as_their_text() {
    let chat = to_chat(json!({
        "contents": [
            user_text("Read it"),
            {"role": "model", "parts": [
                {"functionCall": {"id": "c1", "name": "read_file", "args": {"file_path": "a.txt"}}},
                {"functionCall": {"id": "c2", "name": "read_file", "args": {"file_path": "b.txt"}}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"id": "c1", "name": "read_file", "response": {"output": "line one\nline two\n"}}},
                {"functionResponse": {"id": "c2", "name": "read_file", "response": {"error": "no such file"}}},
            ]},
        ],
    }));
    assert_eq!(
        chat["messages"][2],
        json!({"role": "tool", "tool_call_id": "c1", "content": "line one\nline two\n"})
    );
    assert_eq!(
        chat["messages"][3],
        json!({"role": "tool", "tool_call_id": "c2", "content": "{\"error\":\"no such file\"}"})
    );
}

#[test]
fn gemini_call_ids_the_client_gave_are_kept_and_matched() {
    let chat = to_chat(json!({
        "contents": [
            user_text("Go"),
            {"role": "model", "parts": [
                {"functionCall": {"id": "call_up_1", "name": "f", "args": {"a": 1}}, "thoughtSignature": "U0lH"},
                {"functionCall": {"id": "call_up_2", "name": "f", "args": {"a": 2}}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"id": "call_up_2", "name": "f", "response": {"result": "two"}}},
                {"functionResponse": {"id": "call_up_1", "name": "f", "response": {"result": "one"}}},
            ]},
        ],
    }));
    let ids: Vec<&str> = chat["messages"][1]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["call_up_1~sig~U0lH", "call_up_2"]);
    assert_eq!(chat["messages"][2]["tool_call_id"], "call_up_2");
    assert_eq!(chat["messages"][3]["tool_call_id"], "call_up_1~sig~U0lH");
}

#[test]
fn gemini_media_becomes_chat_parts() {
    let chat = to_chat(json!({"contents": [{"role": "user", "parts": [
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0x"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"text": "Describe."},
    ]}]}));
    assert_eq!(
        chat["messages"][0]["content"],
        json!([
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            {"type": "file", "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {"type": "text", "text": "Describe."},
        ])
    );
}

#[test]
fn gemini_tools_and_calling_modes_map_to_chat() {
    let declarations = json!([{"functionDeclarations": [
        {"name": "weather", "description": "Weather of a city", "parameters": {
            "type": "OBJECT",
            "properties": {
                "city": {"type": "STRING", "example": "Paris"},
                "days": {"type": "INTEGER", "nullable": true},
                "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
            },
            "required": ["city"],
            "propertyOrdering": ["city", "days", "tags"],
        }},
        {"name": "time", "parametersJsonSchema": {"type": "object", "additionalProperties": false}},
        {"name": "noop"},
    ]}]);
    let with_mode = |config: Value| {
        to_chat(
            json!({"contents": [user_text("Hi")], "tools": declarations, "toolConfig": {"functionCallingConfig": config}}),
        )
    };
    let chat = with_mode(json!({"mode": "AUTO"}));
    assert_eq!(
        chat["tools"],
        json!([
            {"type": "function", "function": {"name": "weather", "description": "Weather of a city", "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": ["integer", "null"]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["city"],
            }}},
            {"type": "function", "function": {"name": "time", "parameters": {"type": "object", "additionalProperties": false}}},
            {"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}}},
        ])
    );
    assert!(chat.get("tool_choice").is_none());
    assert_eq!(with_mode(json!({"mode": "ANY"}))["tool_choice"], "required");
    assert_eq!(with_mode(json!({"mode": "NONE"}))["tool_choice"], "none");
    assert_eq!(
        with_mode(json!({"mode": "ANY", "allowedFunctionNames": ["time"]}))["tool_choice"],
        json!({"type": "function", "function": {"name": "time"}})
    );
    let several = with_mode(json!({"mode": "ANY", "allowedFunctionNames": ["time", "noop"]}));
    assert_eq!(several["tool_choice"], "required");
    let names: Vec<&str> = several["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["time", "noop"]);
}

#[test]
fn gemini_json_output_and_thinking_map_to_chat() {
    let chat = to_chat(json!({"contents": [user_text("Hi")], "generationConfig": {
        "responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "NUMBER"}}},
        "maxOutputTokens": 900,
        "thinkingConfig": {"thinkingBudget": 8000, "includeThoughts": true},
    }}));
    assert_eq!(
        chat["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "response", "schema":
            {"type": "object", "properties": {"a": {"type": "number"}}}}})
    );
    assert_eq!(chat["reasoning_effort"], "medium");
    assert_eq!(chat["max_completion_tokens"], 900);
    assert!(chat.get("max_tokens").is_none());
    let chat = to_chat(json!({"contents": [user_text("Hi")], "generationConfig": {
        "responseMimeType": "application/json", "thinkingConfig": {"thinkingLevel": "HIGH"},
    }}));
    assert_eq!(chat["response_format"], json!({"type": "json_object"}));
    assert_eq!(chat["reasoning_effort"], "high");
    let chat = to_chat(json!({"contents": [user_text("Hi")], "generationConfig": {
        "thinkingConfig": {"thinkingBudget": -1}, "maxOutputTokens": 5,
    }}));
    assert!(chat.get("reasoning_effort").is_none());
    assert_eq!(chat["max_tokens"], 5);
}

#[test]
fn gemini_requests_chat_cannot_express_are_refused_by_field() {
    let hi = json!([user_text("Hi")]);
    let cases = [
        (
            json!({"contents": hi, "cachedContent": "cachedContents/x"}),
            "cachedContent",
        ),
        (
            json!({"contents": hi, "tools": [{"googleSearch": {}}]}),
            "tools[0].googleSearch",
        ),
        (
            json!({"contents": hi, "generationConfig": {"candidateCount": 2}}),
            "generationConfig.candidateCount",
        ),
        (
            json!({"contents": hi, "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}}),
            "generationConfig.responseModalities",
        ),
        (
            json!({"contents": hi, "generationConfig": {"responseMimeType": "text/x.enum"}}),
            "generationConfig.responseMimeType",
        ),
        (
            json!({"contents": [user_text("Hi"), {"role": "model", "parts": [{"text": "Sure,"}]}]}),
            "contents[1].role",
        ),
        (
            json!({"contents": [{"role": "user", "parts": [{"executableCode": {"code": "1"}}]}]}),
            "contents[0].parts[0]",
        ),
        (
            json!({"contents": [{"role": "user", "parts": [{"fileData": {"fileUri": "gs://b/cat.png", "mimeType": "image/png"}}]}]}),
            "contents[0].parts[0].fileData.fileUri",
        ),
        (
            json!({"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "video/mp4", "data": "AA=="}}]}]}),
            "contents[0].parts[0].inlineData.mimeType",
        ),
        (
            json!({"contents": [user_text("Hi"), {"role": "model", "parts": [{"text": "ok"}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]}),
            "contents[2].parts[0].functionResponse.name",
        ),
        (
            json!({"contents": hi, "tools": [{"functionDeclarations": [{"name": "f"}]}],
                "toolConfig": {"functionCallingConfig": {"mode": "VALIDATED"}}}),
            "toolConfig.functionCallingConfig.mode",
        ),
    ];
    for (request, field) in cases {
        assert_eq!(refused_to_chat(request), field);
    }
}

// ---------------------------------------------------------------------
// Chat request → Gemini.

#[test]
fn chat_text_request_becomes_contents_config_and_system_instruction() {
    let gemini = to_gemini(json!({
        "model": "gemini-2.5-flash",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi!"},
            {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
            {"role": "user", "content": "Again"},
            {"role": "user", "content": [{"type": "text", "text": "and again"}]},
        ],
        "temperature": 0.3, "top_p": 0.8, "max_tokens": 100, "stop": "END",
        "seed": 1, "presence_penalty": 0.1, "frequency_penalty": 0.2,
        "user": "u-1", "parallel_tool_calls": false, "stream": true,
        "stream_options": {"include_usage": true},
    }));
    assert_eq!(
        gemini,
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "Hello"}]},
                {"role": "model", "parts": [{"text": "Hi!"}]},
                {"role": "user", "parts": [{"text": "Again"}, {"text": "and again"}]},
            ],
            "systemInstruction": {"parts": [{"text": "You are terse."}, {"text": "Be kind."}]},
            "generationConfig": {
                "maxOutputTokens": 100, "temperature": 0.3, "topP": 0.8,
                "presencePenalty": 0.1, "frequencyPenalty": 0.2, "seed": 1,
                "stopSequences": ["END"],
            },
        })
    );
}

#[test]
fn chat_images_become_inline_data_and_file_data() {
    let gemini = to_gemini(json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGR", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a/cat.PNG?x=1"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0x"}},
        {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}},
    ]}]}));
    assert_eq!(
        gemini["contents"][0]["parts"],
        json!([
            {"inlineData": {"mimeType": "image/webp", "data": "UklGR"}},
            {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a/cat.PNG?x=1"}},
            {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0x"}},
            {"inlineData": {"mimeType": "audio/mp3", "data": "SUQz"}},
        ])
    );
}

#[test]
fn chat_tool_turns_restore_signatures_and_name_responses() {
    let gemini = to_gemini(json!({
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": null, "reasoning_content": "thinking", "tool_calls": [
                {"id": "call_r_0~sig~c2lnLTE=", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_r_1", "type": "function", "function": {"name": "time", "arguments": ""}},
            ]},
            {"role": "tool", "tool_call_id": "call_r_0~sig~c2lnLTE=", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_r_1", "content": [{"type": "text", "text": "{\"now\": \"noon\"}"}]},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": false}}},
            {"type": "function", "function": {"name": "time"}},
        ],
        "tool_choice": "required",
    }));
    assert_eq!(
        gemini["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Weather?"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnLTE="},
                {"functionCall": {"name": "time", "args": {}}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "weather", "response": {"result": "sunny"}}},
                {"functionResponse": {"name": "time", "response": {"now": "noon"}}},
                {"text": "Thanks"},
            ]},
        ])
    );
    assert_eq!(
        gemini["tools"],
        json!([{"functionDeclarations": [
            {"name": "weather", "description": "d", "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": false}},
            {"name": "time"},
        ]}])
    );
    assert_eq!(
        gemini["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY"}})
    );
}

#[test]
fn chat_tool_choice_variants_map_to_calling_config() {
    let tools = json!([
        {"type": "function", "function": {"name": "a"}},
        {"type": "function", "function": {"name": "b"}},
    ]);
    let config = |choice: Value| {
        let g = to_gemini(
            json!({"messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": choice}),
        );
        (
            g["toolConfig"].clone(),
            g["tools"][0]["functionDeclarations"]
                .as_array()
                .unwrap()
                .len(),
        )
    };
    assert_eq!(
        config(json!("auto")).0,
        json!({"functionCallingConfig": {"mode": "AUTO"}})
    );
    assert_eq!(
        config(json!("none")).0,
        json!({"functionCallingConfig": {"mode": "NONE"}})
    );
    assert_eq!(
        config(json!({"type": "function", "function": {"name": "b"}})),
        (
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["b"]}}),
            2
        )
    );
    let allowed = |mode: &str| json!({"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": [{"type": "function", "function": {"name": "a"}}]}});
    assert_eq!(
        config(allowed("required")),
        (
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["a"]}}),
            2
        )
    );
    assert_eq!(
        config(allowed("auto")),
        (json!({"functionCallingConfig": {"mode": "AUTO"}}), 1)
    );
    let no_tools =
        to_gemini(json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "auto"}));
    assert!(no_tools.get("toolConfig").is_none() && no_tools.get("tools").is_none());
}

#[test]
fn chat_json_formats_and_reasoning_effort_map_to_generation_config() {
    let user = json!([{"role": "user", "content": "x"}]);
    let g = to_gemini(json!({"messages": user, "response_format": {"type": "json_object"}}));
    assert_eq!(
        g["generationConfig"],
        json!({"responseMimeType": "application/json"})
    );
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": false});
    let g = to_gemini(
        json!({"messages": user, "max_completion_tokens": 50, "reasoning_effort": "low",
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema, "strict": true}}}),
    );
    assert_eq!(
        g["generationConfig"],
        json!({
            "maxOutputTokens": 50,
            "responseMimeType": "application/json",
            "responseJsonSchema": schema,
            "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": true},
        })
    );
    let g = to_gemini(json!({"messages": user, "reasoning_effort": "none"}));
    assert_eq!(
        g["generationConfig"],
        json!({"thinkingConfig": {"thinkingBudget": 0}})
    );
}

#[test]
fn chat_requests_gemini_cannot_express_are_refused_by_field() {
    let user = json!([{"role": "user", "content": "x"}]);
    let cases = [
        (json!({"messages": user, "n": 2}), "n"),
        (json!({"messages": user, "logprobs": true}), "logprobs"),
        (
            json!({"messages": user, "logit_bias": {"1": 5}}),
            "logit_bias",
        ),
        (
            json!({"messages": user, "modalities": ["text", "audio"]}),
            "modalities",
        ),
        (
            json!({"messages": user, "web_search_options": {}}),
            "web_search_options",
        ),
        (
            json!({"messages": user, "tools": [{"type": "custom", "custom": {"name": "x"}}]}),
            "tools[0].type",
        ),
        (
            json!({"messages": user, "response_format": {"type": "grammar"}}),
            "response_format.type",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]}),
            "messages[0].content[0].file",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "r"}]}),
            "messages[1].tool_call_id",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": null, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            json!({"messages": [{"role": "function", "name": "f", "content": "x"}]}),
            "messages[0].role",
        ),
    ];
    for (request, field) in cases {
        assert_eq!(refused_to_gemini(request), field);
    }
}

// ---------------------------------------------------------------------
// Whole answers.

fn gemini_usage() -> Value {
    json!({"promptTokenCount": 40, "cachedContentTokenCount": 10, "candidatesTokenCount": 5,
           "thoughtsTokenCount": 3, "totalTokenCount": 48})
}

#[test]
fn gemini_text_answer_with_thoughts_becomes_a_chat_completion() {
    let chat = answer_to_chat(json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Thinking it over.", "thought": true},
            {"text": "Hello "}, {"text": "there."},
        ]}, "finishReason": "STOP", "index": 0, "safetyRatings": []}],
        "usageMetadata": gemini_usage(),
        "modelVersion": "gemini-2.5-flash",
        "responseId": "resp1",
    }));
    assert_eq!(
        chat,
        json!({
            "id": "chatcmpl-resp1",
            "object": "chat.completion",
            "model": "gpt-client",
            "choices": [{"index": 0, "message": {
                "role": "assistant", "content": "Hello there.", "refusal": null,
                "reasoning_content": "Thinking it over.",
            }, "logprobs": null, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48,
                "prompt_tokens_details": {"cached_tokens": 10},
                "completion_tokens_details": {"reasoning_tokens": 3},
            },
        })
    );
}

#[test]
fn gemini_function_calls_become_tool_calls_with_signed_ids() {
    let chat = answer_to_chat(json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "U0lHMQ=="},
            {"functionCall": {"name": "weather", "args": {"city": "Rome"}}},
        ]}, "finishReason": "STOP"}],
        "responseId": "r9",
    }));
    let message = &chat["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(
        message["tool_calls"],
        json!([
            {"id": "call_r9_0~sig~U0lHMQ==", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_r9_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}},
        ])
    );
    assert_eq!(chat["choices"][0]["finish_reason"], "tool_calls");
}

#[test]
fn gemini_finish_reasons_and_blocked_prompts_map_to_chat() {
    let finish = |answer: Value| answer_to_chat(answer)["choices"][0]["finish_reason"].clone();
    let with = |reason: &str| json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]});
    assert_eq!(finish(with("MAX_TOKENS")), "length");
    assert_eq!(finish(with("SAFETY")), "content_filter");
    assert_eq!(finish(with("RECITATION")), "content_filter");
    assert_eq!(finish(with("OTHER")), "stop");
    assert_eq!(
        finish(json!({"promptFeedback": {"blockReason": "SAFETY"}})),
        "content_filter"
    );
    let error = json!({"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}});
    assert_eq!(
        gemini_response_to_chat(&to_bytes(&error), "m").unwrap_err(),
        "bad"
    );
}

#[test]
fn chat_answer_becomes_a_gemini_response_with_function_calls() {
    let gemini = answer_to_gemini(json!({
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {
            "role": "assistant", "content": "Checking.", "reasoning_content": "hmm",
            "tool_calls": [
                {"id": "toolu_1~sig~QU5U", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "not json"}},
            ],
        }, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30,
                  "prompt_tokens_details": {"cached_tokens": 5},
                  "completion_tokens_details": {"reasoning_tokens": 4}},
    }));
    assert_eq!(
        gemini,
        json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "hmm", "thought": true},
                {"text": "Checking."},
                {"functionCall": {"id": "toolu_1", "name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "QU5U"},
                {"functionCall": {"id": "call_2", "name": "time", "args": {}}},
            ]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 21, "cachedContentTokenCount": 5,
                              "candidatesTokenCount": 5, "thoughtsTokenCount": 4, "totalTokenCount": 30},
            "modelVersion": "gemini-client",
            "responseId": "abc",
        })
    );
    let empty = answer_to_gemini(
        json!({"choices": [{"message": {"content": null}, "finish_reason": "length"}]}),
    );
    assert_eq!(
        empty["candidates"][0]["content"]["parts"],
        json!([{"text": ""}])
    );
    assert_eq!(empty["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(
        empty["usageMetadata"],
        json!({"promptTokenCount": 0, "candidatesTokenCount": 0, "totalTokenCount": 0})
    );
}

#[test]
fn thought_signatures_survive_a_round_trip_through_a_chat_client() {
    // Gemini 3 answers with a signed call; the chat client echoes the
    // message, and the next request carries the signature again.
    let answer = answer_to_chat(
        json!({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "Q2lR/+=="},
    ]}, "finishReason": "STOP"}], "responseId": "x"}),
    );
    let message = answer["choices"][0]["message"].clone();
    let id = message["tool_calls"][0]["id"].clone();
    let gemini = to_gemini(json!({"messages": [
        {"role": "user", "content": "go"},
        message,
        {"role": "tool", "tool_call_id": id, "content": "done"},
    ]}));
    assert_eq!(
        gemini["contents"][1]["parts"][0],
        json!({"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "Q2lR/+=="})
    );
    assert_eq!(
        gemini["contents"][2]["parts"][0],
        json!({"functionResponse": {"name": "f", "response": {"result": "done"}}})
    );
}

#[test]
fn the_skip_placeholder_signature_does_not_lengthen_chat_ids() {
    let chat = to_chat(json!({"contents": [
        {"role": "user", "parts": [{"text": "go"}]},
        {"role": "model", "parts": [{"functionCall": {"id": "c1", "name": "f", "args": {}},
                                     "thoughtSignature": "skip_thought_signature_validator"}]},
        {"role": "user", "parts": [{"functionResponse": {"id": "c1", "name": "f", "response": {"output": "ok"}}}]},
    ]}));
    assert_eq!(chat["messages"][1]["tool_calls"][0]["id"], "c1");
    assert_eq!(chat["messages"][2]["tool_call_id"], "c1");
}

// ---------------------------------------------------------------------
// Streams.

/// The `data:` payloads of an SSE byte stream, `created` removed (it is
/// the clock's).
fn datas(out: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(out).expect("utf-8");
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let data = e.strip_prefix("data: ").expect("a data event");
            if data == "[DONE]" {
                return json!("[DONE]");
            }
            let mut v: Value = serde_json::from_str(data).expect("json");
            if let Some(o) = v.as_object_mut() {
                o.remove("created");
            }
            v
        })
        .collect()
}

fn sse(events: &[Value]) -> Vec<u8> {
    events
        .iter()
        .flat_map(|e| format!("data: {e}\r\n\r\n").into_bytes())
        .collect()
}

/// Feeds `bytes` cut at `cuts` through an SSE parser into a translator, as
/// the gateway does; returns what the client gets.
fn run_cut(
    bytes: &[u8],
    cuts: &[usize],
    translator: &mut crate::translate::StreamTranslator,
) -> Vec<u8> {
    let mut parser = SseParser::default();
    let mut out = BytesMut::new();
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let piece = Bytes::copy_from_slice(&bytes[from..cut]);
        parser.push(&piece, &mut |e| {
            if let Some(data) = e.text() {
                translator.on_event(None, data, &mut out);
            }
        });
        from = cut;
    }
    parser.finish(&mut |e| {
        if let Some(data) = e.text() {
            translator.on_event(None, data, &mut out);
        }
    });
    translator.finish(&mut out);
    out.to_vec()
}

fn gemini_chunk(parts: Value, finish: Option<&str>, usage: Value) -> Value {
    let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
    if let Some(finish) = finish {
        candidate["finishReason"] = json!(finish);
    }
    json!({"candidates": [candidate], "usageMetadata": usage, "modelVersion": "g", "responseId": "s1"})
}

fn gemini_stream() -> Vec<u8> {
    sse(&[
        gemini_chunk(
            json!([{"text": "Plan.", "thought": true}]),
            None,
            json!({"promptTokenCount": 40}),
        ),
        gemini_chunk(
            json!([{"text": "Héllo"}]),
            None,
            json!({"promptTokenCount": 40}),
        ),
        gemini_chunk(
            json!([{"text": " world"}, {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "U0k="}]),
            Some("STOP"),
            gemini_usage(),
        ),
    ])
}

fn chat_chunk(delta: Value, finish: Value) -> Value {
    json!({"id": "chatcmpl-s1", "object": "chat.completion.chunk", "model": "gpt-client",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

#[test]
fn gemini_stream_becomes_chat_chunks_with_usage() {
    let mut t = crate::translate::StreamTranslator::GeminiToChat(GeminiToChatStream::new(
        "gpt-client",
        true,
    ));
    let out = run_cut(&gemini_stream(), &[], &mut t);
    let call = json!({"index": 0, "id": "call_s1_0~sig~U0k=", "type": "function",
                      "function": {"name": "f", "arguments": "{\"a\":1}"}});
    assert_eq!(
        datas(&out),
        vec![
            chat_chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chat_chunk(json!({"reasoning_content": "Plan."}), Value::Null),
            chat_chunk(json!({"content": "Héllo"}), Value::Null),
            chat_chunk(json!({"content": " world"}), Value::Null),
            chat_chunk(json!({"tool_calls": [call]}), Value::Null),
            chat_chunk(json!({}), json!("tool_calls")),
            json!({"id": "chatcmpl-s1", "object": "chat.completion.chunk", "model": "gpt-client", "choices": [],
                   "usage": {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48,
                             "prompt_tokens_details": {"cached_tokens": 10},
                             "completion_tokens_details": {"reasoning_tokens": 3}}}),
            json!("[DONE]"),
        ]
    );
    let mut without = GeminiToChatStream::new("gpt-client", false);
    let mut out = BytesMut::new();
    without.on_event(
        &gemini_chunk(json!([{"text": "x"}]), Some("MAX_TOKENS"), json!({})).to_string(),
        &mut out,
    );
    without.finish(&mut out);
    let got = datas(&out);
    assert_eq!(got[2]["choices"][0]["finish_reason"], "length");
    assert_eq!(got.last(), Some(&json!("[DONE]")));
    assert_eq!(got.len(), 4, "no usage chunk unless asked for");
}

#[test]
fn gemini_stream_errors_become_chat_error_payloads() {
    let mut t = GeminiToChatStream::new("m", true);
    let mut out = BytesMut::new();
    t.on_event(
        &gemini_chunk(json!([{"text": "a"}]), None, json!({})).to_string(),
        &mut out,
    );
    t.on_event(
        r#"{"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}"#,
        &mut out,
    );
    t.on_event(
        &gemini_chunk(json!([{"text": "late"}]), None, json!({})).to_string(),
        &mut out,
    );
    t.finish(&mut out);
    let got = datas(&out);
    assert_eq!(got.len(), 3);
    assert_eq!(got[2]["error"]["type"], "rate_limit_error");
    assert_eq!(got[2]["error"]["message"], "quota");
    let mut t = GeminiToChatStream::new("m", true);
    let mut out = BytesMut::new();
    t.on_event("not json", &mut out);
    assert_eq!(datas(&out)[0]["error"]["type"], "server_error");
}

fn chat_stream() -> Vec<u8> {
    let events = [
        chat_chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chat_chunk(json!({"reasoning_content": "Think."}), Value::Null),
        chat_chunk(json!({"content": "Hé"}), Value::Null),
        chat_chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_a~sig~U0k=", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
            Value::Null,
        ),
        chat_chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{\"x\""}}]}),
            Value::Null,
        ),
        chat_chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\": 1}"}}]}),
            Value::Null,
        ),
        chat_chunk(
            json!({"tool_calls": [{"index": 1, "function": {"arguments": ": 2}"}}]}),
            Value::Null,
        ),
        chat_chunk(json!({}), json!("tool_calls")),
        json!({"id": "chatcmpl-s1", "object": "chat.completion.chunk", "choices": [],
               "usage": {"prompt_tokens": 21, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 5}}}),
    ];
    let mut bytes = sse(&events);
    bytes.extend_from_slice(b"data: [DONE]\n\n");
    bytes
}

fn gemini_out(parts: Value) -> Value {
    json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
           "modelVersion": "gem", "responseId": "s1"})
}

#[test]
fn chat_stream_becomes_gemini_events_with_whole_function_calls() {
    let mut t =
        crate::translate::StreamTranslator::ChatToGemini(ChatToGeminiStream::new("gem", false));
    assert_eq!(t.content_type(), "text/event-stream");
    let out = run_cut(&chat_stream(), &[], &mut t);
    let last = json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"id": "call_a", "name": "f", "args": {"a": 1}}, "thoughtSignature": "U0k="},
            {"functionCall": {"id": "call_b", "name": "g", "args": {"x": 2}}},
        ]}, "index": 0, "finishReason": "STOP"}],
        "modelVersion": "gem", "responseId": "s1",
        "usageMetadata": {"promptTokenCount": 21, "cachedContentTokenCount": 5,
                          "candidatesTokenCount": 9, "totalTokenCount": 30},
    });
    assert_eq!(
        datas(&out),
        vec![
            gemini_out(json!([{"text": "Think.", "thought": true}])),
            gemini_out(json!([{"text": "Hé"}])),
            last,
        ]
    );
}

#[test]
fn chat_stream_without_alt_sse_is_one_json_array() {
    let mut t =
        crate::translate::StreamTranslator::ChatToGemini(ChatToGeminiStream::new("gem", true));
    assert_eq!(t.content_type(), "application/json");
    let out = run_cut(&chat_stream(), &[], &mut t);
    let array: Value = serde_json::from_slice(&out).expect("one JSON array");
    assert_eq!(array.as_array().map(Vec::len), Some(3));
    assert_eq!(array[2]["candidates"][0]["finishReason"], "STOP");
    // An upstream that ends at once still gives a well-formed array.
    let mut t = ChatToGeminiStream::new("gem", true);
    let mut out = BytesMut::new();
    t.on_event(
        r#"{"error": {"message": "overloaded", "type": "server_error"}}"#,
        &mut out,
    );
    let array: Value = serde_json::from_slice(&out).expect("one JSON array");
    assert_eq!(
        array,
        json!([{"error": {"code": 500, "message": "overloaded", "status": "INTERNAL"}}])
    );
}

#[test]
fn chat_stream_cut_short_or_failing_still_ends_well_formed() {
    let mut t = ChatToGeminiStream::new("gem", false);
    let mut out = BytesMut::new();
    t.on_event(
        &chat_chunk(json!({"content": "partial"}), Value::Null).to_string(),
        &mut out,
    );
    t.finish(&mut out);
    let got = datas(&out);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        got[1]["candidates"][0]["content"]["parts"],
        json!([{"text": ""}])
    );
    let mut t = ChatToGeminiStream::new("gem", false);
    let mut out = BytesMut::new();
    t.on_event(
        r#"{"error": {"message": "slow down", "type": "rate_limit_error"}}"#,
        &mut out,
    );
    t.on_event(
        &chat_chunk(json!({"content": "late"}), Value::Null).to_string(),
        &mut out,
    );
    t.finish(&mut out);
    assert_eq!(
        datas(&out),
        vec![
            json!({"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}})
        ]
    );
}

/// Cut points from a small deterministic generator.
fn random_cuts(len: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut cuts: Vec<usize> = (0..12)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize % len.max(1)
        })
        .collect();
    cuts.sort_unstable();
    cuts
}

#[test]
fn streams_give_the_same_output_however_the_bytes_are_cut() {
    type Make = fn() -> crate::translate::StreamTranslator;
    let cases: [(Vec<u8>, Make); 3] = [
        (gemini_stream(), || {
            crate::translate::StreamTranslator::GeminiToChat(GeminiToChatStream::new("m", true))
        }),
        (chat_stream(), || {
            crate::translate::StreamTranslator::ChatToGemini(ChatToGeminiStream::new("m", false))
        }),
        (chat_stream(), || {
            crate::translate::StreamTranslator::ChatToGemini(ChatToGeminiStream::new("m", true))
        }),
    ];
    for (bytes, make) in cases {
        let whole = run_cut(&bytes, &[], &mut make());
        let normalize = |out: &[u8]| match serde_json::from_slice::<Value>(out) {
            Ok(array) => vec![array],
            Err(_) => datas(out),
        };
        let expected = normalize(&whole);
        for cut in 1..bytes.len() {
            assert_eq!(
                normalize(&run_cut(&bytes, &[cut], &mut make())),
                expected,
                "cut at {cut}"
            );
        }
        for seed in 0..50 {
            let cuts = random_cuts(bytes.len(), seed);
            assert_eq!(
                normalize(&run_cut(&bytes, &cuts, &mut make())),
                expected,
                "cuts {cuts:?}"
            );
        }
    }
}

#[test]
fn schemas_and_usage_convert_both_ways() {
    assert_eq!(
        json_schema_of(
            &json!({"type": "OBJECT", "anyOf": [{"type": "STRING"}], "nullable": false})
        ),
        json!({"type": "object", "anyOf": [{"type": "string"}]})
    );
    let tokens = Tokens::from_gemini(
        &json!({"promptTokenCount": 10, "toolUsePromptTokenCount": 2,
        "cachedContentTokenCount": 4, "candidatesTokenCount": 3, "thoughtsTokenCount": 1}),
    );
    assert_eq!(
        tokens,
        Tokens {
            prompt: 12,
            cached: 4,
            completion: 4,
            reasoning: 1
        }
    );
    // Hostile counts saturate instead of overflowing.
    let huge = Tokens::from_gemini(
        &json!({"promptTokenCount": u64::MAX, "toolUsePromptTokenCount": 5,
        "candidatesTokenCount": u64::MAX, "thoughtsTokenCount": 1}),
    );
    assert_eq!(huge.to_chat()["total_tokens"], u64::MAX);
    assert_eq!(huge.to_gemini()["totalTokenCount"], u64::MAX);
    let deepseek = Tokens::from_chat(
        &json!({"prompt_tokens": 9, "completion_tokens": 2, "prompt_cache_hit_tokens": 3}),
    );
    assert_eq!(
        deepseek,
        Tokens {
            prompt: 9,
            cached: 3,
            completion: 2,
            reasoning: 0
        }
    );
}
