//! A fiber's frames as a dump prints them: read back from `Backtrace`'s `Display` (std
//! gives no stable access to the frames themselves) and trimmed of the runtime's own
//! frames at both ends: the capture and the switch at the top, the fiber's entry (its
//! trampoline, `catch_unwind`, the task's start) at the bottom. The trampoline's unwind
//! information leads the unwinder on into the fiber's resumer (see `context`), so the
//! capture's frames follow it: those are cut off too.

use std::backtrace::Backtrace;
use std::fmt;

/// Functions of the capture and the switch, above a suspended fiber's own frames (and of
/// the dump, above the frames of the fiber that takes it). Matched as prefixes of the
/// name, without a leading `<`.
const ABOVE: &[&str] = &[
    "std::backtrace",
    "std::panicking::",
    "std::panic::",
    "core::panic::",
    "core::ops::function::",
    "__rust_try",
    "green::fiber::",
    "green::context::",
    "green::worker::current::",
    "green::executor::dump::",
    "green::executor::Handle::dump",
    "green::executor::Runtime::dump",
];

/// Functions that start a fiber and run its task, below its own frames.
const BELOW: &[&str] = &[
    "std::panicking::",
    "std::panic::",
    "core::panic::",
    "core::ops::function::",
    "alloc::boxed::Box<F,A> as core::ops::function::FnOnce",
    "__rust_try",
    "green::fiber::",
    "green::context::",
    "green::worker::",
    "green::task::",
    "green::executor::",
    "<unknown>",
];

/// A frame as `Backtrace` prints it: a function (one entry per inlined function too) and
/// where, if the debug info says.
#[derive(Debug, PartialEq, Eq)]
struct Frame<'a> {
    /// The function's name, without its hash.
    function: &'a str,
    /// `file:line:column`, if known.
    location: Option<&'a str>,
}

/// The frames of `Backtrace`'s `Display` output: lines `N: function`, each followed by
/// an `at file:line:column` line where the debug info gives one.
fn parse(text: &str) -> Vec<Frame<'_>> {
    let mut frames: Vec<Frame<'_>> = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if let Some(location) = line.strip_prefix("at ") {
            if let Some(frame) = frames.last_mut() {
                frame.location = Some(location);
            }
        } else if let Some((index, function)) = line.split_once(": ")
            && !index.is_empty()
            && index.bytes().all(|b| b.is_ascii_digit())
        {
            frames.push(Frame {
                function,
                location: None,
            });
        }
    }
    frames
}

/// Whether `function` starts with one of `prefixes`, with or without its leading `<`s (of
/// `<Type as Trait>::method`, and of `<Type>::method` and `<<Type>::f as Trait>::g` as
/// symbols mangled with Rust's v0 scheme print).
fn matches(function: &str, prefixes: &[&str]) -> bool {
    let bare = function.trim_start_matches('<');
    prefixes
        .iter()
        .any(|prefix| function.starts_with(prefix) || bare.starts_with(prefix))
}

/// Whether `frame` is a fiber's entry trampoline, its first frame, below which the
/// unwinder goes on into its resumer.
fn is_trampoline(frame: &Frame<'_>) -> bool {
    frame.function.starts_with("green::context::") && frame.function.ends_with("::trampoline")
}

/// The fiber's own frames: without the runtime's above and below them, nor its resumer's.
/// If that leaves none (its own were inlined into the runtime's, in a build without debug
/// info), all those above its trampoline.
fn trim<'f, 'a>(frames: &'f [Frame<'a>]) -> &'f [Frame<'a>] {
    let own = match frames.iter().position(is_trampoline) {
        Some(trampoline) => &frames[..trampoline],
        None => frames,
    };
    let start = own
        .iter()
        .position(|frame| !matches(frame.function, ABOVE))
        .unwrap_or(frames.len());
    let end = own
        .iter()
        .rposition(|frame| !matches(frame.function, BELOW))
        .map_or(0, |last| last + 1);
    if start < end { &own[start..end] } else { own }
}

/// Writes `backtrace`'s frames, one per line with its location below it, trimmed of the
/// runtime's own if `trimmed`.
pub(super) fn write(
    f: &mut fmt::Formatter<'_>,
    backtrace: &Backtrace,
    trimmed: bool,
) -> fmt::Result {
    let text = backtrace.to_string();
    let frames = parse(&text);
    if frames.is_empty() {
        // "disabled backtrace", "unsupported backtrace", or no frames at all.
        return writeln!(f, "    ({})", text.trim());
    }
    let shown = if trimmed { trim(&frames) } else { &frames };
    for frame in shown {
        writeln!(f, "    {}", frame.function)?;
        if let Some(location) = frame.location {
            writeln!(f, "        at {location}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fiber parked in a sleep, as a debug build prints it (shortened).
    const PARKED: &str = "   \
   0: green::fiber::capture::<impl green::fiber::Suspender>::capture
             at ./src/fiber/capture.rs:150:9
   1: green::fiber::capture::<impl green::fiber::Suspender>::on_message
   2: green::worker::current::Current::park
   3: green::block_on::await_blocking_on
             at ./src/block_on.rs:90:13
   4: green::time::sleep
   5: dump::sleeps_in_a_fiber
             at ./tests/dump.rs:20:5
   6: dump::a_test::{{closure}}
   7: core::ops::function::FnOnce::call_once
   8: green::worker::Worker::start_fiber::{{closure}}::{{closure}}
   9: std::panicking::catch_unwind
  10: green::fiber::entry
  11: green::context::x86_64::trampoline
  12: green::context::x86_64::resume
  13: green::worker::Worker::run
";

    #[test]
    fn frames_are_read_with_their_locations() {
        let frames = parse(PARKED);
        assert_eq!(frames.len(), 14);
        assert_eq!(
            frames[3],
            Frame {
                function: "green::block_on::await_blocking_on",
                location: Some("./src/block_on.rs:90:13"),
            }
        );
        assert_eq!(frames[4].location, None);
    }

    #[test]
    fn the_runtimes_frames_are_trimmed_at_both_ends() {
        let frames = parse(PARKED);
        let functions: Vec<_> = trim(&frames).iter().map(|f| f.function).collect();
        assert_eq!(
            functions,
            [
                "green::block_on::await_blocking_on",
                "green::time::sleep",
                "dump::sleeps_in_a_fiber",
                "dump::a_test::{{closure}}",
            ]
        );
    }

    #[test]
    fn names_of_symbols_mangled_with_the_v0_scheme_are_trimmed_too() {
        let frames = parse(
            "   0: <<std::backtrace::Backtrace>::force_capture as \
             core::ops::function::FnOnce<()>>::call_once\n   \
             1: green::fiber::capture::on_message\n   \
             2: <green::worker::current::Current>::park_locked\n   \
             3: <green::sync::channel::Receiver<u32>>::recv\n   \
             4: dump::receives\n   \
             5: <green::worker::Worker>::start_fiber::<u32>::{closure#0}\n   \
             6: green::context::x86_64::trampoline\n",
        );
        let functions: Vec<_> = trim(&frames).iter().map(|f| f.function).collect();
        assert_eq!(
            functions,
            [
                "<green::sync::channel::Receiver<u32>>::recv",
                "dump::receives"
            ]
        );
    }

    #[test]
    fn frames_that_are_all_the_runtimes_are_kept_down_to_the_trampoline() {
        let frames = parse(
            "   0: green::executor::dump::dump\n   1: green::fiber::entry\n   \
             2: green::context::x86_64::trampoline\n   3: green::worker::Worker::run\n",
        );
        let functions: Vec<_> = trim(&frames).iter().map(|f| f.function).collect();
        assert_eq!(
            functions,
            ["green::executor::dump::dump", "green::fiber::entry"]
        );
    }
}
