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
//! A daemon says `READY=1` once, to the agent that ran then. A restarted agent reads what
//! its predecessor knew from the status snapshot it left (same boot): a main process that
//! is still the same one (pid and start time) keeps its readiness, its `WATCHDOG_USEC=`,
//! `STATUS=` and `STOPPING=1`, and its startup is over; its next ping is due one timeout
//! after the new agent first sees it. Without this, a restart of the agent would take
//! every ready daemon for one that never got ready.
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
use crate::limits::{
    MAX_DURATION_SECS, MAX_NOTIFY_READS, MAX_NOTIFY_STATUS_LEN, MAX_STATUS_LEN,
    REFUSAL_REPORT_INTERVAL_MS,
};
use crate::os::notify_socket::NotifySocket;
use crate::os::rundir::RunDir;
use crate::snapshot;

/// A listening component's daemon, as its messages describe it.
pub(super) struct Daemon {
    liveness: Liveness,
    /// The policy of the config: what a new main process starts from.
    policy: Policy,
    /// The process its pidfile named at the last look, and that process's start time.
    main_pid: Option<i32>,
    main_start: u64,
    /// That process sent `READY=1`.
    ready: bool,
    /// What the previous agent's snapshot said of it, until the first process is seen.
    carried: Option<snapshot::Daemon<Vec<u8>>>,
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
    /// The listener for `config`'s components, `None` when none listens, carrying on from
    /// the snapshot a previous agent of boot `boot_id` left in `run`. A socket that cannot
    /// be bound is logged and tried again at each upkeep.
    pub(super) fn new(
        config: &Config,
        sup: &mut Supervisor,
        run: &RunDir,
        boot_id: &str,
    ) -> Option<Listening> {
        if !config.listens() {
            return None;
        }
        let mut previous = previous_snapshot(run, boot_id)
            .map(|s| s.components)
            .unwrap_or_default();
        let daemons = config
            .components
            .iter()
            .map(|c| Daemon {
                liveness: c.liveness,
                policy: c.policy,
                main_pid: None,
                main_start: 0,
                ready: false,
                carried: previous
                    .iter_mut()
                    .find(|p| p.name == c.name.as_str().as_bytes())
                    .and_then(|p| p.daemon.take()),
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

    /// What the snapshot shows of listening component `index`'s daemon.
    pub(super) fn record(&self, index: usize, sup: &Supervisor) -> Option<snapshot::Daemon<&str>> {
        let d = self.daemons.get(index).filter(|d| d.liveness.listens())?;
        Some(snapshot::Daemon {
            main: d.main_pid.map(|pid| (pid, d.main_start)),
            ready: d.ready,
            timeout_us: sup.policy(index).map_or(0, |p| {
                u64::try_from(p.timeout.as_micros()).unwrap_or(u64::MAX)
            }),
            stopping: d.stopping,
            status: d.status.as_str(),
        })
    }

    pub(super) fn listens(&self, index: usize) -> bool {
        self.daemons
            .get(index)
            .is_some_and(|d| d.liveness.listens())
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
    /// from the config's policy, or from what the previous agent knew of it; without a
    /// socket, a running one is a sign of life.
    pub(super) fn process_seen(
        &mut self,
        index: usize,
        process: Process,
        at: Instant,
        sup: &mut Supervisor,
        name: &str,
    ) {
        let Some(daemon) = self.daemons.get_mut(index).filter(|d| d.liveness.listens()) else {
            return;
        };
        let pid = match process {
            Process::Running { pid, start_time } if Some(pid) != daemon.main_pid => {
                self.changed = true;
                daemon.main_start = start_time;
                daemon.ready = false;
                daemon.status.clear();
                daemon.stopping = false;
                daemon.malformed_reported = false;
                daemon.trigger_reported = false;
                let mut policy = daemon.policy;
                policy.awaits_ready = self.socket.bound();
                if let Some(carried) = daemon
                    .carried
                    .take()
                    .filter(|c| c.main == Some((pid, start_time)))
                {
                    daemon.ready = carried.ready;
                    daemon.stopping = carried.stopping;
                    if let Some(text) = notify::status(&carried.status) {
                        // Cannot fail: `status` keeps at most the capacity.
                        let _ = daemon.status.push_str(text);
                    }
                    if (1..=MAX_DURATION_SECS * 1_000_000).contains(&carried.timeout_us) {
                        policy.timeout = Duration::from_micros(carried.timeout_us);
                    }
                    log::info!(
                        "component {name}: its daemon (pid {pid}) is the one the previous agent knew{}",
                        if carried.ready {
                            ": ready (its READY=1 went to that agent)"
                        } else {
                            ", not ready yet"
                        }
                    );
                }
                sup.set_policy(index, policy);
                if daemon.ready {
                    sup.notify_ready(index, at);
                }
                Some(pid)
            }
            Process::Running { pid, .. } => Some(pid),
            Process::Gone { .. } | Process::Unknown => None,
        };
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
                self.changed = true;
                log::info!("component {name}: its timeout is now {timeout:?} (WATCHDOG_USEC)");
            }
            if let Some(by) = message.extend_startup {
                sup.extend_grace(index, now, by);
            }
            if message.ready {
                sup.notify_ready(index, now);
                self.changed |= !daemon.ready;
                daemon.ready = true;
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

/// The snapshot a previous agent of this boot left in the run directory: what it knew of
/// the daemons. One of another boot (a run directory that is not volatile) names
/// processes that are gone.
fn previous_snapshot(run: &RunDir, boot_id: &str) -> Option<snapshot::Snapshot> {
    let mut buf = vec![0; MAX_STATUS_LEN];
    let not_used = "what the previous agent knew of the daemons is not used";
    let path = run.path().join(crate::os::rundir::STATUS);
    let len = match run.read_status(&mut buf) {
        Ok(Some(len)) => len,
        Ok(None) => return None,
        Err(e) => {
            log::warn!(
                "{}: cannot be read: {}; {not_used}",
                path.display(),
                e.desc()
            );
            return None;
        }
    };
    match snapshot::parse(&buf[..len]) {
        Ok(s) if !boot_id.is_empty() && s.agent.identity.boot_id == boot_id.as_bytes() => Some(s),
        Ok(_) => None,
        Err(e) => {
            log::warn!("{}: {e}; {not_used}", path.display());
            None
        }
    }
}
