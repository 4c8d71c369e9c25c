//! A minimal server-sent-events reader over a `reqwest` response.

use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;

/// One dispatched event. Comment-only blocks (keep-alives) are skipped.
#[derive(Clone, Debug, Default)]
pub struct SseEvent {
    pub id: Option<i64>,
    pub event: String,
    pub data: String,
}

/// Reads events from an open `text/event-stream` response.
pub struct SseReader {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: BytesMut,
}

impl std::fmt::Debug for SseReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseReader")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// Opens `GET {base}/api/events?after=N` with a bearer token.
pub async fn connect(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    after: Option<i64>,
) -> Result<SseReader> {
    let url = match after {
        Some(n) => format!("{base}/api/events?after={n}"),
        None => format!("{base}/api/events"),
    };
    let resp = client
        .get(&url)
        .bearer_auth(token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        bail!("GET {url}: {status}: {body}");
    }
    Ok(SseReader {
        body: resp.bytes_stream().boxed(),
        buf: BytesMut::with_capacity(16 * 1024),
    })
}

/// Where the blank line ending the first complete block is: (block end, separator length).
fn block_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some((i, 2));
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

fn parse_block(block: &[u8]) -> Option<SseEvent> {
    let text = String::from_utf8_lossy(block);
    let mut ev = SseEvent::default();
    let mut has_field = false;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" => {
                ev.id = value.trim().parse().ok();
                has_field = true;
            }
            "event" => {
                value.clone_into(&mut ev.event);
                has_field = true;
            }
            "data" => {
                if !ev.data.is_empty() {
                    ev.data.push('\n');
                }
                ev.data.push_str(value);
                has_field = true;
            }
            _ => {}
        }
    }
    has_field.then_some(ev)
}

impl SseReader {
    /// The next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<SseEvent>> {
        loop {
            while let Some((end, sep)) = block_end(&self.buf) {
                let block = self.buf.split_to(end);
                self.buf.advance(sep);
                if let Some(ev) = parse_block(&block) {
                    return Ok(Some(ev));
                }
            }
            match self.body.next().await {
                Some(chunk) => self
                    .buf
                    .extend_from_slice(&chunk.context("reading events")?),
                None => return Ok(None),
            }
        }
    }
}

/// The integer after `"key":` in a JSON text, without parsing the whole document.
#[must_use]
pub fn json_int(text: &str, key: &str) -> Option<i64> {
    let pat = format!("\"{key}\":");
    let at = text.find(&pat)? + pat.len();
    let rest = text[at..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_fields() {
        let raw = b": keep-alive\n\nid: 7\nevent: chat.delta\ndata: {\"a\":1}\n\nid: 8\r\ndata: x\r\n\r\n";
        let (end, sep) = block_end(raw).unwrap();
        assert!(parse_block(&raw[..end]).is_none());
        let rest = &raw[end + sep..];
        let (end, sep) = block_end(rest).unwrap();
        let ev = parse_block(&rest[..end]).unwrap();
        assert_eq!(ev.id, Some(7));
        assert_eq!(ev.event, "chat.delta");
        assert_eq!(ev.data, "{\"a\":1}");
        let rest = &rest[end + sep..];
        let (end, _) = block_end(rest).unwrap();
        let ev = parse_block(&rest[..end]).unwrap();
        assert_eq!(ev.id, Some(8));
        assert_eq!(ev.data, "x");
    }

    #[test]
    fn finds_ints() {
        assert_eq!(
            json_int(r#"{"payload":{"seq": 42,"t":9}}"#, "seq"),
            Some(42)
        );
        assert_eq!(json_int(r#"{"t":-3}"#, "t"), Some(-3));
        assert_eq!(json_int(r#"{"x":1}"#, "seq"), None);
    }
}
