//! Tokio-bound crates from plain functions: a local hyper server, and 100 fibers that
//! each fetch a page from it, written as blocking code.
//!
//! ```sh
//! cargo run --example tokio_bridge --features tokio
//! ```
//!
//! With green's `tokio` feature every fiber runs inside a tokio runtime's context, so
//! hyper's futures (and tokio's sockets and timers under them) can be made in a plain
//! function and waited for with `green::await_blocking`, which parks only the calling
//! fiber.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Instant;

use green::await_blocking;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

const FIBERS: usize = 100;

/// The server's handler, a plain function.
fn hello(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = format!("hello, {}", request.uri().path().trim_start_matches('/'));
    Ok(Response::new(Full::new(Bytes::from(body))))
}

/// Accepts connections for ever, serving each in a fiber of its own.
fn serve(listener: TcpListener) {
    loop {
        let (stream, _) = await_blocking(listener.accept()).expect("accept");
        green::spawn(move || {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(|request| std::future::ready(hello(request))),
                );
            if let Err(error) = await_blocking(connection) {
                eprintln!("connection: {error}");
            }
        });
    }
}

/// GETs `path` from `address` on a connection of its own and returns the body.
fn fetch(
    address: SocketAddr,
    path: &str,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let stream = await_blocking(TcpStream::connect(address))?;
    let (mut sender, connection) =
        await_blocking(hyper::client::conn::http1::handshake(TokioIo::new(stream)))?;
    // The connection does the I/O: a fiber drives it while this one waits for answers.
    green::spawn(move || await_blocking(connection));
    let request = Request::get(path)
        .header("host", address.to_string())
        .body(Full::<Bytes>::default())?;
    let response = await_blocking(sender.send_request(request))?;
    let body = await_blocking(response.into_body().collect())?.to_bytes();
    Ok(String::from_utf8(body.to_vec())?)
}

fn main() {
    green::run(|| {
        let listener = await_blocking(TcpListener::bind("127.0.0.1:0")).expect("bind");
        let address = listener.local_addr().expect("local address");
        green::spawn(move || serve(listener));

        let start = Instant::now();
        let fibers: Vec<_> = (0..FIBERS)
            .map(|i| green::spawn(move || fetch(address, &format!("/fiber-{i}"))))
            .collect();
        let bodies: Vec<String> = fibers
            .into_iter()
            .map(|fiber| fiber.join().expect("fiber").expect("fetch"))
            .collect();
        let elapsed = start.elapsed();

        for (i, body) in bodies.iter().enumerate() {
            assert_eq!(body, &format!("hello, fiber-{i}"));
        }
        println!("first answer: {}", bodies[0]);
        println!("last answer:  {}", bodies[FIBERS - 1]);
        println!("{FIBERS} fibers fetched {FIBERS} pages from {address} in {elapsed:.2?}");
        // Returning shuts the runtime down: the server's fibers are cancelled.
    });
}
