//! The effective settings: a [`Config`] written back as TOML, defaults filled in (what
//! `watchkeeper check` prints).
//!
//! Invariant: what is printed parses back to the same config (the fuzzer checks it), so
//! every string goes through [`toml_string`] and every duration is written in a unit that
//! keeps it exact.

use core::fmt;
use core::time::Duration;

use super::schema::toml_string;
use super::{Config, Repair, TrialCheck, defaults};
use crate::os::led::LedSpec;

/// A duration as written in a config: whole seconds where it is, else milliseconds (the
/// finest unit a config can write).
fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("\"{}s\"", d.as_secs())
    } else {
        format!("\"{}ms\"", d.as_millis())
    }
}

/// A command as a TOML list of strings.
fn argv(command: &[std::ffi::OsString]) -> String {
    let words: Vec<String> = command
        .iter()
        .map(|a| toml_string(&a.to_string_lossy()))
        .collect();
    format!("[{}]", words.join(", "))
}

/// The effective settings, defaults filled in, as TOML (what `watchkeeper check` prints).
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.watchdog;
        writeln!(f, "# effective settings of {}", self.path.display())?;
        writeln!(f, "[watchdog]")?;
        match &w.device {
            Some(d) => writeln!(f, "device = {}", toml_string(&d.to_string_lossy()))?,
            None => writeln!(f, "device = {}", toml_string(defaults::DEVICE_NONE))?,
        }
        writeln!(
            f,
            "timeout = {}\nfeed_interval = {}\nshutdown_timeout = {}\n",
            secs(w.timeout),
            secs(w.feed_interval),
            secs(w.shutdown_timeout)
        )?;
        let a = &self.agent;
        writeln!(f, "[agent]\ncheck_interval = {}", secs(a.check_interval))?;
        writeln!(
            f,
            "state_dir = {}\nrun_dir = {}",
            toml_string(&a.state_dir.to_string_lossy()),
            toml_string(&a.run_dir.to_string_lossy())
        )?;
        writeln!(f, "log = {}", toml_string(a.log.name()))?;
        writeln!(
            f,
            "realtime_priority = {}\n",
            a.realtime_priority.unwrap_or(defaults::REALTIME_OFF)
        )?;
        writeln!(f, "[led]")?;
        match &self.led {
            LedSpec::None => writeln!(f, "kind = \"none\"")?,
            LedSpec::Gpio {
                chip,
                line,
                active_low,
            } => writeln!(
                f,
                "kind = \"gpio\"\nchip = {}\nline = {line}\nactive_low = {active_low}",
                toml_string(&chip.to_string_lossy())
            )?,
            LedSpec::Sysfs { name, active_low } => writeln!(
                f,
                "kind = \"sysfs\"\nname = {}\nactive_low = {active_low}",
                toml_string(name)
            )?,
        }
        writeln!(
            f,
            "\n[reboot_guard]\nmax_resets = {}\nwindow = {}",
            self.guard.max_resets,
            secs(self.guard.window)
        )?;
        if self.listens() {
            writeln!(
                f,
                "\n[notify]\nsocket = {}",
                toml_string(&self.notify.socket.to_string_lossy())
            )?;
        }
        if let Some(e) = &self.export {
            writeln!(
                f,
                "\n[export]\ntextfile = {}",
                toml_string(&e.textfile.to_string_lossy())
            )?;
        }
        if let Some(b) = &self.boot {
            writeln!(f, "\n[boot]\nconfirm = {}", argv(&b.confirm))?;
            writeln!(
                f,
                "confirm_after = {}\nconfirm_timeout = {}\nconfirm_attempts = {}",
                secs(b.policy.confirm_after),
                secs(b.policy.timeout),
                b.policy.attempts
            )?;
            if let Some(d) = b.deadline {
                writeln!(f, "confirm_deadline = {}", secs(d))?;
            }
            match &b.trial {
                TrialCheck::Always => writeln!(f, "# every boot is a trial boot (no trial check)")?,
                TrialCheck::Command { argv: words, value } => {
                    writeln!(f, "trial = {}", argv(words))?;
                    if let Some(v) = value {
                        writeln!(f, "trial_value = {}", toml_string(v))?;
                    }
                }
                TrialCheck::File { path, value } => writeln!(
                    f,
                    "trial_file = {}\ntrial_value = {}",
                    toml_string(&path.to_string_lossy()),
                    toml_string(value)
                )?,
            }
        }
        if let Some(h) = &self.hearts {
            writeln!(
                f,
                "\n[hearts]\ndir = {}",
                toml_string(&h.dir.to_string_lossy())
            )?;
            writeln!(
                f,
                "grace = {}\nreset_after = {}\ncritical = {}",
                secs(h.grace),
                secs(h.reset_after),
                h.critical
            )?;
            write_repair(f, h.repair.as_ref())?;
        }
        for c in &self.components {
            writeln!(
                f,
                "\n[[component]] # LED code {}",
                self.components
                    .iter()
                    .position(|x| x.name == c.name)
                    .unwrap_or(0)
                    + 1
            )?;
            writeln!(f, "name = {}", toml_string(c.name.as_str()))?;
            if let Some(h) = &c.heartbeat {
                writeln!(f, "heartbeat = {}", toml_string(&h.to_string_lossy()))?;
            }
            writeln!(f, "liveness = {}", toml_string(c.liveness.name()))?;
            if let Some(p) = &c.pidfile {
                writeln!(f, "pidfile = {}", toml_string(&p.to_string_lossy()))?;
            }
            let p = &c.policy;
            writeln!(
                f,
                "timeout = {}\ngrace = {}\nreset_after = {}\ncritical = {}",
                secs(p.timeout),
                secs(p.grace),
                secs(p.reset_after),
                p.critical
            )?;
            write_repair(f, c.repair.as_ref())?;
        }
        Ok(())
    }
}

fn write_repair(f: &mut fmt::Formatter<'_>, repair: Option<&Repair>) -> fmt::Result {
    if let Some(r) = repair {
        writeln!(f, "repair = {}", argv(&r.argv))?;
        writeln!(
            f,
            "repair_timeout = {}\nrepair_backoff = {}\nrepair_backoff_max = {}\nmax_repairs = {}",
            secs(r.policy.timeout),
            secs(r.policy.backoff_initial),
            secs(r.policy.backoff_max),
            r.policy.max_attempts
        )?;
    }
    Ok(())
}
