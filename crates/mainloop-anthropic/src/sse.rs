//! Server-sent-events framing: turns arbitrarily split byte chunks into `event`/`data` frames.

/// One dispatched SSE event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The `event:` field, or `message` when the server sent none (as the SSE spec says).
    pub event: String,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// Incremental SSE parser. Feed it chunks as they arrive; it keeps partial lines between
/// calls, so a frame (or a multi-byte character) may be split anywhere.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a leading `\n` in the next one belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Consumes `chunk` and returns the frames it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        for &byte in chunk {
            let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    if let Some(frame) = self.end_line() {
                        frames.push(frame);
                    }
                }
                _ => self.line.push(byte),
            }
        }
        frames
    }

    fn end_line(&mut self) -> Option<Frame> {
        // Lossy decoding is safe here: the line is complete, so only genuinely invalid
        // bytes (not a character split across chunks) get replaced.
        let line = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        if line.is_empty() {
            let event = self.event.take();
            // Per the spec, an event without data lines is not dispatched.
            let data = self.data.take()?;
            return Some(Frame {
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        match field {
            // An empty field name is a comment line (`: keep-alive`).
            "" => {}
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            // `id`, `retry` and unknown fields carry nothing we need.
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(event: &str, data: &str) -> Frame {
        Frame {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn parses_events_comments_and_multiline_data() {
        let mut p = SseParser::default();
        let frames = p.push(
            b": keep-alive\n\nevent: ping\ndata: {}\n\ndata:a\ndata: b\nid: 7\nretry: 10\n\nevent: lonely\n\n",
        );
        assert_eq!(frames, [frame("ping", "{}"), frame("message", "a\nb")]);
    }

    #[test]
    fn accepts_crlf_and_bare_cr() {
        let mut p = SseParser::default();
        let frames = p.push(b"event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\r");
        assert_eq!(frames, [frame("a", "1"), frame("b", "2")]);
    }

    #[test]
    fn an_unterminated_frame_is_not_dispatched() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: a\ndata: 1\n").is_empty());
        assert_eq!(p.push(b"\n"), [frame("a", "1")]);
    }

    #[test]
    fn every_split_point_gives_the_same_frames() {
        let fixture = include_str!("../tests/fixtures/tool_use.sse").replace('\n', "\r\n");
        let bytes = format!("{fixture}: ünïcödé comment\r\n\r\n").into_bytes();
        let whole = SseParser::default().push(&bytes);
        assert_eq!(whole.len(), 17);
        for at in 0..=bytes.len() {
            let mut p = SseParser::default();
            let mut frames = p.push(&bytes[..at]);
            frames.extend(p.push(&bytes[at..]));
            assert_eq!(frames, whole, "split at {at}");
        }
        let mut p = SseParser::default();
        let one_by_one: Vec<Frame> = bytes.iter().flat_map(|b| p.push(&[*b])).collect();
        assert_eq!(one_by_one, whole);
    }

    #[test]
    fn garbage_does_not_panic() {
        let mut p = SseParser::default();
        let _ = p.push(&[0xff, 0xfe, b':', b'\n', 0x00, b'\r', b'\n', b'\n', 0xc3]);
        let _ = p.push(b"data\n\n");
    }
}
