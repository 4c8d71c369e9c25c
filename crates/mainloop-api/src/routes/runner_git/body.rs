//! A git request's body as it arrives: counted against a cap before and after gzip
//! (git compresses large fetch negotiations), inflated a few KiB at a time so that a
//! small body cannot balloon in memory.

use axum::body::{Body, BodyDataStream, Bytes};
use flate2::write::GzDecoder;
use futures::StreamExt;
use std::io::Write;

/// Compressed input fed to the inflater at once: deflate expands at most about 1032
/// times, so one step makes at most a few MiB.
const INFLATE_STEP: usize = 4096;

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// More than the cap, as sent or once inflated.
    TooLarge(u64),
    /// Not valid gzip.
    BadGzip(String),
    /// The client's connection failed mid-body.
    Read(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge(cap) => write!(f, "the request body is larger than {cap} bytes"),
            Self::BadGzip(e) => write!(f, "the gzip request body is malformed: {e}"),
            Self::Read(e) => write!(f, "the request body could not be read: {e}"),
        }
    }
}

/// The body, decoded, in chunks.
pub(crate) struct Inflow {
    stream: BodyDataStream,
    /// Input not yet inflated.
    pending: Bytes,
    gzip: Option<GzDecoder<Vec<u8>>>,
    cap: u64,
    sent: u64,
    decoded: u64,
    ended: bool,
}

impl Inflow {
    pub(crate) fn new(body: Body, gzip: bool, cap: u64) -> Self {
        Self {
            stream: body.into_data_stream(),
            pending: Bytes::new(),
            gzip: gzip.then(|| GzDecoder::new(Vec::new())),
            cap,
            sent: 0,
            decoded: 0,
            ended: false,
        }
    }

    /// The next decoded chunk; `None` at the end of the body.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, BodyError> {
        loop {
            if self.pending.is_empty() {
                if self.ended {
                    return Ok(None);
                }
                match self.stream.next().await {
                    None => {
                        self.ended = true;
                        let Some(gz) = self.gzip.as_mut() else {
                            return Ok(None);
                        };
                        gz.try_finish()
                            .map_err(|e| BodyError::BadGzip(e.to_string()))?;
                        let rest = std::mem::take(gz.get_mut());
                        return if rest.is_empty() {
                            Ok(None)
                        } else {
                            self.decoded(Bytes::from(rest)).map(Some)
                        };
                    }
                    Some(Err(e)) => return Err(BodyError::Read(e.to_string())),
                    Some(Ok(chunk)) => {
                        self.sent = self.sent.saturating_add(chunk.len() as u64);
                        if self.sent > self.cap {
                            return Err(BodyError::TooLarge(self.cap));
                        }
                        self.pending = chunk;
                        continue;
                    }
                }
            }
            let Some(gz) = self.gzip.as_mut() else {
                let chunk = std::mem::take(&mut self.pending);
                return self.decoded(chunk).map(Some);
            };
            let step = self.pending.split_to(self.pending.len().min(INFLATE_STEP));
            // `write_all` fails (WriteZero) on input after the gzip stream's end.
            gz.write_all(&step)
                .map_err(|e| BodyError::BadGzip(e.to_string()))?;
            let out = std::mem::take(gz.get_mut());
            if !out.is_empty() {
                return self.decoded(Bytes::from(out)).map(Some);
            }
        }
    }

    fn decoded(&mut self, chunk: Bytes) -> Result<Bytes, BodyError> {
        self.decoded = self.decoded.saturating_add(chunk.len() as u64);
        if self.decoded > self.cap {
            return Err(BodyError::TooLarge(self.cap));
        }
        Ok(chunk)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    async fn read_all(body: Vec<u8>, gz: bool, cap: u64) -> Result<Vec<u8>, BodyError> {
        let mut inflow = Inflow::new(Body::from(body), gz, cap);
        let mut out = Vec::new();
        while let Some(chunk) = inflow.next().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn plain_and_gzip_bodies_read_the_same() {
        let data: Vec<u8> = (0..100_000u32).flat_map(u32::to_le_bytes).collect();
        assert_eq!(read_all(data.clone(), false, 1 << 20).await.unwrap(), data);
        assert_eq!(read_all(gzip(&data), true, 1 << 20).await.unwrap(), data);
        assert!(read_all(Vec::new(), false, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_cap_holds_before_and_after_inflating() {
        let data = vec![0u8; 1 << 20];
        assert!(matches!(
            read_all(data.clone(), false, 1000).await,
            Err(BodyError::TooLarge(1000))
        ));
        // A megabyte of zeros is a tiny gzip body, refused once inflated past the cap.
        let small = gzip(&data);
        assert!(small.len() < 10_000);
        assert!(matches!(
            read_all(small, true, 100_000).await,
            Err(BodyError::TooLarge(100_000))
        ));
    }

    #[tokio::test]
    async fn malformed_gzip_is_refused() {
        assert!(matches!(
            read_all(b"not gzip at all".to_vec(), true, 1000).await,
            Err(BodyError::BadGzip(_))
        ));
        let mut trailing = gzip(b"0000");
        trailing.extend_from_slice(b"more");
        assert!(read_all(trailing, true, 1000).await.is_err());
    }
}
