//! What the agent sends stays within what the server reads (`oca_proto::limits`): its
//! largest messages, built as the agent builds them, with room to spare.

use oca_agent::client::CHUNK_BYTES;
use oca_domain::command::encode_base64;
use oca_domain::output::OUTPUT_LIMIT;
use oca_domain::status::InvocationStatus;
use oca_proto::limits::{MAX_ID, MAX_KNOWN_TASKS, MAX_MESSAGE_BYTES};
use oca_proto::{AgentMsg, KnownTask, TaskResult};

fn long_id() -> String {
    format!("t-{}", "x".repeat(MAX_ID - 2))
}

#[test]
fn an_output_chunk_and_a_result_are_far_below_the_limit() {
    let chunk = AgentMsg::Output {
        invoke_id: long_id(),
        offset: u64::MAX,
        data: encode_base64(&vec![0xff; CHUNK_BYTES as usize]),
    };
    let len = chunk.to_json().len();
    assert!(
        len * 8 < MAX_MESSAGE_BYTES,
        "an Output chunk takes {len} bytes"
    );

    let finished = AgentMsg::Finished(TaskResult {
        invoke_id: long_id(),
        status: InvocationStatus::Failed,
        exit_code: Some(i64::MIN),
        error: Some(oca_domain::task_error::TaskError::ExecutionInterrupted),
        start_time: Some(i64::MAX),
        finish_time: i64::MAX,
        output: encode_base64(&vec![0xff; OUTPUT_LIMIT]),
        dropped: u64::MAX,
        output_len: u64::MAX,
        run: u64::MAX,
        more: true,
    });
    let len = finished.to_json().len();
    assert!(
        len * 16 < MAX_MESSAGE_BYTES,
        "a Finished result takes {len} bytes"
    );
}

#[test]
fn a_hello_listing_the_most_known_tasks_fits() {
    let hello = AgentMsg::Hello {
        protocol: u32::MAX,
        agent_version: "x".repeat(oca_proto::limits::MAX_AGENT_VERSION),
        hostname: "x".repeat(oca_proto::limits::MAX_HOSTNAME),
        os_type: "x".repeat(oca_proto::limits::MAX_OS_TYPE),
        known: (0..MAX_KNOWN_TASKS)
            .map(|_| KnownTask {
                invoke_id: long_id(),
                finished: false,
                repeating: Some(u64::MAX),
            })
            .collect(),
        // The longest the server stores (longer is dropped as not a method's name).
        task_isolation: "x".repeat(32),
    };
    let len = hello.to_json().len();
    assert!(len < MAX_MESSAGE_BYTES, "a full Hello takes {len} bytes");
}
