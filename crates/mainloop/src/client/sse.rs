//! The live event stream (`GET /api/events`) as the client reads it: a server-sent
//! events parser, and a stream that reconnects from the last event id, so a dropped
//! connection loses nothing.

use super::http::{Api, ClientError};
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

/// Reconnections in a row before the client gives up on the server (waits doubling from
/// a quarter second to 4 s: about half a minute, enough for a server to restart).
const RECONNECTS: u32 = 10;

/// One event: its id in the user's event log, its name and its JSON payload.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: Option<i64>,
    pub name: String,
    pub data: Value,
}

/// Reads server-sent events from bytes as they arrive (pieces may split lines, and
/// characters).
#[derive(Debug, Default)]
pub struct Parser {
    pending: Vec<u8>,
    id: Option<i64>,
    name: String,
    data: Vec<String>,
}

impl Parser {
    /// The events completed by `bytes`. Events whose data is not JSON are skipped: every
    /// payload of this API is JSON.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw[..raw.len() - 1]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if let Some(e) = self.line(line) {
                out.push(e);
            }
        }
        out
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let data = std::mem::take(&mut self.data);
            let name = std::mem::take(&mut self.name);
            let id = self.id.take();
            if data.is_empty() {
                return None;
            }
            let data = serde_json::from_str(&data.join("\n")).ok()?;
            let name = if name.is_empty() {
                "message".into()
            } else {
                name
            };
            return Some(Event { id, name, data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => self.data.push(value.to_owned()),
            "event" => value.clone_into(&mut self.name),
            "id" => self.id = value.trim().parse().ok(),
            _ => {}
        }
        None
    }
}

/// The user's events from the moment [`Events::open`] returned, across reconnections.
pub struct Events {
    api: Api,
    last_id: Option<i64>,
    body: Option<BoxStream<'static, reqwest::Result<Vec<u8>>>>,
    parser: Parser,
    ready: std::collections::VecDeque<Event>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("last_id", &self.last_id)
            .finish_non_exhaustive()
    }
}

impl Events {
    /// Opens the stream. Once this returns, every event committed later is delivered.
    ///
    /// # Errors
    /// The server is unreachable or refuses the token.
    pub async fn open(api: &Api) -> Result<Self, ClientError> {
        let mut events = Self {
            api: api.clone(),
            last_id: None,
            body: None,
            parser: Parser::default(),
            ready: std::collections::VecDeque::new(),
        };
        events.connect().await?;
        Ok(events)
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        let mut request = self
            .api
            .request(Method::GET, "/api/events")
            .header("accept", "text/event-stream");
        if let Some(id) = self.last_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = self.api.send(request, true).await?;
        self.parser = Parser::default();
        self.body = Some(
            response
                .bytes_stream()
                .map(|r| r.map(|b| b.to_vec()))
                .boxed(),
        );
        Ok(())
    }

    /// The next event, reconnecting (from the last id seen) when the connection drops.
    ///
    /// # Errors
    /// The server stayed unreachable through several reconnections.
    pub async fn next(&mut self) -> Result<Event, ClientError> {
        let mut failures = 0;
        loop {
            if let Some(e) = self.ready.pop_front() {
                if e.id.is_some() {
                    self.last_id = e.id;
                }
                return Ok(e);
            }
            let chunk = match self.body.as_mut() {
                Some(body) => body.next().await,
                None => None,
            };
            match chunk {
                Some(Ok(bytes)) => {
                    failures = 0;
                    self.ready.extend(self.parser.feed(&bytes));
                }
                // The stream ended or broke (a server restart): resume where it stopped.
                Some(Err(_)) | None => {
                    self.body = None;
                    loop {
                        tokio::time::sleep(Duration::from_millis(250 << failures.min(4))).await;
                        match self.connect().await {
                            Ok(()) => break,
                            Err(e @ ClientError::Auth(_)) => return Err(e),
                            Err(e) if failures + 1 >= RECONNECTS => return Err(e),
                            Err(_) => failures += 1,
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_split_anywhere_are_read_whole() {
        let wire = "id: 7\nevent: chat.delta\ndata: {\"text\":\"h\u{e9}\"}\n\n\
                    : keep-alive\n\n\
                    id:8\r\nevent:task.updated\r\ndata:{\"a\":\r\ndata:1}\r\n\r\n\
                    event: x\ndata: not json\n\n";
        let bytes = wire.as_bytes();
        for split in 0..bytes.len() {
            let mut p = Parser::default();
            let mut got = p.feed(&bytes[..split]);
            got.extend(p.feed(&bytes[split..]));
            assert_eq!(
                got,
                vec![
                    Event {
                        id: Some(7),
                        name: "chat.delta".into(),
                        data: json!({"text": "h\u{e9}"})
                    },
                    Event {
                        id: Some(8),
                        name: "task.updated".into(),
                        data: json!({"a": 1})
                    },
                ],
                "split at {split}"
            );
        }
    }

    /// A server that ends the stream after each event (as a restart does), then refuses
    /// the token: the client resumes after the last id, and stops on the refusal.
    #[tokio::test]
    async fn a_dropped_stream_resumes_after_the_last_event_and_stops_on_a_refused_token() {
        use axum::http::{HeaderMap, StatusCode};
        use std::sync::{Arc, Mutex};
        let asked: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let log = Arc::clone(&asked);
        let app = axum::Router::new().route(
            "/api/events",
            axum::routing::get(move |headers: HeaderMap| {
                let resume = headers
                    .get("last-event-id")
                    .map(|v| v.to_str().unwrap().to_owned());
                log.lock().unwrap().push(resume.clone());
                async move {
                    match resume.as_deref() {
                        None => (StatusCode::OK, "id: 1\nevent: a\ndata: {\"n\":1}\n\n"),
                        Some("1") => (
                            StatusCode::OK,
                            ": hello\n\nid: 2\nevent: a\ndata: {\"n\":2}\n\n",
                        ),
                        Some(_) => (StatusCode::UNAUTHORIZED, "{}"),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let api = Api::new(&url, None).unwrap();
        let mut events = Events::open(&api).await.unwrap();
        assert_eq!(events.next().await.unwrap().data, json!({"n": 1}));
        assert_eq!(events.next().await.unwrap().data, json!({"n": 2}));
        assert_eq!(events.next().await.unwrap_err().exit_code(), 4);
        assert_eq!(
            *asked.lock().unwrap(),
            vec![None, Some("1".into()), Some("2".into())]
        );
    }
}
