//! Health-gated boot confirmation (`[boot]`) with the real binary: the trial check and the
//! confirm command are real processes, the history and status the real files.
//!
//! On a host that has been up for a while, every confirm deadline lies in the past: the
//! agent then gives the boot its critical components' grace plus `confirm_after` from its
//! start (as it does after a restart), which is the deadline these tests see.

mod support;

use std::fs;
use std::time::Duration;

use serde_json::Value;
use support::{Sandbox, component_script, kill9, spawn_component};

/// Lines of `confirmed`: each run of the confirm command appends one.
fn confirmations(sb: &Sandbox) -> usize {
    fs::read_to_string(sb.path("confirmed"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// `svc` beats every 100 ms (timeout 1 s, grace 5 s); `[boot]` is `boot`.
fn config(sb: &Sandbox, boot: &str) {
    sb.config(&format!(
        "[[component]]\nname = \"svc\"\nheartbeat = \"{d}/svc.beat\"\ntimeout = \"1s\"\ngrace = \"5s\"\n[boot]\n{boot}",
        d = sb.dir.display()
    ));
}

fn confirm_appending(sb: &Sandbox) -> String {
    format!(
        "confirm = [\"/bin/sh\", \"-c\", \"echo $$ >> {}\"]\n",
        sb.path("confirmed").display()
    )
}

fn boot_json(sb: &Sandbox) -> Value {
    sb.status_json()["agent"]["boot"].clone()
}

/// This boot's record in `status --json`.
fn current_record(sb: &Sandbox) -> Value {
    let status = sb.status_json();
    status["boots"]
        .as_array()
        .and_then(|boots| boots.iter().find(|b| b["current"] == Value::Bool(true)))
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn a_healthy_trial_boot_is_confirmed_once_and_a_restarted_agent_does_not_confirm_again() {
    let sb = Sandbox::new("boot-once");
    config(
        &sb,
        &format!(
            "{}confirm_after = \"2s\"\nconfirm_deadline = \"1h\"\ntrial = [\"/bin/sh\", \"-c\", \"echo 1\"]\ntrial_value = \"1\"\n",
            confirm_appending(&sb)
        ),
    );
    let mut component = spawn_component(&component_script(&sb, "svc"));
    let mut agent = sb.start();
    sb.wait_for("the confirmation", Duration::from_secs(30), || {
        confirmations(&sb) == 1 && boot_json(&sb)["phase"] == "confirmed"
    });
    let record = current_record(&sb);
    assert_eq!(record["confirm"], "confirmed", "{record}");
    assert!(
        sb.log()
            .contains("boot: a trial boot (the trial check printed \"1\")")
    );
    assert!(
        sb.status().contains("trial boot, confirmed"),
        "{}",
        sb.status()
    );

    // A new agent in the same boot: the history says confirmed, so it never confirms again,
    // however long the boot stays healthy.
    kill9(&mut agent);
    let mut agent = sb.start();
    sb.wait_for(
        "the restarted agent to see svc alive",
        Duration::from_secs(30),
        || {
            let status = sb.status_json();
            status["agent"]["pid"] == agent.id() && status["components"][0]["state"] == "alive"
        },
    );
    assert!(
        sb.log()
            .contains("boot: confirmed (recorded earlier in this boot)")
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(confirmations(&sb), 1, "{}", sb.log());
    assert_eq!(boot_json(&sb)["phase"], "confirmed");
    sb.assert_alive_and_feeding(&mut agent, &sb.path("run"));
    kill9(&mut agent);
    kill9(&mut component);
}

#[test]
fn a_boot_that_is_no_trial_is_never_confirmed() {
    let sb = Sandbox::new("boot-no-trial");
    config(
        &sb,
        &format!(
            "{}confirm_after = \"1s\"\nconfirm_deadline = \"1h\"\ntrial = [\"/bin/sh\", \"-c\", \"echo 0\"]\ntrial_value = \"1\"\n",
            confirm_appending(&sb)
        ),
    );
    let mut component = spawn_component(&component_script(&sb, "svc"));
    let mut agent = sb.start();
    sb.wait_for("svc alive, not a trial", Duration::from_secs(30), || {
        let status = sb.status_json();
        status["components"][0]["state"] == "alive"
            && status["agent"]["boot"]["phase"] == "not-trial"
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(confirmations(&sb), 0);
    assert_eq!(current_record(&sb)["confirm"], "not-trial");
    assert_eq!(sb.status_json()["agent"]["led"], "healthy");
    kill9(&mut agent);
    kill9(&mut component);
}

#[test]
fn a_trial_boot_never_healthy_is_reset_at_its_deadline_with_the_reason_recorded() {
    let sb = Sandbox::new("boot-deadline");
    // svc never beats: dead after its 5 s grace, reset_after 5 min; the deadline comes first.
    config(
        &sb,
        &format!(
            "{}confirm_after = \"2s\"\nconfirm_deadline = \"7s\"\n",
            confirm_appending(&sb)
        ),
    );
    let started = std::time::Instant::now();
    let mut agent = sb.start();
    sb.wait_for("the deadline reset", Duration::from_secs(40), || {
        sb.status_json()["agent"]["resetting"] == true
    });
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(7),
        "reset after {took:?}, before the deadline"
    );
    assert_eq!(confirmations(&sb), 0);
    let record = current_record(&sb);
    assert_eq!(record["end"], "forced", "{record}");
    assert_eq!(record["component"], "svc", "{record}");
    assert_eq!(record["confirm"], "trial", "{record}");
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("boot not confirmed: critical components not all alive for 2s by the confirm deadline; svc dead"),
        "{reason}"
    );
    assert_eq!(sb.status_json()["agent"]["led"], "reset imminent");
    assert!(
        sb.log()
            .contains("forcing a board reset: component svc: boot not confirmed")
    );
    // The `none` device: the agent waits for a reset that never comes, without rebooting.
    assert!(agent.try_wait().unwrap().is_none());
    kill9(&mut agent);
}

#[test]
fn a_confirm_that_keeps_failing_is_retried_then_recorded_and_the_board_stays_up() {
    let sb = Sandbox::new("boot-fails");
    config(
        &sb,
        &format!(
            "confirm = [\"/bin/sh\", \"-c\", \"echo $$ >> {}; exit 3\"]\nconfirm_after = \"1s\"\nconfirm_deadline = \"7s\"\nconfirm_attempts = 2\n",
            sb.path("confirmed").display()
        ),
    );
    let mut component = spawn_component(&component_script(&sb, "svc"));
    let mut agent = sb.start();
    sb.wait_for("both attempts to fail", Duration::from_secs(40), || {
        boot_json(&sb)["phase"] == "failed"
    });
    assert_eq!(confirmations(&sb), 2);
    let record = current_record(&sb);
    assert_eq!(record["confirm"], "failed", "{record}");
    assert_eq!(
        record["confirm_note"], "2 attempts, the last: exit status 3",
        "{record}"
    );
    assert_eq!(sb.status_json()["agent"]["led"], "fault");
    // Healthy before the deadline: a failing command never resets the board.
    std::thread::sleep(Duration::from_secs(3));
    let status = sb.assert_alive_and_feeding(&mut agent, &sb.path("run"));
    assert_eq!(status["agent"]["resetting"], false);
    kill9(&mut agent);
    kill9(&mut component);
}

#[test]
fn a_trial_check_that_hangs_is_killed_and_the_boot_treated_as_a_trial() {
    let sb = Sandbox::new("boot-check-hangs");
    config(
        &sb,
        &format!(
            "{}confirm_after = \"1s\"\nconfirm_timeout = \"1s\"\ntrial = [\"/bin/sh\", \"-c\", \"sleep 60\"]\n",
            confirm_appending(&sb)
        ),
    );
    let mut component = spawn_component(&component_script(&sb, "svc"));
    let mut agent = sb.start();
    sb.wait_for("the confirmation", Duration::from_secs(30), || {
        confirmations(&sb) == 1 && boot_json(&sb)["phase"] == "confirmed"
    });
    assert_eq!(boot_json(&sb)["trial_unknown"], true);
    assert!(
        sb.log().contains(
            "boot: cannot tell whether this is a trial boot, so it is treated as one (the trial check ended with killed by SIGKILL)"
        ),
        "{}",
        sb.log()
    );
    kill9(&mut agent);
    kill9(&mut component);
}
