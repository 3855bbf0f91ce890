//! Behaviour of `green::net`: TCP, UDP and Unix sockets used from fibers, from plain
//! threads and from async code; timeouts, shutdown, connection errors, name resolution,
//! and thousands of concurrent connections on one worker.
//!
//! Every address is on 127.0.0.1.

mod common;

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use green::net::unix::{UnixListener, UnixStream};
use green::net::{TcpListener, TcpStream, UdpSocket};

use common::tcp_pair;

/// Counts are scaled down under QEMU (riscv64, aarch64), where everything is ~100x slower.
const NATIVE: bool = cfg!(target_arch = "x86_64");

/// Echoes everything `stream` reads until end-of-stream, with plain `Read`/`Write`.
fn echo<S>(mut stream: S)
where
    S: Read + Write,
{
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf).unwrap() {
            0 => return,
            n => stream.write_all(&buf[..n]).unwrap(),
        }
    }
}

/// Sends `message`, half-closes, and returns all that comes back until end-of-stream.
fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    reply
}

/// A fresh path for a Unix socket in the temporary directory.
fn socket_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("green-net-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// A message of `len` bytes that is not all one value.
fn message(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// Raises the soft limit on open descriptors toward `wanted` (the hard limit too, if the
/// process is privileged); returns the soft limit in force.
fn raise_fd_limit(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit, which we own.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    if limit.rlim_cur >= wanted {
        return limit.rlim_cur;
    }
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: limit.rlim_max.max(wanted),
    };
    // SAFETY: setrlimit reads one rlimit, which we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return wanted;
    }
    // Unprivileged and the hard limit is lower: go as far as it allows.
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return limit.rlim_max;
    }
    limit.rlim_cur
}

#[test]
fn the_socket_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TcpListener>();
    assert_send_sync::<TcpStream>();
    assert_send_sync::<UdpSocket>();
    assert_send_sync::<UnixListener>();
    assert_send_sync::<UnixStream>();
}

#[test]
fn tcp_echo_round_trip_between_fibers() {
    let sent = message(32 * 1024);
    let expected = sent.clone();
    let reply = green::run(move || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = green::spawn(move || echo(listener.accept().unwrap().0));
        let mut client = TcpStream::connect(address).unwrap();
        let reply = round_trip(&mut client, &sent);
        server.join().unwrap();
        reply
    });
    assert_eq!(reply, expected);
}

#[test]
fn tcp_echo_round_trip_between_plain_threads() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        assert!(!green::in_fiber());
        echo(listener.accept().unwrap().0);
    });
    let sent = message(32 * 1024);
    let mut client = TcpStream::connect(address).unwrap();
    assert_eq!(round_trip(&mut client, &sent), sent);
    server.join().unwrap();
}

#[test]
fn ten_thousand_fibers_each_make_a_tcp_round_trip_on_one_worker() {
    use futures::{FutureExt, StreamExt};

    // All connections are open at once, each with two descriptors (client and server
    // side): 10 000 of them need a descriptor limit above 20 000. Below that the test
    // scales down, keeping room for the other tests of this binary, which run in
    // parallel and hold at most about a hundred descriptors.
    let wanted = if NATIVE { 10_000 } else { 500 };
    const SPARE_FDS: u64 = 512;
    let limit = raise_fd_limit(2 * wanted + SPARE_FDS);
    let count = wanted.min(limit.saturating_sub(SPARE_FDS) / 2);
    if count < wanted {
        eprintln!("descriptor limit {limit}: scaled down to {count} connections");
    }
    assert!(
        count > 0,
        "descriptor limit {limit} is too low for this test"
    );
    // Connections are opened in waves well below the listen backlog: a burst larger than
    // the backlog has its SYNs dropped, and retried only a second later.
    const WAVE: u64 = 1000;

    let echoed = green::run(move || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let acceptor = green::spawn(move || {
            for _ in 0..count {
                let (stream, _) = listener.accept().unwrap();
                green::spawn(move || echo(stream));
            }
        });
        let (connected, mut connections) = futures::channel::mpsc::unbounded();
        let (start, started) = futures::channel::oneshot::channel::<()>();
        let started = started.shared();
        let mut clients = Vec::new();
        for first in (0..count).step_by(WAVE as usize) {
            let wave = first..count.min(first + WAVE);
            for i in wave.clone() {
                let (connected, started) = (connected.clone(), started.clone());
                clients.push(green::spawn(move || {
                    let mut stream = TcpStream::connect(address).unwrap();
                    connected.unbounded_send(()).unwrap();
                    green::await_blocking(started).unwrap();
                    let sent = i.to_le_bytes();
                    stream.write_all(&sent).unwrap();
                    let mut reply = [0; 8];
                    stream.read_exact(&mut reply).unwrap();
                    reply == sent
                }));
            }
            for _ in wave {
                green::await_blocking(connections.next()).unwrap();
            }
        }
        // Every client is connected and parked at once; now they all talk.
        start.send(()).unwrap();
        let echoed = clients
            .into_iter()
            .map(|client| client.join().unwrap())
            .filter(|&ok| ok)
            .count() as u64;
        acceptor.join().unwrap();
        echoed
    });
    assert_eq!(echoed, count);
}

#[test]
fn shutdown_wakes_a_fiber_blocked_in_read() {
    let result = green::run(|| {
        let (client, _server) = tcp_pair();
        let client = Arc::new(client);
        let reading = client.clone();
        let reader = green::spawn(move || (&*reading).read(&mut [0; 16]));
        // The reader runs first (FIFO) and parks in `read`: nobody has written.
        green::yield_now();
        assert!(!reader.is_finished(), "the reader should be parked in read");
        client.shutdown(Shutdown::Both).unwrap();
        reader.join().unwrap()
    });
    assert!(
        matches!(result, Ok(0) | Err(_)),
        "read after shutdown: {result:?}"
    );
}

#[test]
fn shutdown_write_gives_the_peer_end_of_stream() {
    let read = green::run(|| {
        let (client, mut server) = tcp_pair();
        let reader = green::spawn(move || {
            let mut all = Vec::new();
            server.read_to_end(&mut all).unwrap();
            all
        });
        (&client).write_all(b"last words").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        reader.join().unwrap()
    });
    assert_eq!(read, b"last words");
}

#[test]
fn read_timeout_in_a_fiber_gives_timed_out_not_before_the_timeout() {
    let timeout = Duration::from_millis(50);
    let (kind, elapsed) = green::run(move || {
        let (client, _server) = tcp_pair();
        client.set_read_timeout(Some(timeout)).unwrap();
        assert_eq!(client.read_timeout().unwrap(), Some(timeout));
        let start = Instant::now();
        let error = (&client).read(&mut [0; 16]).unwrap_err();
        (error.kind(), start.elapsed())
    });
    assert_eq!(kind, io::ErrorKind::TimedOut);
    assert!(elapsed >= timeout, "timed out after {elapsed:?}");
}

#[test]
fn a_read_timeout_kept_from_an_earlier_read_neither_fires_early_nor_is_lost() {
    // The first read waits 10 ms, then gets a byte: its timer stays registered for its
    // own deadline (start + 100 ms). The second read starts 50 ms later: the kept
    // registration fires before the second read's deadline, which must then still come,
    // on time, not early.
    let timeout = Duration::from_millis(100);
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(green::run(move || {
            let (client, server) = tcp_pair();
            client.set_read_timeout(Some(timeout)).unwrap();
            let writer = green::spawn(move || {
                green::sleep(Duration::from_millis(10));
                (&server).write_all(b"x").unwrap();
                server
            });
            assert_eq!((&client).read(&mut [0; 1]).unwrap(), 1);
            let _server = writer.join().unwrap();
            green::sleep(Duration::from_millis(50));
            let start = Instant::now();
            let error = (&client).read(&mut [0; 1]).unwrap_err();
            (error.kind(), start.elapsed())
        }));
    });
    // A lost timeout would leave the read waiting for ever.
    let (kind, elapsed) = outcome
        .recv_timeout(Duration::from_secs(30))
        .expect("the second read's timeout never fired");
    assert_eq!(kind, io::ErrorKind::TimedOut);
    assert!(elapsed >= timeout, "timed out after {elapsed:?}");
}

#[test]
fn read_timeout_on_a_plain_thread_gives_timed_out_not_before_the_timeout() {
    let timeout = Duration::from_millis(50);
    let (client, _server) = tcp_pair();
    client.set_read_timeout(Some(timeout)).unwrap();
    let start = Instant::now();
    let error = (&client).read(&mut [0; 16]).unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert!(elapsed >= timeout, "timed out after {elapsed:?}");
}

#[test]
fn a_read_within_the_timeout_succeeds() {
    let read = green::run(|| {
        let (client, server) = tcp_pair();
        client
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let writer = green::spawn(move || (&server).write_all(b"in time").unwrap());
        let mut buf = [0; 7];
        (&client).read_exact(&mut buf).unwrap();
        writer.join().unwrap();
        buf
    });
    assert_eq!(&read, b"in time");
}

#[test]
fn a_zero_timeout_is_refused_as_std_does() {
    let (client, _server) = tcp_pair();
    let error = client.set_read_timeout(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    let error = client.set_write_timeout(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(client.read_timeout().unwrap(), None);
}

#[test]
fn write_timeout_gives_timed_out_once_the_peer_stops_reading() {
    let timeout = Duration::from_millis(50);
    let (kind, elapsed, written) = green::run(move || {
        // The server never reads: the writes fill both socket buffers, then one blocks.
        let (client, _server) = tcp_pair();
        client.set_write_timeout(Some(timeout)).unwrap();
        let chunk = vec![0; 64 * 1024];
        let mut written = 0usize;
        loop {
            let start = Instant::now();
            match (&client).write(&chunk) {
                Ok(n) => written += n,
                Err(error) => return (error.kind(), start.elapsed(), written),
            }
            assert!(
                written < 1 << 30,
                "a gigabyte went into a peer that never reads"
            );
        }
    });
    assert_eq!(kind, io::ErrorKind::TimedOut);
    assert!(elapsed >= timeout, "timed out after {elapsed:?}");
    assert!(written > 0);
}

#[test]
fn udp_send_to_and_recv_from_between_fibers() {
    let (request, reply, reply_from, server_address) = green::run(|| {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server_address = server.local_addr().unwrap();
        let echo = green::spawn(move || {
            let mut buf = [0; 64];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            server.send_to(&buf[..n], from).unwrap();
            (buf[..n].to_vec(), from)
        });
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"datagram", server_address).unwrap();
        let mut buf = [0; 64];
        let (n, reply_from) = client.recv_from(&mut buf).unwrap();
        let (request, request_from) = echo.join().unwrap();
        assert_eq!(request_from, client.local_addr().unwrap());
        (request, buf[..n].to_vec(), reply_from, server_address)
    });
    assert_eq!(request, b"datagram");
    assert_eq!(reply, b"datagram");
    assert_eq!(reply_from, server_address);
}

#[test]
fn udp_connected_send_recv_and_peek() {
    let (peeked, peeked_from, received, a_address) = green::run(|| {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a_address = a.local_addr().unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a_address).unwrap();
        assert_eq!(a.peer_addr().unwrap(), b.local_addr().unwrap());
        let receiver = green::spawn(move || {
            let mut buf = [0; 16];
            let (n, from) = b.peek_from(&mut buf).unwrap();
            let peeked = buf[..n].to_vec();
            let n = b.recv(&mut buf).unwrap();
            (peeked, from, buf[..n].to_vec())
        });
        a.send(b"hello").unwrap();
        let (peeked, from, received) = receiver.join().unwrap();
        (peeked, from, received, a_address)
    });
    assert_eq!(peeked, b"hello");
    assert_eq!(peeked_from, a_address);
    assert_eq!(received, b"hello");
}

#[test]
fn udp_read_timeout_gives_timed_out_not_before_the_timeout() {
    let timeout = Duration::from_millis(30);
    let (kind, elapsed) = green::run(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(timeout)).unwrap();
        let start = Instant::now();
        let error = socket.recv_from(&mut [0; 16]).unwrap_err();
        (error.kind(), start.elapsed())
    });
    assert_eq!(kind, io::ErrorKind::TimedOut);
    assert!(elapsed >= timeout, "timed out after {elapsed:?}");
}

#[test]
fn unix_stream_echo_between_fibers() {
    let path = socket_path("echo");
    let listener = UnixListener::bind(&path).unwrap();
    let client_path = path.clone();
    let reply = green::run(move || {
        let server = green::spawn(move || echo(listener.accept().unwrap().0));
        let mut client = UnixStream::connect(&client_path).unwrap();
        client.write_all(b"over a unix socket").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        server.join().unwrap();
        reply
    });
    std::fs::remove_file(&path).unwrap();
    assert_eq!(reply, "over a unix socket");
}

#[test]
fn unix_pair_read_timeout_gives_timed_out_not_before_the_timeout() {
    let timeout = Duration::from_millis(30);
    let (kind, elapsed) = green::run(move || {
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(timeout)).unwrap();
        let start = Instant::now();
        let error = (&a).read(&mut [0; 16]).unwrap_err();
        (error.kind(), start.elapsed())
    });
    assert_eq!(kind, io::ErrorKind::TimedOut);
    assert!(elapsed >= timeout, "timed out after {elapsed:?}");
}

#[test]
fn unix_connect_to_a_missing_path_fails() {
    let path = socket_path("nobody-listens");
    let error = green::run(move || UnixStream::connect(&path).unwrap_err());
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
}

#[test]
fn connecting_to_a_closed_port_is_refused() {
    // Bind a port, then close it: nobody listens there.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let in_fiber = green::run(move || TcpStream::connect(address).unwrap_err());
    assert_eq!(in_fiber.kind(), io::ErrorKind::ConnectionRefused);
    let on_thread = TcpStream::connect(address).unwrap_err();
    assert_eq!(on_thread.kind(), io::ErrorKind::ConnectionRefused);
}

#[test]
fn connect_timeout_connects_to_a_listener_in_time() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let peer = green::run(move || {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(60)).unwrap();
        stream.peer_addr().unwrap()
    });
    assert_eq!(peer, address);
    let error = TcpStream::connect_timeout(&address, Duration::ZERO).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn connect_resolves_a_host_name_on_the_blocking_pool_and_connects() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reply = green::run(move || {
        let server = green::spawn(move || echo(listener.accept().unwrap().0));
        // A `String` host name: resolved through `green::unblock`, then each address tried.
        let mut client = TcpStream::connect(format!("localhost:{port}")).unwrap();
        assert_eq!(client.peer_addr().unwrap().port(), port);
        let reply = round_trip(&mut client, b"resolved");
        server.join().unwrap();
        reply
    });
    assert_eq!(reply, b"resolved");
}

#[test]
fn an_unresolvable_host_name_is_an_error_not_a_hang() {
    let error = green::run(|| {
        TcpStream::connect("no-such-host.invalid:80")
            .map(drop)
            .unwrap_err()
    });
    assert_ne!(error.kind(), io::ErrorKind::WouldBlock);
}

/// The same types driven by async code: `futures::io::AsyncReadExt`/`AsyncWriteExt` (whose
/// methods clash with `Read`/`Write`, hence a module of their own).
mod async_io {
    use futures::io::{AsyncReadExt, AsyncWriteExt};
    use green::net::unix::UnixStream;
    use green::net::{TcpListener, TcpStream};

    use super::{NATIVE, echo, message};

    #[test]
    fn read_and_write_driven_by_block_on() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || echo(listener.accept().unwrap().0));
        let mut client = TcpStream::connect(address).unwrap();
        let reply = green::block_on(async move {
            client.write_all(b"async hello").await.unwrap();
            client.close().await.unwrap(); // shuts down the writing half
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            reply
        });
        server.join().unwrap();
        assert_eq!(reply, b"async hello");
    }

    #[test]
    fn reads_and_writes_at_once_through_shared_references() {
        // Larger than the socket buffers: the write cannot finish before the echo is read.
        let sent = message(if NATIVE { 4 << 20 } else { 256 << 10 });
        let expected = sent.clone();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || echo(listener.accept().unwrap().0));
        let client = TcpStream::connect(address).unwrap();
        let received = green::block_on(async move {
            let writing = async {
                let mut writer = &client;
                writer.write_all(&sent).await.unwrap();
                writer.close().await.unwrap();
            };
            let reading = async {
                let mut reader = &client;
                let mut received = Vec::new();
                reader.read_to_end(&mut received).await.unwrap();
                received
            };
            futures::future::join(writing, reading).await.1
        });
        server.join().unwrap();
        assert!(received == expected, "the echo differs from what was sent");
    }

    #[test]
    fn two_tasks_reading_one_stream_both_finish() {
        let (client, server) = super::tcp_pair();
        let client = std::sync::Arc::new(client);
        let ready = std::sync::Arc::new(std::sync::Barrier::new(3));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (client, ready) = (client.clone(), ready.clone());
                std::thread::spawn(move || {
                    ready.wait();
                    green::block_on(async move {
                        let mut buf = [0; 5];
                        (&*client).read_exact(&mut buf).await.unwrap();
                        buf
                    })
                })
            })
            .collect();
        ready.wait();
        std::io::Write::write_all(&mut &server, b"0123456789").unwrap();
        let mut read: Vec<u8> = readers
            .into_iter()
            .flat_map(|reader| reader.join().unwrap())
            .collect();
        read.sort();
        assert_eq!(read, b"0123456789");
    }

    #[test]
    fn block_on_in_a_fiber_parks_only_that_fiber() {
        let reply = green::run(|| {
            let (mut a, b) = UnixStream::pair().unwrap();
            let echo_fiber = green::spawn(move || echo(b));
            let reply = green::block_on(async move {
                a.write_all(b"from async code").await.unwrap();
                a.close().await.unwrap();
                let mut reply = String::new();
                a.read_to_string(&mut reply).await.unwrap();
                reply
            });
            echo_fiber.join().unwrap();
            reply
        });
        assert_eq!(reply, "from async code");
    }

    #[test]
    fn unix_stream_echo_with_block_on() {
        let (a, b) = UnixStream::pair().unwrap();
        let read = green::block_on(async move {
            let writing = async {
                let mut a = &a;
                a.write_all(b"unix async").await.unwrap();
            };
            let reading = async {
                let mut b = &b;
                let mut buf = [0; 10];
                b.read_exact(&mut buf).await.unwrap();
                buf
            };
            futures::future::join(writing, reading).await.1
        });
        assert_eq!(&read, b"unix async");
    }
}

#[test]
fn registering_a_closed_descriptor_fails_with_ebadf() {
    /// Claims a descriptor number that no process can have open.
    struct NotOpen;

    impl AsFd for NotOpen {
        fn as_fd(&self) -> BorrowedFd<'_> {
            // SAFETY: this breaks `BorrowedFd`'s contract (the descriptor must be open) on
            // purpose, as the subject of the test; nothing memory-unsafe follows. The number
            // is above the kernel's ceiling for descriptors (fs.nr_open at most 2^31 - 64),
            // so it can never name another owner's open file.
            unsafe { BorrowedFd::borrow_raw(i32::MAX) }
        }
    }

    let on_thread = green::io::Async::new(NotOpen).map(drop).unwrap_err();
    assert_eq!(on_thread.raw_os_error(), Some(libc::EBADF));
    let in_fiber = green::run(|| green::io::Async::new(NotOpen).map(drop).unwrap_err());
    assert_eq!(in_fiber.raw_os_error(), Some(libc::EBADF));
}

#[test]
fn conversions_to_std_restore_blocking_mode_and_back_again() {
    /// Whether `O_NONBLOCK` is set on `fd`.
    fn nonblocking(fd: BorrowedFd<'_>) -> bool {
        // SAFETY: fcntl(F_GETFL) on a borrowed, open descriptor.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        assert!(flags >= 0);
        flags & libc::O_NONBLOCK != 0
    }

    let (client, server) = tcp_pair();
    assert!(nonblocking(client.as_fd()));
    let client = std::net::TcpStream::try_from(client).unwrap();
    assert!(!nonblocking(client.as_fd()));
    let mut client = TcpStream::try_from(client).unwrap();
    assert!(nonblocking(client.as_fd()));
    (&server).write_all(b"still connected").unwrap();
    let mut buf = [0; 15];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still connected");

    let listener = std::net::TcpListener::try_from(TcpListener::bind("127.0.0.1:0").unwrap());
    assert!(!nonblocking(listener.unwrap().as_fd()));
    let udp = std::net::UdpSocket::try_from(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
    assert!(!nonblocking(udp.as_fd()));
}

#[test]
fn a_cloned_stream_reads_what_was_sent_to_the_original() {
    let (client, server) = tcp_pair();
    client
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let clone = client.try_clone().unwrap();
    assert_eq!(clone.read_timeout().unwrap(), Some(Duration::from_secs(60)));
    drop(client);
    (&server).write_all(b"clone").unwrap();
    let mut buf = [0; 5];
    (&clone).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"clone");
}

#[test]
fn nodelay_is_set_and_read_back() {
    let (client, _server) = tcp_pair();
    client.set_nodelay(true).unwrap();
    assert!(client.nodelay().unwrap());
    client.set_nodelay(false).unwrap();
    assert!(!client.nodelay().unwrap());
}

#[test]
fn many_fibers_accept_on_one_listener() {
    let count = if NATIVE { 50 } else { 20 };
    let accepted = green::run(move || {
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let address = listener.local_addr().unwrap();
        let acceptors: Vec<_> = (0..count)
            .map(|_| {
                let listener = listener.clone();
                green::spawn(move || listener.accept().map(drop).is_ok())
            })
            .collect();
        let clients: Vec<_> = (0..count)
            .map(|_| TcpStream::connect(address).unwrap())
            .collect();
        let accepted = acceptors
            .into_iter()
            .map(|acceptor| acceptor.join().unwrap())
            .filter(|&ok| ok)
            .count();
        drop(clients);
        accepted
    });
    assert_eq!(accepted, count);
}

#[test]
fn a_socket_whose_runtime_shut_down_gives_an_error_instead_of_hanging() {
    use std::io::Read;
    use std::task::Poll;
    // Registered (by a first wait) with the reactor of a runtime that is gone when the
    // read waits again.
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let a = green::run(move || {
        let a = green::io::Async::new(a).unwrap();
        green::await_blocking(std::future::poll_fn(|cx| {
            assert!(a.poll_readable(cx).is_pending());
            Poll::Ready(())
        }));
        a
    });
    let error = green::run(move || {
        let mut a = a;
        let result = a.read(&mut [0; 1]);
        drop(b);
        result
    })
    .unwrap_err();
    assert!(error.to_string().contains("has shut down"), "{error}");
}

#[test]
fn readiness_waits_see_data_that_is_already_there_under_edge_triggering() {
    use std::task::Poll;
    // The reactor is edge-triggered: the edge for these bytes has been consumed (by a
    // first wait) before the later waits start. They must still complete, not hang.
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let (done, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        green::run(move || {
            let b = green::io::Async::new(b).unwrap();
            // Registers the source while nothing is readable.
            green::await_blocking(std::future::poll_fn(|cx| {
                assert!(b.poll_readable(cx).is_pending());
                Poll::Ready(())
            }));
            (&a).write_all(b"x").unwrap();
            green::await_blocking(b.readable()).unwrap();
            // The edge is gone, the byte is still there.
            green::await_blocking(b.readable()).unwrap();
            green::await_blocking(b.readable()).unwrap();
            green::await_blocking(std::future::poll_fn(|cx| b.poll_readable(cx))).unwrap();
            green::await_blocking(std::future::poll_fn(|cx| b.poll_readable(cx))).unwrap();
            green::await_blocking(b.writable()).unwrap();
            green::await_blocking(b.writable()).unwrap();
            green::await_blocking(std::future::poll_fn(|cx| b.poll_writable(cx))).unwrap();
            let mut buf = [0; 1];
            b.read_with(|mut io| io.read(&mut buf)).unwrap();
            assert_eq!(&buf, b"x");
        });
        done.send(()).unwrap();
    });
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a readiness wait hung on a ready descriptor");
}
