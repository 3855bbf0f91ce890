//! Reads into an empty buffer behave as std's do on Linux: on a stream socket they wait
//! until the socket is readable (data or end of stream), then return `Ok(0)` and leave the
//! data for the next read; on a UDP socket a receive takes the next datagram and
//! discards it, a peek leaves it. Once data is there, none of them waits.

mod common;

use common::{one_worker, tcp_pair, within};
use std::io::{IoSliceMut, Read, Write};
use std::net::Shutdown;

use green::net::UdpSocket;
use green::net::unix::UnixStream;

/// Every zero-length read of `stream`, each of which must return `Ok(0)`: through the
/// stream, through a shared reference, vectored with no buffers and with empty ones.
fn zero_length_reads<S>(mut stream: S)
where
    S: Read,
{
    assert_eq!(stream.read(&mut []).unwrap(), 0);
    assert_eq!(stream.read_vectored(&mut []).unwrap(), 0);
    let (mut a, mut b) = ([0u8; 0], [0u8; 0]);
    let mut empty = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
    assert_eq!(stream.read_vectored(&mut empty).unwrap(), 0);
}

#[test]
fn a_zero_length_tcp_read_waits_for_data_then_leaves_it() {
    within(10, "a zero-length read once data came", || {
        one_worker().run(|| {
            let (client, mut server) = tcp_pair();
            let client = std::sync::Arc::new(client);
            let reader = client.clone();
            let read = green::spawn(move || (&*reader).read(&mut []).unwrap());
            green::yield_now(); // the reader runs until it parks
            assert!(!read.is_finished(), "returned before data came");
            server.write_all(b"x").unwrap();
            assert_eq!(read.join().unwrap(), 0);
            let mut byte = [0; 1];
            assert_eq!((&*client).read(&mut byte).unwrap(), 1);
            assert_eq!(&byte, b"x");
        });
    });
}

#[test]
fn zero_length_tcp_reads_and_peeks_return_at_once_while_data_is_queued() {
    within(10, "zero-length reads with data queued", || {
        one_worker().run(|| {
            let (mut client, mut server) = tcp_pair();
            server.write_all(b"x").unwrap();
            // Waits until the byte is there.
            assert_eq!(client.peek(&mut [0; 1]).unwrap(), 1);
            assert_eq!(client.peek(&mut []).unwrap(), 0);
            zero_length_reads(&client);
            zero_length_reads(&mut client);
            let mut byte = [0; 1];
            assert_eq!(client.read(&mut byte).unwrap(), 1);
            assert_eq!(&byte, b"x");
        });
    });
}

#[test]
fn zero_length_tcp_reads_return_at_once_at_end_of_stream() {
    within(10, "zero-length reads at end of stream", || {
        one_worker().run(|| {
            let (mut client, server) = tcp_pair();
            server.shutdown(Shutdown::Write).unwrap();
            // Waits until end of stream is there.
            assert_eq!(client.read(&mut [0; 1]).unwrap(), 0);
            assert_eq!(client.peek(&mut []).unwrap(), 0);
            zero_length_reads(&mut client);
        });
    });
}

#[test]
fn zero_length_unix_reads_return_at_once_while_data_is_queued() {
    within(10, "zero-length Unix reads with data queued", || {
        one_worker().run(|| {
            let (mut a, mut b) = UnixStream::pair().unwrap();
            b.write_all(b"xy").unwrap();
            // Waits until the bytes are there.
            let mut byte = [0; 1];
            assert_eq!(a.read(&mut byte).unwrap(), 1);
            zero_length_reads(&a);
            zero_length_reads(&mut a);
            assert_eq!(a.read(&mut byte).unwrap(), 1);
            assert_eq!(&byte, b"y");
        });
    });
}

#[test]
fn a_zero_length_udp_receive_takes_a_queued_datagram_and_a_peek_leaves_it() {
    within(10, "zero-length UDP receives, datagrams queued", || {
        one_worker().run(|| {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let address = socket.local_addr().unwrap();
            socket.connect(address).unwrap();
            let mut buf = [0; 8];
            for datagram in [&b"one"[..], b"two", b"three"] {
                socket.send(datagram).unwrap();
            }
            // Waits until the first datagram is there; the three came in order.
            assert_eq!(socket.peek_from(&mut buf).unwrap(), (3, address));
            assert_eq!(socket.peek_from(&mut []).unwrap(), (0, address));
            assert_eq!(socket.peek(&mut []).unwrap(), 0);
            assert_eq!(socket.recv_from(&mut []).unwrap(), (0, address)); // "one"
            assert_eq!(socket.recv(&mut []).unwrap(), 0); // "two"
            let n = socket.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"three");
        });
    });
}
