//! Retention: invocation records are not kept forever. A background task purges, every
//! so often, the records that have ended and are older than `--retention-days` or
//! beyond the newest `--retention-max-records` of their account (per region, command
//! runs and file deliveries apart), in small batches (see
//! [`Store::purge_invocations`]): each batch is one short write transaction, and
//! queries read on their own connections meanwhile.
//!
//! The audit trail goes the same way in the same sweep ([`sweep_audit`]): entries older
//! than `--retention-days` and, oldest first, those beyond the newest
//! `--audit-max-records`; the unauthenticated ones (refusals of callers who proved no
//! secret) are also held to a tenth of that, so a flood of them cannot push out the
//! record of what authenticated callers did.

use oca_domain::time::{now_millis, Millis};
use oca_store::{Purged, Store};
use std::sync::Arc;
use std::time::Duration;

const DAY_MS: Millis = 86_400_000;
/// Between two full batches of one sweep: lets writes waiting for the lock go first.
const PAUSE: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy)]
pub struct RetentionConfig {
    /// Ended records older than this many days go.
    pub days: u64,
    /// Ended records beyond the newest this many (per account, region and kind) go.
    pub max_records: u64,
    /// Time between sweeps.
    pub interval: Duration,
    /// Invocations deleted per transaction at most (audit entries: ten times as many).
    pub batch: u64,
    /// Audit entries kept at most (unauthenticated ones: a tenth of it).
    pub audit_max_records: u64,
}

/// Sweeps at once, then every `interval`.
pub fn spawn(store: Arc<dyn Store>, config: RetentionConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(config.interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sweep(store.as_ref(), &config).await;
            sweep_audit(store.as_ref(), &config).await;
        }
    })
}

/// One sweep: batch after batch while they come back full.
pub async fn sweep(store: &dyn Store, config: &RetentionConfig) -> Purged {
    let keep_ms = i64::try_from(config.days)
        .unwrap_or(i64::MAX)
        .saturating_mul(DAY_MS);
    let mut total = Purged::default();
    loop {
        let older_than = now_millis().saturating_sub(keep_ms);
        match store
            .purge_invocations(older_than, config.max_records, config.batch)
            .await
        {
            Ok(p) => {
                total.invocations += p.invocations;
                total.tasks += p.tasks;
                total.commands += p.commands;
                if !p.more {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!("retention: purge failed: {e}");
                break;
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
    if total.invocations > 0 {
        tracing::info!(
            invocations = total.invocations,
            tasks = total.tasks,
            hidden_commands = total.commands,
            "retention: purged {} invocation records (older than {} days or beyond the newest {})",
            total.invocations,
            config.days,
            config.max_records,
        );
    }
    total
}

/// One sweep of the audit trail, batch after batch while they come back full; how
/// many entries went.
pub async fn sweep_audit(store: &dyn Store, config: &RetentionConfig) -> u64 {
    let keep_ms = i64::try_from(config.days)
        .unwrap_or(i64::MAX)
        .saturating_mul(DAY_MS);
    let max_unauthenticated = (config.audit_max_records / 10).max(1);
    let batch = config.batch.saturating_mul(10);
    let mut total = 0;
    loop {
        let older_than = now_millis().saturating_sub(keep_ms);
        match store
            .purge_audit(
                older_than,
                config.audit_max_records,
                max_unauthenticated,
                batch,
            )
            .await
        {
            Ok(p) => {
                total += p.entries;
                if !p.more {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!("retention: audit purge failed: {e}");
                break;
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
    if total > 0 {
        tracing::info!(
            entries = total,
            "retention: purged {total} audit entries (older than {} days or beyond the newest {})",
            config.days,
            config.audit_max_records,
        );
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use oca_domain::status::{InvocationStatus, StatusCounts};
    use oca_domain::task::TaskState;
    use oca_store::sqlite::SqliteStore;
    use oca_store::{InvocationRecord, TaskRecord};

    fn invocation(n: i64, created: Millis) -> (InvocationRecord, Vec<TaskRecord>) {
        let inv = InvocationRecord {
            invoke_id: format!("t-{n}"),
            account_id: "acct".into(),
            region_id: "cn-hangzhou".into(),
            command_id: "c-1".into(),
            command_name: String::new(),
            command_description: String::new(),
            command_type: "RunShellScript".into(),
            command_content: b"true".to_vec(),
            enable_parameter: false,
            parameters: "{}".into(),
            working_dir: String::new(),
            username: "root".into(),
            timeout_secs: 60,
            repeat_mode: "Once".into(),
            timed: false,
            frequency: String::new(),
            termination_mode: "ProcessTree".into(),
            created,
            stopped_by_hand: false,
            counts: StatusCounts::default(),
            file: None,
            revision: 0,
            resource_group_id: String::new(),
        };
        let task = TaskRecord {
            invoke_id: inv.invoke_id.clone(),
            instance_id: "mi-1".into(),
            account_id: inv.account_id.clone(),
            region_id: inv.region_id.clone(),
            command_id: inv.command_id.clone(),
            username: inv.username.clone(),
            timed: false,
            created,
            updated: created,
            state: TaskState {
                status: InvocationStatus::Success,
                ..TaskState::pending()
            },
            output_len: 0,
            resource_group_id: String::new(),
        };
        (inv, vec![task])
    }

    #[tokio::test]
    async fn a_sweep_goes_on_while_batches_come_back_full() {
        let store = SqliteStore::open_in_memory().unwrap();
        let now = now_millis();
        for n in 0..7 {
            let (inv, tasks) = invocation(n, now - 20 * DAY_MS + n);
            store.insert_invocation(None, &inv, &tasks).await.unwrap();
        }
        for n in 7..12 {
            let (inv, tasks) = invocation(n, now - DAY_MS + n);
            store.insert_invocation(None, &inv, &tasks).await.unwrap();
        }
        let config = RetentionConfig {
            days: 14,
            max_records: 3,
            interval: Duration::from_secs(60),
            batch: 2,
            audit_max_records: 1_000,
        };
        // 7 too old, and 2 of the 5 recent ones beyond the newest 3.
        let purged = sweep(&store, &config).await;
        assert_eq!((purged.invocations, purged.tasks), (9, 9));
        assert_eq!(sweep(&store, &config).await, Purged::default());
    }

    fn audit_entry(at: Millis, authenticated: bool) -> oca_store::AuditRecord {
        oca_store::AuditRecord {
            at,
            account_id: "acct".into(),
            access_key_id: "key".into(),
            source: "127.0.0.1".into(),
            action: "RunCommand".into(),
            targets: vec![],
            omitted: 0,
            result: "Success".into(),
            http_status: 200,
            request_id: "r".into(),
            authenticated,
        }
    }

    #[tokio::test]
    async fn the_audit_trail_is_purged_by_age_and_capped() {
        let store = SqliteStore::open_in_memory().unwrap();
        let now = now_millis();
        let mut entries: Vec<_> = (0..30)
            .map(|n| audit_entry(now - 20 * DAY_MS + n, true))
            .collect();
        entries.extend((0..50).map(|n| audit_entry(now - DAY_MS + n, true)));
        entries.extend((0..20).map(|n| audit_entry(now - DAY_MS + 100 + n, false)));
        store.record_audit(entries, true).await.unwrap();
        let config = RetentionConfig {
            days: 14,
            max_records: 100,
            interval: Duration::from_secs(60),
            batch: 1,
            audit_max_records: 60,
        };
        // 30 too old; of the 70 recent ones the oldest 10 beyond 60; of the 20
        // unauthenticated ones all but the newest 6 (a tenth of 60), in batches of 10.
        assert_eq!(sweep_audit(&store, &config).await, 30 + 10 + 14);
        assert_eq!(sweep_audit(&store, &config).await, 0);
        let left = store
            .list_audit(&oca_store::AuditFilter {
                limit: u64::MAX,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(left.len(), 46);
        assert_eq!(left.iter().filter(|e| !e.authenticated).count(), 6);
    }
}
