//! Interprets Messages-API stream events and assembles the final reply exactly as the
//! model produced it.

use crate::error;
use crate::sse::Frame;
use mainloop_domain::chat::ContentBlock;
use mainloop_model::{ModelError, ModelResponse, StreamEvent, Usage};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

const KNOWN_EVENTS: [&str; 7] = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "error",
];

/// Folds stream events into a `ModelResponse`, reporting text as it arrives.
#[derive(Debug, Default)]
pub struct Assembler {
    /// `(id, model)` from `message_start`.
    message: Option<(String, String)>,
    usage: Usage,
    stop_reason: Option<String>,
    /// Keyed by the stream's block index, so the reply keeps the model's order.
    blocks: BTreeMap<u64, PendingBlock>,
}

#[derive(Debug)]
struct PendingBlock {
    /// The block's JSON object as `content_block_start` gave it, with deltas applied.
    fields: Map<String, Value>,
    /// Tool input arrives as JSON text in pieces and is only parseable once complete.
    partial_json: Option<String>,
}

impl Assembler {
    /// Applies one frame: `Ok(Some(_))` for text to show or the finished reply, `Err` when
    /// the provider reported an error or the stream makes no sense.
    pub fn handle(&mut self, frame: &Frame) -> Result<Option<StreamEvent>, ModelError> {
        // Unknown named events (including `ping`) are skipped unread, so new event types
        // never break an old client.
        let named = frame.event != "message";
        if named && !KNOWN_EVENTS.contains(&frame.event.as_str()) {
            return Ok(None);
        }
        let mut data: Value = match serde_json::from_str(&frame.data) {
            Ok(data) => data,
            Err(_) if !named => return Ok(None),
            Err(e) => return Err(protocol(format!("{} event is not JSON: {e}", frame.event))),
        };
        // The API names every event; unnamed ones fall back to the payload's `type`.
        let kind = if named {
            frame.event.as_str()
        } else {
            data.get("type").and_then(Value::as_str).unwrap_or("")
        };
        if !KNOWN_EVENTS.contains(&kind) {
            return Ok(None);
        }
        match kind {
            "message_start" => {
                let message = data
                    .get("message")
                    .ok_or_else(|| protocol("message_start without a message".into()))?;
                let id = str_at(message, "id")?.to_owned();
                let model = str_at(message, "model")?.to_owned();
                if let Some(usage) = message.get("usage") {
                    merge_usage(&mut self.usage, usage);
                }
                self.message = Some((id, model));
            }
            "content_block_start" => {
                let index = index_of(&data)?;
                let Some(Value::Object(fields)) = data.get_mut("content_block").map(Value::take)
                else {
                    return Err(protocol(format!(
                        "content_block_start {index} without a block"
                    )));
                };
                let block = PendingBlock {
                    fields,
                    partial_json: None,
                };
                self.blocks.insert(index, block);
            }
            "content_block_delta" => return self.delta(&data),
            "content_block_stop" => self.block(index_of(&data)?)?.complete_input()?,
            "message_delta" => {
                if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(reason.to_owned());
                }
                if let Some(usage) = data.get("usage") {
                    merge_usage(&mut self.usage, usage);
                }
            }
            "message_stop" => return self.finish().map(Some),
            _ => return Err(error::from_event(&data)),
        }
        Ok(None)
    }

    fn delta(&mut self, data: &Value) -> Result<Option<StreamEvent>, ModelError> {
        let index = index_of(data)?;
        let delta = data
            .get("delta")
            .ok_or_else(|| protocol(format!("content_block_delta {index} without a delta")))?;
        let block = self.block(index)?;
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => {
                let text = str_at(delta, "text")?;
                append(&mut block.fields, "text", text);
                return Ok(Some(StreamEvent::TextDelta(text.to_owned())));
            }
            Some("input_json_delta") => block
                .partial_json
                .get_or_insert_default()
                .push_str(str_at(delta, "partial_json")?),
            Some("thinking_delta") => {
                append(&mut block.fields, "thinking", str_at(delta, "thinking")?);
            }
            Some("signature_delta") => {
                append(&mut block.fields, "signature", str_at(delta, "signature")?);
            }
            Some("citations_delta") => {
                if let Some(citation) = delta.get("citation") {
                    let citations = block.fields.entry("citations").or_insert(Value::Null);
                    match citations {
                        Value::Array(list) => list.push(citation.clone()),
                        other => *other = Value::Array(vec![citation.clone()]),
                    }
                }
            }
            // A delta kind we do not know: the block keeps what we have.
            _ => {}
        }
        Ok(None)
    }

    fn block(&mut self, index: u64) -> Result<&mut PendingBlock, ModelError> {
        self.blocks
            .get_mut(&index)
            .ok_or_else(|| protocol(format!("event for content block {index} before its start")))
    }

    fn finish(&mut self) -> Result<StreamEvent, ModelError> {
        let (id, model) = self
            .message
            .take()
            .ok_or_else(|| protocol("message_stop before message_start".into()))?;
        let content = std::mem::take(&mut self.blocks)
            .into_values()
            .map(|mut block| {
                block.complete_input()?;
                // Through serde rather than by hand so unknown block types and fields are
                // kept verbatim.
                serde_json::from_value::<ContentBlock>(Value::Object(block.fields))
                    .map_err(|e| protocol(format!("content block: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StreamEvent::Done(ModelResponse {
            id,
            model,
            content,
            stop_reason: self.stop_reason.take(),
            usage: self.usage,
        }))
    }
}

impl PendingBlock {
    fn complete_input(&mut self) -> Result<(), ModelError> {
        let Some(json) = self.partial_json.take() else {
            return Ok(());
        };
        // A tool called without arguments streams no JSON at all.
        let input = if json.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_str(&json)
                .map_err(|e| protocol(format!("tool input is not JSON: {e}")))?
        };
        self.fields.insert("input".to_owned(), input);
        Ok(())
    }
}

/// Counts are cumulative, so a later report replaces an earlier one field by field.
fn merge_usage(usage: &mut Usage, reported: &Value) {
    let slots = [
        ("input_tokens", &mut usage.input_tokens),
        ("output_tokens", &mut usage.output_tokens),
        (
            "cache_creation_input_tokens",
            &mut usage.cache_creation_input_tokens,
        ),
        (
            "cache_read_input_tokens",
            &mut usage.cache_read_input_tokens,
        ),
    ];
    for (key, slot) in slots {
        if let Some(n) = reported.get(key).and_then(Value::as_u64) {
            *slot = n;
        }
    }
}

fn append(fields: &mut Map<String, Value>, key: &str, piece: &str) {
    match fields.get_mut(key) {
        Some(Value::String(s)) => s.push_str(piece),
        _ => {
            fields.insert(key.to_owned(), Value::String(piece.to_owned()));
        }
    }
}

fn index_of(data: &Value) -> Result<u64, ModelError> {
    data.get("index")
        .and_then(Value::as_u64)
        .ok_or_else(|| protocol("content block event without an index".into()))
}

fn str_at<'a>(value: &'a Value, key: &str) -> Result<&'a str, ModelError> {
    value
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| protocol(format!("missing string field `{key}`")))
}

const fn protocol(message: String) -> ModelError {
    ModelError::Protocol(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseParser;
    use serde_json::json;

    fn run(chunks: &[&[u8]]) -> (Vec<StreamEvent>, Option<ModelError>) {
        let mut parser = SseParser::default();
        let mut assembler = Assembler::default();
        let mut events = Vec::new();
        for chunk in chunks {
            for frame in parser.push(chunk) {
                match assembler.handle(&frame) {
                    Ok(Some(event)) => events.push(event),
                    Ok(None) => {}
                    Err(e) => return (events, Some(e)),
                }
            }
        }
        (events, None)
    }

    #[test]
    fn every_split_point_assembles_the_same_reply() {
        for fixture in [
            include_str!("../tests/fixtures/text.sse"),
            include_str!("../tests/fixtures/tool_use.sse"),
        ] {
            let bytes = fixture.as_bytes();
            let (whole, error) = run(&[bytes]);
            assert!(error.is_none());
            assert!(matches!(whole.last(), Some(StreamEvent::Done(_))));
            for at in 0..=bytes.len() {
                assert_eq!(run(&[&bytes[..at], &bytes[at..]]).0, whole, "split at {at}");
            }
        }
    }

    fn frame(event: &str, data: &Value) -> Frame {
        Frame {
            event: event.into(),
            data: data.to_string(),
        }
    }

    fn started() -> Assembler {
        let mut a = Assembler::default();
        let start = json!({"type": "message_start", "message": {"id": "m", "model": "x", "usage": {"input_tokens": 3, "cache_read_input_tokens": null}}});
        assert_eq!(a.handle(&frame("message_start", &start)), Ok(None));
        a
    }

    #[test]
    fn tool_call_without_arguments_gets_empty_input() {
        let mut a = started();
        let block = json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "list_tasks", "input": {}}});
        let empty = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ""}});
        for (event, data) in [
            ("content_block_start", block),
            ("content_block_delta", empty),
            ("content_block_stop", json!({"index": 0})),
        ] {
            assert_eq!(a.handle(&frame(event, &data)), Ok(None));
        }
        let expected = ModelResponse {
            id: "m".into(),
            model: "x".into(),
            content: vec![ContentBlock::tool_use("t", "list_tasks", json!({}))],
            stop_reason: None,
            usage: Usage {
                input_tokens: 3,
                ..Usage::default()
            },
        };
        assert_eq!(
            a.handle(&frame("message_stop", &json!({}))),
            Ok(Some(StreamEvent::Done(expected)))
        );
    }

    #[test]
    fn unknown_and_unnamed_events() {
        let mut a = started();
        assert_eq!(a.handle(&frame("ping", &json!({}))), Ok(None));
        let odd = Frame {
            event: "future_event".into(),
            data: "not json".into(),
        };
        assert_eq!(a.handle(&odd), Ok(None));
        let unnamed = json!({"type": "error", "error": {"type": "overloaded_error"}});
        assert_eq!(
            a.handle(&frame("message", &unnamed)),
            Err(ModelError::Overloaded { retry_after: None })
        );
    }

    #[test]
    fn nonsense_is_a_protocol_error_not_a_panic() {
        let cases = [
            Frame {
                event: "message_start".into(),
                data: "{".into(),
            },
            frame("message_start", &json!({"message": 3})),
            frame(
                "content_block_delta",
                &json!({"index": 9, "delta": {"type": "text_delta", "text": "x"}}),
            ),
            frame("content_block_delta", &json!({"index": -1})),
            frame(
                "content_block_start",
                &json!({"index": 0, "content_block": "text"}),
            ),
            frame("message_stop", &json!({})),
        ];
        for case in cases {
            let result = Assembler::default().handle(&case);
            assert!(
                matches!(result, Err(ModelError::Protocol(_))),
                "{case:?}: {result:?}"
            );
        }
        let mut a = started();
        let block = json!({"index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "n", "input": {}}});
        let bad =
            json!({"index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}});
        assert_eq!(a.handle(&frame("content_block_start", &block)), Ok(None));
        assert_eq!(a.handle(&frame("content_block_delta", &bad)), Ok(None));
        assert!(matches!(
            a.handle(&frame("content_block_stop", &json!({"index": 0}))),
            Err(ModelError::Protocol(_))
        ));
    }
}
