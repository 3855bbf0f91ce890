//! `TcpListener::accept` with the process out of descriptors: the accepting fiber neither
//! spins nor ends the server loop, and serves the clients that waited once descriptors
//! are free again.
//!
//! This file holds one test because the test lowers the process's `RLIMIT_NOFILE` and
//! fills every descriptor under it, which no test running beside it could bear (each file
//! in `tests/` is a process of its own).

mod common;

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use green::net::TcpListener;

/// Clients that connect while the process is out of descriptors.
const CLIENTS: usize = 4;

/// How long the process stays out of descriptors while its CPU time is measured.
const EXHAUSTED: Duration = Duration::from_millis(1000);

/// Descriptors left under the lowered limit above the highest one open, for the server's
/// first connection and the descriptors filled (the lower the limit, the fewer to fill).
const HEADROOM: u64 = 64;

/// What the server writes to each client before closing the connection.
const GREETING: &[u8] = b"served";

/// The soft and hard `RLIMIT_NOFILE`.
fn fd_limit() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // getrlimit writes one rlimit, which we own.
    // SAFETY: a valid pointer to a writable rlimit.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    limit
}

/// Sets `RLIMIT_NOFILE`.
fn set_fd_limit(limit: libc::rlimit) {
    // setrlimit reads one rlimit, which we own.
    // SAFETY: a valid pointer to a readable rlimit.
    let result = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(result, 0, "setrlimit: {}", io::Error::last_os_error());
}

/// The highest descriptor open in the process (under QEMU, the emulator's own count too:
/// they share the process and its limit).
fn highest_open_fd() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| entry.unwrap().file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap()
}

/// Opens `/dev/null` until the process is out of descriptors; returns what it opened.
fn fill_descriptors() -> Vec<File> {
    let mut files = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(file) => files.push(file),
            Err(error) if error.raw_os_error() == Some(libc::EMFILE) => return files,
            Err(error) => panic!("filling descriptors: {error}"),
        }
    }
}

/// The user and system CPU time the whole process has used so far.
fn process_cpu_time() -> Duration {
    // SAFETY: rusage is plain old data, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // getrusage writes one rusage, which we own.
    // SAFETY: a valid pointer to a writable rusage.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// A TCP socket not yet connected: made while descriptors are free, connected with
/// [`connect`] once they are not.
fn unconnected_socket() -> OwnedFd {
    // socket(2) takes no pointers and returns a new descriptor or -1.
    // SAFETY: so the call has no precondition.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    // socket(2) just returned this descriptor, and nothing else has seen it.
    // SAFETY: so it is open, and ours alone to own.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Connects `socket` to `address` (blocking: on loopback the kernel completes the
/// handshake before any `accept`) and returns it as a stream.
fn connect(socket: OwnedFd, address: SocketAddrV4) -> std::net::TcpStream {
    let address = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: address.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(address.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let length = std::mem::size_of_val(&address) as libc::socklen_t;
    // connect(2) reads `length` bytes at the pointer: the sockaddr_in we own.
    // SAFETY: `socket` is open; the pointer and length describe a valid sockaddr_in.
    let result = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            (&raw const address).cast::<libc::sockaddr>(),
            length,
        )
    };
    assert_eq!(result, 0, "connect: {}", io::Error::last_os_error());
    std::net::TcpStream::from(socket)
}

/// Reads what the server sent until it closed the connection.
fn greeting(mut client: std::net::TcpStream) -> Vec<u8> {
    let mut greeting = Vec::new();
    client.read_to_end(&mut greeting).unwrap();
    greeting
}

#[test]
fn accept_out_of_descriptors_waits_without_spinning_then_serves_the_waiting_clients() {
    common::within(120, "the accept loop out of descriptors", || {
        // 1. A server: one fiber accepting in a loop, greeting each client. Errors would
        //    end a loop that propagates them; this one records them instead.
        let runtime = green::Runtime::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(address) = listener.local_addr().unwrap() else {
            unreachable!("bound to an IPv4 address");
        };
        let errors = Arc::new(Mutex::new(Vec::new()));
        let server_errors = errors.clone();
        runtime.spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(mut stream) => stream.write_all(GREETING).unwrap(),
                    Err(error) => server_errors.lock().unwrap().push(error.to_string()),
                }
            }
        });
        // 2. It serves while descriptors are free, and waits in `accept` again.
        let first = std::net::TcpStream::connect(address).unwrap();
        assert_eq!(greeting(first), GREETING);

        // 3. Use up the descriptors: lower the limit, then fill what is left under it.
        //    The clients' sockets are made first, so that they can connect after.
        let sockets: Vec<OwnedFd> = (0..CLIENTS).map(|_| unconnected_socket()).collect();
        let original = fd_limit();
        let lowered = (highest_open_fd() + 1 + HEADROOM).min(original.rlim_cur);
        set_fd_limit(libc::rlimit {
            rlim_cur: lowered,
            ..original
        });
        let filled = fill_descriptors();

        // 4. The clients connect: the listener turns readable, and each `accept(2)`
        //    fails with EMFILE for as long as the process stays out of descriptors.
        let clients: Vec<_> = sockets
            .into_iter()
            .map(|socket| connect(socket, address))
            .collect();
        let cpu_before = process_cpu_time();
        let start = Instant::now();
        std::thread::sleep(EXHAUSTED);
        let cpu = process_cpu_time() - cpu_before;
        let wall = start.elapsed();

        // 5. Meanwhile the server used little CPU (a loop that retried at once would use
        //    a whole core: about `wall`), reported no error, and served no one.
        assert!(
            cpu < wall / 4,
            "the process used {cpu:?} of CPU in {wall:?} out of descriptors: accept spins"
        );
        assert_eq!(*errors.lock().unwrap(), Vec::<String>::new());
        for client in &clients {
            client.set_nonblocking(true).unwrap();
            let error = (&*client).read(&mut [0; 1]).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "{error}");
            client.set_nonblocking(false).unwrap();
        }

        // 6. Free the descriptors: every client that waited is served.
        drop(filled);
        for client in clients {
            assert_eq!(greeting(client), GREETING);
        }
        assert_eq!(*errors.lock().unwrap(), Vec::<String>::new());
        set_fd_limit(original);
        println!("out of descriptors for {wall:?}, the process used {cpu:?} of CPU");
    });
}
