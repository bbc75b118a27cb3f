//! OpenAI Responses (`/v1/responses`) ⇄ OpenAI Chat Completions, for
//! channels with `responses = false`: most OpenAI-compatible hosts only have
//! `/v1/chat/completions`, and Codex CLI only speaks Responses.
//!
//! The request goes one way ([`responses_request_to_chat`]), the answer the
//! other ([`chat_response_to_responses`], or [`ChatToResponsesStream`] event
//! by event). The answer side works from the chat answer alone; given the
//! [`RequestEcho`] of the client's request it also repeats the request's
//! settings in the `response` object and gives calls of non-function tools
//! their own item types (`custom_tool_call`, `local_shell_call`, namespaced
//! `function_call`).
//!
//! # Tools
//!
//! | Responses tool | Chat Completions | calls come back as |
//! |---|---|---|
//! | `function` | function tool (`strict` kept when true) | `function_call` |
//! | `custom` (freeform, e.g. Codex's `apply_patch`) | function taking `{"input": string}`; a grammar is quoted in the description | `custom_tool_call` with `input` |
//! | `namespace` (Codex's MCP tools) | each member as a function named `{namespace}{name}` | `function_call` with `namespace` |
//! | `local_shell` (older Codex) | function `local_shell` taking `{command, workdir, timeout_ms}` | `local_shell_call` with an `exec` action |
//! | `web_search*` | dropped: the upstream cannot search; the model answers without it (Codex sends it by default, and drops it itself on its own Chat wire) | — |
//! | anything else (`file_search`, `computer_use*`, `code_interpreter`, `image_generation`, `mcp`, `tool_search`, ...) | refused, naming `tools[i].type` | — |
//!
//! # Dropped (harmless) and refused fields
//!
//! Dropped: `store`, `include`, `metadata`, `truncation`, `prompt_cache_key`
//! and `prompt_cache_retention` (cache routing hints that strict hosts
//! reject), `service_tier`, `safety_identifier`, `stream_options`,
//! `text.verbosity`, `reasoning.summary` (a summary is sent whenever the
//! upstream reasons), `parallel_tool_calls` and `tool_choice` when no tool
//! is left (`tool_choice: "required"` is then refused), `web_search_call`
//! input items (the search's findings are in the messages that follow),
//! `reasoning` input items without text (e.g. only `encrypted_content`,
//! which only OpenAI can read), and any field not named here. `developer`
//! messages become `system` messages.
//!
//! Refused with [`Untranslatable`](super::Untranslatable): `previous_response_id` and
//! `conversation` (the gateway keeps no responses), `prompt` (stored
//! templates), `background: true`, `max_tool_calls`, `top_logprobs`,
//! non-text `instructions`, `item_reference` and other unknown input items
//! (e.g. OpenAI's encrypted `compaction`), images by `file_id`,
//! `input_file` and `input_audio` parts, unknown `text.format` types, and
//! `tool_choice` naming a hosted tool or `allowed_tools`.
//!
//! Reasoning: chat `reasoning_content` (or `reasoning`) becomes a
//! `reasoning` output item with one `summary_text`; a `reasoning` input item
//! that carries text goes back as `reasoning_content` on the assistant
//! message that follows it, which is what hosts that reason between tool
//! calls (DeepSeek, Kimi) need. Images in a tool's output (Codex's
//! `view_image`) cannot sit in a chat `tool` message: they follow the run
//! of tool messages as one `user` message. A refusal is a `refusal` part in
//! a whole answer; streamed, it is folded into the output text.

mod common;
mod request;
mod response;
mod stream;

pub use common::RequestEcho;
pub use request::responses_request_to_chat;
pub use response::{chat_response_to_responses, chat_response_to_responses_for};
pub use stream::ChatToResponsesStream;

/// Reading a translated Responses stream back, for tests here and of the
/// mock channel.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::HashSet;

    use serde_json::Value;

    /// The events of an SSE byte stream, checking that each `event:` name
    /// is its data's `type`.
    pub(crate) fn parse_events(bytes: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(bytes).expect("utf-8");
        text.split("\n\n")
            .filter(|block| !block.trim().is_empty())
            .map(|block| {
                let (name, data) = block
                    .strip_prefix("event: ")
                    .and_then(|rest| rest.split_once("\ndata: "))
                    .unwrap_or_else(|| panic!("not a named event: {block:?}"));
                let event: Value = serde_json::from_str(data).expect("event JSON");
                assert_eq!(event["type"], name, "event name and type differ");
                event
            })
            .collect()
    }

    /// What Codex and the openai SDK rely on: `response.created` first,
    /// `sequence_number` counting from 0, every delta after its item's
    /// `output_item.added` and before its `output_item.done`, output
    /// indexes given in order, and exactly one terminal event, last (so
    /// only a whole stream passes).
    pub(crate) fn check_sequence(events: &[Value]) {
        assert_eq!(
            events.first().map(|e| &e["type"]),
            Some(&Value::from("response.created"))
        );
        let mut open = HashSet::new();
        let mut added = 0;
        for (n, event) in events.iter().enumerate() {
            assert_eq!(event["sequence_number"], n, "sequence_number of {event}");
            let kind = event["type"].as_str().unwrap_or_default();
            let terminal = matches!(
                kind,
                "response.completed" | "response.incomplete" | "response.failed"
            );
            assert_eq!(
                terminal,
                n + 1 == events.len(),
                "terminal event {kind} at {n}"
            );
            match kind {
                "response.output_item.added" => {
                    assert_eq!(event["output_index"], added, "output indexes in order");
                    added += 1;
                    let id = event["item"]["id"].as_str().expect("item id").to_string();
                    assert!(open.insert(id), "item added twice");
                }
                "response.output_item.done" => {
                    let id = event["item"]["id"].as_str().unwrap_or_default();
                    assert!(open.remove(id), "done for an item never added: {event}");
                }
                k if k.ends_with(".delta") || k.ends_with(".done") || k.ends_with("part.added") => {
                    let id = event["item_id"].as_str().unwrap_or_default();
                    assert!(open.contains(id), "{k} without an active item: {event}");
                }
                _ => {}
            }
        }
        // A failed response may leave items open, as OpenAI's does.
        let failed = events
            .last()
            .is_some_and(|e| e["type"] == "response.failed");
        assert!(failed || open.is_empty(), "items left open: {open:?}");
    }
}
