//! hyper 1.x (HTTP/1, with hyper-util's tokio adapters) from plain functions in fibers:
//! a server with one fiber per connection, clients that send requests and read responses
//! as blocking calls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use green::{JoinHandle, await_blocking};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

/// Answers with the request's method and path, then its body.
async fn echo(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let head = format!("{} {}", request.method(), request.uri().path());
    let body = request.into_body().collect().await?.to_bytes();
    let text = format!("{head} {}", String::from_utf8_lossy(&body));
    Ok(Response::new(Full::new(Bytes::from(text))))
}

/// Serves `connections` HTTP/1 connections on `listener`, one fiber each, with `service`.
fn serve<S>(listener: TcpListener, connections: usize, service: S)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Full<Bytes>>>
        + Clone
        + Send
        + 'static,
    S::Future: 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut served = Vec::new();
    for _ in 0..connections {
        let (stream, _) = await_blocking(listener.accept()).unwrap();
        let service = service.clone();
        served.push(green::spawn(move || {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            await_blocking(connection).unwrap();
        }));
    }
    for fiber in served {
        fiber.join().unwrap();
    }
}

/// A client connection to `address`: the caller sends on it, a fiber of its own drives
/// it until it closes.
fn connect(address: SocketAddr) -> (SendRequest<Full<Bytes>>, JoinHandle<()>) {
    let stream = await_blocking(TcpStream::connect(address)).unwrap();
    let (sender, connection) =
        await_blocking(hyper::client::conn::http1::handshake(TokioIo::new(stream))).unwrap();
    let driver = green::spawn(move || await_blocking(connection).unwrap());
    (sender, driver)
}

/// Sends one request and reads the whole response.
fn fetch(
    sender: &mut SendRequest<Full<Bytes>>,
    method: Method,
    path: &str,
    body: &'static str,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    // Until the connection has finished with the previous exchange, it takes no other.
    await_blocking(sender.ready()).unwrap();
    let response = await_blocking(sender.send_request(request)).unwrap();
    let status = response.status();
    let body = await_blocking(response.into_body().collect())
        .unwrap()
        .to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[test]
fn hyper_clients_and_server_talk_http1_from_plain_functions_in_fibers() {
    let runtime = green::Runtime::builder().workers(2).build().unwrap();
    let answers = runtime.run(|| {
        let listener = await_blocking(TcpListener::bind("127.0.0.1:0")).unwrap();
        let address = listener.local_addr().unwrap();
        let server = green::spawn(move || serve(listener, 10, service_fn(echo)));
        let clients: Vec<_> = (0..10)
            .map(|i| {
                green::spawn(move || {
                    let (mut sender, driver) = connect(address);
                    // Three requests on one kept-alive connection.
                    let answers = vec![
                        fetch(&mut sender, Method::GET, &format!("/fiber/{i}"), ""),
                        fetch(&mut sender, Method::POST, "/echo", "a body"),
                        fetch(&mut sender, Method::GET, "/last", ""),
                    ];
                    drop(sender); // the connection closes, and its driver ends
                    driver.join().unwrap();
                    (i, answers)
                })
            })
            .collect();
        let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        server.join().unwrap();
        answers
    });
    assert_eq!(answers.len(), 10);
    for (i, answers) in answers {
        let expected = [
            format!("GET /fiber/{i} "),
            "POST /echo a body".to_owned(),
            "GET /last ".to_owned(),
        ];
        for ((status, body), expected) in answers.into_iter().zip(expected) {
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, expected);
        }
    }
}

/// How many connections the test below serves at once.
const AT_ONCE: usize = 20;

/// A handler written as a plain function: it blocks in green (on a tokio barrier, a sleep
/// on tokio's timer, then one of green's), which parks only its connection's fiber.
fn slow_hello(
    barrier: &tokio::sync::Barrier,
    _: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    await_blocking(barrier.wait());
    await_blocking(tokio::time::sleep(Duration::from_millis(1)));
    green::sleep(Duration::from_millis(1));
    Ok(Response::new(Full::new(Bytes::from("hello"))))
}

#[test]
fn a_hyper_handler_written_as_a_plain_function_blocks_only_its_own_connection() {
    let runtime = green::Runtime::builder().workers(2).build().unwrap();
    let bodies = runtime.run(|| {
        let listener = await_blocking(TcpListener::bind("127.0.0.1:0")).unwrap();
        let address = listener.local_addr().unwrap();
        // The barrier opens only once every handler waits at it: were a handler's
        // blocking calls to block more than its own fiber, the others would never come.
        let barrier = Arc::new(tokio::sync::Barrier::new(AT_ONCE));
        let service = service_fn(move |request| std::future::ready(slow_hello(&barrier, request)));
        let server = green::spawn(move || serve(listener, AT_ONCE, service));
        let clients: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                green::spawn(move || {
                    let (mut sender, driver) = connect(address);
                    let answer = fetch(&mut sender, Method::GET, "/", "");
                    drop(sender);
                    driver.join().unwrap();
                    answer
                })
            })
            .collect();
        let bodies: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        server.join().unwrap();
        bodies
    });
    assert_eq!(bodies.len(), AT_ONCE);
    assert!(
        bodies
            .iter()
            .all(|(status, body)| *status == StatusCode::OK && body == "hello")
    );
}
