//! Seeding a data directory with many stored invocations, through the `Store` trait,
//! before the server opens it.
//!
//! Every insert is its own transaction and the store commits with `synchronous=FULL`,
//! so on a real disk each one waits for an fsync. The bench measures that rate on the
//! data directory itself for the first records, then (when `/dev/shm` exists) inserts
//! the rest into a copy of the database on tmpfs, where an fsync costs nothing, and
//! copies the finished, closed database back. The rows are the same either way.

use crate::server::DataDir;
use anyhow::{Context, Result};
use futures_util::StreamExt;
use oca_domain::status::InvocationStatus;
use oca_domain::task::{TaskEvent, TaskState};
use oca_domain::task_error::TaskError;
use oca_domain::time::now_millis;
use oca_store::sqlite::SqliteStore;
use oca_store::{
    ActivationRecord, CommandRecord, InstanceRecord, InvocationRecord, Store, TaskRecord,
};
use std::path::Path;
use std::time::{Duration, Instant};

pub const ACCOUNT: &str = "default";
pub const REGION: &str = "cn-hangzhou";
/// Instances the seeded invocations are spread over.
pub const INSTANCES: usize = 100;
/// Commands the seeded invocations are spread over.
pub const COMMANDS: usize = 100;
/// One invocation in this many failed (exit code 1); the others succeeded.
pub const FAILED_EVERY: usize = 10;
/// Records inserted on the data directory's own disk to measure the fsync-bound rate.
const ON_DISK_SAMPLE: usize = 1000;
/// Inserts in flight at once. The store serializes writes; 4 or 16 in flight were no
/// faster than one on 2 cores.
const IN_FLIGHT: usize = 1;

/// What was seeded.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub records: usize,
    pub instance_ids: Vec<String>,
    pub command_ids: Vec<String>,
    /// An invocation from the middle of the range.
    pub sample_invoke_id: String,
    pub elapsed: Duration,
    /// Inserts per second on the data directory's disk (fsync per insert).
    pub on_disk_rate: f64,
    /// Inserts per second on tmpfs, when used.
    pub tmpfs_rate: Option<f64>,
}

pub async fn seed(data: &DataDir, records: usize) -> Result<Seeded> {
    let started = Instant::now();
    let db_name = "oca.db";
    let store = SqliteStore::open(&data.db_path()).context("opening the database to seed")?;
    let now = now_millis();
    let instance_ids = seed_instances(&store, now).await?;
    let command_ids = seed_commands(&store, now).await?;
    // Oldest first, 10 ms apart, the newest a minute ago.
    let base = now - 60_000 - records as i64 * 10;
    let plan = Plan {
        base,
        instance_ids: instance_ids.clone(),
        command_ids: command_ids.clone(),
    };
    let tmpfs = Path::new("/dev/shm");
    let use_tmpfs = records > 2 * ON_DISK_SAMPLE && tmpfs.is_dir();
    let on_disk = if use_tmpfs { ON_DISK_SAMPLE } else { records };

    let t = Instant::now();
    let mut sample_invoke_id = String::new();
    insert_range(&store, &plan, 0..on_disk, records, &mut sample_invoke_id).await?;
    let on_disk_rate = on_disk as f64 / t.elapsed().as_secs_f64().max(1e-9);
    drop(store);

    let mut tmpfs_rate = None;
    if use_tmpfs {
        let shm = tempfile::Builder::new()
            .prefix("oca-bench-seed-")
            .tempdir_in(tmpfs)
            .context("a directory in /dev/shm")?;
        crate::sys::copy_database(data.path(), shm.path(), db_name)?;
        let store = SqliteStore::open(&shm.path().join(db_name))?;
        let t = Instant::now();
        insert_range(
            &store,
            &plan,
            on_disk..records,
            records,
            &mut sample_invoke_id,
        )
        .await?;
        tmpfs_rate = Some((records - on_disk) as f64 / t.elapsed().as_secs_f64().max(1e-9));
        // Closing the last connection checkpoints the WAL into the main file.
        drop(store);
        crate::sys::copy_database(shm.path(), data.path(), db_name)?;
    }
    Ok(Seeded {
        records,
        instance_ids,
        command_ids,
        sample_invoke_id,
        elapsed: started.elapsed(),
        on_disk_rate,
        tmpfs_rate,
    })
}

async fn seed_instances(store: &SqliteStore, now: i64) -> Result<Vec<String>> {
    use sha2::{Digest, Sha256};
    let activation = ActivationRecord {
        activation_id: oca_domain::ids::new_activation_id(),
        account_id: ACCOUNT.into(),
        region_id: REGION.into(),
        code_hash: hex::encode(Sha256::digest(oca_domain::ids::new_secret(32).as_bytes())),
        instance_name: "bench-seed".into(),
        description: "oca-bench seeded instances".into(),
        instance_count: INSTANCES as i64,
        registered_count: 0,
        deregistered_count: 0,
        ip_address_range: "0.0.0.0/0".into(),
        created: now,
        expires: now + 3_600_000,
        disabled: false,
        resource_group_id: String::new(),
    };
    store.insert_activation(&activation).await?;
    let mut ids = Vec::with_capacity(INSTANCES);
    for n in 0..INSTANCES {
        let instance = InstanceRecord {
            instance_id: oca_domain::ids::new_managed_instance_id(),
            account_id: ACCOUNT.into(),
            region_id: REGION.into(),
            name: "bench-seed".into(),
            hostname: format!("seed-{n:03}"),
            os_type: "linux".into(),
            agent_version: "oca-bench".into(),
            machine_id: String::new(),
            activation_id: activation.activation_id.clone(),
            token_hash: hex::encode(Sha256::digest(oca_domain::ids::new_secret(32).as_bytes())),
            registered: now,
            last_heartbeat: Some(now),
            last_invoked: None,
            invocation_count: 0,
            resource_group_id: String::new(),
            task_isolation: String::new(),
        };
        store.register_instance(&instance).await?;
        ids.push(instance.instance_id);
    }
    Ok(ids)
}

async fn seed_commands(store: &SqliteStore, now: i64) -> Result<Vec<String>> {
    let mut ids = Vec::with_capacity(COMMANDS);
    for n in 0..COMMANDS {
        let command = CommandRecord {
            command_id: oca_domain::ids::new_command_id(),
            account_id: ACCOUNT.into(),
            region_id: REGION.into(),
            name: format!("bench-cmd-{n:03}"),
            description: String::new(),
            command_type: "RunShellScript".into(),
            content: b"echo hi".to_vec(),
            working_dir: String::new(),
            timeout_secs: 60,
            enable_parameter: false,
            parameter_names: Vec::new(),
            created: now,
            invoke_times: 0,
            visible: true,
            resource_group_id: String::new(),
        };
        store.insert_command(&command).await?;
        ids.push(command.command_id);
    }
    Ok(ids)
}

struct Plan {
    base: i64,
    instance_ids: Vec<String>,
    command_ids: Vec<String>,
}

impl Plan {
    /// Record `i`: its invocation and its one task.
    fn record(&self, i: usize) -> (InvocationRecord, TaskRecord) {
        let created = self.base + i as i64 * 10;
        let instance_id = &self.instance_ids[i % self.instance_ids.len()];
        // Not in step with the instance, so the two filters select different rows.
        let command_n = (i / self.instance_ids.len()) % self.command_ids.len();
        let command_id = &self.command_ids[command_n];
        let failed = i % FAILED_EVERY == FAILED_EVERY - 1;
        let mut state = TaskState::pending();
        state.apply(TaskEvent::Started { at: created + 5 });
        state.apply(TaskEvent::Finished {
            status: if failed {
                InvocationStatus::Failed
            } else {
                InvocationStatus::Success
            },
            exit_code: Some(if failed { 1 } else { 0 }),
            error: failed.then_some(TaskError::ExitCodeNonzero),
            start_time: Some(created + 5),
            finish_time: created + 20,
            output: b"hi\n".to_vec(),
            dropped: 0,
        });
        let invoke_id = oca_domain::ids::new_invoke_id();
        let task = TaskRecord {
            invoke_id: invoke_id.clone(),
            instance_id: instance_id.clone(),
            account_id: ACCOUNT.into(),
            region_id: REGION.into(),
            command_id: command_id.clone(),
            username: String::new(),
            timed: false,
            created,
            updated: created + 20,
            state,
            output_len: 0,
            resource_group_id: String::new(),
        };
        let invocation = InvocationRecord {
            invoke_id,
            account_id: ACCOUNT.into(),
            region_id: REGION.into(),
            command_id: command_id.clone(),
            command_name: format!("bench-cmd-{command_n:03}"),
            command_description: String::new(),
            command_type: "RunShellScript".into(),
            command_content: b"echo hi".to_vec(),
            enable_parameter: false,
            parameters: "{}".into(),
            working_dir: String::new(),
            username: String::new(),
            timeout_secs: 60,
            repeat_mode: "Once".into(),
            timed: false,
            frequency: String::new(),
            termination_mode: "ProcessTree".into(),
            created,
            stopped_by_hand: false,
            counts: std::iter::once(task.state.status).collect(),
            file: None,
            revision: 0,
            resource_group_id: String::new(),
        };
        (invocation, task)
    }
}

async fn insert_range(
    store: &SqliteStore,
    plan: &Plan,
    range: std::ops::Range<usize>,
    total: usize,
    sample_invoke_id: &mut String,
) -> Result<()> {
    let mut done = range.start;
    let mut last_report = Instant::now();
    let inserts = futures_util::stream::iter(range)
        .map(|i| {
            let (invocation, task) = plan.record(i);
            let store = store.clone();
            async move {
                store
                    .insert_invocation(None, &invocation, std::slice::from_ref(&task))
                    .await
                    .map(|()| (i, invocation.invoke_id))
            }
        })
        .buffer_unordered(IN_FLIGHT);
    tokio::pin!(inserts);
    while let Some(r) = inserts.next().await {
        let (i, invoke_id) = r.context("inserting an invocation")?;
        if i == total / 2 {
            *sample_invoke_id = invoke_id;
        }
        done += 1;
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!("  seeded {done} of {total} invocations");
        }
    }
    Ok(())
}
