//! A worker gives back what a large evaluation took: it retires, and the next program gets a
//! fresh one. (A binary of its own, so no other test's workers move the counters.)

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use switchboard_jq::JqProgram;

#[tokio::test]
async fn a_worker_that_grew_large_is_replaced_after_answering() {
    let limit = Duration::from_secs(30);
    let small = JqProgram::compile(".").unwrap();
    assert_eq!(small.transform(&json!(1), limit).await, Ok(json!(1)));
    // Each worker thread starts its worker when the sandbox starts; wait for all of them.
    while switchboard_jq::stats().started < switchboard_jq::stats().workers {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = switchboard_jq::stats().started;
    let large = JqProgram::compile("[range(1000000) | tostring] | length").unwrap();
    assert_eq!(large.transform(&json!(null), limit).await, Ok(json!(1_000_000)));
    assert_eq!(switchboard_jq::stats().started, started, "the answer comes before the worker retires");
    // Every thread's next job finds its worker retired or alive; run enough to reach the one
    // that retired.
    for n in 0..32 {
        assert_eq!(small.transform(&json!(n), limit).await, Ok(json!(n)));
    }
    let stats = switchboard_jq::stats();
    assert_eq!(stats.started, started + 1, "{stats:?}");
    assert_eq!(stats.killed_for_memory + stats.killed_for_time + stats.crashed, 0, "{stats:?}");
}
