//! tokio's sockets from plain functions in fibers: a `tokio::net::TcpListener` served in
//! one fiber and used from others, on two workers.

use green::await_blocking;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves `connections` connections on `listener`, one fiber each, echoing what they
/// send until they close.
fn echo_server(listener: TcpListener, connections: usize) {
    let mut served = Vec::new();
    for _ in 0..connections {
        let (mut stream, _) = await_blocking(listener.accept()).unwrap();
        served.push(green::spawn(move || {
            let mut buf = [0; 1024];
            loop {
                let n = await_blocking(stream.read(&mut buf)).unwrap();
                if n == 0 {
                    break;
                }
                await_blocking(stream.write_all(&buf[..n])).unwrap();
            }
        }));
    }
    for fiber in served {
        fiber.join().unwrap();
    }
}

#[test]
fn a_tokio_listener_served_in_one_fiber_answers_clients_in_others() {
    let runtime = green::Runtime::builder().workers(2).build().unwrap();
    let replies = runtime.run(|| {
        let listener = await_blocking(TcpListener::bind("127.0.0.1:0")).unwrap();
        let address = listener.local_addr().unwrap();
        let server = green::spawn(move || echo_server(listener, 20));
        let clients: Vec<_> = (0..20)
            .map(|i| {
                green::spawn(move || {
                    let mut stream = await_blocking(TcpStream::connect(address)).unwrap();
                    let message = format!("hello from fiber {i}");
                    await_blocking(stream.write_all(message.as_bytes())).unwrap();
                    let mut reply = vec![0; message.len()];
                    await_blocking(stream.read_exact(&mut reply)).unwrap();
                    (message, String::from_utf8(reply).unwrap())
                })
            })
            .collect();
        let replies: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        server.join().unwrap();
        replies
    });
    assert_eq!(replies.len(), 20);
    for (sent, echoed) in replies {
        assert_eq!(sent, echoed);
    }
}

#[test]
fn a_tokio_stream_connected_in_one_fiber_is_split_between_two_others() {
    let runtime = green::Runtime::builder().workers(2).build().unwrap();
    let listener = runtime.run(|| await_blocking(TcpListener::bind("127.0.0.1:0")).unwrap());
    let address = listener.local_addr().unwrap();
    let server = runtime.spawn(move || echo_server(listener, 1));
    let stream = runtime.run(move || await_blocking(TcpStream::connect(address)).unwrap());
    let (mut reader, mut writer) = stream.into_split();
    let reading = runtime.spawn(move || {
        let mut reply = [0; 4];
        await_blocking(reader.read_exact(&mut reply)).unwrap();
        reply
    });
    let writing = runtime.spawn(move || await_blocking(writer.write_all(b"ping")).unwrap());
    writing.join().unwrap();
    assert_eq!(&reading.join().unwrap(), b"ping");
    server.join().unwrap();
}
