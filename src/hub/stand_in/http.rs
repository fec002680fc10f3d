//! The stand-in's HTTP/1.1 plumbing: read one request, write one response (one request per
//! connection, `Connection: close`), with the scripted faults applied to the body.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A parsed request head.
#[derive(Debug)]
pub(super) struct Head {
    pub method: String,
    /// The path, percent-encoded as sent, without the query.
    pub path: String,
    pub query: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a request head (bodies are never expected); `None` on a malformed or silent client.
pub(super) fn read_head(stream: &mut TcpStream) -> Option<Head> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Head {
        method,
        path,
        query,
        headers,
    })
}

/// A response to write.
#[derive(Debug, Default)]
pub(super) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Arc<Vec<u8>>,
    /// The slice of `body` to send (a Range); all of it when `None`.
    pub range: Option<(u64, u64)>,
    /// Fault: send this many body bytes, then drop the connection.
    pub drop_after: Option<u64>,
    /// Fault: send different bytes of the same length.
    pub corrupt: bool,
}

impl Reply {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }

    pub fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_string(), v.into()));
        self
    }

    pub fn text(mut self, content_type: &str, body: impl Into<String>) -> Self {
        self.body = Arc::new(body.into().into_bytes());
        self.header("Content-Type", content_type)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Parses `bytes=N-` / `bytes=N-M` against a body of `len` bytes: `Ok(None)` for no header,
/// `Err(())` when unsatisfiable.
pub(super) fn parse_range(header: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    let (a, b) = spec.split_once('-').ok_or(())?;
    let start: u64 = a.trim().parse().map_err(|_| ())?;
    let end = match b.trim() {
        "" => len,
        e => e.parse::<u64>().map_err(|_| ())?.saturating_add(1).min(len),
    };
    if start >= len || start >= end {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// Writes `reply` (its body only for a GET), throttled to `bytes_per_sec` when set, stopping
/// early when `stop` is raised.
pub(super) fn write_reply(
    stream: &mut TcpStream,
    reply: &Reply,
    method: &str,
    bytes_per_sec: Option<u64>,
    stop: &Arc<AtomicBool>,
) -> io::Result<()> {
    let (start, end) = reply.range.unwrap_or((0, reply.body.len() as u64));
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        end - start
    ));
    stream.write_all(head.as_bytes())?;
    if method == "HEAD" {
        return stream.flush();
    }
    let limit = reply.drop_after.map_or(end, |n| (start + n).min(end));
    let chunk = bytes_per_sec.map_or(256 * 1024, |r| (r / 20).max(1024)) as usize;
    let mut pos = start as usize;
    while pos < limit as usize {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let next = (pos + chunk).min(limit as usize);
        let piece = &reply.body[pos..next];
        if reply.corrupt {
            let flipped: Vec<u8> = piece.iter().map(|b| b ^ 0x5a).collect();
            stream.write_all(&flipped)?;
        } else {
            stream.write_all(piece)?;
        }
        pos = next;
        if bytes_per_sec.is_some() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    stream.flush()?;
    if reply.drop_after.is_some() || pos < end as usize {
        let _ = stream.shutdown(Shutdown::Both);
    }
    Ok(())
}

/// Decodes `%XX` escapes (invalid UTF-8 becomes U+FFFD).
pub(super) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_escapes() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=4-"), 10), Ok(Some((4, 10))));
        assert_eq!(parse_range(Some("bytes=0-0"), 10), Ok(Some((0, 1))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(percent_decode("refs%2Fpr%2F1"), "refs/pr/1");
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
