//! What a parked fiber waits for: a label its blocking call records as it parks, for fiber
//! dumps (`Runtime::dump`). One byte in the task's state, stored by the fiber before each
//! park and read only by its own worker, between turns: it costs one store per park and
//! synchronises nothing.

/// What a fiber parks on, recorded by the blocking call that parks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Wait {
    /// A future passed to `await_blocking` (or `block_on`) by the user.
    Future = 0,
    /// `green::sleep`, `sleep_until`.
    Sleep,
    /// A `green::sync` channel's `recv`.
    ChannelRecv,
    /// A `green::sync` channel's `send` (a bounded channel, full).
    ChannelSend,
    /// A descriptor to become readable (a read, an accept, a receive).
    Read,
    /// A descriptor to become writable (a write, a connect, a send).
    Write,
    /// `JoinHandle::join`.
    Join,
    /// `green::sync::Mutex::lock`.
    Mutex,
    /// `green::sync::Condvar::wait`.
    Condvar,
    /// `green::sync::Barrier::wait`.
    Barrier,
    /// A job on the blocking pool (`green::unblock`).
    Blocking,
    /// The fibers of a `green::scope` to end.
    Scope,
    /// A fiber dump's answers (`Runtime::dump` called from a fiber).
    Dump,
}

impl Wait {
    /// Every label, indexed by its byte.
    const ALL: [Wait; 13] = [
        Wait::Future,
        Wait::Sleep,
        Wait::ChannelRecv,
        Wait::ChannelSend,
        Wait::Read,
        Wait::Write,
        Wait::Join,
        Wait::Mutex,
        Wait::Condvar,
        Wait::Barrier,
        Wait::Blocking,
        Wait::Scope,
        Wait::Dump,
    ];

    /// The label as a dump prints it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Wait::Future => "future",
            Wait::Sleep => "sleep",
            Wait::ChannelRecv => "channel recv",
            Wait::ChannelSend => "channel send",
            Wait::Read => "I/O read",
            Wait::Write => "I/O write",
            Wait::Join => "join",
            Wait::Mutex => "mutex lock",
            Wait::Condvar => "condvar wait",
            Wait::Barrier => "barrier wait",
            Wait::Blocking => "blocking pool",
            Wait::Scope => "scope",
            Wait::Dump => "fiber dump",
        }
    }

    /// The label whose byte is `byte` (`Future` for a byte no label has).
    pub(crate) fn from_byte(byte: u8) -> Wait {
        Wait::ALL
            .get(usize::from(byte))
            .copied()
            .unwrap_or(Wait::Future)
    }
}

#[cfg(test)]
mod tests {
    use super::Wait;

    #[test]
    fn every_label_comes_back_from_its_byte() {
        for (index, wait) in Wait::ALL.iter().enumerate() {
            assert_eq!(*wait as usize, index);
            assert_eq!(Wait::from_byte(*wait as u8), *wait);
        }
    }
}
