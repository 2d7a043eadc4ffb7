//! Accounts (tenants).
//!
//! A deleted account is a tombstone, never a missing row: `deleted` holds when it was
//! deleted and `enabled` is 0. Its id can then never be created again (another team
//! would inherit its commands, invocations and instances, which are kept), nor can it
//! be enabled again or get a key.

use crate::{AccountRecord, Result, StoreError};
use oca_domain::time::now_millis;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

const ACCOUNT_COLS: &str = "account_id, name, enabled, created, deleted";

fn account(r: &Row) -> rusqlite::Result<AccountRecord> {
    Ok(AccountRecord {
        account_id: r.get(0)?,
        name: r.get(1)?,
        enabled: r.get(2)?,
        created: r.get(3)?,
        deleted: r.get(4)?,
    })
}

fn deleted_error(id: &str) -> StoreError {
    StoreError::Conflict(format!(
        "account {id} was deleted; a deleted account's id is never used again"
    ))
}

/// `None`: no such account; `Some(true)`: a tombstone.
fn is_deleted(c: &Connection, id: &str) -> Result<Option<bool>> {
    Ok(
        c.prepare_cached("SELECT deleted IS NOT NULL FROM accounts WHERE account_id = ?")?
            .query_row([id], |r| r.get(0))
            .optional()?,
    )
}

pub(super) fn insert_account(c: &mut Connection, a: &AccountRecord) -> Result<()> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    match is_deleted(&tx, &a.account_id)? {
        Some(true) => return Err(deleted_error(&a.account_id)),
        Some(false) => {
            return Err(StoreError::Conflict(format!(
                "account {} already exists",
                a.account_id
            )))
        }
        None => {}
    }
    tx.prepare_cached(
        "INSERT INTO accounts (account_id, name, enabled, created, deleted) \
         VALUES (?, ?, ?, ?, ?)",
    )?
    .execute(params![
        a.account_id,
        a.name,
        a.enabled && a.deleted.is_none(),
        a.created,
        a.deleted
    ])?;
    tx.commit()?;
    Ok(())
}

pub(super) fn ensure_account(c: &Connection, a: &AccountRecord) -> Result<bool> {
    let n = c
        .prepare_cached(
            "INSERT OR IGNORE INTO accounts (account_id, name, enabled, created, deleted) \
             VALUES (?, ?, ?, ?, ?)",
        )?
        .execute(params![
            a.account_id,
            a.name,
            a.enabled && a.deleted.is_none(),
            a.created,
            a.deleted
        ])?;
    Ok(n > 0)
}

pub(super) fn get_account(c: &Connection, id: &str) -> Result<Option<AccountRecord>> {
    let sql = format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE account_id = ?");
    Ok(c.prepare_cached(&sql)?
        .query_row([id], account)
        .optional()?)
}

pub(super) fn list_accounts(c: &Connection) -> Result<Vec<AccountRecord>> {
    let sql = format!("SELECT {ACCOUNT_COLS} FROM accounts ORDER BY created, account_id");
    let accounts = c
        .prepare_cached(&sql)?
        .query_map([], account)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(accounts)
}

pub(super) fn set_account_enabled(c: &mut Connection, id: &str, enabled: bool) -> Result<bool> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    match is_deleted(&tx, id)? {
        None => return Ok(false),
        Some(true) => return Err(deleted_error(id)),
        Some(false) => {}
    }
    tx.prepare_cached("UPDATE accounts SET enabled = ? WHERE account_id = ?")?
        .execute(params![enabled, id])?;
    tx.commit()?;
    Ok(true)
}

/// Refuses (`Conflict`) while the account has access keys; the check and the tombstone
/// share one transaction, so a key created meanwhile cannot be orphaned (and none can
/// be created afterwards: [`super::catalog::insert_access_key`] refuses).
pub(super) fn delete_account(c: &mut Connection, id: &str) -> Result<bool> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let keys: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM access_keys WHERE account_id = ?")?
        .query_row([id], |r| r.get(0))?;
    if keys > 0 {
        return Err(StoreError::Conflict(format!(
            "account {id} still has {keys} access key(s); delete them first"
        )));
    }
    let n = tx
        .prepare_cached(
            "UPDATE accounts SET enabled = 0, deleted = ? \
             WHERE account_id = ? AND deleted IS NULL",
        )?
        .execute(params![now_millis(), id])?;
    tx.commit()?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use crate::sqlite::SqliteStore;
    use crate::{AccessKeyRecord, AccountRecord, Store, StoreError};

    fn acct(id: &str, created: i64) -> AccountRecord {
        AccountRecord {
            account_id: id.into(),
            name: format!("team {id}"),
            created,
            enabled: true,
            deleted: None,
        }
    }

    fn key(id: &str, account: &str) -> AccessKeyRecord {
        AccessKeyRecord {
            access_key_id: id.into(),
            secret_sealed: vec![1, 2, 3],
            account_id: account.into(),
            enabled: true,
            created: 1,
        }
    }

    async fn accounts(s: &SqliteStore) {
        assert_eq!(s.list_accounts().await.unwrap(), vec![]);
        s.insert_account(&acct("a", 2)).await.unwrap();
        s.insert_account(&acct("b", 1)).await.unwrap();
        assert!(matches!(
            s.insert_account(&acct("a", 3)).await,
            Err(StoreError::Conflict(_))
        ));
        // ensure_account keeps what is there.
        assert!(!s.ensure_account(&acct("a", 9)).await.unwrap());
        assert!(s.ensure_account(&acct("c", 3)).await.unwrap());
        assert_eq!(s.get_account("a").await.unwrap(), Some(acct("a", 2)));
        assert_eq!(s.get_account("nope").await.unwrap(), None);
        assert_eq!(
            s.list_accounts().await.unwrap(),
            vec![acct("b", 1), acct("a", 2), acct("c", 3)]
        );

        assert!(s.set_account_enabled("a", false).await.unwrap());
        assert!(!s.get_account("a").await.unwrap().unwrap().enabled);
        assert!(s.set_account_enabled("a", true).await.unwrap());
        assert!(s.get_account("a").await.unwrap().unwrap().enabled);
        assert!(!s.set_account_enabled("nope", false).await.unwrap());

        // An account with keys is not deleted.
        s.insert_access_key(&key("K1", "a")).await.unwrap();
        assert!(matches!(
            s.delete_account("a").await,
            Err(StoreError::Conflict(_))
        ));
        assert!(s.get_account("a").await.unwrap().is_some());
        assert!(s.delete_access_key("K1").await.unwrap());
        assert!(s.delete_account("a").await.unwrap());
        assert!(!s.delete_account("a").await.unwrap(), "already deleted");
        assert!(!s.delete_account("nope").await.unwrap());

        // A tombstone: listed, disabled, and its id is never created again.
        let gone = s.get_account("a").await.unwrap().unwrap();
        assert!(gone.deleted.is_some() && !gone.enabled && !gone.is_active());
        assert_eq!(gone.name, "team a");
        assert!(s.list_accounts().await.unwrap().contains(&gone));
        match s.insert_account(&acct("a", 9)).await {
            Err(StoreError::Conflict(why)) => assert!(why.contains("deleted"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(!s.ensure_account(&acct("a", 9)).await.unwrap());
        assert_eq!(s.get_account("a").await.unwrap(), Some(gone.clone()));
        // It cannot be enabled again nor get a key.
        assert!(matches!(
            s.set_account_enabled("a", true).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.insert_access_key(&key("K2", "a")).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.get_access_key("K2").await.unwrap(), None);
        assert_eq!(s.get_account("a").await.unwrap(), Some(gone));
        // Other accounts are not concerned.
        s.insert_access_key(&key("K3", "b")).await.unwrap();
        assert!(s.get_account("b").await.unwrap().unwrap().is_active());
    }

    #[tokio::test]
    async fn accounts_in_memory() {
        accounts(&SqliteStore::open_in_memory().unwrap()).await;
    }

    #[tokio::test]
    async fn accounts_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        accounts(&SqliteStore::open(&dir.path().join("oca.db")).unwrap()).await;
    }

    /// A database from before accounts existed gets one (enabled) account per
    /// account id that owns a key.
    #[tokio::test]
    async fn the_migration_creates_the_accounts_that_own_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oca.db");
        {
            // A database at the schema before this migration, holding three keys.
            let schema = super::super::schema::MIGRATIONS;
            let before = schema
                .iter()
                .position(|m| *m == super::super::schema::ACCOUNTS)
                .unwrap();
            let mut c = rusqlite::Connection::open(&path).unwrap();
            super::super::schema::migrate_to(&mut c, before).unwrap();
            for (id, account) in [("K1", "x"), ("K2", "x"), ("K3", "y")] {
                c.execute(
                    "INSERT INTO access_keys (access_key_id, account_id, enabled, created, \
                     secret_sealed) VALUES (?, ?, 1, 1, X'00')",
                    [id, account],
                )
                .unwrap();
            }
        }
        let s = SqliteStore::open(&path).unwrap();
        let ids: Vec<String> = s
            .list_accounts()
            .await
            .unwrap()
            .into_iter()
            .map(|a| {
                assert!(a.enabled);
                assert_eq!(a.name, a.account_id);
                a.account_id
            })
            .collect();
        assert_eq!(ids, vec!["x", "y"]);
    }

    /// Accounts deleted before tombstones existed left their records without a row:
    /// the migration makes tombstones of them (not of accounts that hold a key), so
    /// their ids cannot be created again either.
    #[tokio::test]
    async fn the_migration_buries_accounts_deleted_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oca.db");
        {
            let schema = super::super::schema::MIGRATIONS;
            let before = schema
                .iter()
                .position(|m| *m == super::super::schema::ACCOUNT_TOMBSTONES)
                .unwrap();
            let mut c = rusqlite::Connection::open(&path).unwrap();
            super::super::schema::migrate_to(&mut c, before).unwrap();
            c.execute_batch(
                "INSERT INTO accounts (account_id, name, enabled, created) \
                     VALUES ('live', 'live', 1, 5); \
                 INSERT INTO access_keys (access_key_id, account_id, enabled, created, \
                     secret_sealed) VALUES ('K1', 'keyed', 1, 1, X'00'); \
                 INSERT INTO commands (command_id, account_id, region_id, name, description, \
                     command_type, working_dir, timeout_secs, enable_parameter, \
                     parameter_names, created, invoke_times, visible, content) VALUES \
                     ('c-1', 'team-c', 'r', 'n', '', 'RunShellScript', '', 60, 0, '[]', 7, \
                      0, 1, X'00'), \
                     ('c-2', 'live', 'r', 'n', '', 'RunShellScript', '', 60, 0, '[]', 8, \
                      0, 1, X'00'), \
                     ('c-3', 'keyed', 'r', 'n', '', 'RunShellScript', '', 60, 0, '[]', 9, \
                      0, 1, X'00');",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let c = s.get_account("team-c").await.unwrap().unwrap();
        assert!(c.deleted.is_some() && !c.enabled, "{c:?}");
        assert_eq!(c.created, 7);
        assert!(matches!(
            s.insert_account(&acct("team-c", 9)).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(s.get_account("live").await.unwrap().unwrap().is_active());
        assert_eq!(s.get_account("keyed").await.unwrap(), None);
    }
}
