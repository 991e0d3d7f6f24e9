//! Fuzzer, on stable Rust, for every parser of bytes that come from outside the agent: the
//! config (text and file), hearts-directory files, pidfiles, `/proc/PID/stat` lines,
//! sd_notify datagrams, the reset history and the status snapshot.
//!
//! Each parser is a [`Target`]: seeds, a structure-aware mutator and a check. An input
//! fails when the parser panics, breaks a property of its format (a config error without
//! file:line:col, accepted settings that do not re-parse to the same settings, a history
//! that does not round-trip, `status --json` that is not JSON, a result that disagrees
//! with a model of the format), or takes longer than [`TIME_LIMIT`]. A failing input is
//! shrunk while it fails the same way, written under `target/tmp/fuzz-findings/` and
//! printed; the run then exits 1. Inputs that reach behaviour not seen before (a new
//! error message or accepted shape, digits and quoted text folded) join the corpus.
//!
//! Randomness is one splitmix64 stream per target from `--seed`, so a run is reproducible.
//!   cargo test --bench fuzz -- [--inputs N] [--seed S] [--only TARGET] [--repro FILE]
//! `--inputs` counts per target; `tests/fuzz` runs 150,000 per target, optimised
//! (`cargo bench --bench fuzz`).

use std::collections::{HashMap, HashSet};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use watchkeeper::cli::status;
use watchkeeper::config;
use watchkeeper::core::history::{Confirm, History};
use watchkeeper::core::notify::{self, Watchdog};
use watchkeeper::core::supervisor::Process;
use watchkeeper::limits::{MAX_DURATION_SECS, MAX_NOTIFY_STATUS_LEN};
use watchkeeper::os::heartbeat::{self, BadContent, Entry, HeartsDir};
use watchkeeper::os::state::State;

/// No input may take longer than this (the best of five timings, so a busy host does not
/// fail the run).
const TIME_LIMIT: Duration = Duration::from_millis(100);
/// Inputs per target when none is given: about 20,000 in all, a few seconds.
const DEFAULT_INPUTS: u64 = 3_000;
/// Corpus entries kept per target; past this a new entry replaces a random one.
const CORPUS_CAP: usize = 4_096;
/// Check calls spent shrinking one failing input.
const SHRINK_BUDGET: usize = 4_000;
/// Mutants larger than this are dropped for a fresh seed, so that inputs do not grow
/// without bound through the corpus.
const MAX_INPUT: usize = 32 * 1024;
/// The config path every config error must name.
const CONFIG_PATH: &str = "/fuzz/wk.toml";

// ---------------------------------------------------------------------------------------
// Randomness

/// splitmix64: small, fast, and the same stream for the same seed on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------------------
// Targets and the run loop

/// A broken property: what kind, and the evidence.
#[derive(Debug, Clone)]
struct Violation {
    kind: &'static str,
    detail: String,
}

fn fail<T>(kind: &'static str, detail: impl Into<String>) -> Result<T, Violation> {
    Err(Violation {
        kind,
        detail: detail.into(),
    })
}

/// Ok: a signature of the behaviour reached (the coverage proxy).
type Outcome = Result<String, Violation>;

struct Target {
    name: &'static str,
    what: &'static str,
    seeds: fn() -> Vec<Vec<u8>>,
    mutate: fn(&mut Rng, &[Vec<u8>]) -> Vec<u8>,
    check: fn(&Dirs, &[u8]) -> Outcome,
}

const TARGETS: &[Target] = &[
    Target {
        name: "config",
        what: "config::parse, salvage, check's printed settings re-parsed",
        seeds: config_seeds,
        mutate: mutate_config,
        check: check_config,
    },
    Target {
        name: "config-file",
        what: "config::load of raw bytes (NUL, invalid UTF-8)",
        seeds: config_seeds,
        mutate: mutate_config_bytes,
        check: check_config_file,
    },
    Target {
        name: "heart",
        what: "hearts-directory file content (a scan's Reader::timeout, heartbeat::parse_timeout)",
        seeds: heart_seeds,
        mutate: mutate_heart,
        check: check_heart,
    },
    Target {
        name: "pidfile",
        what: "pidfile content (heartbeat::process)",
        seeds: pidfile_seeds,
        mutate: mutate_pidfile,
        check: check_pidfile,
    },
    Target {
        name: "proc-stat",
        what: "/proc/PID/stat lines (heartbeat::parse_start_time)",
        seeds: stat_seeds,
        mutate: mutate_stat,
        check: check_stat,
    },
    Target {
        name: "history",
        what: "reset history file (State::read_only, History::parse, write_text)",
        seeds: history_seeds,
        mutate: mutate_history,
        check: check_history,
    },
    Target {
        name: "notify",
        what: "sd_notify datagrams (core::notify::parse)",
        seeds: notify_seeds,
        mutate: mutate_notify,
        check: check_notify,
    },
    Target {
        name: "snapshot",
        what: "status snapshot (status::render, text and --json)",
        seeds: snapshot_seeds,
        mutate: mutate_snapshot,
        check: check_snapshot,
    },
];

/// Scratch directories the file-reading parsers are pointed at.
struct Dirs {
    root: PathBuf,
    hearts: core::cell::RefCell<HeartsDir>,
    run: PathBuf,
    /// The history target's state dir.
    state: PathBuf,
    /// The snapshot target's state dir, with a fixed history.
    status_state: PathBuf,
}

impl Dirs {
    fn new() -> Dirs {
        // tmpfs when there is one: the file targets write a file per input.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm
        } else {
            Path::new(env!("CARGO_TARGET_TMPDIR"))
        };
        let root = base.join(format!("wk-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let run = root.join("run");
        let state = root.join("state");
        let status_state = root.join("status-state");
        std::fs::create_dir_all(&run).expect("scratch run dir");
        std::fs::create_dir_all(&state).expect("scratch state dir");
        std::fs::create_dir_all(&status_state).expect("scratch state dir");
        let hearts = core::cell::RefCell::new(HeartsDir::open(&root.join("hearts")));
        // A history whose fields need JSON escaping, for `status --json`.
        let mut history = History::default();
        history.start_boot("b\"\\\u{1}\u{7f}\u{2028}😀", -1, false);
        history.record_forced_reset("c.\"x\\", "why \"\\\u{1b}[31m\u{0}\u{2029}", Duration::MAX);
        history.start_boot("now", i64::MIN, true);
        let mut text = heapless::String::new();
        history.write_text(&mut text).expect("history fits");
        std::fs::write(status_state.join("history"), text.as_bytes()).expect("scratch history");
        Dirs {
            root,
            hearts,
            run,
            state,
            status_state,
        }
    }
}

struct Stats {
    inputs: u64,
    elapsed: Duration,
    corpus: usize,
    behaviours: usize,
    slowest: Duration,
}

/// One finding, shrunk.
struct Finding {
    target: &'static str,
    violation: Violation,
    input: Vec<u8>,
    file: PathBuf,
    hits: u64,
}

thread_local! {
    static PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs one input, turning a panic into a violation that says where it happened.
fn run_one(target: &Target, dirs: &Dirs, input: &[u8]) -> Outcome {
    match panic::catch_unwind(AssertUnwindSafe(|| (target.check)(dirs, input))) {
        Ok(outcome) => outcome,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let place = PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default();
            fail("panic", format!("{place}: {message}"))
        }
    }
}

/// Folds digits and quoted text, so that findings and behaviours group by kind.
fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quoted = false;
    let mut escaped = false;
    for c in text.chars() {
        if quoted {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
                out.push_str("Q\"");
            }
            continue;
        }
        if c == '"' {
            quoted = true;
            out.push('"');
        } else if c.is_ascii_digit() {
            if !out.ends_with('N') {
                out.push('N');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Findings group by kind and the first line of their detail (the evidence follows it).
fn key(v: &Violation) -> String {
    format!(
        "{}: {}",
        v.kind,
        fold(v.detail.lines().next().unwrap_or_default())
    )
}

/// Removes lines, then byte runs, while the input still fails the same way.
fn shrink(target: &Target, dirs: &Dirs, input: &[u8], want: &str) -> Vec<u8> {
    let mut best = input.to_vec();
    let mut budget = SHRINK_BUDGET;
    let same = |candidate: &[u8], budget: &mut usize| {
        *budget = budget.saturating_sub(1);
        matches!(run_one(target, dirs, candidate), Err(v) if key(&v) == want)
    };
    // Whole lines first: structure shrinks faster than bytes.
    let mut lines: Vec<Vec<u8>> = best
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let mut i = 0;
    while i < lines.len() && budget > 0 {
        let mut fewer = lines.clone();
        fewer.remove(i);
        if same(&fewer.concat(), &mut budget) {
            lines = fewer;
        } else {
            i += 1;
        }
    }
    best = lines.concat();
    let mut chunk = best.len() / 2;
    while chunk >= 1 && budget > 0 {
        let mut start = 0;
        while start < best.len() && budget > 0 {
            let end = (start + chunk).min(best.len());
            let mut candidate = best[..start].to_vec();
            candidate.extend_from_slice(&best[end..]);
            if same(&candidate, &mut budget) {
                best = candidate;
            } else {
                start += chunk;
            }
        }
        chunk /= 2;
    }
    best
}

fn findings_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings")
}

/// Fuzzes one target; findings are shrunk, written to a file and returned.
fn fuzz(target: &Target, dirs: &Dirs, seed: u64, inputs: u64) -> (Stats, Vec<Finding>) {
    let mut rng = Rng(seed ^ fnv(target.name.as_bytes()));
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let mut behaviours: HashSet<String> = HashSet::new();
    let mut findings: Vec<Finding> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut slowest = Duration::ZERO;
    let seeds = (target.seeds)();
    let started = Instant::now();
    let mut done = 0u64;
    let mut queue = seeds.iter();
    while done < inputs {
        let input = match queue.next() {
            Some(seed) => seed.clone(),
            None => {
                let pool: &[Vec<u8>] = if corpus.is_empty() { &seeds } else { &corpus };
                let mutant = (target.mutate)(&mut rng, pool);
                if mutant.len() > MAX_INPUT {
                    rng.pick(&seeds).clone()
                } else {
                    mutant
                }
            }
        };
        done += 1;
        let t0 = Instant::now();
        let mut outcome = run_one(target, dirs, &input);
        let mut took = t0.elapsed();
        if took > TIME_LIMIT {
            for _ in 0..4 {
                // Let a burst of load on the host pass before timing again.
                std::thread::sleep(Duration::from_millis(20));
                let t = Instant::now();
                let _ = run_one(target, dirs, &input);
                took = took.min(t.elapsed());
            }
            if took > TIME_LIMIT && outcome.is_ok() {
                outcome = fail("slow", format!("took {took:?}, over {TIME_LIMIT:?}"));
            }
        }
        slowest = slowest.max(took);
        match outcome {
            Ok(signature) => {
                if behaviours.insert(signature) {
                    if corpus.len() < CORPUS_CAP {
                        corpus.push(input);
                    } else {
                        let slot = rng.below(corpus.len());
                        corpus[slot] = input;
                    }
                }
            }
            Err(violation) => {
                let k = key(&violation);
                if let Some(&i) = seen.get(&k) {
                    findings[i].hits += 1;
                    continue;
                }
                let small = if violation.kind == "slow" {
                    input
                } else {
                    shrink(target, dirs, &input, &k)
                };
                let violation = match run_one(target, dirs, &small) {
                    Err(v) => v,
                    Ok(_) => violation,
                };
                let file =
                    findings_dir().join(format!("{}-{}.bin", target.name, findings.len() + 1));
                let _ = std::fs::create_dir_all(findings_dir());
                let _ = std::fs::write(&file, &small);
                seen.insert(k, findings.len());
                findings.push(Finding {
                    target: target.name,
                    violation,
                    input: small,
                    file,
                    hits: 1,
                });
            }
        }
    }
    let stats = Stats {
        inputs: done,
        elapsed: started.elapsed(),
        corpus: corpus.len(),
        behaviours: behaviours.len(),
        slowest,
    };
    (stats, findings)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn main() {
    let mut inputs = DEFAULT_INPUTS;
    let mut seed = None;
    let mut only: Option<String> = None;
    let mut repro: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--inputs" => {
                inputs = value("--inputs")
                    .parse()
                    .unwrap_or_else(|_| usage("--inputs takes a count"))
            }
            "--seed" => {
                seed = Some(
                    value("--seed")
                        .parse()
                        .unwrap_or_else(|_| usage("--seed takes a number")),
                )
            }
            "--only" => only = Some(value("--only")),
            "--repro" => repro = Some(PathBuf::from(value("--repro"))),
            // What cargo's test runner may pass; this harness has no test names.
            "--bench" | "--quiet" | "-q" | "--nocapture" => {}
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let targets: Vec<&Target> = TARGETS
        .iter()
        .filter(|t| only.as_deref().is_none_or(|o| o == t.name))
        .collect();
    if targets.is_empty() {
        usage("--only names no target");
    }
    panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        PANIC.with(|p| *p.borrow_mut() = Some(place));
    }));
    let dirs = Dirs::new();

    if let Some(file) = repro {
        let input =
            std::fs::read(&file).unwrap_or_else(|e| usage(&format!("{}: {e}", file.display())));
        let mut failed = false;
        for target in &targets {
            match run_one(target, &dirs, &input) {
                Ok(signature) => println!("{}: passes ({signature})", target.name),
                Err(v) => {
                    failed = true;
                    println!("{}: {}: {}", target.name, v.kind, v.detail);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dirs.root);
        std::process::exit(i32::from(failed));
    }

    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("fuzz: seed {seed} (reproduce with --seed {seed}), {inputs} inputs per target");
    println!(
        "{:<12} {:>9} {:>8} {:>10} {:>7} {:>10} {:>10}  parser",
        "target", "inputs", "seconds", "inputs/s", "corpus", "behaviours", "slowest"
    );
    let mut all: Vec<Finding> = Vec::new();
    let mut total = 0u64;
    let mut total_time = Duration::ZERO;
    for target in &targets {
        let (s, findings) = fuzz(target, &dirs, seed, inputs);
        total += s.inputs;
        total_time += s.elapsed;
        println!(
            "{:<12} {:>9} {:>8.2} {:>10.0} {:>7} {:>10} {:>8}us  {}",
            target.name,
            s.inputs,
            s.elapsed.as_secs_f64(),
            s.inputs as f64 / s.elapsed.as_secs_f64(),
            s.corpus,
            s.behaviours,
            s.slowest.as_micros(),
            target.what
        );
        all.extend(findings);
    }
    println!(
        "{:<12} {:>9} {:>8.2} {:>10.0}",
        "total",
        total,
        total_time.as_secs_f64(),
        total as f64 / total_time.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dirs.root);
    if all.is_empty() {
        println!("fuzz: no findings");
        return;
    }
    println!(
        "\nfuzz: {} findings (each shrunk; rerun with --only TARGET --repro FILE)",
        all.len()
    );
    for f in &all {
        println!(
            "- {} {} ({} inputs): {}\n  input b\"{}\"\n  saved {}",
            f.target,
            f.violation.kind,
            f.hits,
            f.violation.detail,
            f.input.escape_ascii(),
            f.file.display()
        );
    }
    std::process::exit(1);
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "fuzz: {problem}\nusage: fuzz [--inputs N] [--seed S] [--only TARGET] [--repro FILE]"
    );
    std::process::exit(2)
}

// ---------------------------------------------------------------------------------------
// Generic byte mutations and line structure

/// Bytes that parsers of text tend to trip on.
const TOKENS: &[&[u8]] = &[
    b"\0",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b"\r",
    b"\r\n",
    b"\n",
    b"\t",
    b" ",
    b"\"",
    b"'",
    b"\\",
    b"[",
    b"]",
    b"[[",
    b"]]",
    b"=",
    b",",
    b"{",
    b"}",
    b"#",
    b".",
    b"\"\"\"",
    b"'''",
    b"\x7f",
    b"\x1b[2J",
    b"\xe2\x80\xa8",
    b"\xc2\xa0",
    b"\xf0\x9f\x98\x80",
    b"-",
    b"+",
    b"0",
    b"9",
    b"..",
    b"/",
    b"\\u0000",
    b"\\u0001",
    b"\\U0010FFFF",
    b"\\ud800",
];

fn byte_mutation(rng: &mut Rng, data: &mut Vec<u8>) {
    let at = rng.below(data.len() + 1);
    match rng.below(6) {
        0 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] ^= 1 << rng.below(8);
        }
        1 => data.insert(at, rng.next() as u8),
        2 if !data.is_empty() => {
            let len = 1 + rng.below(8.min(data.len() - at.min(data.len() - 1)));
            let from = at.min(data.len() - 1);
            data.drain(from..(from + len).min(data.len()));
        }
        3 => {
            let token = rng.pick(TOKENS);
            data.splice(at..at, token.iter().copied());
        }
        4 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] = *rng.pick(&[0u8, b'\n', b'\t', b' ', b'"', b')', b'(', 0xff, 0x80, b'9']);
        }
        _ => data.truncate(at),
    }
}

fn lines_of(data: &[u8]) -> Vec<Vec<u8>> {
    data.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect()
}

fn join_lines(lines: &[Vec<u8>]) -> Vec<u8> {
    lines.join(&b"\n"[..])
}

/// Line-level mutations shared by the line formats.
fn line_mutation(rng: &mut Rng, lines: &mut Vec<Vec<u8>>, pool: &[Vec<u8>]) {
    let n = lines.len();
    match rng.below(5) {
        0 if n > 0 => {
            lines.remove(rng.below(n));
        }
        1 if n > 0 => {
            let line = lines[rng.below(n)].clone();
            lines.insert(rng.below(n + 1), line);
        }
        2 if n > 1 => {
            let (a, b) = (rng.below(n), rng.below(n));
            lines.swap(a, b);
        }
        3 => {
            let other = lines_of(rng.pick::<Vec<u8>>(pool));
            let line = other[rng.below(other.len())].clone();
            lines.insert(rng.below(n + 1), line);
        }
        _ if n > 0 => {
            let i = rng.below(n);
            byte_mutation(rng, &mut lines[i]);
        }
        _ => lines.push(Vec::new()),
    }
}

// ---------------------------------------------------------------------------------------
// Config

fn config_seeds() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(root.join("board"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for name in ["watchkeeper.toml", "demo.toml"] {
            files.push(entry.path().join(name));
        }
    }
    for entry in std::fs::read_dir(root.join("tests/system/configs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        files.push(entry.path());
    }
    files.sort();
    let mut seeds: Vec<Vec<u8>> = files.iter().filter_map(|f| std::fs::read(f).ok()).collect();
    let profiles = seeds.len();
    for rust in ["tests/config.rs", "tests/support/mod.rs"] {
        let source = std::fs::read_to_string(root.join(rust)).unwrap_or_default();
        seeds.extend(
            rust_string_literals(&source)
                .into_iter()
                .filter(|s| s.contains('[') && s.contains('='))
                .map(String::into_bytes),
        );
    }
    assert!(
        profiles >= 4,
        "the board profiles and test configs were not found under {}",
        root.display()
    );
    assert!(
        seeds.len() > profiles + 20,
        "the configs of tests/config.rs were not found"
    );
    seeds
}

/// The string literals of a Rust source (plain and raw), unescaped: the test configs.
fn rust_string_literals(source: &str) -> Vec<String> {
    let bytes = source.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if bytes[i..].starts_with(b"r#\"") {
            let body = i + 3;
            let end = source[body..].find("\"#").map_or(bytes.len(), |e| body + e);
            out.push(source[body..end].to_owned());
            i = end + 2;
        } else if bytes[i] == b'\''
            && i + 2 < bytes.len()
            && (bytes[i + 2] == b'\'' || bytes[i + 1] == b'\\')
        {
            // A char literal such as '"' or '\'': skip it.
            i += if bytes[i + 1] == b'\\' { 4 } else { 3 };
        } else if bytes[i] == b'"' {
            let mut text = String::new();
            i += 1;
            let mut chars = source[i..].char_indices();
            while let Some((j, c)) = chars.next() {
                match c {
                    '"' => {
                        i += j + 1;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, 'n')) => text.push('\n'),
                        Some((_, 't')) => text.push('\t'),
                        Some((_, '0')) => text.push('\0'),
                        Some((_, '\n')) => {
                            // A continued line: leading whitespace is skipped.
                            while chars.clone().next().is_some_and(|(_, c)| c.is_whitespace()) {
                                chars.next();
                            }
                        }
                        Some((_, other)) => text.push(other),
                        None => {}
                    },
                    other => text.push(other),
                }
            }
            out.push(text);
        } else {
            i += 1;
        }
    }
    out
}

const TABLES: &[&str] = &[
    "[watchdog]",
    "[agent]",
    "[led]",
    "[reboot_guard]",
    "[defaults]",
    "[hearts]",
    "[notify]",
    "[[component]]",
    "[component]",
    "[[watchdog]]",
    "[[hearts]]",
    "[bogus]",
    "[agent.extra]",
    "[ watchdog ]",
    "[component.0]",
    "[[component.repair]]",
    "[\"watchdog\"]",
    "[led.kind]",
];

const KEYS: &[&str] = &[
    "device",
    "timeout",
    "feed_interval",
    "shutdown_timeout",
    "check_interval",
    "state_dir",
    "run_dir",
    "log",
    "realtime_priority",
    "kind",
    "chip",
    "line",
    "name",
    "active_low",
    "max_resets",
    "window",
    "heartbeat",
    "liveness",
    "pidfile",
    "socket",
    "dir",
    "grace",
    "reset_after",
    "critical",
    "repair",
    "repair_timeout",
    "repair_backoff",
    "repair_backoff_max",
    "max_repairs",
    "timout",
    "\"timeout\"",
    "'name'",
    "agent.log",
    "watchdog.timeout",
    "component",
    "hearts",
    "defaults.grace",
    "\"\"",
    "ключ",
];

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "3",
    "4",
    "9",
    "10",
    "15",
    "16",
    "17",
    "60",
    "61",
    "99",
    "100",
    "101",
    "1023",
    "1024",
    "1025",
    "86400",
    "2592000",
    "2592001",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "99999999999999999999",
    "0x10",
    "0o17",
    "0b101",
    "1_000",
    "+5",
    "-0",
    "007",
    "1__0",
];

const FLOATS: &[&str] = &[
    "0.0", "-0.0", "1.5", "0.001", "1e3", "1e400", "-1e400", "1e-400", "inf", "-inf", "nan",
    "3.14159", "10.0", "2.5e-3",
];

const DURATIONS: &[&str] = &[
    "10s",
    "500ms",
    "5m",
    "1h",
    "0s",
    "0ms",
    "1ms",
    "9ms",
    "10ms",
    "99ms",
    "100ms",
    "1500ms",
    "60s",
    "61s",
    "720h",
    "721h",
    "43200m",
    "2592000s",
    "2592001s",
    "18446744073709551615s",
    "18446744073709551616s",
    "18446744073709551615h",
    "99999999999999999999ms",
    "10x",
    "",
    "s",
    "ms",
    " 10s",
    "10s ",
    "10 s",
    "1e3s",
    "-1s",
    "+5s",
    "10S",
    "10MS",
    "10us",
    "10µs",
    "10d",
    "1.5s",
    "١٠s",
    "10sec",
    "10ss",
    "0x10s",
    "5mh",
];

const DATETIMES: &[&str] = &[
    "1979-05-27T07:32:00Z",
    "1979-05-27 07:32:00.999999-07:00",
    "1979-05-27",
    "07:32:00",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999+23:59",
];

fn path_value(rng: &mut Rng) -> String {
    match rng.below(12) {
        0 => format!(
            "\"/{}\"",
            "a".repeat(rng.pick(&[254usize, 255, 256, 257, 1000]).to_owned())
        ),
        1 => format!("\"/x\\u{:04x}y\"", rng.below(0x20)),
        2 => "\"/a/../b\"".into(),
        3 => "\"relative/path\"".into(),
        4 => "\"/\"".into(),
        5 => "\"/run/watchkeeper\"".into(),
        6 => "\"/var/lib/watchkeeper\"".into(),
        7 => "\"/run/watchkeeper/problems/x\"".into(),
        8 => "\"/a\\tb\"".into(),
        9 => "\"/x\\u0000\"".into(),
        10 => format!("'/lit{}'", rng.pick(&["", "\\n", "\"", " x"])),
        _ => format!(
            "\"/run/{}\"",
            rng.pick(&["x", "a b", "é", "..", ".", "😀", "a\\\\b", "\\u007f"])
        ),
    }
}

fn string_value(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => format!("\"{}\"", rng.pick(DURATIONS)),
        1 => format!(
            "\"{}{}\"",
            rng.pick(NUMBERS),
            rng.pick(&["ms", "s", "m", "h", "", "x", " s"])
        ),
        2 => path_value(rng),
        3 => format!(
            "\"{}\"",
            rng.pick(&[
                "gpio",
                "sysfs",
                "none",
                "stderr",
                "kmsg",
                "notify",
                "both",
                "heartbeat",
                "",
                "none ",
                "GPIO",
                "led0",
                "../x",
                "a/b",
                ".",
                ".."
            ])
        ),
        4 => format!(
            "\"{}\"",
            rng.pick(&[
                "sensor",
                "a b",
                "a",
                "x".repeat(32).as_str(),
                "x".repeat(33).as_str(),
                ".",
                "..",
                "é",
                "-",
                "_.-"
            ])
        ),
        _ => rng
            .pick(&[
                "\"\\u0000\"",
                "\"\\t\"",
                "\"\\\"\"",
                "\"\\\\\"",
                "\"\\ud800\"",
                "\"\"\"a\nb\"\"\"",
                "'''x'''",
                "\"unterminated",
                "\"\\x41\"",
            ])
            .to_string(),
    }
}

fn array_value(rng: &mut Rng, depth: usize) -> String {
    let len = *rng.pick(&[0usize, 1, 2, 3, 16, 17]);
    let first = rng
        .pick(&[
            "\"/bin/sh\"",
            "\"sv\"",
            "\"/etc/init.d/x\"",
            "\"\"",
            "\"/x\\u0000\"",
        ])
        .to_string();
    let mut items = Vec::new();
    for i in 0..len {
        items.push(if i == 0 && rng.one_in(2) {
            first.clone()
        } else {
            value(rng, depth + 1)
        });
    }
    format!("[{}]", items.join(", "))
}

/// A TOML value of a random kind.
fn value(rng: &mut Rng, depth: usize) -> String {
    let kinds = if depth > 2 { 6 } else { 8 };
    match rng.below(kinds) {
        0 | 1 => string_value(rng),
        2 => rng.pick(NUMBERS).to_string(),
        3 => rng.pick(FLOATS).to_string(),
        4 => rng.pick(&["true", "false", "True", "yes"]).to_string(),
        5 => rng.pick(DATETIMES).to_string(),
        6 => array_value(rng, depth),
        _ => format!("{{ {} = {} }}", rng.pick(KEYS), value(rng, depth + 1)),
    }
}

fn is_table(line: &[u8]) -> bool {
    line.trim_ascii_start().starts_with(b"[")
}

/// `key = value` lines: the byte offset of `=`.
fn assignment(line: &[u8]) -> Option<usize> {
    if is_table(line) || line.trim_ascii_start().starts_with(b"#") {
        return None;
    }
    line.iter().position(|b| *b == b'=')
}

/// The line range of a random table: its header to the next header.
fn table_block(rng: &mut Rng, lines: &[Vec<u8>]) -> Option<(usize, usize)> {
    let headers: Vec<usize> = (0..lines.len()).filter(|i| is_table(&lines[*i])).collect();
    let start = *headers.get(rng.below(headers.len()))?;
    let end = (start + 1..lines.len())
        .find(|i| is_table(&lines[*i]))
        .unwrap_or(lines.len());
    Some((start, end))
}

fn config_mutation(rng: &mut Rng, lines: &mut Vec<Vec<u8>>, pool: &[Vec<u8>]) {
    let n = lines.len();
    let assignments: Vec<usize> = (0..n)
        .filter(|i| assignment(&lines[*i]).is_some())
        .collect();
    match rng.below(11) {
        0 => lines.insert(rng.below(n + 1), rng.pick(TABLES).as_bytes().to_vec()),
        1 => {
            if let Some((s, e)) = table_block(rng, lines) {
                lines.drain(s..e);
            }
        }
        2 => {
            if let Some((s, e)) = table_block(rng, lines) {
                let block: Vec<Vec<u8>> = lines[s..e].to_vec();
                let at = if rng.one_in(2) { lines.len() } else { s };
                lines.splice(at..at, block);
            }
        }
        3 => {
            let line = format!("{} = {}", rng.pick(KEYS), value(rng, 0));
            lines.insert(rng.below(n + 1), line.into_bytes());
        }
        4 if assignments.len() > 1 => {
            // Swap the values of two keys.
            let (a, b) = (*rng.pick(&assignments), *rng.pick(&assignments));
            let (ea, eb) = (
                assignment(&lines[a]).unwrap_or(0),
                assignment(&lines[b]).unwrap_or(0),
            );
            let va = lines[a][ea..].to_vec();
            let vb = lines[b][eb..].to_vec();
            lines[a].truncate(ea);
            lines[a].extend_from_slice(&vb);
            lines[b].truncate(eb);
            lines[b].extend_from_slice(&va);
        }
        5 | 6 if !assignments.is_empty() => {
            // Change a value, often to another kind.
            let a = *rng.pick(&assignments);
            let eq = assignment(&lines[a]).unwrap_or(0);
            lines[a].truncate(eq);
            lines[a].extend_from_slice(format!("= {}", value(rng, 0)).as_bytes());
        }
        7 if !assignments.is_empty() => {
            // Rename a key.
            let a = *rng.pick(&assignments);
            let eq = assignment(&lines[a]).unwrap_or(0);
            let rest = lines[a][eq..].to_vec();
            lines[a] = format!("{} ", rng.pick(KEYS)).into_bytes();
            lines[a].extend_from_slice(&rest);
        }
        8 => {
            // A whole table from another input.
            let other = lines_of(rng.pick::<Vec<u8>>(pool));
            if let Some((s, e)) = table_block(rng, &other) {
                let at = rng.below(n + 1);
                lines.splice(at..at, other[s..e].iter().cloned());
            }
        }
        9 => {
            // Many components: the capacity and the duplicate checks.
            let count = *rng.pick(&[2usize, 3, 50]);
            for i in 0..count {
                let name = if rng.one_in(4) { 0 } else { i };
                lines.push(b"[[component]]".to_vec());
                lines.push(
                    format!("name = \"c{name}\"\nheartbeat = \"/run/c{}\"", i % 7).into_bytes(),
                );
            }
        }
        _ => line_mutation(rng, lines, pool),
    }
}

fn mutate_config(rng: &mut Rng, pool: &[Vec<u8>]) -> Vec<u8> {
    let mut lines = lines_of(rng.pick::<Vec<u8>>(pool));
    for _ in 0..1 + rng.below(4) {
        config_mutation(rng, &mut lines, pool);
    }
    join_lines(&lines)
}

fn mutate_config_bytes(rng: &mut Rng, pool: &[Vec<u8>]) -> Vec<u8> {
    let mut data = mutate_config(rng, pool);
    for _ in 0..rng.below(3) {
        byte_mutation(rng, &mut data);
    }
    data
}

/// `<path>:<line>:<col>: ` at the start of an error message.
fn has_place(shown: &str) -> bool {
    let Some(rest) = shown
        .strip_prefix(CONFIG_PATH)
        .and_then(|r| r.strip_prefix(':'))
    else {
        return false;
    };
    fn digits(s: &str) -> Option<&str> {
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        (n > 0 && s[n..].starts_with(':')).then(|| &s[n + 1..])
    }
    digits(rest)
        .and_then(digits)
        .is_some_and(|r| r.starts_with(' '))
}

/// The keys and sections a config's printed settings have, each once: its shape.
fn shape(printed: &str) -> String {
    let keys: std::collections::BTreeSet<&str> = printed
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split([' ', '=']).next().unwrap_or(l))
        .collect();
    keys.into_iter().collect::<Vec<_>>().join(",")
}

/// The properties of one parsed config text.
fn config_properties(result: Result<config::Config, config::ConfigError>) -> Outcome {
    match result {
        Err(e) => {
            let shown = e.to_string();
            if !has_place(&shown) {
                return fail("config error without file:line:col", shown);
            }
            Ok(format!("error {}", fold(&e.message)))
        }
        Ok(c) => {
            let first = c.to_string();
            let again = match config::parse(&c.path, &first) {
                Ok(again) => again,
                Err(e) => {
                    return fail(
                        "check's printed settings do not re-parse",
                        format!("{e}\n  printed:\n{first}"),
                    );
                }
            };
            let second = again.to_string();
            if second != first {
                let diff = first
                    .lines()
                    .zip(second.lines())
                    .find(|(a, b)| a != b)
                    .map_or_else(String::new, |(a, b)| format!("{a:?} became {b:?}"));
                return fail("check's printed settings change when re-parsed", diff);
            }
            Ok(format!("ok {}", shape(&first)))
        }
    }
}

fn check_config(_: &Dirs, input: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(input);
    let _ = config::salvage(Some(&text));
    config_properties(config::parse(Path::new(CONFIG_PATH), &text))
}

fn check_config_file(dirs: &Dirs, input: &[u8]) -> Outcome {
    // The file is read from the scratch dir but reported under CONFIG_PATH, so that the
    // place check is the same as for text.
    let file = dirs.root.join("wk.toml");
    std::fs::write(&file, input).map_err(|e| Violation {
        kind: "harness",
        detail: e.to_string(),
    })?;
    let loaded = config::load(&file).map_err(|mut e| {
        e.path = PathBuf::from(CONFIG_PATH);
        e
    });
    if let Ok(text) = std::str::from_utf8(input) {
        let parsed = config::parse(&file, text);
        if parsed.is_ok() != loaded.is_ok() {
            return fail(
                "config::load and config::parse disagree",
                format!("load {:?}", loaded.err()),
            );
        }
    }
    config_properties(loaded)
}

// ---------------------------------------------------------------------------------------
// Hearts-directory files

fn heart_seeds() -> Vec<Vec<u8>> {
    [
        "30",
        "30\n",
        "1",
        "0",
        "2592000",
        "2592001",
        " 5 \n",
        "+5",
        "-5",
        "",
        "\n",
        "thirty",
        "5s",
        "1e3",
        "\u{feff}7",
        "18446744073709551615",
        "18446744073709551616",
        "00000000000000000000000000000042",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn mutate_heart(rng: &mut Rng, pool: &[Vec<u8>]) -> Vec<u8> {
    if rng.one_in(3) {
        let ws = [
            "", " ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\u{a0}", "\u{2003}", "\u{feff}", "\0",
        ];
        let number = match rng.below(3) {
            0 => rng.pick(NUMBERS).to_string(),
            1 => (rng.next() % (MAX_DURATION_SECS + 3)).to_string(),
            _ => "9".repeat(rng.below(34)),
        };
        return format!(
            "{}{}{}{}",
            rng.pick(&ws),
            rng.pick(&ws),
            number,
            rng.pick(&ws)
        )
        .into_bytes();
    }
    let mut data = rng.pick(pool).clone();
    for _ in 0..1 + rng.below(3) {
        byte_mutation(rng, &mut data);
    }
    data
}

/// What a heart file's content must give: whole seconds, surrounding whitespace allowed.
fn heart_model(content: &[u8]) -> Result<u64, &'static [BadContent]> {
    if content.len() > watchkeeper::limits::MAX_HEART_CONTENT {
        return Err(&[BadContent::TooLarge]);
    }
    let Ok(text) = std::str::from_utf8(content) else {
        return Err(&[BadContent::NotSeconds]);
    };
    let text = text.trim();
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(&[BadContent::NotSeconds]);
    }
    match digits.parse::<u128>() {
        Ok(0) => Err(&[BadContent::OutOfRange]),
        Ok(s) if s <= u128::from(MAX_DURATION_SECS) => Ok(s as u64),
        // Past u64 either word is right.
        Ok(s) if s > u128::from(u64::MAX) => Err(&[BadContent::OutOfRange, BadContent::NotSeconds]),
        _ => Err(&[BadContent::OutOfRange]),
    }
}

fn check_heart(dirs: &Dirs, input: &[u8]) -> Outcome {
    let mut hearts = dirs.hearts.borrow_mut();
    std::fs::write(hearts.path().join("h"), input).map_err(|e| Violation {
        kind: "harness",
        detail: e.to_string(),
    })?;
    // The file as the agent reads it during a scan, and the parser on its own: both must
    // agree with the format.
    let mut read = None;
    let scanned = hearts.scan(|reader, entry| {
        if matches!(entry, Entry::Named("h")) {
            read = Some(reader.timeout("h"));
        }
    });
    let Some(got) = read else {
        return fail("heart file not seen by the scan", format!("{scanned:?}"));
    };
    if heartbeat::parse_timeout(input) != got {
        return fail(
            "heart file read and parser disagree",
            format!("read {got:?}, parsed {:?}", heartbeat::parse_timeout(input)),
        );
    }
    let agrees = match (&got, heart_model(input)) {
        (Ok(d), Ok(secs)) => *d == Duration::from_secs(secs),
        (Err(e), Err(allowed)) => allowed.contains(e),
        _ => false,
    };
    if !agrees {
        return fail(
            "heart timeout disagrees with the format",
            format!("read {got:?}, expected {:?}", heart_model(input)),
        );
    }
    Ok(format!("{:?}", got.map(|_| ())))
}

// ---------------------------------------------------------------------------------------
// Pidfiles

/// Above the kernel's PID_MAX_LIMIT (2^22): never a live process.
const NO_SUCH_PID: i64 = 4_194_305;

fn pidfile_seeds() -> Vec<Vec<u8>> {
    let me = std::process::id().to_string();
    [
        me.as_str(),
        "1",
        "0",
        "-1",
        "2147483647",
        "2147483648",
        "4194305",
        " 42\n",
        "+42",
        "abc",
        "",
        "\n",
        "12 34",
        "0x10",
        "99999999999999999999999",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn mutate_pidfile(rng: &mut Rng, pool: &[Vec<u8>]) -> Vec<u8> {
    if rng.one_in(3) {
        let pid = match rng.below(3) {
            0 => std::process::id().to_string(),
            1 => (NO_SUCH_PID + (rng.next() % 1_000_000) as i64).to_string(),
            _ => rng.pick(NUMBERS).to_string(),
        };
        return format!(
            "{}{pid}{}",
            rng.pick(&["", " ", "\t", "\u{a0}"]),
            rng.pick(&["", "\n", "\r\n", " \n\n", "\0"])
        )
        .into_bytes();
    }
    let mut data = rng.pick(pool).clone();
    for _ in 0..1 + rng.below(3) {
        byte_mutation(rng, &mut data);
    }
    data
}

fn check_pidfile(dirs: &Dirs, input: &[u8]) -> Outcome {
    let file = dirs.root.join("pid");
    std::fs::write(&file, input).map_err(|e| Violation {
        kind: "harness",
        detail: e.to_string(),
    })?;
    let got = heartbeat::process(&file);
    // A pid in decimal, whitespace around it, in the 24 bytes read.
    let expected = (input.len() <= 24)
        .then(|| std::str::from_utf8(input).ok())
        .flatten()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0);
    let agrees = match (expected, got) {
        (None, Process::Unknown) => true,
        (Some(pid), Process::Running { pid: p, .. }) => p == pid && i64::from(pid) < NO_SUCH_PID,
        (Some(pid), Process::Gone { pid: p }) => p == pid && pid as u32 != std::process::id(),
        _ => false,
    };
    if !agrees {
        return fail(
            "pidfile read disagrees with the format",
            format!("read {got:?}, expected pid {expected:?}"),
        );
    }
    Ok(match got {
        Process::Unknown => "unknown",
        Process::Running { .. } => "running",
        Process::Gone { .. } => "gone",
    }
    .to_owned())
}

// ---------------------------------------------------------------------------------------
// sd_notify datagrams

const NOTIFY_NAMES: &[&str] = &[
    "READY",
    "STOPPING",
    "RELOADING",
    "WATCHDOG",
    "WATCHDOG_USEC",
    "EXTEND_TIMEOUT_USEC",
    "STATUS",
    "MAINPID",
    "ERRNO",
    "FDSTORE",
    "X_APP",
    "ready",
    "",
];

const NOTIFY_VALUES: &[&str] = &[
    "1",
    "0",
    "trigger",
    "2",
    "",
    "20000000",
    "2592000000000",
    "2592000000001",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "+1",
    " 1",
    "1 ",
    "4711",
    "2147483647",
    "2147483648",
    "Processing requests...",
    "é",
    "a=b",
];

fn notify_seeds() -> Vec<Vec<u8>> {
    [
        "READY=1",
        "WATCHDOG=1",
        "WATCHDOG=trigger",
        "READY=1\nSTATUS=up\nMAINPID=4711",
        "WATCHDOG_USEC=20000000",
        "EXTEND_TIMEOUT_USEC=5000000",
        "STOPPING=1\nSTATUS=bye\n",
        "X_CUSTOM=1\nFDSTORE=1",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn mutate_notify(rng: &mut Rng, pool: &[Vec<u8>]) -> Vec<u8> {
    if rng.one_in(3) {
        let mut lines = Vec::new();
        for _ in 0..1 + rng.below(5) {
            let value = if rng.one_in(8) {
                // A long STATUS around the limit, with a character across it now and then.
                let mut v = "a".repeat(MAX_NOTIFY_STATUS_LEN - 3 + rng.below(6));
                if rng.one_in(2) {
                    v.push('€');
                }
                v
            } else {
                rng.pick(NOTIFY_VALUES).to_string()
            };
            lines.push(format!("{}={value}", rng.pick(NOTIFY_NAMES)).into_bytes());
        }
        return join_lines(&lines);
    }
    let mut data = rng.pick(pool).clone();
    let mut lines = lines_of(&data);
    if rng.one_in(2) {
        line_mutation(rng, &mut lines, pool);
        data = join_lines(&lines);
    }
    for _ in 0..1 + rng.below(3) {
        byte_mutation(rng, &mut data);
    }
    data
}

/// What a datagram says, by a second reading of the format: text first, then each
/// assignment checked with std's parsers.
#[derive(Debug, Default, PartialEq)]
struct NotifyModel {
    ready: bool,
    stopping: bool,
    watchdog: Option<&'static str>,
    watchdog_usec: Option<u64>,
    extend_usec: Option<u64>,
    status: Option<String>,
    malformed: u16,
}

fn notify_model(input: &[u8]) -> NotifyModel {
    let mut m = NotifyModel::default();
    let digits = |v: &[u8]| -> Option<u64> {
        let text = std::str::from_utf8(v).ok()?;
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse::<u64>().ok()
    };
    let limit = MAX_DURATION_SECS * 1_000_000;
    for line in input.split(|b| *b == b'\n') {
        let Some(eq) = line.iter().position(|b| *b == b'=') else {
            continue;
        };
        let (name, value) = (&line[..eq], &line[eq + 1..]);
        let ok = match name {
            b"READY" | b"STOPPING" => {
                let flag = if name == b"READY" {
                    &mut m.ready
                } else {
                    &mut m.stopping
                };
                match value {
                    b"1" => {
                        *flag = true;
                        true
                    }
                    b"0" => true,
                    _ => false,
                }
            }
            b"WATCHDOG" => match value {
                b"1" => {
                    m.watchdog = Some("ping");
                    true
                }
                b"trigger" => {
                    m.watchdog = Some("trigger");
                    true
                }
                _ => false,
            },
            b"WATCHDOG_USEC" => match digits(value).filter(|u| *u > 0 && *u <= limit) {
                Some(u) => {
                    m.watchdog_usec = Some(u);
                    true
                }
                None => false,
            },
            b"EXTEND_TIMEOUT_USEC" => match digits(value).filter(|u| *u <= limit) {
                Some(u) => {
                    m.extend_usec = Some(u);
                    true
                }
                None => false,
            },
            b"STATUS" => {
                // The valid text before the first bad byte must cover the kept bytes; then
                // whole characters are taken while they fit.
                let first = value.utf8_chunks().next();
                let valid = first.as_ref().map_or("", |c| c.valid());
                if valid.len() < value.len().min(MAX_NOTIFY_STATUS_LEN) {
                    false
                } else {
                    let mut kept = String::new();
                    for c in valid.chars() {
                        if kept.len() + c.len_utf8() > MAX_NOTIFY_STATUS_LEN {
                            break;
                        }
                        kept.push(c);
                    }
                    m.status = Some(kept);
                    true
                }
            }
            _ => true,
        };
        if !ok {
            m.malformed += 1;
        }
    }
    m
}

fn check_notify(_: &Dirs, input: &[u8]) -> Outcome {
    let got = notify::parse(input);
    let seen = NotifyModel {
        ready: got.ready,
        stopping: got.stopping,
        watchdog: got.watchdog.map(|w| match w {
            Watchdog::Ping => "ping",
            Watchdog::Trigger => "trigger",
        }),
        watchdog_usec: got.watchdog_timeout.map(|t| t.as_micros() as u64),
        extend_usec: got.extend_startup.map(|t| t.as_micros() as u64),
        status: got.status.map(str::to_owned),
        malformed: got.malformed,
    };
    let expected = notify_model(input);
    if seen != expected {
        return fail(
            "notify parse disagrees with the format",
            format!("parsed {seen:?}, expected {expected:?}"),
        );
    }
    if got.is_empty()
        != (expected
            == NotifyModel {
                malformed: expected.malformed,
                ..NotifyModel::default()
            })
    {
        return fail("is_empty disagrees with the fields", format!("{seen:?}"));
    }
    Ok(format!(
        "r{} s{} w{:?} u{} e{} t{} m{}",
        u8::from(seen.ready),
        u8::from(seen.stopping),
        seen.watchdog,
        u8::from(seen.watchdog_usec.is_some()),
        u8::from(seen.extend_usec.is_some()),
        seen.status
            .as_ref()
            .map_or(0, |t| 1 + usize::from(t.len() == MAX_NOTIFY_STATUS_LEN)),
        seen.malformed.min(3)
    ))
}

// ---------------------------------------------------------------------------------------
// /proc/PID/stat lines

fn stat_line(rng: &mut Rng) -> Vec<u8> {
    let mut line = format!("{} (", rng.below(4_194_304)).into_bytes();
    // The kernel's comm: up to 15 bytes of anything but NUL; tests go further.
    let most = if rng.one_in(4) { 200 } else { 16 };
    let comm_len = rng.below(most);
    for _ in 0..comm_len {
        let b = *rng.pick(&[
            b')', b'(', b' ', b'\n', b'\t', b'Z', b'1', 0xff, 0xc3, b'a', b'x',
        ]);
        line.push(if rng.one_in(8) { rng.next() as u8 } else { b });
    }
    let state = *rng.pick(&["R", "S", "D", "Z", "X", "T", "t", "W", "P", "I", "x", "K"]);
    line.extend_from_slice(format!(") {state}").as_bytes());
    let fields = if rng.one_in(6) { rng.below(20) } else { 18 };
    for _ in 0..fields {
        line.extend_from_slice(
            format!(
                " {}",
                rng.pick(&["0", "1", "-1", "20", "4194560", "18446744073709551615"])
            )
            .as_bytes(),
        );
    }
    if fields == 18 {
        let start = match rng.below(3) {
            0 => rng.next().to_string(),
            1 => rng
                .pick(&[
                    "0",
                    "18446744073709551615",
                    "18446744073709551616",
                    "-1",
                    "1e3",
                    "x",
                ])
                .to_string(),
            _ => (rng.next() % 10_000_000).to_string(),
        };
        line.extend_from_slice(format!(" {start}").as_bytes());
        for _ in 0..rng.below(31) {
            line.extend_from_slice(b" 0");
        }
    }
    if rng.one_in(2) {
        line.push(b'\n');
    }
    line
}

fn stat_seeds() -> Vec<Vec<u8>> {
    let me = std::fs::read(format!("/proc/{}/stat", std::process::id())).unwrap_or_default();
    vec![
        me,
        b"1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10"
            .to_vec(),
        b"1234 (x) Z 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10".to_vec(),
        b"garbage".to_vec(),
        Vec::new(),
        b")".to_vec(),
    ]
}

fn mutate_stat(rng: &mut Rng, pool: &[Vec<u8>]) -> Vec<u8> {
    if rng.one_in(2) {
        return stat_line(rng);
    }
    let mut data = rng.pick(pool).clone();
    for _ in 0..1 + rng.below(3) {
        byte_mutation(rng, &mut data);
    }
    data
}

/// The kernel's format: `pid (comm) state` and at least 19 more integer fields, the 22nd
/// being the start time; comm is anything. `None` when `stat` is not in that format.
fn stat_model(stat: &[u8]) -> Option<Option<u64>> {
    let digits = stat.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || !stat[digits..].starts_with(b" (") {
        return None;
    }
    // Integer fields cannot hold ')', so the comm ends at the last one.
    let close = stat.iter().rposition(|b| *b == b')')?;
    if close < digits + 2 {
        return None;
    }
    let tail = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let tail = tail.strip_suffix('\n').unwrap_or(tail);
    let mut fields = tail.strip_prefix(' ')?.split(' ');
    let state = fields.next()?;
    let rest: Vec<&str> = fields.collect();
    let integer = |f: &str| {
        f.strip_prefix('-')
            .unwrap_or(f)
            .bytes()
            .all(|b| b.is_ascii_digit())
            && !f.is_empty()
    };
    if state.len() != 1
        || !state.bytes().all(|b| b.is_ascii_alphabetic())
        || rest.len() < 19
        || !rest.iter().all(|f| integer(f))
    {
        return None;
    }
    let start = rest[18].parse::<u64>().ok()?;
    Some((state != "Z" && state != "X").then_some(start))
}

fn check_stat(_: &Dirs, input: &[u8]) -> Outcome {
    let got = heartbeat::parse_start_time(input);
    if let Some(expected) = stat_model(input)
        && got != expected
    {
        return fail(
            "start time disagrees with the stat format",
            format!("read {got:?}, expected {expected:?}"),
        );
    }
    Ok(format!("{} {}", got.is_some(), stat_model(input).is_some()))
}

// ---------------------------------------------------------------------------------------
// The reset history

const TEXTS: &[&str] = &[
    "",
    "sensor",
    "a\tb",
    "a\nb",
    "a\rb",
    "é",
    "😀",
    "\u{0}",
    "\u{1b}[31m",
    "\"quoted\"",
    "back\\slash",
    "\u{2028}",
    "-",
];

fn history_text(rng: &mut Rng) -> Vec<u8> {
    let mut h = History::default();
    for _ in 0..rng.below(20) {
        let id = match rng.below(4) {
            0 => "x".repeat(rng.below(40)),
            1 => format!("{:036}", rng.next()),
            2 => format!("{}é", "y".repeat(34)),
            _ => rng.pick(TEXTS).to_string(),
        };
        h.start_boot(&id, rng.next() as i64, rng.one_in(2));
        if rng.one_in(2) {
            let reason = rng.pick(TEXTS).repeat(1 + rng.below(60));
            let component = rng.pick(TEXTS).repeat(1 + rng.below(12));
            h.record_forced_reset(
                &component,
                &reason,
                Duration::from_millis(rng.next() >> rng.below(64)),
            );
        }
        if rng.one_in(5) {
            h.record_hold_cleared();
        }
        if rng.one_in(3) {
            let confirm = *rng.pick(&[
                Confirm::NotTrial,
                Confirm::Trial,
                Confirm::Confirming,
                Confirm::Confirmed,
                Confirm::Failed,
            ]);
            let note = rng.pick(TEXTS).repeat(1 + rng.below(40));
            h.record_confirm(
                confirm,
                Duration::from_millis(rng.next() >> rng.below(64)),
                &note,
            );
        }
    }
    let mut text = heapless::String::new();
    let _ = h.write_text(&mut text);
    text.as_bytes().to_vec()
}

fn history_seeds() -> Vec<Vec<u8>> {
    let mut rng = Rng(7);
    let mut seeds: Vec<Vec<u8>> = (0..8).map(|_| history_text(&mut rng)).collect();
    seeds.push(b"watchkeeper-history 1\n1\tid\t0\trunning\t-\t0\t\t\n".to_vec());
    seeds.push(b"watchkeeper-history 1\r\n1\tid\t0\tforced\t100\t1\tc\tr\r\n".to_vec());
    seeds.push(b"watchkeeper-history 2\n1\tid\t0\tforced\t100\t1\tc\tr\ttrial\t-\tnote\n".to_vec());
    seeds.push(Vec::new());
    seeds
}

const FIELDS: &[&str] = &[
    "",
    "-",
    "0",
    "1",
    "-1",
    "2",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "9223372036854775808",
    "+1",
    " 1",
    "1e3",
    "running",
    "forced",
    "watchdog",
    "unrequested",
    "Running",
    "0\r",
    "trial",
    "confirmed",
    "not-trial",
];

fn mutate_history(rng: &mut Rng, pool: &[Vec<u8>]) -> Vec<u8> {
    if rng.one_in(8) {
        return history_text(rng);
    }
    let mut lines = lines_of(rng.pick::<Vec<u8>>(pool));
    for _ in 0..1 + rng.below(3) {
        let n = lines.len();
        match rng.below(4) {
            0 if n > 1 => {
                // Replace, add or drop a field of a record.
                let i = 1 + rng.below(n - 1);
                let text = lines[i].clone();
                let mut fields: Vec<Vec<u8>> =
                    text.split(|b| *b == b'\t').map(<[u8]>::to_vec).collect();
                let f = rng.below(fields.len() + 1);
                let new = match rng.below(3) {
                    0 => rng.pick(FIELDS).as_bytes().to_vec(),
                    1 => rng
                        .pick(TEXTS)
                        .repeat(*rng.pick(&[1usize, 32, 33, 36, 37, 80, 160, 161]))
                        .into_bytes(),
                    _ => format!("{}é", "z".repeat(*rng.pick(&[31usize, 35, 159]))).into_bytes(),
                };
                match rng.below(3) {
                    0 if f < fields.len() => fields[f] = new,
                    1 => fields.insert(f, new),
                    _ if f < fields.len() => {
                        fields.remove(f);
                    }
                    _ => {}
                }
                lines[i] = fields.join(&b'\t');
            }
            1 if n > 0 => {
                lines[0] = rng
                    .pick(&[
                        "watchkeeper-history 1",
                        "watchkeeper-history 2",
                        "watchkeeper-history 1 ",
                        "watchkeeper-history 1\r",
                        "",
                        "\u{feff}watchkeeper-history 1",
                    ])
                    .as_bytes()
                    .to_vec();
            }
            _ => line_mutation(rng, &mut lines, pool),
        }
    }
    join_lines(&lines)
}

fn serialize(h: &History) -> Result<String, Violation> {
    let mut text = Box::new(heapless::String::new());
    h.write_text(&mut text).map_err(|_| Violation {
        kind: "a parsed history does not serialize",
        detail: format!("{} boots\n{h:?}", h.boots().len()),
    })?;
    Ok(text.as_str().to_owned())
}

fn check_history(dirs: &Dirs, input: &[u8]) -> Outcome {
    std::fs::write(dirs.state.join("history"), input).map_err(|e| Violation {
        kind: "harness",
        detail: e.to_string(),
    })?;
    let from_file = State::read_only(&dirs.state).map_err(|e| Violation {
        kind: "harness",
        detail: e.to_string(),
    })?;
    let Ok(text) = std::str::from_utf8(input) else {
        return match from_file {
            Err(_) => Ok("not utf-8".into()),
            Ok(h) => fail("a history that is not UTF-8 was read", format!("\n{h:?}")),
        };
    };
    let parsed = History::parse(text);
    // The file reader says more than the text parser (what it does with the file), but
    // the verdict, and the parser's own words within it, must be the same.
    // A file over the history's size is refused for its size before it is parsed.
    let too_large = |message: &str| {
        message
            .split("larger than the ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|limit| input.len() > limit)
    };
    let agree = match (&parsed, &from_file) {
        (Ok(a), Ok(b)) => a == b,
        (Err(e), Err(message)) => message.contains(&e.to_string()) || too_large(message),
        _ => false,
    };
    if !agree {
        return fail(
            "the history file and its text parse differently",
            format!(
                "file {}, text {}\n{from_file:?}\n{parsed:?}",
                from_file.is_ok(),
                parsed.is_ok()
            ),
        );
    }
    let h = match parsed {
        Err(e) => {
            if e.line == 0 || e.line > text.lines().count().max(1) {
                return fail(
                    "history error names a line that is not there",
                    e.to_string(),
                );
            }
            return Ok(format!("error {}", e.message));
        }
        Ok(h) => h,
    };
    let first = serialize(&h)?;
    let again = History::parse(&first).map_err(|e| Violation {
        kind: "a serialized history does not parse",
        detail: format!("{e}\n  serialized:\n{first}"),
    })?;
    if again != h || serialize(&again)? != first {
        return fail(
            "the history changes when serialized and parsed",
            format!("\n{h:?}\n  became {again:?}"),
        );
    }
    Ok(format!("ok {} boots", h.boots().len().min(3)))
}

// ---------------------------------------------------------------------------------------
// The status snapshot

fn snapshot_text(rng: &mut Rng) -> Vec<u8> {
    let me = std::process::id().to_string();
    let pid = rng
        .pick(&[
            me.as_str(),
            "1",
            "0",
            "-1",
            "4194305",
            "4294967296",
            "x",
            "",
        ])
        .to_string();
    let version = rng.pick(&["6", "6", "6", "5", "7", "x"]).to_string();
    let mut text = format!(
        "watchkeeper-status {version}\nagent\t{pid}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
        rng.pick(NUMBERS),
        rng.pick(&["", "x", "0f0e-boot", "\\t", "\\x1b[2J"]),
        rng.pick(NUMBERS),
        rng.pick(&["off", "steady", "code 3", "\"led\"", "a\\\\b", "\u{1}"]),
        rng.pick(&["0", "1", "2", ""]),
        rng.pick(&["0", "1", "yes"]),
        rng.pick(&[
            "/etc/watchkeeper.toml",
            "/a \"b\"",
            "/c\\\\d",
            "/\\x1b[2J",
            "/\u{1b}[2J",
            "/\\xff\\t",
            "/é😀"
        ]),
        rng.pick(&["running", "stopped", "unknown", "none", "", "\\x00"]),
    );
    let count = rng.below(5);
    for i in 0..count {
        text.push_str(&format!(
            "component\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            rng.pick(&["sensor", "a\"b", "c\\\\d", "\u{7f}", "", "\\n"]),
            rng.pick(&[
                (i + 1).to_string().as_str(),
                "0",
                "-1",
                "x",
                "1,\"forged\":2",
                "",
                "1e9"
            ]),
            rng.pick(&["alive", "dead", "\"q\"", ""]),
            rng.pick(NUMBERS),
            rng.pick(&["0", "3", "-1", "x", "1}", "18446744073709551616"]),
            rng.pick(&[
                "",
                "heartbeat silent for 10 s",
                "\"quoted\\\\\"",
                "\u{0}\u{1f}",
                "\\x00\\x1f"
            ]),
            rng.pick(&[
                "\t",
                "0\t",
                "1\tserving",
                "0\t\\x1b[2J \"q\"",
                "\tstray",
                "2\tx",
                "1",
                "1\ta\tb"
            ]),
        ));
    }
    let listed = if rng.one_in(8) { count + 1 } else { count };
    text.push_str(&format!("end\t{listed}\t{}\n", rng.pick(&["0", "3", "x"])));
    text.into_bytes()
}

fn snapshot_seeds() -> Vec<Vec<u8>> {
    let mut rng = Rng(11);
    let mut seeds: Vec<Vec<u8>> = (0..8).map(|_| snapshot_text(&mut rng)).collect();
    seeds.push(Vec::new());
    seeds
}

fn mutate_snapshot(rng: &mut Rng, pool: &[Vec<u8>]) -> Vec<u8> {
    if rng.one_in(4) {
        return snapshot_text(rng);
    }
    let mut lines = lines_of(rng.pick::<Vec<u8>>(pool));
    for _ in 0..1 + rng.below(3) {
        let n = lines.len();
        if n > 0 && rng.one_in(3) {
            let i = rng.below(n);
            let at = rng.below(lines[i].len() + 1);
            lines[i].insert(at, b'\t');
        } else {
            line_mutation(rng, &mut lines, pool);
        }
    }
    join_lines(&lines)
}

/// The snapshot as `status` meets it: the parser on its own (which must never panic), then
/// the whole command reading the file from `run_dir/status`, as text or JSON.
fn snapshot_parser(dirs: &Dirs, input: &[u8], json: bool) -> String {
    let _ = watchkeeper::snapshot::parse(input);
    let _ = std::fs::write(dirs.run.join("status"), input);
    status::render(&dirs.run, &dirs.status_state, json)
}

fn check_snapshot(dirs: &Dirs, input: &[u8]) -> Outcome {
    let text = snapshot_parser(dirs, input, false);
    let json = snapshot_parser(dirs, input, true);
    let value: serde_json::Value = match serde_json::from_str(&json) {
        Ok(v) => v,
        Err(e) => {
            // The position varies with the input; the kind of error groups findings.
            let what = e.to_string();
            let what = what.split(" at line").next().unwrap_or_default();
            return fail("status --json is not JSON", format!("{what}\n{e}: {json}"));
        }
    };
    let components = value["components"].as_array().map_or(0, Vec::len);
    let boots = value["boots"].as_array().map_or(0, Vec::len);
    if boots != 2 {
        return fail("status --json lost the history", format!("\n{json}"));
    }
    if value["agent"].get("pid").is_some() && !value["agent"]["pid"].is_u64() {
        return fail(
            "status --json: agent.pid is not a number",
            format!("\n{json}"),
        );
    }
    for c in value["components"].as_array().into_iter().flatten() {
        for (field, right) in [
            ("position", c["position"].is_u64()),
            ("repair_attempts", c["repair_attempts"].is_u64()),
            ("name", c["name"].is_string()),
            (
                "daemon",
                c["daemon"].is_null()
                    || (c["daemon"]["stopping"].is_boolean() && c["daemon"]["status"].is_string()),
            ),
        ] {
            if !right {
                return fail(
                    "status --json: a component field has the wrong type",
                    format!("{field}\n{c}"),
                );
            }
        }
    }
    Ok(format!(
        "{} {} {}",
        value["agent"]["running"],
        components.min(3),
        text.lines().next().map(fold).unwrap_or_default()
    ))
}
