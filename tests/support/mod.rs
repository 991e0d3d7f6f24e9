//! Shared support for the tests that run the real `watchkeeper` binary: a scratch
//! directory with a config, the agent started with its log in a file, component scripts,
//! `status` run with a deadline (a hung `status` is a failure, not a hung test), and the
//! check every fault test ends with: the agent still runs, still feeds, and `status`
//! answers with JSON that parses. Every `status --json` document read is checked against
//! its documented format, `docs/status.schema.json` ([`check_status_schema`]).
//!
//! Waits are generous and poll: these tests share a 2-core machine with whatever else runs.
//!
//! Beside it, and not declared here: `alloc.rs` (the allocation counters, which replace the
//! binary's allocator) and `fakes.rs` (clock, watchdog and LED pin for an in-process
//! `Agent`), each included by `#[path]` only where it is wanted.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub const BIN: &str = env!("CARGO_BIN_EXE_watchkeeper");

/// How long any one `watchkeeper` command may take before the test calls it hung.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(10);

/// A scratch directory with a config; removed when the test passes.
pub struct Sandbox {
    pub dir: PathBuf,
}

impl Sandbox {
    pub fn new(tag: &str) -> Sandbox {
        let dir = std::env::temp_dir().join(format!("wk-proc-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Sandbox { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The common header: the `none` device, both directories in the sandbox, fast checks.
    pub fn header(&self) -> String {
        format!(
            "[watchdog]\ndevice = \"none\"\ntimeout = 2\n[agent]\ncheck_interval = \"50ms\"\nstate_dir = \"{d}/state\"\nrun_dir = \"{d}/run\"\nrealtime_priority = 0\n",
            d = self.dir.display()
        )
    }

    /// Writes the config: the common header plus `body`.
    pub fn config(&self, body: &str) -> PathBuf {
        self.config_text(&format!("{}{body}", self.header()))
    }

    /// Writes `text` as the whole config.
    pub fn config_text(&self, text: &str) -> PathBuf {
        let path = self.path("wk.toml");
        fs::write(&path, text).unwrap();
        path
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(self.path("wk.toml")).args(args);
        c.env("WATCHKEEPER_LOG", "info");
        c
    }

    /// Runs a command to its end, or fails the test if it outlives [`COMMAND_DEADLINE`].
    pub fn run(&self, args: &[&str]) -> Output {
        run_with_deadline(self.command(args).stdin(Stdio::null()), args)
    }

    /// Starts the agent with its stderr in `agent.log`.
    pub fn start(&self) -> Child {
        spawn_logged(self, &mut self.command(&["run"]))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.path("agent.log")).unwrap_or_default()
    }

    pub fn status(&self) -> String {
        String::from_utf8(self.run(&["status"]).stdout).unwrap()
    }

    /// `status --json`, parsed: a document that does not parse, or does not conform to
    /// `docs/status.schema.json`, fails the test.
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"]);
        let text = String::from_utf8(out.stdout).expect("status --json is UTF-8");
        let doc = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{text}"));
        check_status_schema(&doc);
        doc
    }

    /// Waits until `cond` holds, or fails with the agent log.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {what}\n--- agent log ---\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// When the agent last fed the watchdog (the run directory's `fed` file).
    pub fn last_feed(&self) -> Option<SystemTime> {
        fed_time(&self.path("run"))
    }

    /// The check every fault test ends with: `agent` has not exited, it fed the watchdog
    /// after this call began (seen in `run_dir`'s `fed` file), and `status --json` answers
    /// with a document that parses and calls the agent running. Returns that document.
    pub fn assert_alive_and_feeding(&self, agent: &mut Child, run_dir: &Path) -> serde_json::Value {
        let asked = SystemTime::now();
        self.wait_for("a feed after the fault", Duration::from_secs(10), || {
            if let Some(status) = agent.try_wait().unwrap() {
                panic!(
                    "the agent exited ({status})\n--- agent log ---\n{}",
                    self.log()
                );
            }
            fed_time(run_dir).is_some_and(|fed| fed >= asked)
        });
        // The first snapshot is written just after the first feed: poll, briefly.
        let mut status = self.status_json();
        let polling = Instant::now();
        while status["agent"]["running"] != serde_json::Value::Bool(true)
            && polling.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(50));
            status = self.status_json();
        }
        assert_eq!(
            status["agent"]["running"],
            serde_json::Value::Bool(true),
            "status must see the running agent: {status}\n--- agent log ---\n{}",
            self.log()
        );
        status
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `docs/status.schema.json`, the documented format of `status --json`.
pub const STATUS_SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/status.schema.json");

/// Fails the test, with the validator's error and the document, unless `doc` conforms to
/// [`STATUS_SCHEMA`]: a member the schema does not describe fails too, so the file is
/// kept up to date with the output.
pub fn check_status_schema(doc: &serde_json::Value) {
    // The ARM suites run these same tests under qemu-user without the validator (see
    // Cargo.toml): the format does not depend on the target, and the host suite checks it.
    #[cfg(target_arch = "x86_64")]
    if let Err(why) = status_schema_errors(doc) {
        panic!(
            "status --json does not conform to {STATUS_SCHEMA}:\n{why}\n--- the document ---\n{doc:#}"
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = doc;
}

/// [`STATUS_SCHEMA`], compiled.
#[cfg(target_arch = "x86_64")]
pub struct StatusSchema {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

/// Compiles [`STATUS_SCHEMA`] afresh (a schema that does not compile is an error here,
/// not a panic, for the test of the file itself).
#[cfg(target_arch = "x86_64")]
pub fn compile_status_schema() -> Result<StatusSchema, String> {
    let mut schemas = boon::Schemas::new();
    let index = boon::Compiler::new()
        .compile(STATUS_SCHEMA, &mut schemas)
        .map_err(|e| format!("{e:#}"))?;
    Ok(StatusSchema { schemas, index })
}

/// Why `doc` does not conform to [`STATUS_SCHEMA`] (compiled once per test binary), if it
/// does not.
#[cfg(target_arch = "x86_64")]
pub fn status_schema_errors(doc: &serde_json::Value) -> Result<(), String> {
    static SCHEMA: std::sync::OnceLock<StatusSchema> = std::sync::OnceLock::new();
    let schema = SCHEMA.get_or_init(|| {
        compile_status_schema().unwrap_or_else(|e| panic!("{STATUS_SCHEMA} does not compile: {e}"))
    });
    schema
        .schemas
        .validate(doc, schema.index)
        .map_err(|e| e.to_string())
}

fn fed_time(run_dir: &Path) -> Option<SystemTime> {
    fs::symlink_metadata(run_dir.join("fed"))
        .ok()?
        .modified()
        .ok()
}

/// Runs `command` to its end with its output captured; a command still running after
/// [`COMMAND_DEADLINE`] is killed and fails the test (`what` names it).
pub fn run_with_deadline(command: &mut Command, what: &[&str]) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // Drain both pipes on threads, so a chatty command cannot block on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut buf).unwrap();
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut buf).unwrap();
        buf
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > COMMAND_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`watchkeeper {}` hung for {COMMAND_DEADLINE:?}",
                what.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A shell loop that beats a file every 100 ms and writes its pidfile, like a component.
pub fn component_script(sb: &Sandbox, name: &str) -> PathBuf {
    let script = sb.path(&format!("{name}.sh"));
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > {d}/{name}.pid\nwhile true; do touch {d}/{name}.beat; sleep 0.1; done\n",
            d = sb.dir.display()
        ),
    )
    .unwrap();
    make_executable(&script);
    script
}

pub fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Starts a script this test wrote. Exec fails with ETXTBSY while a child forked by another
/// test thread still holds the script's write descriptor (it is closed only at that
/// child's exec): that is the test harness racing itself, so try again, for up to 10 s.
pub fn spawn_component(script: &Path) -> Child {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Command::new(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            spawned => return spawned.unwrap(),
        }
    }
}

pub fn kill9(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

pub fn pid_of(sb: &Sandbox, name: &str) -> Option<i32> {
    fs::read_to_string(sb.path(&format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn kill_pid(pid: i32) {
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
}

/// Makes a FIFO at `path` (mode 0600), or fails the test naming the path.
pub fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

/// The sandbox's `agent.log`, opened for appending (created if missing), to be an agent's
/// stderr.
pub fn agent_log(sb: &Sandbox) -> fs::File {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(sb.path("agent.log"))
        .unwrap()
}

/// Spawns `command` (an agent, however it was built) with stdin and stdout on /dev/null
/// and stderr appended to `agent.log`.
pub fn spawn_logged(sb: &Sandbox, command: &mut Command) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(agent_log(sb))
        .spawn()
        .unwrap()
}

/// `sh -c script` with the binary as `$0` and the sandbox's config as `$1`, so that
/// `script` can set up what the agent inherits before it runs
/// `exec "$0" --config "$1" run`.
pub fn sh_command(sb: &Sandbox, script: &str) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(script)
        .arg(BIN)
        .arg(sb.path("wk.toml"));
    command
}

/// The fields of `/proc/PID/stat` after the command name, or None once the process is
/// gone. The name is in parentheses and may hold spaces and `)`: the fields follow the last
/// `)`. Index 0 is the state (field 3 in proc(5)), so field N of proc(5) is index N - 3.
pub fn proc_stat_fields(pid: impl std::fmt::Display) -> Option<Vec<String>> {
    // Read by a host `cat`, not by this process: under qemu-user (the ARM test runs) a
    // process's reads of its own /proc/PID/stat are the emulator's stand-in, whose start
    // time differs from the kernel's.
    let out = Command::new("cat")
        .arg(format!("/proc/{pid}/stat"))
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let stat = Some(out.stdout).filter(|_| out.status.success())?;
    let close = stat.iter().rposition(|b| *b == b')')?;
    let rest = String::from_utf8_lossy(&stat[close + 1..]);
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The hexadecimal mask of a `Sig...:` line (`field`, colon included) of
/// `/proc/PID/status`; fails the test if the process or the line is missing.
pub fn proc_status_mask(pid: impl std::fmt::Display, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{status}"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

/// Writes a config with one component, `svc`, beating `svc.beat` in the sandbox (the
/// table's other keys are `rest`), then starts [`component_script`]'s loop as `svc` and
/// the agent. Returns (component, agent).
pub fn start_with_svc(sb: &Sandbox, rest: &str) -> (Child, Child) {
    let script = component_script(sb, "svc");
    sb.config(&format!(
        "[[component]]\nname = \"svc\"\nheartbeat = \"{d}/svc.beat\"\n{rest}",
        d = sb.dir.display()
    ));
    let component = spawn_component(&script);
    (component, sb.start())
}
