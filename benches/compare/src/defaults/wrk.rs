//! S5 `http_wrk`: `wrk -t2 -c256 -d5s --latency` against an HTTP server on 127.0.0.1, from
//! a process of its own; finding (or installing) wrk, building `examples/http_server`,
//! waiting for a server to answer, and reading wrk's report.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{self, Params};

/// What `examples/http_server` answers to a keep-alive HTTP/1.1 `GET /`, byte for byte;
/// the tokio server answers the same.
pub const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n";

/// The request the servers are checked with before wrk starts.
const PROBE: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// wrk's path, if it is on the `PATH`.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("wrk"))
        .find(|candidate| candidate.is_file())
}

/// Installs wrk with apt-get if it is missing and this process runs as root; says what
/// it did, for the notes.
pub fn install_if_missing() -> Option<String> {
    if find().is_some() {
        return None;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("wrk is missing and this run is not root: `apt-get install wrk`".into());
    }
    eprintln!("wrk is missing: apt-get install -y wrk");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // The package lists may be missing or stale: update them once if the first try fails.
    if apt(&["install", "-y", "wrk"]) || (apt(&["update"]) && apt(&["install", "-y", "wrk"])) {
        Some("wrk was missing; this run installed it (`apt-get install -y wrk`)".into())
    } else {
        Some("wrk is missing and `apt-get install -y wrk` failed".into())
    }
}

/// Where `examples/http_server` is built: beside this binary, in `examples/`.
fn http_server_path() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or(io::ErrorKind::NotFound)?;
    Ok(dir.join("examples").join("http_server"))
}

/// Builds `examples/http_server` into this binary's target directory, with this binary's
/// profile; says what went wrong, if anything, for the notes.
pub fn build_http_server() -> Option<String> {
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let target_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()));
    let Some(target_dir) = target_dir else {
        return Some("cannot tell the target directory: examples/http_server not built".into());
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "--example",
            "http_server",
            "--target-dir",
        ])
        .arg(&target_dir);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    eprintln!("building examples/http_server");
    match command.status() {
        Ok(status) if status.success() => None,
        Ok(status) => Some(format!("building examples/http_server failed ({status})")),
        Err(error) => Some(format!(
            "cannot run cargo to build examples/http_server: {error}"
        )),
    }
}

/// Starts `examples/http_server` on a free port of 127.0.0.1; its stderr is drained by a
/// thread that returns it.
pub fn start_http_server() -> Result<(Child, SocketAddr, thread::JoinHandle<String>), String> {
    let program = http_server_path().map_err(|e| e.to_string())?;
    if !program.is_file() {
        return Err(format!(
            "{} is missing: cargo build --release --example http_server",
            program.display()
        ));
    }
    let address = free_address().map_err(|e| format!("no free port: {e}"))?;
    let mut server = Command::new(&program)
        .arg(address.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let mut stderr = server.stderr.take().expect("stderr is piped");
    let drain = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    Ok((server, address, drain))
}

/// A port nobody listens on now (the kernel's choice, released at once).
fn free_address() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Sends one request to the server at `address` once it listens (retrying for up to
/// [`START_TIMEOUT`]) and returns its answer.
pub fn probe(address: SocketAddr) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut stream = loop {
        match TcpStream::connect(address) {
            Ok(stream) => break stream,
            Err(error) if Instant::now() > deadline => {
                return Err(format!("nothing listens on {address}: {error}"));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    };
    let mut exchange = || -> io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(START_TIMEOUT))?;
        stream.write_all(PROBE)?;
        let mut answer = vec![0; RESPONSE.len()];
        stream.read_exact(&mut answer)?;
        Ok(answer)
    };
    exchange().map_err(|e| format!("no answer from {address}: {e}"))
}

/// Notes the answer to [`PROBE`] if it differs from [`RESPONSE`].
pub fn check_answer(answer: &[u8]) {
    if answer != RESPONSE {
        common::note(&format!(
            "**the server answered other bytes than expected**: {:?}",
            String::from_utf8_lossy(answer)
        ));
    }
}

/// Runs wrk against `address` and reports its figures.
pub fn run(params: &Params, address: SocketAddr) -> Result<(), String> {
    let wrk = find().ok_or("wrk is not installed (apt-get install wrk)")?;
    let output = Command::new(wrk)
        .args(["-t2", "-c256"])
        .arg(format!("-d{}s", params.wrk_duration.as_secs()))
        .arg("--latency")
        .arg(format!("http://{address}/"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "wrk failed ({}): {}{}",
            output.status,
            text.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let report = Report::parse(&text).ok_or_else(|| format!("cannot read wrk's output: {text}"))?;
    report.print();
    Ok(())
}

/// The figures of one wrk run.
struct Report {
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Connect, read, write and timeout errors, summed.
    socket_errors: u64,
    /// Responses with a status other than 2xx or 3xx.
    non_2xx: u64,
    /// wrk's `N requests in Xs, Y read` and `Socket errors: ...` lines.
    summary: Vec<String>,
}

impl Report {
    fn parse(text: &str) -> Option<Report> {
        let mut report = Report {
            requests_per_s: f64::NAN,
            p50_ms: f64::NAN,
            p99_ms: f64::NAN,
            socket_errors: 0,
            non_2xx: 0,
            summary: Vec::new(),
        };
        for line in text.lines().map(str::trim) {
            let mut words = line.split_whitespace();
            if let Some(rate) = line.strip_prefix("Requests/sec:") {
                report.requests_per_s = rate.trim().parse().ok()?;
            } else if line.starts_with("50%") {
                report.p50_ms = milliseconds(words.nth(1)?)?;
            } else if line.starts_with("99%") {
                report.p99_ms = milliseconds(words.nth(1)?)?;
            } else if let Some(errors) = line.strip_prefix("Socket errors:") {
                // "connect 0, read 12, write 0, timeout 3"
                report.socket_errors = errors
                    .split(',')
                    .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .sum();
                report.summary.push(line.to_string());
            } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
                report.non_2xx = count.trim().parse().ok()?;
                report.summary.push(line.to_string());
            } else if line.contains(" requests in ") {
                report.summary.push(line.to_string());
            }
        }
        let complete = [report.requests_per_s, report.p50_ms, report.p99_ms]
            .iter()
            .all(|v| v.is_finite());
        complete.then_some(report)
    }

    fn print(&self) {
        common::report("requests_per_s", self.requests_per_s);
        common::report("p50_ms", self.p50_ms);
        common::report("p99_ms", self.p99_ms);
        common::report("socket_errors", self.socket_errors as f64);
        common::report("non_2xx", self.non_2xx as f64);
        common::note(&format!("wrk: {}", self.summary.join("; ")));
    }
}

/// wrk's `123.45us`, `1.23ms`, `1.02s` or `1.50m`, in milliseconds.
fn milliseconds(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    Some(number * scale)
}
