//! Accounts (tenants).

use crate::{AccountRecord, Result, StoreError};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

const ACCOUNT_COLS: &str = "account_id, name, enabled, created";

fn account(r: &Row) -> rusqlite::Result<AccountRecord> {
    Ok(AccountRecord {
        account_id: r.get(0)?,
        name: r.get(1)?,
        enabled: r.get(2)?,
        created: r.get(3)?,
    })
}

pub(super) fn insert_account(c: &Connection, a: &AccountRecord) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO accounts (account_id, name, enabled, created) VALUES (?, ?, ?, ?)",
    )?
    .execute(params![a.account_id, a.name, a.enabled, a.created])?;
    Ok(())
}

pub(super) fn ensure_account(c: &Connection, a: &AccountRecord) -> Result<bool> {
    let n = c
        .prepare_cached(
            "INSERT OR IGNORE INTO accounts (account_id, name, enabled, created) \
             VALUES (?, ?, ?, ?)",
        )?
        .execute(params![a.account_id, a.name, a.enabled, a.created])?;
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

pub(super) fn set_account_enabled(c: &Connection, id: &str, enabled: bool) -> Result<bool> {
    let n = c
        .prepare_cached("UPDATE accounts SET enabled = ? WHERE account_id = ?")?
        .execute(params![enabled, id])?;
    Ok(n > 0)
}

/// Refuses (`Conflict`) while the account has access keys; the check and the delete
/// share one transaction, so a key created meanwhile cannot be orphaned.
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
        .prepare_cached("DELETE FROM accounts WHERE account_id = ?")?
        .execute([id])?;
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
        assert!(!s.delete_account("a").await.unwrap());
        assert_eq!(s.get_account("a").await.unwrap(), None);
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
}
