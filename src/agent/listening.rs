//! Daemons that speak sd_notify: the notify socket's datagrams, checked against the main
//! processes of the components that listen (`liveness = "notify"` or `"both"`) and handed
//! to the supervisor as beats, readiness, triggers and timeouts.
//!
//! A datagram counts only for a component whose main process sent it: the pid the kernel
//! gives with the datagram (`SCM_CREDENTIALS`) must be the one the component's pidfile
//! names (the one `watchkeeper exec` writes, or its own), as systemd's
//! `NotifyAccess=main`. A datagram from any other process is ignored, and the ignored ones
//! are reported at most once per [`REFUSAL_REPORT_INTERVAL_MS`] with their count.
//!
//! The socket is a source of beats, never a part of the check path: at most
//! [`MAX_NOTIFY_READS`] datagrams are read per wake-up, so a flood cannot delay a pass or a
//! feed; a socket that cannot be made, or whose path was removed or replaced, is bound again
//! at each upkeep. While there is none, a notify component is judged by its process alone
//! (alive while it runs, dead when it exits) and one with `liveness = "both"` by its file,
//! and the fault pattern shows.
//!
//! Invariants: nothing here allocates after [`Listening::new`]; nothing a daemon sends is
//! logged more than once per main process, nor a stranger's more than once per report
//! interval; a component's `STATUS=`,
//! `STOPPING=1` and `WATCHDOG_USEC=` belong to its main process, and are forgotten when
//! another one takes its place.

use core::time::Duration;

use super::NameBuf;
use crate::config::{Config, Liveness};
use crate::core::notify::{self, Watchdog};
use crate::core::supervisor::{Policy, Process, Supervisor};
use crate::core::time::Instant;
use crate::limits::{MAX_NOTIFY_READS, MAX_NOTIFY_STATUS_LEN, REFUSAL_REPORT_INTERVAL_MS};
use crate::os::notify_socket::NotifySocket;

/// A listening component's daemon, as its messages describe it.
pub(super) struct Daemon {
    liveness: Liveness,
    /// The policy of the config: what a new main process starts from.
    policy: Policy,
    /// The process its pidfile named at the last look.
    main_pid: Option<i32>,
    /// Its last `STATUS=`.
    pub(super) status: heapless::String<MAX_NOTIFY_STATUS_LEN>,
    /// It sent `STOPPING=1`.
    pub(super) stopping: bool,
    /// A value that means nothing was reported (once per main process: a daemon that
    /// sends one with every ping must not flood the log).
    malformed_reported: bool,
    /// Its `WATCHDOG=trigger` was reported (once per main process, likewise).
    trigger_reported: bool,
}

/// Datagrams ignored since the last report of them.
#[derive(Default)]
struct Ignored {
    count: u64,
    last_pid: Option<i32>,
    why: &'static str,
    reported_at: Option<Instant>,
}

/// What a read found.
pub(super) enum Read {
    /// Nothing more to read in this wake-up.
    Done,
    /// A datagram from a process that is no listening component's main process, as far as
    /// the last looks know: look at their pidfiles, then [`Listening::settle`] it.
    Unknown,
}

pub(super) struct Listening {
    socket: NotifySocket,
    /// One per configured component, in their order (hearts never listen).
    daemons: Vec<Daemon>,
    ignored: Ignored,
    /// The socket's read error was reported and has not cleared.
    read_failing: bool,
    /// The socket's bind error was reported and has not cleared.
    bind_failing: bool,
    /// The sender of the datagram left in the buffer by [`Read::Unknown`].
    pending: Option<i32>,
    /// Datagrams left to read in this wake-up.
    budget: usize,
    /// A daemon's status or stopping flag changed since the snapshot was written.
    changed: bool,
}

impl Listening {
    /// The listener for `config`'s components, `None` when none listens. A socket that
    /// cannot be bound is logged and tried again at each upkeep.
    pub(super) fn new(config: &Config, sup: &mut Supervisor) -> Option<Listening> {
        if !config.listens() {
            return None;
        }
        let daemons = config
            .components
            .iter()
            .map(|c| Daemon {
                liveness: c.liveness,
                policy: c.policy,
                main_pid: None,
                status: heapless::String::new(),
                stopping: false,
                malformed_reported: false,
                trigger_reported: false,
            })
            .collect();
        let mut listening = Listening {
            socket: NotifySocket::new(&config.notify.socket),
            daemons,
            ignored: Ignored::default(),
            read_failing: false,
            bind_failing: false,
            pending: None,
            budget: MAX_NOTIFY_READS,
            changed: false,
        };
        listening.rebind(sup);
        Some(listening)
    }

    pub(super) fn socket(&self) -> &NotifySocket {
        &self.socket
    }

    /// True while the socket is not bound: the fault pattern shows.
    pub(super) fn broken(&self) -> bool {
        !self.socket.bound()
    }

    pub(super) fn daemon(&self, index: usize) -> Option<&Daemon> {
        self.daemons.get(index).filter(|d| d.liveness.listens())
    }

    /// At each upkeep: a socket whose path no longer leads to it, or none at all, is bound
    /// again.
    pub(super) fn upkeep(&mut self, sup: &mut Supervisor) {
        if self.socket.reachable() {
            return;
        }
        if self.socket.bound() {
            log::warn!(
                "notify socket {}: removed or replaced by something else; binding it again",
                self.socket.path().display()
            );
        }
        self.rebind(sup);
    }

    /// True (once) when what the snapshot shows of a daemon changed.
    pub(super) fn take_changed(&mut self) -> bool {
        core::mem::take(&mut self.changed)
    }

    /// A new wake-up: its read budget.
    pub(super) fn woken(&mut self) {
        self.budget = MAX_NOTIFY_READS;
    }

    /// The pidfile of listening component `index` was just read: a new main process starts
    /// from the config's policy; without a socket, a running one is a sign of life.
    pub(super) fn process_seen(
        &mut self,
        index: usize,
        process: Process,
        at: Instant,
        sup: &mut Supervisor,
    ) {
        let Some(daemon) = self.daemons.get_mut(index).filter(|d| d.liveness.listens()) else {
            return;
        };
        let pid = match process {
            Process::Running { pid, .. } => Some(pid),
            Process::Gone { .. } | Process::Unknown => None,
        };
        if pid.is_some() && pid != daemon.main_pid {
            self.changed |= daemon.stopping || !daemon.status.is_empty();
            daemon.status.clear();
            daemon.stopping = false;
            daemon.malformed_reported = false;
            daemon.trigger_reported = false;
            let mut policy = daemon.policy;
            policy.awaits_ready = self.socket.bound();
            sup.set_policy(index, policy);
        }
        daemon.main_pid = pid;
        if !self.socket.bound() && daemon.liveness == Liveness::Notify && pid.is_some() {
            sup.notify_beat(index, at);
        }
    }

    /// Reads the datagrams waiting, within this wake-up's budget, and hands each to the
    /// component whose main process sent it.
    pub(super) fn read(&mut self, now: Instant, sup: &mut Supervisor, names: &[NameBuf]) -> Read {
        while self.budget > 0 {
            self.budget -= 1;
            // The bytes stay in the socket's buffer (`last`) until the next receive.
            let (sender, truncated) = match self.socket.receive() {
                Ok(Some(datagram)) => (datagram.pid, datagram.truncated),
                Ok(None) => return Read::Done,
                Err(errno) => {
                    if !self.read_failing {
                        self.read_failing = true;
                        log::error!(
                            "notify socket {}: cannot read: {errno}; trying again at the next wake-up",
                            self.socket.path().display()
                        );
                    }
                    return Read::Done;
                }
            };
            self.read_failing = false;
            let (Some(pid), false) = (sender, truncated) else {
                let why = if truncated {
                    "longer than 4096 bytes"
                } else {
                    "without credentials"
                };
                self.ignore(sender, why, now);
                continue;
            };
            if !self.daemons.iter().any(|d| d.main_pid == Some(pid)) {
                self.pending = Some(pid);
                return Read::Unknown;
            }
            self.deliver(pid, now, sup, names);
        }
        Read::Done
    }

    /// The datagram [`Read::Unknown`] left: delivered if the pidfiles just read name its
    /// sender, ignored otherwise.
    pub(super) fn settle(&mut self, now: Instant, sup: &mut Supervisor, names: &[NameBuf]) {
        let Some(pid) = self.pending.take() else {
            return;
        };
        if self.daemons.iter().any(|d| d.main_pid == Some(pid)) {
            self.deliver(pid, now, sup, names);
        } else {
            self.ignore(
                Some(pid),
                "not the main process of a component that listens",
                now,
            );
        }
    }

    /// Hands the datagram in the socket's buffer to every component whose main process is
    /// `pid`.
    fn deliver(&mut self, pid: i32, now: Instant, sup: &mut Supervisor, names: &[NameBuf]) {
        let message = notify::parse(self.socket.last());
        for (index, daemon) in self.daemons.iter_mut().enumerate() {
            if daemon.main_pid != Some(pid) {
                continue;
            }
            let name = names.get(index).map_or("?", |n| n.as_str());
            if message.malformed > 0 && !daemon.malformed_reported {
                daemon.malformed_reported = true;
                log::warn!(
                    "component {name}: its daemon (pid {pid}) sent an sd_notify assignment with a value that means nothing (e.g. WATCHDOG_USEC=soon); ignored, the rest of its messages read (said once per process)"
                );
            }
            if let Some(timeout) = message.watchdog_timeout
                && let Some(policy) = sup.policy(index)
                && policy.timeout != timeout
            {
                let mut changed = *policy;
                changed.timeout = timeout;
                sup.set_policy(index, changed);
                log::info!("component {name}: its timeout is now {timeout:?} (WATCHDOG_USEC)");
            }
            if let Some(by) = message.extend_startup {
                sup.extend_grace(index, now, by);
            }
            if message.ready {
                sup.notify_ready(index, now);
            }
            match message.watchdog {
                Some(Watchdog::Ping) => sup.notify_beat(index, now),
                Some(Watchdog::Trigger) => {
                    if !daemon.trigger_reported {
                        daemon.trigger_reported = true;
                        log::warn!(
                            "component {name}: its daemon (pid {pid}) reported a failure (WATCHDOG=trigger)"
                        );
                    }
                    sup.notify_trigger(index, now);
                }
                None => {}
            }
            if message.stopping && !daemon.stopping {
                daemon.stopping = true;
                self.changed = true;
                log::info!("component {name}: its daemon is stopping (STOPPING=1)");
            }
            if let Some(text) = message.status
                && text != daemon.status.as_str()
            {
                daemon.status.clear();
                // Cannot fail: the parser keeps at most the capacity.
                let _ = daemon.status.push_str(text);
                self.changed = true;
            }
        }
    }

    /// Counts an ignored datagram; reports the count at most every
    /// [`REFUSAL_REPORT_INTERVAL_MS`].
    fn ignore(&mut self, pid: Option<i32>, why: &'static str, now: Instant) {
        let ignored = &mut self.ignored;
        ignored.count += 1;
        ignored.last_pid = pid;
        ignored.why = why;
        let interval = Duration::from_millis(REFUSAL_REPORT_INTERVAL_MS);
        if ignored
            .reported_at
            .is_some_and(|at| now < at.saturating_add(interval))
        {
            return;
        }
        log::warn!(
            "notify socket {}: ignored {} datagram(s), the last from pid {} ({})",
            self.socket.path().display(),
            ignored.count,
            ignored.last_pid.unwrap_or(0),
            ignored.why
        );
        ignored.count = 0;
        ignored.reported_at = Some(now);
    }

    /// Binds the socket; the listening components are then judged by their messages, or
    /// without a socket by their process and file.
    fn rebind(&mut self, sup: &mut Supervisor) {
        match self.socket.bind() {
            Ok(()) => {
                log::info!(
                    "listening for sd_notify messages on {}",
                    self.socket.path().display()
                );
                self.bind_failing = false;
            }
            Err(e) => {
                if !self.bind_failing {
                    self.bind_failing = true;
                    log::error!(
                        "notify socket {}: {e}; until it can be bound, components with liveness = \"notify\" are judged by their process alone, and those with \"both\" by their heartbeat file",
                        self.socket.path().display()
                    );
                }
            }
        }
        for (index, daemon) in self.daemons.iter().enumerate() {
            if daemon.liveness.listens()
                && let Some(policy) = sup.policy(index)
            {
                let mut judged = *policy;
                judged.awaits_ready = self.socket.bound();
                sup.set_policy(index, judged);
            }
        }
    }
}
