//! jq programs as callers see them: results, errors and limits, evaluated in worker processes.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use switchboard_core::clock::{Clock, ManualClock};
use switchboard_jq::{CONDEMNED_FOR, JqError, JqProgram, ProgramCache};

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn filters_and_transforms_run_on_json() {
    let filter = JqProgram::compile(".data.amount > 10").unwrap();
    assert!(filter.is_true(&json!({"data": {"amount": 12}}), LIMIT).await);
    assert!(!filter.is_true(&json!({"data": {"amount": 2}}), LIMIT).await);
    let transform = JqProgram::compile(r#"{kind: .type, total: (.data.items | map(.price) | add)}"#).unwrap();
    let input = json!({"type": "order.paid", "data": {"items": [{"price": 2}, {"price": 3.5}]}});
    assert_eq!(transform.transform(&input, LIMIT).await.unwrap(), json!({"kind": "order.paid", "total": 5.5}));
}

#[tokio::test]
async fn errors_and_too_many_or_too_large_results_are_reported() {
    let failing = JqProgram::compile(r#"error("boom")"#).unwrap();
    assert!(matches!(failing.run(&json!(null), LIMIT).await, Err(JqError::Runtime(m)) if m.contains("boom")));
    let many = JqProgram::compile("range(100)").unwrap();
    assert!(matches!(many.run(&json!(null), LIMIT).await, Err(JqError::Output(m)) if m.contains("more than 16")));
    assert!(matches!(many.transform(&json!(null), LIMIT).await, Err(JqError::Output(_))));
    let large = JqProgram::compile(r#""x" * 2000000"#).unwrap();
    let answer = large.run(&json!(null), LIMIT).await;
    assert!(matches!(&answer, Err(JqError::Output(m)) if m.contains("larger than")), "{answer:?}");
    let not_json = JqProgram::compile("[nan]").unwrap();
    assert!(matches!(not_json.run(&json!(null), LIMIT).await, Err(JqError::Output(m)) if m.contains("not JSON")));
    assert!(large.condemned().is_none() && not_json.condemned().is_none(), "ordinary failures condemn nothing");
    // A worker that answered an error goes on answering.
    assert_eq!(JqProgram::compile(". + 1").unwrap().transform(&json!(1), LIMIT).await, Ok(json!(2)));
}

#[tokio::test]
async fn a_program_that_allocates_without_bound_is_stopped_at_the_memory_limit() {
    let before = resident_bytes();
    let hog = JqProgram::compile("[range(1e11)] | length > 0").unwrap();
    let started = std::time::Instant::now();
    assert_eq!(hog.run(&json!(null), Duration::from_secs(60)).await, Err(JqError::OutOfMemory(256 << 20)));
    assert!(started.elapsed() < Duration::from_secs(30), "stopped by memory, not by time");
    let grown = resident_bytes().saturating_sub(before);
    assert!(grown < 64 << 20, "the test process grew by {} MiB", grown >> 20);
    // Condemned: answered at once from now on, without a worker.
    let again = std::time::Instant::now();
    assert_eq!(hog.run(&json!(null), LIMIT).await, Err(JqError::OutOfMemory(256 << 20)));
    assert!(again.elapsed() < Duration::from_millis(100));
    // The next program gets a fresh worker.
    assert_eq!(JqProgram::compile(".a").unwrap().transform(&json!({"a": 7}), LIMIT).await, Ok(json!(7)));
    assert!(switchboard_jq::stats().killed_for_memory >= 1);
}

#[tokio::test]
async fn a_runaway_program_is_killed_after_twice_its_time_and_never_run_again() {
    let endless = JqProgram::compile("last(range(1e15))").unwrap();
    let short = Duration::from_millis(100);
    assert_eq!(endless.run(&json!(null), short).await, Err(JqError::TimedOut(short)));
    for _ in 0..100 {
        if endless.condemned().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(endless.condemned(), Some(&JqError::TimedOut(short)), "killed after twice its time");
    assert!(switchboard_jq::stats().killed_for_time >= 1);
    assert!(!endless.is_true(&json!(null), short).await);
}

#[tokio::test]
async fn one_owners_text_is_one_program_and_its_verdict_is_shared_for_a_while() {
    let cache = ProgramCache::default();
    let clock = ManualClock::new(chrono::Utc::now());
    let short = Duration::from_millis(50);
    let runaway = "last(range(1e15)) | . + 1";
    let first = cache.get("tenant-a", runaway, clock.now()).unwrap();
    assert_eq!(first.run(&json!(null), short).await, Err(JqError::TimedOut(short)));
    for _ in 0..100 {
        if first.condemned().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = cache.get("tenant-a", runaway, clock.now()).unwrap();
    assert!(again.condemned().is_some(), "the same text comes back condemned");
    assert!(cache.get("tenant-b", runaway, clock.now()).unwrap().condemned().is_none(), "another owner's is not");
    clock.advance(CONDEMNED_FOR - chrono::TimeDelta::seconds(1));
    assert!(cache.get("tenant-a", runaway, clock.now()).unwrap().condemned().is_some());
    clock.advance(chrono::TimeDelta::seconds(2));
    assert!(cache.get("tenant-a", runaway, clock.now()).unwrap().condemned().is_none(), "another chance later");
    assert!(matches!(cache.get("tenant-a", ".a | (", clock.now()), Err(JqError::Compile { .. })));
}

#[tokio::test]
async fn a_stored_program_that_no_longer_compiles_fails_every_run_saying_so() {
    let error = JqProgram::compile(".a | (").unwrap_err();
    let broken = JqProgram::broken(error);
    let answer = broken.transform(&json!({"a": 1}), LIMIT).await;
    assert!(
        matches!(&answer, Err(JqError::Compile { message, .. }) if message.contains("no longer compiles")),
        "{answer:?}"
    );
    assert!(!broken.is_true(&json!({"a": 1}), LIMIT).await);
}

#[tokio::test]
async fn a_program_nested_as_deep_as_its_length_allows_runs() {
    let deep = format!("{}.a", ". | ".repeat((switchboard_jq::MAX_PROGRAM_BYTES - 2) / 4));
    let program = JqProgram::compile(&deep).unwrap();
    assert_eq!(program.transform(&json!({"a": 5}), LIMIT).await, Ok(json!(5)));
    let sum = format!("{}1", "1 + ".repeat((switchboard_jq::MAX_PROGRAM_BYTES - 1) / 4));
    let program = JqProgram::compile(&sum).unwrap();
    assert_eq!(
        program.transform(&json!(null), LIMIT).await,
        Ok(json!((switchboard_jq::MAX_PROGRAM_BYTES - 1) / 4 + 1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_evaluations_at_once_share_the_workers() {
    let program = JqProgram::compile(".n * 2").unwrap();
    let runs: Vec<_> = (0..200)
        .map(|n| {
            let program = program.clone();
            tokio::spawn(async move { program.transform(&json!({"n": n}), LIMIT).await })
        })
        .collect();
    for (n, run) in runs.into_iter().enumerate() {
        assert_eq!(run.await.unwrap(), Ok(json!(n * 2)));
    }
}

fn resident_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/self/statm").unwrap();
    text.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}
