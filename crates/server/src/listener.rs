//! The listener the server accepts connections on, so that even the answers hyper gives on
//! its own are problem documents.
//!
//! A request hyper cannot parse (a malformed header, headers past its limits, a target past
//! 64 KiB) never reaches the router: hyper answers it with a bare head (`400`, `431` or
//! `414`, `content-length: 0`) and closes the connection. Every connection's writes pass
//! through [`ProblemStream`], which recognises that head (our own error answers always carry
//! a content type) and writes a problem document in its place.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::problem::{PROBLEM_CONTENT_TYPE, problem_for};

/// A TCP listener whose connections answer hyper's own parse errors as problem documents.
pub struct ProblemListener(pub TcpListener);

impl Listener for ProblemListener {
    type Io = ProblemStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, address) = Listener::accept(&mut self.0).await;
        (ProblemStream { stream, replacing: None }, address)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// The peer's address, as handlers extract it (`ConnectInfo<PeerAddr>`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, ProblemListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, ProblemListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// A connection whose bare parse-error answer is replaced by a problem document.
pub struct ProblemStream {
    stream: TcpStream,
    /// The replacement being written, how much of it is written, and the length of the head
    /// it stands for (what hyper is told was written once it is all out).
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl ProblemStream {
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let (replacement, written, stands_for) = self.replacing.as_mut().expect("a replacement is being written");
        while *written < replacement.len() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &replacement[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        let stands_for = *stands_for;
        self.replacing = None;
        Poll::Ready(Ok(stands_for))
    }
}

impl AsyncRead for ProblemStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ProblemStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.replacing.is_none()
            && let Some(replacement) = problem_in_place_of(buf)
        {
            self.replacing = Some((replacement, 0, buf.len()));
        }
        if self.replacing.is_some() {
            return self.poll_replacement(cx);
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // A bare head goes out alone; anything with a body is an answer of ours.
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (nonempty.next(), nonempty.next()) {
            return self.poll_write(cx, only);
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// For hyper's automatic answer to a request it could not parse (a complete head of status
/// 400, 414 or 431 with no content type and `content-length: 0`), the problem document to
/// send instead, closing the connection as hyper does.
fn problem_in_place_of(head: &[u8]) -> Option<Vec<u8>> {
    // Every write passes here: most are let go after a glance at their ends.
    if head.len() > 512 || !head.starts_with(b"HTTP/1.") || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_suffix("\r\n\r\n")?.strip_prefix("HTTP/1.")?;
    let (status_line, headers) = rest.split_once("\r\n").unwrap_or((rest, ""));
    let code: u16 = status_line.get(2..5)?.parse().ok()?;
    let lower = headers.to_ascii_lowercase();
    let lines: Vec<&str> = lower.split("\r\n").collect();
    // Hyper's own head has nothing but these; any answer of ours (a proxied provider's empty
    // 400 included) carries a request id at least.
    let hypers = |line: &&str| ["content-length:", "date:", "connection:"].iter().any(|name| line.starts_with(name));
    if !lines.iter().all(hypers) || !lines.contains(&"content-length: 0") {
        return None;
    }
    let (status, slug, detail) = match code {
        400 => (
            axum::http::StatusCode::BAD_REQUEST,
            "bad-request",
            "The request is not valid HTTP/1.1: its request line or a header is malformed (header values may not hold control characters)",
        ),
        414 => (
            axum::http::StatusCode::URI_TOO_LONG,
            "uri-too-long",
            "The request target is longer than the server reads (64 KiB)",
        ),
        431 => (
            axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request-header-fields-too-large",
            "The request's headers are more or larger than the server reads (100 headers, about 400 KiB)",
        ),
        _ => return None,
    };
    let body = serde_json::to_vec(&problem_for(status, slug, Some(detail.to_string()), Vec::new())).ok()?;
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {PROBLEM_CONTENT_TYPE}\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        body.len()
    );
    if let Some(date) = headers.split("\r\n").find(|line| line.to_ascii_lowercase().starts_with("date:")) {
        answer.push_str(date);
        answer.push_str("\r\n");
    }
    answer.push_str("\r\n");
    let mut answer = answer.into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bare_parse_error_heads_are_replaced() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 10:00:00 GMT\r\n\r\n";
        let replaced = String::from_utf8(problem_in_place_of(bare).unwrap()).unwrap();
        let (head, body) = replaced.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{head}");
        assert!(head.contains("content-type: application/problem+json") && head.contains("connection: close"));
        assert!(head.contains("date: Mon, 30 Nov 2026 10:00:00 GMT"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 431);
        // Our own answers, and anything that is not a bare head, pass untouched.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 0\r\n\r\n";
        assert!(problem_in_place_of(ours).is_none());
        let proxied = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-request-id: req_1\r\n\r\n";
        assert!(problem_in_place_of(proxied).is_none(), "an empty 400 a provider answered through the proxy");
        assert!(problem_in_place_of(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(problem_in_place_of(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n").is_none());
        assert!(problem_in_place_of(b"{\"json\": true}").is_none());
    }
}
