//! The documented format of `watchkeeper status --json`, `docs/status.schema.json`: the
//! file compiles, names the version the binary writes, rejects documents that break it
//! (so that the check every test makes of `status --json` can fail), and accepts what
//! `status` says when neither of its directories exists.
//!
//! Host only: the validator is a host dev-dependency (see Cargo.toml), and the format is
//! the same on every target.
#![cfg(target_arch = "x86_64")]

mod support;
use support::*;

use serde_json::{Value, json};
use watchkeeper::cli::status::JSON_SCHEMA_VERSION;

/// A document with every member `status --json` can write, each branch that has members
/// of its own taken once: a read snapshot with `[boot]`, a listening component, a problem
/// file read and one refused, a history with a current and an unrecorded boot.
fn full() -> Value {
    json!({
        "schema": 1,
        "agent": {
            "running": true, "state": "running", "detail": "running (pid 87)",
            "pid": 87, "start_time": 1234, "boot_id": "f81b7c0f-477f-4a85-a33e-ee6049254384",
            "config": "/etc/watchkeeper.toml", "led": "component 2",
            "watchdog_at_takeover": "stopped", "hold": false, "resetting": false,
            "omitted_components": 0, "fed_age_ms": 120,
            "boot": {
                "phase": "waiting", "attempt": 0, "trial_unknown": false,
                "healthy_for_ms": null, "confirm_after_ms": 60000, "deadline_in_ms": 3000,
                "retry_in_ms": null, "hold_suspended": false
            }
        },
        "components": [
            {"name": "sensord", "position": 1, "state": "alive", "for_ms": 300,
             "repair_attempts": 0, "reason": null, "daemon": null},
            {"name": "uplink", "position": 2, "state": "repairing", "for_ms": 12400,
             "repair_attempts": 1, "reason": "heartbeat not touched for 5s",
             "daemon": {"pid": null, "ready": false, "timeout_ms": 5000, "stopping": false,
                        "status": ""}}
        ],
        "problems": [
            {"name": "uplink", "noticed_wall": 1_795_000_000_i64,
             "content": "watchkeeper: heartbeat not touched", "cut": false},
            {"name": "odd", "error": "is a symbolic link (never followed)"}
        ],
        "more_problems": 0,
        "this_boot": {"boot_id": "f81b7c0f-477f-4a85-a33e-ee6049254384", "recorded": true},
        "boots": [
            {"number": 4, "boot_id": "f81b7c0f-477f-4a85-a33e-ee6049254384", "current": true,
             "started_wall": 1_795_000_000_i64, "end": "running", "uptime_ms": null,
             "hold_cleared": false, "component": "", "reason": "", "confirm": "trial",
             "confirm_uptime_ms": 2000, "confirm_note": "trial check said 1"},
            {"number": 3, "boot_id": "00000000-0000-0000-0000-000000000003", "current": false,
             "started_wall": 1_794_999_000_i64, "end": "unrecorded", "uptime_ms": null,
             "hold_cleared": false, "component": "", "reason": "", "confirm": null,
             "confirm_uptime_ms": null, "confirm_note": ""}
        ]
    })
}

fn rejected(what: &str, doc: &Value) {
    assert!(
        status_schema_errors(doc).is_err(),
        "{what}: the schema accepts it:\n{doc:#}"
    );
}

#[test]
fn the_schema_compiles_and_names_the_version_the_binary_writes() {
    compile_status_schema().unwrap_or_else(|e| panic!("{STATUS_SCHEMA}: {e}"));
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(STATUS_SCHEMA).unwrap()).unwrap();
    assert_eq!(
        schema["properties"]["schema"]["const"],
        json!(JSON_SCHEMA_VERSION),
        "{STATUS_SCHEMA} describes another version than JSON_SCHEMA_VERSION"
    );
}

#[test]
fn documents_that_break_the_schema_are_rejected() {
    // Accepted as it is: each rejection below is the change's doing.
    if let Err(why) = status_schema_errors(&full()) {
        panic!("the full document is rejected: {why}");
    }

    let mut doc = full();
    doc["agent"].as_object_mut().unwrap().remove("detail");
    rejected("agent.detail missing", &doc);
    let mut doc = full();
    doc["boots"][0].as_object_mut().unwrap().remove("confirm");
    rejected("a boot's confirm missing", &doc);
    let mut doc = full();
    doc.as_object_mut().unwrap().remove("more_problems");
    rejected("more_problems missing beside a list of problems", &doc);

    let mut doc = full();
    doc["components"][0]["colour"] = json!("red");
    rejected("an undocumented member of a component", &doc);
    let mut doc = full();
    doc["uptime"] = json!(5);
    rejected("an undocumented top-level member", &doc);

    let mut doc = full();
    doc["components"][1]["state"] = json!("zombie");
    rejected("a component state that is no word of the agent's", &doc);
    let mut doc = full();
    doc["boots"][1]["end"] = json!("exploded");
    rejected("a boot end that is no word of the history's", &doc);
    let mut doc = full();
    doc["schema"] = json!(2);
    rejected("another schema version", &doc);
}

#[test]
fn status_without_its_directories_conforms() {
    let sb = Sandbox::new("schema-no-dirs");
    // A good config whose run and state directories (in the sandbox) were never made.
    sb.config(&format!(
        "[[component]]\nname = \"svc\"\nheartbeat = \"{}/svc.beat\"\n",
        sb.dir.display()
    ));
    assert!(!sb.path("run").exists() && !sb.path("state").exists());
    let doc = sb.status_json();
    // The error-shaped branches, which the tests of a running agent do not reach.
    let mut agent: Vec<&str> = doc["agent"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    agent.sort_unstable();
    assert_eq!(agent, ["detail", "running", "state"], "{doc:#}");
    assert_eq!(doc["agent"]["running"], false, "{doc:#}");
    assert!(doc["problems"]["error"].is_string(), "{doc:#}");
    assert!(doc["boots"]["error"].is_string(), "{doc:#}");
    assert_eq!(doc["this_boot"]["recorded"], Value::Null, "{doc:#}");
}
