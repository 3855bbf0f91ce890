//! An HTTP/1.1 server that answers "hello" to every request, written as plain synchronous
//! code: a fiber per connection, keep-alive, pipelining.
//!
//! ```sh
//! cargo run --release --example http_server              # listens on 127.0.0.1:8080
//! cargo run --release --example http_server 127.0.0.1:9000
//! curl -v http://127.0.0.1:8080/ http://127.0.0.1:8080/  # two requests, one connection
//! wrk -t2 -c1000 -d5s http://127.0.0.1:8080/             # raise `ulimit -n` first
//! kill -QUIT <pid>                                       # a fiber dump on stderr
//! ```
//!
//! It runs until killed. `SIGQUIT` prints what every connection's fiber is doing (a fiber
//! dump, as Go prints its goroutines) and the server goes on: the runtime is the default
//! one ([`green::Runtime::new`]) with [`green::Builder::dump_on_signal`].
//! `scripts/dump-http-server.sh` opens 100 idle keep-alive connections and takes one.

use std::io::{self, Read, Write};
use std::time::Duration;

use green::net::{TcpListener, TcpStream};

/// The body of every response.
const BODY: &[u8] = b"hello\n";

/// The start of every `200` response, written out rather than formatted per request.
const OK_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n";
const _: () = assert!(BODY.len() == 6, "OK_HEAD's Content-Length is BODY's length");

/// The longest request head (request line and headers) accepted.
const MAX_HEAD: usize = 16 * 1024;

/// How long a keep-alive connection may stay idle before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let runtime = green::Runtime::builder()
        .dump_on_signal(libc::SIGQUIT)
        .build()?;
    runtime.run(move || serve(address))
}

/// Accepts connections forever, each served by a fiber of its own, named after its peer
/// (the name shows in fiber dumps and stall warnings).
fn serve(address: String) -> io::Result<()> {
    let listener = TcpListener::bind(address)?;
    println!(
        "http server listening on http://{}/",
        listener.local_addr()?
    );
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                let serve_connection = move || {
                    if let Err(error) = handle(stream) {
                        report(&error);
                    }
                };
                let spawned = green::task::Builder::new()
                    .name(format!("conn {peer}"))
                    .spawn(serve_connection);
                if let Err(error) = spawned {
                    // No stack for it (past vm.max_map_count): the connection closes.
                    eprintln!("cannot serve {peer}: {error}");
                }
            }
            Err(error) => {
                // Out of descriptors, say: back off rather than spin on the error.
                eprintln!("accept failed: {error}");
                green::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Prints a connection's error, unless it is the usual way clients go away.
fn report(error: &io::Error) {
    use io::ErrorKind::*;
    if !matches!(
        error.kind(),
        ConnectionReset | BrokenPipe | UnexpectedEof | TimedOut
    ) {
        eprintln!("connection failed: {error}");
    }
}

/// Serves the requests of one connection until the client closes it or asks to.
fn handle(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    // Bytes read but not yet consumed: with pipelining, the start of the next request.
    let mut buffer = Vec::with_capacity(1024);
    // What each read lands in, zeroed once per connection rather than once per read.
    let mut chunk = vec![0; 4096];
    let mut response = Vec::with_capacity(256);
    loop {
        // 1. Read up to the blank line that ends the head; a close before is the end.
        let Some(head_len) = read_head(&stream, &mut buffer, &mut chunk)? else {
            return Ok(());
        };
        // 2. Parse the request line and the headers we care about.
        let request = match Request::parse(&buffer[..head_len]) {
            Ok(request) => request,
            Err(status) => {
                let mut stream = &stream;
                return stream.write_all(&error_response(status));
            }
        };
        buffer.drain(..head_len);
        // 3. Skip the body, if any; we answer the same whatever it says.
        skip_body(&stream, &mut buffer, request.content_length)?;
        // 4. Answer.
        response.clear();
        request.respond(&mut response);
        (&stream).write_all(&response)?;
        if !request.keep_alive {
            return Ok(());
        }
    }
}

/// Reads into `buffer` (through `chunk`) until it holds a whole request head; returns the
/// head's length (through the blank line), or `None` if the client closed the connection
/// first.
fn read_head(
    mut stream: &TcpStream,
    buffer: &mut Vec<u8>,
    chunk: &mut [u8],
) -> io::Result<Option<usize>> {
    let mut searched = 0;
    loop {
        if let Some(end) = find_blank_line(buffer, searched) {
            return Ok(Some(end));
        }
        if buffer.len() >= MAX_HEAD {
            stream.write_all(&error_response(Status::HeaderTooLarge))?;
            return Ok(None);
        }
        // The blank line may straddle what we have and what comes next.
        searched = buffer.len().saturating_sub(3);
        match stream.read(chunk)? {
            0 if buffer.is_empty() => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The end of the first `\r\n\r\n` in `buffer` at or after `from`.
fn find_blank_line(buffer: &[u8], from: usize) -> Option<usize> {
    // Looks at every fourth byte from `from + 3`: each four bytes in a row hold one of
    // them, so a blank line (four bytes, each `\r` or `\n`) shows in one, and only there
    // are the windows that hold that byte compared, first to last.
    let mut at = from + 3;
    while at < buffer.len() {
        if matches!(buffer[at], b'\r' | b'\n') {
            let first = at.saturating_sub(3).max(from);
            for start in first..=at {
                if buffer[start..].starts_with(b"\r\n\r\n") {
                    return Some(start + 4);
                }
            }
        }
        at += 4;
    }
    None
}

/// Consumes a body of `len` bytes: first from `buffer`, then from the stream.
fn skip_body(stream: &TcpStream, buffer: &mut Vec<u8>, len: usize) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let buffered = len.min(buffer.len());
    buffer.drain(..buffered);
    let rest = (len - buffered) as u64;
    let skipped = io::copy(&mut stream.take(rest), &mut io::sink())?;
    if skipped < rest {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// The parts of a request that shape the response.
struct Request {
    /// `HEAD` requests get the headers without the body.
    head_only: bool,
    /// Whether the connection stays open after the response.
    keep_alive: bool,
    /// Whether the client spoke HTTP/1.0 (keep-alive must then be announced).
    http_1_0: bool,
    /// The length of the request body.
    content_length: usize,
}

/// Error responses.
#[derive(Clone, Copy)]
enum Status {
    /// Malformed request.
    BadRequest,
    /// The head exceeds `MAX_HEAD`.
    HeaderTooLarge,
    /// A chunked request body, which this server does not decode.
    NotImplemented,
}

impl Request {
    /// Parses a request head (request line, headers, blank line), as bytes: header
    /// values need not be UTF-8, and the names compared are ASCII.
    fn parse(head: &[u8]) -> Result<Request, Status> {
        let mut lines = head
            .split(|&byte| byte == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
        let mut request_line = lines.next().unwrap_or(b"").split(|&byte| byte == b' ');
        let (Some(method), Some(_target), Some(version), None) = (
            request_line.next(),
            request_line.next(),
            request_line.next(),
            request_line.next(),
        ) else {
            return Err(Status::BadRequest);
        };
        if method.is_empty() || !method.iter().all(|&byte| is_token_byte(byte)) {
            return Err(Status::BadRequest);
        }
        let http_1_0 = match version {
            b"HTTP/1.1" => false,
            b"HTTP/1.0" => true,
            _ => return Err(Status::BadRequest),
        };
        let mut request = Request {
            head_only: method == b"HEAD",
            keep_alive: !http_1_0,
            http_1_0,
            content_length: 0,
        };
        for line in lines.take_while(|line| !line.is_empty()) {
            let colon = line
                .iter()
                .position(|&byte| byte == b':')
                .ok_or(Status::BadRequest)?;
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"connection") {
                for option in value.split(|&byte| byte == b',').map(<[u8]>::trim_ascii) {
                    if option.eq_ignore_ascii_case(b"close") {
                        request.keep_alive = false;
                    } else if option.eq_ignore_ascii_case(b"keep-alive") {
                        request.keep_alive = true;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"content-length") {
                request.content_length = std::str::from_utf8(value)
                    .ok()
                    .and_then(|value| value.parse().ok())
                    .ok_or(Status::BadRequest)?;
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                return Err(Status::NotImplemented);
            }
        }
        Ok(request)
    }

    /// Writes the response to this request into `out`.
    fn respond(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(OK_HEAD);
        if !self.keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if self.http_1_0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !self.head_only {
            out.extend_from_slice(BODY);
        }
    }
}

/// Whether `byte` may appear in a token (a method, a header name): RFC 9110's `tchar`.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A complete response for an error, after which the connection closes.
fn error_response(status: Status) -> Vec<u8> {
    let reason = match status {
        Status::BadRequest => "400 Bad Request",
        Status::HeaderTooLarge => "431 Request Header Fields Too Large",
        Status::NotImplemented => "501 Not Implemented",
    };
    format!("HTTP/1.1 {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::{Request, Status, find_blank_line};

    #[test]
    fn the_blank_line_is_found_first_wherever_it_starts() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for extra in 0..8 {
            // Pipelined: a second head behind the first.
            let mut buffer = b"x".repeat(extra);
            buffer.extend_from_slice(head);
            buffer.extend_from_slice(head);
            for from in 0..=buffer.len() {
                // A plain scan, as the reference.
                let expected = (from..buffer.len().saturating_sub(3))
                    .find(|&i| buffer[i..].starts_with(b"\r\n\r\n"))
                    .map(|i| i + 4);
                assert_eq!(find_blank_line(&buffer, from), expected, "{extra} {from}");
            }
        }
        assert_eq!(find_blank_line(b"\r\n\r", 0), None);
        assert_eq!(find_blank_line(b"\n\r\n\r\n", 0), Some(5));
    }

    #[test]
    fn requests_parse_as_http_says() {
        let get = Request::parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .ok()
            .unwrap();
        assert!(get.keep_alive && !get.http_1_0 && !get.head_only);
        assert_eq!(get.content_length, 0);
        let old = Request::parse(b"HEAD / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .ok()
            .unwrap();
        assert!(old.keep_alive && old.http_1_0 && old.head_only);
        let close = Request::parse(
            b"POST / HTTP/1.1\r\nconnection: x, close\r\nContent-Length:  12 \r\n\r\n",
        )
        .ok()
        .unwrap();
        assert!(!close.keep_alive);
        assert_eq!(close.content_length, 12);
        let cases: [(&[u8], Status); 7] = [
            (b"GET /\r\n\r\n", Status::BadRequest),
            (b"GET / HTTP/2\r\n\r\n", Status::BadRequest),
            (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", Status::BadRequest),
            (
                b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                Status::BadRequest,
            ),
            (
                b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Status::NotImplemented,
            ),
            (b"\xff / HTTP/1.1\r\n\r\n", Status::BadRequest),
            (b" / HTTP/1.1\r\n\r\n", Status::BadRequest),
        ];
        for (head, status) in cases {
            let got = Request::parse(head).err().map(|status| status as u8);
            assert_eq!(got, Some(status as u8), "{}", head.escape_ascii());
        }
        // Header values need not be UTF-8.
        assert!(Request::parse(b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n").is_ok());
    }
}
