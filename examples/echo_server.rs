//! A TCP echo server: a fiber per connection, written as plain blocking code.
//!
//! ```sh
//! cargo run --release --example echo_server              # listens on 127.0.0.1:7878
//! cargo run --release --example echo_server 127.0.0.1:9000
//! ```
//!
//! Try it with `nc 127.0.0.1 7878`. It runs until killed.

use std::io::{self, Read, Write};
use std::time::Duration;

use green::net::{TcpListener, TcpStream};

#[green::main]
fn main() -> io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7878".into());
    serve(address)
}

/// Accepts connections forever, each served by a fiber of its own.
fn serve(address: String) -> io::Result<()> {
    let listener = TcpListener::bind(address)?;
    println!("echo server listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                green::spawn(move || {
                    if let Err(error) = echo(stream) {
                        eprintln!("connection failed: {error}");
                    }
                });
            }
            Err(error) => {
                // Out of descriptors, say: back off rather than spin on the error.
                eprintln!("accept failed: {error}");
                green::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(())
}

/// Writes back everything the peer sends, until it closes the connection.
fn echo(mut stream: TcpStream) -> io::Result<()> {
    // Each echo goes out at once: with Nagle's algorithm, the second write of a message
    // longer than `buf` waits for the peer's delayed ACK (40 ms).
    stream.set_nodelay(true)?;
    let mut buf = [0; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}
