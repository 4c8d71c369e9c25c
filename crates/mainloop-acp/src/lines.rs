//! The newline-delimited JSON transport under the ACP connection: the agent's stdout
//! read as capped lines, screened before the protocol engine sees them (anything that
//! is not one JSON object becomes a `Malformed` event and is dropped), and the
//! agent's stdin as a sink of lines.

use std::io;
use std::pin::Pin;

use futures::{Sink, Stream};
use mainloop_agent::protocol::{MALFORMED_LINE_BYTES, truncate_bytes};
use mainloop_agent::{AgentEvent, read_line_capped};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// What to do with one line of the agent's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screened {
    /// A JSON object: hand it to the protocol engine.
    Forward,
    /// Blank: nothing to say.
    Skip,
    /// Recorded as [`AgentEvent::Malformed`] and dropped.
    Malformed { error: String },
}

/// Judges one line; `full_len` is its length before it was capped at `max` bytes.
#[must_use]
pub fn screen(line: &str, full_len: usize, max: usize) -> Screened {
    if full_len > max {
        return Screened::Malformed {
            error: format!("line of {full_len} bytes exceeds the {max}-byte limit"),
        };
    }
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Screened::Skip;
    }
    if !trimmed.starts_with('{') {
        return Screened::Malformed {
            error: "not a JSON-RPC message object".to_owned(),
        };
    }
    match serde_json::from_str::<serde_json::Value>(trimmed) {
        Ok(serde_json::Value::Object(_)) => Screened::Forward,
        Ok(_) => Screened::Malformed {
            error: "not a JSON-RPC message object".to_owned(),
        },
        Err(e) => Screened::Malformed {
            error: format!("not JSON: {e}"),
        },
    }
}

/// The agent's stdout as the protocol engine's incoming lines; malformed lines go to
/// `events` instead. Ends at the end of the output or when `events` is closed.
pub fn incoming(
    stdout: Pin<Box<dyn AsyncRead + Send>>,
    events: mpsc::Sender<AgentEvent>,
    max_line_bytes: usize,
) -> impl Stream<Item = io::Result<String>> + Send + 'static {
    let state = (BufReader::new(stdout), Vec::new(), events);
    futures::stream::unfold(state, move |(mut reader, mut buf, events)| async move {
        loop {
            let len = match read_line_capped(&mut reader, &mut buf, max_line_bytes).await {
                Ok(Some(len)) => len,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the agent's stdout failed");
                    return None;
                }
            };
            let line = String::from_utf8_lossy(&buf).into_owned();
            match screen(&line, len, max_line_bytes) {
                Screened::Forward => return Some((Ok(line), (reader, buf, events))),
                Screened::Skip => {}
                Screened::Malformed { error } => {
                    let line = truncate_bytes(&line, MALFORMED_LINE_BYTES);
                    if events
                        .send(AgentEvent::Malformed { line, error })
                        .await
                        .is_err()
                    {
                        return None;
                    }
                }
            }
        }
    })
}

/// The agent's stdin as a sink of lines, each flushed as it is written.
pub fn outgoing(
    stdin: Pin<Box<dyn AsyncWrite + Send>>,
) -> impl Sink<String, Error = io::Error> + Send + 'static {
    futures::sink::unfold(stdin, async |mut stdin, mut line: String| {
        line.push('\n');
        stdin.write_all(line.as_bytes()).await?;
        stdin.flush().await?;
        Ok::<_, io::Error>(stdin)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures::StreamExt;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn screens_lines() {
        let ok = r#"{"jsonrpc":"2.0","method":"session/update","params":{}}"#;
        assert_eq!(screen(ok, ok.len(), 1000), Screened::Forward);
        assert_eq!(screen("   ", 3, 1000), Screened::Skip);
        assert!(matches!(
            screen("hello", 5, 1000),
            Screened::Malformed { .. }
        ));
        assert!(matches!(
            screen("[1,2]", 5, 1000),
            Screened::Malformed { .. }
        ));
        assert!(matches!(
            screen("{nope", 5, 1000),
            Screened::Malformed { .. }
        ));
        assert!(matches!(screen(ok, 5000, 1000), Screened::Malformed { .. }));
    }

    #[tokio::test]
    async fn garbage_and_oversized_lines_become_malformed_events() {
        let input = b"garbage\n{\"id\":1,\"result\":{}}\n\n{\"x\":\"0123456789012345678901234567890\"}\n\xff\xfe\n{\"id\":2}"
            .to_vec();
        let (tx, mut rx) = mpsc::channel(16);
        let lines: Vec<String> = incoming(Box::pin(std::io::Cursor::new(input)), tx, 24)
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(lines, [r#"{"id":1,"result":{}}"#, r#"{"id":2}"#]);
        let mut errors = Vec::new();
        while let Ok(AgentEvent::Malformed { error, .. }) = rx.try_recv() {
            errors.push(error);
        }
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[1].contains("exceeds the 24-byte limit"),
            "{errors:?}"
        );
    }

    proptest! {
        #[test]
        fn any_line_is_screened_without_panicking(line in ".{0,200}", cap in 1usize..300) {
            let verdict = screen(&line, line.len(), cap);
            if line.len() > cap {
                prop_assert!(matches!(verdict, Screened::Malformed { .. }), "oversized: {verdict:?}");
            }
            if verdict == Screened::Forward {
                prop_assert!(serde_json::from_str::<serde_json::Value>(line.trim()).unwrap().is_object());
            }
        }

        #[test]
        fn any_bytes_are_read_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let (tx, mut rx) = mpsc::channel(1024);
                let lines: Vec<io::Result<String>> =
                    incoming(Box::pin(std::io::Cursor::new(bytes)), tx, 64).collect().await;
                for line in lines {
                    let line = line.unwrap();
                    assert!(line.len() <= 64);
                }
                while rx.try_recv().is_ok() {}
            });
        }
    }
}
