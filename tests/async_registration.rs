//! An `Async`'s reactor registration follows its descriptor: taken back by `into_inner`,
//! removed for that descriptor only when it drops, so that another `Async` on the same
//! open file (a `dup`) or the same descriptor registered again keeps its readiness events.
//!
//! That safe code cannot swap the descriptor out from under a registration
//! (`Async::get_mut` is `unsafe`) is a compile-time matter: see the `compile_fail` example
//! on `Async::get_mut`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use green::io::Async;

/// Runs `f` in a fiber of a fresh one-worker runtime (every registration then goes to the
/// same reactor), failing the test if it does not finish, runtime dropped, within 10 s.
fn run_in_one_worker<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = green::Runtime::builder().workers(1).build().unwrap();
        let value = runtime.run(f);
        drop(runtime);
        let _ = sender.send(value);
    });
    receiver
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} hung: a readiness event was lost"))
}

/// Registers `io` with the current reactor: a readiness poll that finds nothing to read.
fn register(io: &Async<UnixStream>) {
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        io.poll_readable(&mut cx).is_pending(),
        "nothing was sent yet"
    );
}

/// Reads one byte in the calling fiber, parking it until the byte comes.
fn read_byte(io: &mut Async<UnixStream>) -> u8 {
    let mut byte = [0];
    io.read_exact(&mut byte).unwrap();
    byte[0]
}

#[test]
fn into_inner_deregisters_so_the_descriptor_can_be_registered_again() {
    let byte = run_in_one_worker("reading after into_inner", || {
        let (reader, writer) = UnixStream::pair().unwrap();
        let reader = Async::new(reader).unwrap();
        register(&reader);
        // Registered again with the same reactor: `EEXIST` if `into_inner` left the first
        // registration in place.
        let mut reader = Async::new(reader.into_inner().unwrap()).unwrap();
        register(&reader);
        let mut writer = Async::new(writer).unwrap();
        let sent = green::spawn(move || writer.write_all(b"x").unwrap());
        let byte = read_byte(&mut reader);
        sent.join().unwrap();
        byte
    });
    assert_eq!(byte, b'x');
}

#[test]
fn dropping_an_async_keeps_the_registration_of_a_dup_of_its_descriptor() {
    let byte = run_in_one_worker("reading from the dup", || {
        let (reader, writer) = UnixStream::pair().unwrap();
        let dup = reader.try_clone().unwrap();
        let first = Async::new(reader).unwrap();
        let mut second = Async::new(dup).unwrap();
        register(&first);
        register(&second);
        // Removes `first`'s descriptor from the poller, and only that one.
        drop(first);
        let mut writer = Async::new(writer).unwrap();
        let sent = green::spawn(move || writer.write_all(b"y").unwrap());
        let byte = read_byte(&mut second);
        sent.join().unwrap();
        byte
    });
    assert_eq!(byte, b'y');
}

#[test]
fn get_mut_gives_the_object_for_calls_that_keep_its_descriptor() {
    let (reader, mut writer) = UnixStream::pair().unwrap();
    let mut reader = Async::new(reader).unwrap();
    writer.write_all(b"w").unwrap();
    // SAFETY: `read` neither replaces nor closes the stream.
    let stream = unsafe { reader.get_mut() };
    let mut byte = [0];
    assert_eq!(stream.read(&mut byte).unwrap(), 1);
    assert_eq!(byte, *b"w");
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(reader.poll_readable(&mut cx), Poll::Pending));
}
