//! Anthropic Messages ⇄ OpenAI Chat Completions (the pivot), both ways:
//! requests, whole answers and streams.
//!
//! # Dropped, because harmless
//!
//! Anthropic request → chat:
//! - `cache_control` on any block, system block or tool (chat hosts cache
//!   prefixes on their own), `citations` settings and the `title` /
//!   `context` of documents.
//! - `top_k` (no such sampler in chat), `service_tier`, `metadata` other
//!   than `user_id` (which becomes `user`).
//! - `thinking` of type `disabled` or `adaptive` (the host's default
//!   applies); the `signature` of thinking blocks in the history (a chat
//!   host cannot check it; their text is kept as `reasoning_content`) and
//!   `redacted_thinking` blocks (opaque to any other host).
//! - `is_error` on a `tool_result` has no chat field: the tool message's
//!   text is prefixed with `Error: ` instead, so the model still sees it.
//!
//! Chat request → Anthropic:
//! - `n` = 1, `logprobs` = false, `top_logprobs`, `seed`,
//!   `presence_penalty`, `frequency_penalty`, `service_tier`, `store`,
//!   `metadata`, `prediction`, `stream_options` (the caller reads
//!   `include_usage` for [`AnthropicToChatStream::new`]), `response_format`
//!   `{type: text}`, `reasoning_effort` `none`, a message's `name`, an
//!   image's `detail`.
//! - `reasoning_content` on an assistant message without a signature (see
//!   below): Anthropic refuses unsigned thinking blocks.
//! - `tool_choice` when the request has no tools (it means nothing then).
//!
//! Answers: Anthropic `redacted_thinking` and server-tool blocks
//! (`server_tool_use`, `web_search_tool_result`, …) to chat; the chat
//! `logprobs` of an answer to Anthropic. A tool call whose arguments are not
//! a JSON object reaches an Anthropic client with `input: {}` (non-stream;
//! streamed pieces pass as they are).
//!
//! # Refused with 400 naming the field ([`Untranslatable`])
//!
//! Anthropic request → chat: `mcp_servers`, `container`; tools with a
//! `type` other than `custom` (server tools and Anthropic-defined client
//! tools have no schema to send); `document` blocks other than base64 PDF
//! (sent as a chat `file` part) and plain text (sent as a text part); image
//! or document sources of type `file`; a last message from the assistant
//! (a prefill: chat hosts would answer anew instead of continuing it).
//!
//! Chat request → Anthropic: `n` > 1, `logprobs: true`, `audio` and
//! `modalities` with audio, non-empty `logit_bias`, `web_search_options`,
//! the deprecated `functions` / `function_call` and `function` messages,
//! `response_format` `json_object` (Anthropic's JSON output needs a
//! schema; `json_schema` maps to `output_config.format`), `input_audio`
//! parts, `file` parts other than inline PDF or image data (a `file_id`
//! means nothing to Anthropic), tools other than `function`.
//!
//! # Mapped with a choice
//!
//! - `max_tokens` goes to chat as `max_tokens`, or `max_completion_tokens`
//!   when thinking is requested: OpenAI's reasoning models refuse
//!   `max_tokens`, while many other hosts know only `max_tokens`.
//! - `thinking.budget_tokens` → `reasoning_effort`: `low` up to 4096,
//!   `medium` up to 16384, else `high`; back, `minimal` 1024, `low` 4096,
//!   `medium` 16384, `high` 32768, kept below `max_tokens`.
//! - Anthropic `output_config.format` (and the older `output_format`)
//!   `json_schema` ⇄ chat `response_format` `json_schema`.
//! - A `system` message among the messages (mid-conversation system
//!   messages; Claude Code sends them to models it does not know) stays a
//!   chat system message in its place, its text blocks joined.
//! - Images inside a `tool_result` go to chat in a user message right
//!   after the tool messages: chat tool messages carry text only.
//! - A chat request ending with an assistant message reaches Anthropic as
//!   a prefill, which Anthropic continues.
//! - `temperature` passes as it is: above 1 Anthropic refuses it, in the
//!   upstream's own words, rather than us changing it.
//! - A chat `stop` finish becomes `end_turn` (chat does not say whether a
//!   stop sequence matched), or `tool_use` when the answer called tools.
//! - Reasoning tokens: Anthropic reports none apart (they are in
//!   `output_tokens`), so chat answers carry no `reasoning_tokens`;
//!   a chat host's `completion_tokens` (reasoning included) become
//!   `output_tokens`.
//!
//! # Reasoning state carried through a chat client
//!
//! An Anthropic answer's thinking text goes to chat as `reasoning_content`
//! and its `signature` both as `reasoning_signature` beside it and, when
//! the answer calls tools, appended to the first tool call's id after
//! [`SIGNATURE_IN_ID`] (clients that drop unknown fields still echo ids).
//! On the next request an assistant message with `reasoning_content` and a
//! signature from either carrier (or LiteLLM-style `thinking_blocks`)
//! becomes a thinking block again, and ids lose the suffix. Only an answer
//! with one thinking block carries its signature (the usual case: a
//! thinking block opens an answer); `redacted_thinking` is not carried.

mod answers;
mod common;
mod stream;
mod to_anthropic;
mod to_chat;

pub use answers::{anthropic_response_to_chat, chat_response_to_anthropic};
pub use common::{upstream_error_message, SIGNATURE_IN_ID};
pub use stream::{AnthropicToChatStream, ChatToAnthropicStream};
pub use to_anthropic::chat_request_to_anthropic;
pub use to_chat::anthropic_request_to_chat;

#[cfg(test)]
mod tests;
