//! Hearts-directory membership: which files of the hearts directory are supervised
//! components, kept in step with the directory.
//!
//! The directory is listed when inotify says its entries changed ([`DirWatch`]), when a
//! look finds a heart gone or replaced, and every `check_interval` (the safety net) where
//! inotify cannot be trusted or a refusal is still to be reported; its identity is checked
//! at every upkeep of the agent. A heart's own file is looked at when the supervisor says
//! it is due, like a configured heartbeat.
//!
//! A file whose content is a timeout becomes a component of the supervisor, from its
//! startup grace; a file replaced (another size or inode) is read again and its timeout
//! adopted; a file removed ends its supervision. A file whose content is not a timeout is
//! refused with a problem file, and read again when it is replaced. A directory lost or
//! replaced keeps its hearts, silent, until their files are back (a removed directory is an
//! accident; a removed file is a choice); a listing cut short keeps the hearts it did not
//! reach.
//!
//! Invariants: nothing here allocates after [`Hearts::new`] (the table and the names are
//! sized for [`MAX_COMPONENTS`]); a new heart is admitted only while supervisor slots are
//! left after the configured components, and never under a configured component's name;
//! trouble with the directory is logged when it starts, changes or ends, not at every pass.

use core::fmt::Write as _;
use core::time::Duration;

use heapless::index_map::FnvIndexMap;
use nix::errno::Errno;

use super::{NameBuf, Reason};
use crate::config::HeartsConfig;
use crate::core::supervisor::{Look, Observation, Policy, Process, Stamp, Supervisor};
use crate::core::time::Instant;
use crate::limits::MAX_COMPONENTS;
use crate::os::dirwatch::{DirWatch, Seen};
use crate::os::heartbeat::{Checked, DirState, DirTrouble, Entry, HeartsDir, Reader, Refusals};
use crate::os::repair::Launcher;
use crate::os::rundir::RunDir;

/// Wait after an event before listing: a burst of changes (an `rm -rf`, an install) is
/// listed once, complete, and a directory being removed is seen removed, not emptied.
const LISTING_SETTLE: Duration = Duration::from_millis(100);

// A heart keeps its supervisor index in a `u16`, which must hold every index.
const _: () = assert!(MAX_COMPONENTS <= u16::MAX as usize + 1);

/// A file in the hearts directory.
#[derive(Clone, Copy)]
enum Heart {
    Supervised {
        index: u16,
        size: i64,
        inode: u64,
        seen: bool,
        /// Not seen since its directory was lost or replaced: kept, and silent, until its
        /// file is back.
        orphan: bool,
    },
    /// Its content is not a timeout; re-read when the file is replaced.
    Bad { size: i64, inode: u64, seen: bool },
}

/// The hearts directory and the components its files are.
pub(super) struct Hearts {
    dir: HeartsDir,
    watch: DirWatch,
    /// The directory held is watched, or cannot be (said once per directory).
    watch_tried: bool,
    /// The watch descriptor was readable at the last wake-up.
    events_ready: bool,
    /// The next scan lists the directory.
    listing: bool,
    /// Events were read: the directory is listed at this instant.
    listing_at: Option<Instant>,
    /// The safety net's next listing, where events cannot be trusted or are not enough.
    safety_listing_at: Instant,
    check_interval: Duration,
    /// The next scan checks that the directory held is the one its path names.
    recheck: bool,
    config: HeartsConfig,
    launcher: Option<Launcher>,
    table: Table,
    /// What is wrong with the directory, as last logged (logged once, not per pass).
    trouble: Option<DirTrouble>,
    refusals: Refusals,
}

/// The hearts known, by name and by supervisor index.
struct Table {
    by_name: Box<FnvIndexMap<NameBuf, Heart, MAX_COMPONENTS>>,
    /// Heart name of each supervisor index (empty for configured components).
    names: Box<heapless::Vec<NameBuf, MAX_COMPONENTS>>,
}

/// What one scan works with besides the table.
struct Scan<'a> {
    now: Instant,
    look: Look,
    sup: &'a mut Supervisor,
    run: &'a RunDir,
    /// Names of the configured components, which no heart may take.
    configured: &'a [NameBuf],
    config: &'a HeartsConfig,
    refusals: &'a mut Refusals,
    /// Components a new heart may still take: supervisor slots not used.
    room: usize,
}

fn policy(config: &HeartsConfig, timeout: Duration) -> Policy {
    Policy {
        timeout,
        grace: config.grace.max(timeout),
        reset_after: config.reset_after,
        critical: config.critical,
        awaits_ready: false,
        repair: config.repair.as_ref().map(|r| r.policy),
    }
}

impl Hearts {
    /// Opens the directory of `config`; `launcher` repairs any heart (all allocation
    /// happens here). Trouble with the directory is reported by the first scan, and
    /// retried at every scan: it never stops the agent.
    pub(super) fn new(
        config: &HeartsConfig,
        launcher: Option<Launcher>,
        now: Instant,
        check_interval: Duration,
    ) -> Hearts {
        let mut names = Box::new(heapless::Vec::new());
        // Cannot fail: the capacity is MAX_COMPONENTS.
        let _ = names.resize(MAX_COMPONENTS, NameBuf::new());
        Hearts {
            dir: HeartsDir::open(&config.dir),
            watch: DirWatch::new(),
            watch_tried: false,
            events_ready: false,
            listing: true,
            listing_at: None,
            safety_listing_at: now,
            check_interval,
            recheck: true,
            config: config.clone(),
            launcher,
            table: Table {
                by_name: Box::default(),
                names,
            },
            trouble: None,
            refusals: Refusals::new(now),
        }
    }

    /// The heart name of supervisor index `index` (empty if it is not a heart's).
    pub(super) fn name(&self, index: usize) -> Option<&str> {
        self.table.names.get(index).map(|n| n.as_str())
    }

    /// The repair shared by every heart.
    pub(super) fn launcher(&self) -> Option<&Launcher> {
        self.launcher.as_ref()
    }

    /// The run directory came back without its problem files: a heart whose content is
    /// not a timeout is read again by the next scan, which writes its problem file again.
    pub(super) fn reread_refused(&mut self) {
        self.listing = true;
        for heart in self.table.by_name.values_mut() {
            if let Heart::Bad { size, .. } = heart {
                *size = -1;
            }
        }
    }

    /// The descriptor whose readiness means entries changed, while the directory is
    /// watched.
    pub(super) fn watch_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.watch.fd()
    }

    /// When a listing is due: after events, or by the safety net.
    pub(super) fn next_deadline(&self) -> Instant {
        let events = self.listing_at.unwrap_or(Instant::NEVER);
        if self.needs_safety_net() {
            events.min(self.safety_listing_at)
        } else {
            events
        }
    }

    fn needs_safety_net(&self) -> bool {
        !self.watch.trusted() || self.refusals.owed()
    }

    /// The watch descriptor became readable.
    pub(super) fn woken(&mut self) {
        self.events_ready = true;
    }

    /// Whether a pass at `now` has work here: events to read, a listing or a check due,
    /// or a heart due for a look. `upkeep`: the pass is the agent's upkeep, which checks
    /// the directory's identity.
    pub(super) fn due(&mut self, now: Instant, upkeep: bool, sup: &Supervisor) -> bool {
        if core::mem::take(&mut self.events_ready) {
            let seen = self.watch.drain();
            if seen != Seen::Nothing && self.listing_at.is_none() {
                self.listing_at = Some(now.saturating_add(LISTING_SETTLE));
            }
            self.recheck |= seen == Seen::Everything;
        }
        if self.listing_at.is_some_and(|at| now >= at) {
            self.listing_at = None;
            self.listing = true;
        }
        self.recheck |= upkeep;
        if now >= self.safety_listing_at {
            self.safety_listing_at = now.saturating_add(self.check_interval);
            self.listing |= self.needs_safety_net();
        }
        self.listing
            || self.recheck
            || self
                .table
                .supervised()
                .any(|(_, index, _)| sup.look_due(index, now))
    }

    /// Looks at the hearts that are due, then, when needed, checks and lists the
    /// directory: admits, re-reads and removes hearts, observes the beat of each one
    /// seen, and logs what changed. `configured` names the configured components, which
    /// hold the first indices.
    pub(super) fn scan(
        &mut self,
        look: Look,
        sup: &mut Supervisor,
        run: &RunDir,
        configured: &[NameBuf],
    ) {
        let now = look.at;
        for (name, index, heart) in self.table.supervised() {
            if !sup.look_due(index, now) {
                continue;
            }
            let stamp = self.dir.stamp(name).ok().flatten();
            let same_file = match (stamp, heart) {
                (Some(s), Heart::Supervised { size, inode, .. }) => {
                    s.size == size && s.inode == inode
                }
                _ => false,
            };
            let orphan = matches!(heart, Heart::Supervised { orphan: true, .. });
            // Gone, refused or replaced: the listing decides what becomes of it.
            self.listing |= !same_file && !orphan;
            sup.observe(
                index,
                look,
                Observation {
                    heartbeat: stamp,
                    process: Process::Unknown,
                    poll_process: false,
                },
            );
        }
        if !self.listing && !self.recheck {
            return;
        }
        let Hearts {
            dir,
            watch,
            watch_tried,
            listing,
            recheck,
            config,
            table,
            trouble,
            refusals,
            ..
        } = self;
        let mut checked = check_watched(dir, watch, watch_tried);
        let list = *listing || checked.is_err() || checked.is_ok_and(|c| c.state != DirState::Same);
        *recheck = false;
        if !list {
            return;
        }
        *listing = false;
        refusals.begin(now, checked.is_ok_and(|c| c.changed));
        let supervised = table
            .by_name
            .values()
            .filter(|h| matches!(h, Heart::Supervised { .. }))
            .count();
        let mut scan = Scan {
            now,
            look,
            sup,
            run,
            configured,
            config,
            refusals,
            room: MAX_COMPONENTS
                .saturating_sub(configured.len())
                .saturating_sub(supervised),
        };
        let mut scanned = table.list(&mut scan, dir, checked);
        if scanned == Err(DirTrouble::Unreadable(Errno::ENOENT)) {
            // Removed between its check and its listing (getdents on a deleted directory
            // fails with ENOENT): checked again, which creates it anew, and listed anew,
            // so an `rm -rf` is reported as what it is, not as unreadable. What the cut
            // listing saw is not in the new directory.
            table.unsee();
            checked = check_watched(dir, watch, watch_tried);
            scanned = table.list(&mut scan, dir, checked);
        }
        // Lost or replaced: hearts not (yet) in the directory scanned are kept, silent.
        let lost = !matches!(scanned, Ok((DirState::Same, _)));
        // Listed only in part: a heart not seen may still be there; keep it (silent).
        let truncated = matches!(scanned, Ok((_, false)));
        let (orphans, removed) = table.retire(&mut scan, lost, truncated);
        // Room freed: an entry left out for want of it is admitted by the next listing.
        *listing |= removed > 0;
        let path = config.dir.as_path();
        match scanned.map(|(state, _)| state) {
            Err(t) if *trouble != Some(t) => {
                *trouble = Some(t);
                log::error!(
                    "hearts directory {}: {t}; looked at again every check_interval, its {orphans} hearts count as silent meanwhile",
                    path.display()
                );
            }
            Err(_) => {}
            Ok(state) => {
                let how = match (trouble.take(), state) {
                    (Some(_), _) => "is usable again",
                    (None, DirState::Replaced) => "was replaced by another directory",
                    (None, DirState::Recreated) => "was removed and has been created again",
                    (None, DirState::Same) => "",
                };
                if !how.is_empty() {
                    log::warn!(
                        "hearts directory {} {how}: supervising the hearts it holds now; {orphans} hearts not back in it count as silent until their files are",
                        path.display()
                    );
                }
            }
        }
        scan.refusals.end(now, path, configured.len(), truncated);
    }
}

/// Checks that the directory held is the one its path names, and watches it when it is
/// new, or not yet watched.
fn check_watched(
    dir: &mut HeartsDir,
    watch: &mut DirWatch,
    watch_tried: &mut bool,
) -> Result<Checked, DirTrouble> {
    let checked = dir.check();
    if let Ok(c) = checked
        && (c.state != DirState::Same || !*watch_tried)
        && let Some(fd) = dir.fd()
    {
        *watch_tried = true;
        watch.watch(fd, dir.path());
    }
    checked
}

impl Table {
    /// Every supervised heart: its name, supervisor index and entry.
    fn supervised(&self) -> impl Iterator<Item = (&str, usize, Heart)> + '_ {
        self.by_name.iter().filter_map(|(name, heart)| match heart {
            Heart::Supervised { index, .. } => Some((name.as_str(), usize::from(*index), *heart)),
            Heart::Bad { .. } => None,
        })
    }

    /// Lists the directory `checked`, visiting each entry; its state, and whether the
    /// listing was whole.
    fn list(
        &mut self,
        scan: &mut Scan<'_>,
        dir: &mut HeartsDir,
        checked: Result<Checked, DirTrouble>,
    ) -> Result<(DirState, bool), DirTrouble> {
        let c = checked?;
        dir.scan(|reader, entry| self.visit(scan, reader, entry))
            .map_err(DirTrouble::Unreadable)
            .map(|whole| (c.state, whole))
    }

    /// Clears the `seen` marks of a listing that did not finish.
    fn unsee(&mut self) {
        for heart in self.by_name.values_mut() {
            match heart {
                Heart::Supervised { seen, .. } | Heart::Bad { seen, .. } => *seen = false,
            }
        }
    }

    /// One entry of the directory: refused, admitted, re-read if replaced, observed.
    fn visit(&mut self, scan: &mut Scan<'_>, reader: &Reader<'_>, entry: Entry<'_>) {
        let path = scan.config.dir.as_path();
        let name = match entry {
            Entry::Named(name) => name,
            Entry::Refused { name, why } => return scan.refusals.refused(path, name, why),
        };
        let known = self.by_name.get(name).copied();
        if known.is_none() {
            // Over capacity: not even looked at, so that 100,000 entries cost
            // no more than listing them.
            if scan.room == 0 || self.by_name.len() == self.by_name.capacity() {
                return scan.refusals.over_capacity(name);
            }
            if scan.configured.iter().any(|n| n == name) {
                return scan.refusals.refused(
                    path,
                    name.as_bytes(),
                    "a configured component has that name",
                );
            }
        }
        let stamp = match reader.stamp(name) {
            Ok(Some(stamp)) => stamp,
            // Removed since it was listed.
            Ok(None) => return,
            Err(why) => return scan.refusals.refused(path, name.as_bytes(), why),
        };
        let replaced = match known {
            Some(Heart::Supervised { size, inode, .. }) | Some(Heart::Bad { size, inode, .. }) => {
                size != stamp.size || inode != stamp.inode
            }
            None => true,
        };
        let heart = if replaced {
            self.read(scan, reader, name, stamp, known)
        } else {
            known
        };
        // Cannot fail: the scan checked the name's length.
        let Ok(key) = NameBuf::try_from(name) else {
            return;
        };
        let heart = match heart {
            Some(Heart::Supervised {
                index, size, inode, ..
            }) => {
                scan.sup.observe(
                    usize::from(index),
                    scan.look,
                    Observation {
                        heartbeat: Some(stamp),
                        process: Process::Unknown,
                        poll_process: false,
                    },
                );
                Heart::Supervised {
                    index,
                    size,
                    inode,
                    seen: true,
                    orphan: false,
                }
            }
            Some(Heart::Bad { size, inode, .. }) => Heart::Bad {
                size,
                inode,
                seen: true,
            },
            None => return,
        };
        // Cannot fail: a new key was admitted only with room in the table.
        let _ = self.by_name.insert(key, heart);
    }

    /// Reads a new or replaced heart file: adopts its timeout, admits it, or refuses its
    /// content. `None`: no room left for it in the supervisor.
    fn read(
        &mut self,
        scan: &mut Scan<'_>,
        reader: &Reader<'_>,
        name: &str,
        stamp: Stamp,
        known: Option<Heart>,
    ) -> Option<Heart> {
        match (reader.timeout(name), known) {
            (Ok(timeout), Some(Heart::Supervised { index, .. })) => {
                scan.sup
                    .set_policy(usize::from(index), policy(scan.config, timeout));
                log::info!("heart {name}: timeout now {timeout:?}");
                Some(Heart::Supervised {
                    index,
                    size: stamp.size,
                    inode: stamp.inode,
                    seen: true,
                    orphan: false,
                })
            }
            (Ok(timeout), _) => match scan.sup.add(policy(scan.config, timeout), scan.now) {
                Ok(index) => {
                    scan.room = scan.room.saturating_sub(1);
                    self.names[index].clear();
                    let _ = self.names[index].push_str(name);
                    let _ = scan.run.clear_problem(name);
                    log::info!(
                        "heart {name} found (timeout {timeout:?}, LED code {})",
                        index + 1
                    );
                    Some(Heart::Supervised {
                        index: index as u16,
                        size: stamp.size,
                        inode: stamp.inode,
                        seen: true,
                        orphan: false,
                    })
                }
                Err(_) => {
                    scan.refusals.over_capacity(name);
                    None
                }
            },
            (Err(bad), previous) => {
                if let Some(Heart::Supervised { index, .. }) = previous {
                    scan.sup.remove(usize::from(index));
                    self.names[usize::from(index)].clear();
                    scan.room += 1;
                }
                log::error!("heart {name}: {bad}");
                let mut reason = Reason::new();
                let _ = write!(reason, "{bad}");
                if let Err(e) = scan.run.mark_problem(name, &reason) {
                    log::error!("heart {name}: cannot mark the problem: {}", e.desc());
                }
                Some(Heart::Bad {
                    size: stamp.size,
                    inode: stamp.inode,
                    seen: true,
                })
            }
        }
    }

    /// After a scan: forgets the hearts whose files are gone, keeps those the scan could
    /// not see (`lost` directory, `truncated` listing), and clears every `seen` mark.
    /// Returns the hearts kept as orphans, and how many were removed.
    fn retire(&mut self, scan: &mut Scan<'_>, lost: bool, truncated: bool) -> (usize, usize) {
        let mut orphans = 0usize;
        let mut removed = 0usize;
        let names = &mut self.names;
        self.by_name.retain(|name, heart| match heart {
            Heart::Supervised { seen, .. } | Heart::Bad { seen, .. } if *seen => {
                *seen = false;
                true
            }
            Heart::Supervised { .. } | Heart::Bad { .. } if truncated => true,
            Heart::Supervised { orphan, index, .. } => {
                if lost || *orphan {
                    *orphan = true;
                    orphans += 1;
                    return true;
                }
                scan.sup.remove(usize::from(*index));
                names[usize::from(*index)].clear();
                let _ = scan.run.clear_problem(name);
                log::info!("heart {name} removed: no longer supervised");
                removed += 1;
                false
            }
            Heart::Bad { .. } => {
                // Its file is gone with the directory: so is its problem.
                let _ = scan.run.clear_problem(name);
                if !lost {
                    log::info!("heart {name} removed: no longer supervised");
                }
                false
            }
        });
        (orphans, removed)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::core::supervisor::Settings;
    use crate::os::rundir::PROBLEMS;

    const CONFIGURED: &str = "sensor";

    /// A hearts directory and a run directory under a fresh temporary root, with one
    /// configured component (index 0) in the supervisor.
    struct Fixture {
        root: PathBuf,
        hearts: Hearts,
        sup: Box<Supervisor>,
        run: RunDir,
        configured: [NameBuf; 1],
        now: Instant,
    }

    impl Fixture {
        fn new(test: &str) -> Fixture {
            let root =
                std::env::temp_dir().join(format!("wk-hearts-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("hearts")).unwrap();
            let config = HeartsConfig {
                dir: root.join("hearts"),
                grace: Duration::from_secs(1),
                reset_after: Duration::from_secs(60),
                critical: false,
                repair: None,
            };
            let now = Instant::from_millis(1000);
            let settings = Settings {
                feed_interval: Duration::from_secs(1),
                check_interval: Duration::from_secs(1),
                hardware_timeout: Duration::from_secs(10),
            };
            let mut sup = Box::new(Supervisor::new(settings, now, None, 1));
            sup.add(policy(&config, Duration::from_secs(3)), now)
                .unwrap();
            Fixture {
                hearts: Hearts::new(&config, None, now, Duration::from_secs(1)),
                run: RunDir::open(&root.join("run")),
                configured: [NameBuf::try_from(CONFIGURED).unwrap()],
                sup,
                root,
                now,
            }
        }

        fn write(&self, name: &str, content: &str) {
            std::fs::write(self.root.join("hearts").join(name), content).unwrap();
        }

        fn remove(&self, name: &str) {
            std::fs::remove_file(self.root.join("hearts").join(name)).unwrap();
        }

        fn scan(&mut self) {
            self.now = self.now.saturating_add(Duration::from_millis(100));
            // A safety-net look: the directory is checked and listed.
            self.hearts.due(self.now, true, &self.sup);
            self.hearts.listing = true;
            let look = Look {
                at: self.now,
                wall_offset: 0,
                steps: 0,
            };
            self.hearts
                .scan(look, &mut self.sup, &self.run, &self.configured);
        }

        fn timeout(&self, index: usize) -> Option<Duration> {
            self.sup.policy(index).map(|p| p.timeout)
        }

        fn has_problem(&self, name: &str) -> bool {
            self.run.path().join(PROBLEMS).join(name).exists()
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn hearts_are_admitted_reread_refused_and_removed() {
        let mut f = Fixture::new("membership");
        f.write("backup", "5\n");
        f.write("junk", "soon\n");
        f.write(CONFIGURED, "5\n");
        f.scan();
        assert_eq!(f.hearts.name(1), Some("backup"));
        assert_eq!(f.timeout(1), Some(Duration::from_secs(5)));
        assert_eq!(
            f.sup.indices(),
            0..2,
            "neither junk nor a configured name is admitted"
        );
        assert!(f.has_problem("junk"));

        f.write("backup", "12\n");
        f.scan();
        assert_eq!(
            f.timeout(1),
            Some(Duration::from_secs(12)),
            "same index, new timeout"
        );

        f.write("backup", "never\n");
        f.scan();
        assert_eq!(
            f.timeout(1),
            None,
            "a heart whose content goes bad is no longer supervised"
        );
        assert!(f.has_problem("backup"));
        f.write("backup", "7\n");
        f.scan();
        assert_eq!(f.timeout(1), Some(Duration::from_secs(7)));
        assert!(!f.has_problem("backup"));

        f.remove("backup");
        f.remove("junk");
        f.scan();
        assert_eq!(f.timeout(1), None);
        assert_eq!(f.hearts.name(1), Some(""));
        assert!(!f.has_problem("junk"));
    }

    #[test]
    fn a_lost_directory_keeps_its_hearts_until_their_files_are_back() {
        let mut f = Fixture::new("lost");
        f.write("backup", "5\n");
        f.scan();
        assert_eq!(f.timeout(1), Some(Duration::from_secs(5)));

        std::fs::remove_dir_all(f.root.join("hearts")).unwrap();
        f.scan();
        f.scan();
        assert_eq!(
            f.timeout(1),
            Some(Duration::from_secs(5)),
            "kept, silent, while it is gone"
        );

        f.write("backup", "5\n");
        f.scan();
        assert_eq!(f.hearts.name(1), Some("backup"));
        f.remove("backup");
        f.scan();
        assert_eq!(
            f.timeout(1),
            None,
            "a file removed from a directory seen ends its supervision"
        );
    }
}
