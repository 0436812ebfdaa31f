//! Receives a request body into an anonymous temporary file, so a body of any size costs a
//! fixed amount of memory, and so the store transaction that takes its rows lasts as long as
//! parsing takes, not as long as a slow client takes to upload.
//!
//! While the bytes pass, they are hashed (for `Idempotency-Key`), counted against
//! `server.max_body_bytes` (after gzip decoding, so a small compressed body cannot expand
//! without bound), and checked to be UTF-8 (the first invalid byte is reported by line and
//! column), so the parsers downstream can rely on valid text.

use super::shape_error;
use crate::error::ApiError;
use axum::body::Body;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A received body, checked, rewound to its start.
pub struct Spooled {
    pub file: std::fs::File,
    pub bytes: u64,
    pub sha256: [u8; 32],
}

/// Bytes written to the temporary file per blocking write.
const WRITE_BUFFER: usize = 1 << 20;

/// Expanded bytes before the expansion ratio is checked: a small body may compress very well.
const RATIO_GRACE: u64 = 1 << 20;

/// The bytes of a body as sent, before its gzip decoding, counted as the decoder reads them
/// (set on the request by the HTTP layer when the body has a `Content-Encoding`).
#[derive(Clone, Debug, Default)]
pub struct Compressed(pub Arc<AtomicU64>);

/// What a body may cost: `server.max_body_bytes` after decoding, and for a compressed body
/// `ingest.max_expansion_ratio` (a decompression bomb is refused as it expands, with a 413,
/// not once it has filled the disk).
#[derive(Clone, Debug)]
pub struct BodyBounds {
    pub max_bytes: u64,
    pub max_expansion_ratio: u64,
    pub compressed: Option<Compressed>,
}

impl BodyBounds {
    fn check(&self, total: u64) -> Result<(), ApiError> {
        if total > self.max_bytes {
            return Err(too_large(self.max_bytes));
        }
        if let Some(Compressed(sent)) = &self.compressed
            && total > RATIO_GRACE
        {
            let sent = sent.load(Ordering::Relaxed).max(1);
            if total > sent.saturating_mul(self.max_expansion_ratio) {
                return Err(ApiError::PayloadTooLarge(format!(
                    "the compressed body expands more than {} times (ingest.max_expansion_ratio): \
                     {sent} bytes sent became more than {total}",
                    self.max_expansion_ratio
                )));
            }
        }
        Ok(())
    }
}

/// Streams `body` into a temporary file. `prefix` is hashed before the body (what else makes
/// two submissions the same: content type, query options).
pub async fn spool(body: Body, bounds: &BodyBounds, prefix: &[u8]) -> Result<Spooled, ApiError> {
    let mut file = tokio::task::spawn_blocking(tempfile::tempfile)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("spool task: {e}")))?
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("cannot create a spool file: {e}")))?;
    let mut hasher = Sha256::new();
    hasher.update(prefix);
    let mut utf8 = Utf8Check::default();
    let mut total = 0u64;
    let mut pending: Vec<u8> = Vec::with_capacity(WRITE_BUFFER);
    let mut stream = body.into_data_stream();
    while let Some(frame) = stream.next().await {
        let frame = frame.map_err(body_error)?;
        total += frame.len() as u64;
        bounds.check(total)?;
        hasher.update(&frame);
        utf8.feed(&frame)?;
        pending.extend_from_slice(&frame);
        if pending.len() >= WRITE_BUFFER {
            let chunk = std::mem::replace(&mut pending, Vec::with_capacity(WRITE_BUFFER));
            file = write_chunk(file, chunk).await?;
        }
    }
    utf8.finish()?;
    let mut f = write_chunk(file, pending).await?;
    let rewound = tokio::task::spawn_blocking(move || {
        f.flush()?;
        f.seek(SeekFrom::Start(0))?;
        Ok::<_, std::io::Error>(f)
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("spool task: {e}")))?
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("cannot rewind the spool file: {e}")))?;
    Ok(Spooled {
        file: rewound,
        bytes: total,
        sha256: hasher.finalize().into(),
    })
}

fn too_large(max_bytes: u64) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "the body is larger than server.max_body_bytes ({max_bytes} bytes)"
    ))
}

async fn write_chunk(mut f: std::fs::File, chunk: Vec<u8>) -> Result<std::fs::File, ApiError> {
    tokio::task::spawn_blocking(move || f.write_all(&chunk).map(|_| f))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("spool task: {e}")))?
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("cannot write the spool file: {e}")))
}

/// A body that could not be read: a broken connection or a broken gzip stream.
fn body_error(e: axum::Error) -> ApiError {
    ApiError::bad_request(format!("the body could not be read: {e}"))
}

/// Incremental UTF-8 validation that remembers where it is (line, column of bytes), so the
/// first invalid byte is named like a parser would name it.
#[derive(Default)]
struct Utf8Check {
    /// The first bytes of a character split between two frames.
    carry: Vec<u8>,
    /// Lines fully seen so far (newlines).
    newlines: u64,
    /// Bytes since the last newline.
    column: u64,
}

impl Utf8Check {
    fn feed(&mut self, frame: &[u8]) -> Result<(), ApiError> {
        let joined;
        let bytes: &[u8] = if self.carry.is_empty() {
            frame
        } else {
            joined = [std::mem::take(&mut self.carry).as_slice(), frame].concat();
            // The carried bytes were not yet counted.
            &joined
        };
        match std::str::from_utf8(bytes) {
            Ok(_) => {
                self.advance(bytes);
                Ok(())
            }
            Err(e) if e.error_len().is_none() => {
                // Ends inside a character: keep its first bytes for the next frame.
                let (done, rest) = bytes.split_at(e.valid_up_to());
                self.advance(done);
                self.carry = rest.to_vec();
                Ok(())
            }
            Err(e) => {
                self.advance(&bytes[..e.valid_up_to()]);
                Err(self.error())
            }
        }
    }

    fn finish(&self) -> Result<(), ApiError> {
        if self.carry.is_empty() {
            Ok(())
        } else {
            Err(self.error())
        }
    }

    fn advance(&mut self, valid: &[u8]) {
        match valid.iter().rposition(|&b| b == b'\n') {
            Some(last) => {
                self.newlines += valid.iter().filter(|&&b| b == b'\n').count() as u64;
                self.column = (valid.len() - last - 1) as u64;
            }
            None => self.column += valid.len() as u64,
        }
    }

    fn error(&self) -> ApiError {
        shape_error(
            self.newlines + 1,
            Some(self.column + 1),
            "the body is not valid UTF-8".into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(frames: &[&[u8]]) -> Result<(), String> {
        let mut c = Utf8Check::default();
        for f in frames {
            c.feed(f).map_err(|e| e.to_string())?;
        }
        c.finish().map_err(|e| e.to_string())
    }

    #[test]
    fn a_character_split_between_frames_is_valid() {
        let s = "ab\né".as_bytes();
        assert_eq!(check(&[&s[..4], &s[4..]]), Ok(()));
    }

    #[test]
    fn an_invalid_byte_is_named_by_line_and_column() {
        assert_eq!(
            check(&[b"h1,h2\nEMP-", b"\xff,x\n"]),
            Err("line 2, column 5: the body is not valid UTF-8".into())
        );
    }

    #[test]
    fn a_body_ending_inside_a_character_is_invalid() {
        assert_eq!(
            check(&[b"ab\n\xc3"]),
            Err("line 2, column 1: the body is not valid UTF-8".into())
        );
    }
}
