//! Gemini generateContent ⇄ OpenAI Chat Completions (the pivot), both
//! ways: requests, whole answers and streams (`streamGenerateContent`,
//! SSE with `alt=sse` or one JSON array without).
//!
//! # Mapped
//!
//! | Gemini | Chat |
//! |---|---|
//! | `systemInstruction` | `system` (and `developer`) messages |
//! | `contents` role `user` / `model` | `user` / `assistant` messages (same-role messages merge toward Gemini) |
//! | `inlineData` image, PDF, WAV/MP3 | `image_url` data URL, `file` part, `input_audio` |
//! | `fileData` with a public http(s) image URI | `image_url` with that URL (toward Gemini with the media type its extension names, `image/jpeg` else) |
//! | `functionDeclarations` (`parameters` in Gemini's OpenAPI dialect, or `parametersJsonSchema`) | function tools (JSON Schema, sent to Gemini as `parametersJsonSchema`) |
//! | `functionCall` parts | `tool_calls` (parallel calls too) |
//! | `functionResponse` | `tool` messages; `response` `{"result": text}` ⇄ the text (also `{"output": text}` toward chat), other objects ⇄ their JSON |
//! | `functionCallingConfig` `AUTO` / `ANY` / `NONE` | `tool_choice` `auto` / `required` / `none` |
//! | `ANY` with one `allowedFunctionNames` | `tool_choice` naming the function |
//! | `ANY` with several names | only those tools offered, `required` (and back from `allowed_tools`) |
//! | `stopSequences`, `maxOutputTokens` | `stop`, `max_tokens` (`max_completion_tokens` when reasoning is asked for) |
//! | `temperature`, `topP`, `presencePenalty`, `frequencyPenalty`, `seed` | the same by their chat names |
//! | `responseMimeType: application/json` (+ `responseSchema` / `responseJsonSchema`) | `response_format` `json_object` (`json_schema`) |
//! | `thinkingConfig` `thinkingLevel` / `thinkingBudget` (≤ 4096 low, ≤ 16384 medium, else high) | `reasoning_effort`; back as `thinkingBudget` (minimal 512, low 1024, medium 8192, high 24576) with `includeThoughts`, `none` as budget 0 |
//! | parts with `thought: true` | `reasoning_content` |
//! | `finishReason` `STOP` / `MAX_TOKENS` / `SAFETY`, `RECITATION`, … | `stop` (`tool_calls` after calls) / `length` / `content_filter` |
//! | `usageMetadata` | `usage`: `prompt_tokens` = `promptTokenCount` (cached included), `cached_tokens` = `cachedContentTokenCount`, `completion_tokens` = candidates + thoughts, `reasoning_tokens` = thoughts |
//!
//! Gemini has no call ids: a `functionCall` keeps the id the client gave
//! (`functionCall.id`), else gets `call_{content}_{part}` in a request
//! and `call_{responseId}_{n}` in an answer; a `functionResponse` finds its
//! call by `id`, else by name in order among the calls of the model turn
//! before it. Toward Gemini no ids are sent (Gemini matches by order).
//!
//! # Reasoning state carried through a chat client
//!
//! Gemini 3 refuses a function call in the history without the
//! `thoughtSignature` it came with. A `functionCall` part's signature goes
//! to chat appended to its tool call's id after
//! [`crate::translate::SIGNATURE_IN_ID`], and comes back from the id as
//! the part's `thoughtSignature`; to a Gemini client the id's signature
//! goes as the part's own `thoughtSignature` (so an Anthropic thinking
//! signature also survives a Gemini client). Signatures on text parts are
//! optional to Gemini and dropped.
//!
//! # Dropped, because harmless
//!
//! Gemini request → chat: `topK` (chat has no such sampler),
//! `safetySettings` (chat hosts apply their own policies), `labels`,
//! `thinkingConfig.includeThoughts` (chat hosts send their reasoning when
//! they have some), a `thinkingBudget` of 0 or -1 (the host's default
//! applies), `responseModalities: ["TEXT"]`, `mediaResolution`,
//! `toolConfig.retrievalConfig`, a function declaration's `response`
//! schema and `behavior`, signatures on text parts, `propertyOrdering` and
//! `example` in schemas.
//!
//! Chat request → Gemini: `n` = 1, `logprobs` = false, `top_logprobs`,
//! `user`, `metadata`, `store`, `service_tier`, `prediction`,
//! `stream_options` (the caller reads `include_usage`), `verbosity`,
//! `parallel_tool_calls` (Gemini has no switch: a model may still call
//! several functions at once), `response_format` `{type: text}`, a
//! message's `name`, an image's `detail`, `reasoning_content` of assistant
//! messages (Gemini reads only the signatures), `tool_choice` when the
//! request has no tools.
//!
//! Answers: Gemini `citationMetadata`, `safetyRatings`, `groundingMetadata`
//! and `logprobsResult` to chat; chat `logprobs` to Gemini.
//!
//! # Refused with 400 naming the field ([`Untranslatable`](crate::translate::Untranslatable))
//!
//! Gemini request → chat: `cachedContent`; tools other than function
//! declarations (`googleSearch`, `codeExecution`, `urlContext`, …);
//! `functionCallingConfig.mode` `VALIDATED`; `candidateCount` > 1;
//! `responseLogprobs` / `logprobs`; `responseModalities` other than text;
//! `speechConfig`; a `responseMimeType` other than text or JSON; parts
//! other than text, `inlineData` (image, PDF, WAV, MP3), public image
//! `fileData` and function calls / responses (`executableCode`,
//! `codeExecutionResult`, video, Files API or `gs://` URIs);
//! `functionResponse.parts`; a function response answering no call of the
//! model turn before; a last `model` turn (a prefill: chat hosts would
//! answer anew instead of continuing it).
//!
//! Chat request → Gemini: `n` > 1, `logprobs: true`, `audio` and
//! `modalities` with audio, non-empty `logit_bias`, `web_search_options`,
//! the deprecated `functions` / `function_call` and `function` messages,
//! tools other than `function`, `file` parts by `file_id`, tool messages
//! whose `tool_call_id` names no earlier call, tool call arguments that are
//! not a JSON object, `response_format` types other than text, JSON object
//! and JSON schema.

mod answers;
mod common;
mod stream;
mod to_chat;
mod to_gemini;

pub use answers::{chat_response_to_gemini, gemini_response_to_chat};
pub use stream::{ChatToGeminiStream, GeminiToChatStream};
pub use to_chat::gemini_request_to_chat;
pub use to_gemini::chat_request_to_gemini;

#[cfg(test)]
mod tests;
