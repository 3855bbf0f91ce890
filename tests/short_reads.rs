//! A fiber's read from a TCP stream that filled less than its buffer drained the socket,
//! so green skips the next read (it would fail with `WouldBlock`) and waits for the next
//! readiness event first. These tests pin down that nothing is lost by it: data that comes
//! later, an end of file that came with the data, urgent data, and read timeouts.
//!
//! Each runs on one worker, so that a fiber that spins keeps the reactor from being
//! polled: what the peer sends meanwhile reaches the fiber as one event.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use green::net::{TcpListener, TcpStream};

/// Longer than any read here should take; a read that waits for an edge that never comes
/// ends with `TimedOut` instead of hanging the test.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `server` in a fiber of a one-worker runtime with the accepted end of a connection
/// whose other end `client` drives from a plain thread (blocking std socket).
///
/// The client sends `first` once the server's fiber has parked in its first read, which
/// `server` gets: that read failed with `WouldBlock` and registered the socket with the
/// reactor, which from then on counts its events (a socket never waited on is never
/// skipped).
fn with_connection(
    first: &'static [u8],
    client: impl FnOnce(std::net::TcpStream) + Send + 'static,
    server: impl FnOnce(TcpStream) + Send + 'static,
) {
    let runtime = green::Runtime::builder().workers(1).build().unwrap();
    runtime.run(move || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (parked, wait_parked) = mpsc::channel();
        let client = thread::spawn(move || {
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            wait_parked.recv().unwrap();
            stream.write_all(first).unwrap();
            client(stream)
        });
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        // One worker: this fiber runs only once the reader below has parked.
        let signal = green::spawn(move || parked.send(()).unwrap());
        assert_eq!(read_some(&stream), first);
        signal.join().unwrap();
        server(stream);
        client.join().unwrap();
    });
}

/// Spins, without yielding, until `flag` is set: the worker polls no reactor meanwhile.
fn spin_until(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        std::hint::spin_loop();
    }
}

/// Reads once into a 4 KiB buffer and returns what came.
fn read_some(mut stream: &TcpStream) -> Vec<u8> {
    let mut buf = [0; 4096];
    let n = stream.read(&mut buf).unwrap();
    buf[..n].to_vec()
}

#[test]
fn data_that_comes_after_a_short_read_is_read() {
    let (go, wait) = mpsc::channel();
    with_connection(
        b"first",
        move |mut client| {
            wait.recv().unwrap();
            client.write_all(b"second").unwrap();
            wait.recv().unwrap();
        },
        move |stream| {
            go.send(()).unwrap();
            // The first read drained the socket: this one waits for the next edge.
            assert_eq!(read_some(&stream), b"second");
            go.send(()).unwrap();
        },
    );
}

#[test]
fn an_end_of_file_that_came_with_the_data_is_not_missed() {
    let (go, wait) = mpsc::channel();
    let sent = Arc::new(AtomicBool::new(false));
    let sent_too = sent.clone();
    with_connection(
        b"x", // short: the socket is drained
        move |mut client| {
            wait.recv().unwrap();
            // Data and FIN while the server's worker spins: one event carries both.
            client.write_all(b"last words").unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            sent_too.store(true, Ordering::SeqCst);
        },
        move |stream| {
            go.send(()).unwrap();
            spin_until(&sent);
            assert_eq!(read_some(&stream), b"last words"); // short again
            // No edge follows: the FIN came with the data. The end of file is read anyway.
            assert_eq!(read_some(&stream), b"");
        },
    );
}

#[test]
fn data_after_urgent_data_is_not_missed() {
    let (go, wait) = mpsc::channel();
    let sent = Arc::new(AtomicBool::new(false));
    let sent_too = sent.clone();
    with_connection(
        b"x",
        move |mut client| {
            wait.recv().unwrap();
            client.write_all(b"ab").unwrap();
            // SAFETY: a valid socket and a one-byte buffer.
            let sent_oob =
                unsafe { libc::send(client.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
            assert_eq!(sent_oob, 1);
            client.write_all(b"cd").unwrap();
            sent_too.store(true, Ordering::SeqCst);
            wait.recv().unwrap();
        },
        move |stream| {
            go.send(()).unwrap();
            spin_until(&sent);
            // A read stops at the urgent mark, with data left and no edge to come: what
            // follows the mark is read all the same (the urgent byte is out of band).
            let mut got = Vec::new();
            while got.len() < 4 {
                let more = read_some(&stream);
                assert!(!more.is_empty(), "end of file after {got:?}");
                got.extend(more);
            }
            assert_eq!(got, b"abcd");
            go.send(()).unwrap();
        },
    );
}

#[test]
fn a_read_after_a_short_read_still_times_out() {
    let (go, wait) = mpsc::channel();
    with_connection(
        b"only",
        move |_client| {
            wait.recv().unwrap(); // keeps the connection open until the server is done
        },
        move |mut stream| {
            stream
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let mut buf = [0; 16];
            let error = stream.read(&mut buf).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::TimedOut);
            go.send(()).unwrap();
        },
    );
}

#[test]
fn a_local_shutdown_wakes_a_read_that_follows_a_short_read() {
    let (go, wait) = mpsc::channel();
    with_connection(
        b"x",
        move |_client| {
            wait.recv().unwrap(); // keeps the connection open until the server is done
        },
        move |stream| {
            let stream = Arc::new(stream);
            let other = stream.clone();
            // One worker: this runs once the read below has parked, waiting for an event
            // that only the shutdown raises.
            let shutdown = green::spawn(move || other.shutdown(Shutdown::Read).unwrap());
            assert_eq!(read_some(&stream), b"");
            shutdown.join().unwrap();
            go.send(()).unwrap();
        },
    );
}

#[test]
fn two_fibers_reading_one_socket_after_a_short_read_both_get_their_data() {
    let (go, wait) = mpsc::channel();
    with_connection(
        b"x",
        move |mut client| {
            wait.recv().unwrap(); // both readers are spawned
            client.write_all(b"a").unwrap();
            wait.recv().unwrap(); // one reader has "a"
            client.write_all(b"b").unwrap();
            wait.recv().unwrap();
        },
        move |stream| {
            let stream = Arc::new(stream);
            let (got, results) = green::sync::channel();
            // Both start after the short read of "x": both wait for an event first, on
            // one source, and neither may be left waiting once data has come for it.
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let (stream, got) = (stream.clone(), got.clone());
                    green::spawn(move || got.send(read_some(&stream)).unwrap())
                })
                .collect();
            go.send(()).unwrap();
            let first = results.recv().unwrap();
            go.send(()).unwrap();
            let second = results.recv().unwrap();
            go.send(()).unwrap();
            let mut both = [first, second];
            both.sort();
            assert_eq!(both, [b"a".to_vec(), b"b".to_vec()]);
            for reader in readers {
                reader.join().unwrap();
            }
        },
    );
}
