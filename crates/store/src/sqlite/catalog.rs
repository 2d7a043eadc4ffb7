//! Access keys and commands.

use super::rows::{self, page_args, Where, ACCESS_KEY_COLS, COMMAND_COLS};
use crate::{
    AccessKeyRecord, CommandFilter, CommandRecord, Listing, Page, Result, Scope, StoreError,
    TagResource,
};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

// ---- access keys ------------------------------------------------------------------

/// Refuses (`Conflict`) a key of a deleted account, in the same statement as the insert.
pub(super) fn insert_access_key(c: &Connection, k: &AccessKeyRecord) -> Result<()> {
    let n = c
        .prepare_cached(
            "INSERT INTO access_keys (access_key_id, secret_sealed, account_id, enabled, created) \
             SELECT ?1, ?2, ?3, ?4, ?5 WHERE NOT EXISTS \
             (SELECT 1 FROM accounts WHERE account_id = ?3 AND deleted IS NOT NULL)",
        )?
        .execute(params![
            k.access_key_id,
            k.secret_sealed,
            k.account_id,
            k.enabled,
            k.created
        ])?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "account {} was deleted: it can have no access key",
            k.account_id
        )));
    }
    Ok(())
}

pub(super) fn get_access_key(c: &Connection, id: &str) -> Result<Option<AccessKeyRecord>> {
    let sql = format!("SELECT {ACCESS_KEY_COLS} FROM access_keys WHERE access_key_id = ?");
    Ok(c.prepare_cached(&sql)?
        .query_row([id], rows::access_key)
        .optional()?)
}

pub(super) fn list_access_keys(
    c: &Connection,
    account: Option<&str>,
) -> Result<Vec<AccessKeyRecord>> {
    let sql = format!(
        "SELECT {ACCESS_KEY_COLS} FROM access_keys WHERE ?1 IS NULL OR account_id = ?1 \
         ORDER BY created, access_key_id"
    );
    let keys = c
        .prepare_cached(&sql)?
        .query_map([account], rows::access_key)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(keys)
}

pub(super) fn set_access_key_enabled(c: &Connection, id: &str, enabled: bool) -> Result<bool> {
    let n = c
        .prepare_cached("UPDATE access_keys SET enabled = ? WHERE access_key_id = ?")?
        .execute(params![enabled, id])?;
    Ok(n > 0)
}

pub(super) fn delete_access_key(c: &Connection, id: &str) -> Result<bool> {
    let n = c
        .prepare_cached("DELETE FROM access_keys WHERE access_key_id = ?")?
        .execute([id])?;
    Ok(n > 0)
}

// ---- commands -------------------------------------------------------------------------

pub(super) fn insert_command(c: &Connection, m: &CommandRecord) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO commands (command_id, account_id, region_id, name, description, \
         command_type, content, working_dir, timeout_secs, enable_parameter, parameter_names, \
         created, invoke_times, visible, resource_group_id) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        m.command_id,
        m.account_id,
        m.region_id,
        m.name,
        m.description,
        m.command_type,
        m.content,
        m.working_dir,
        m.timeout_secs,
        m.enable_parameter,
        rows::names_to_text(&m.parameter_names),
        m.created,
        m.invoke_times,
        m.visible,
        m.resource_group_id,
    ])?;
    Ok(())
}

pub(super) fn get_command(
    c: &Connection,
    scope: &Scope,
    id: &str,
) -> Result<Option<CommandRecord>> {
    let sql = format!(
        "SELECT {COMMAND_COLS} FROM commands \
         WHERE command_id = ? AND account_id = ? AND region_id = ?"
    );
    Ok(c.prepare_cached(&sql)?
        .query_row(
            params![id, scope.account_id, scope.region_id],
            rows::command,
        )
        .optional()?)
}

pub(super) fn update_command(c: &Connection, scope: &Scope, m: &CommandRecord) -> Result<bool> {
    let n = c
        .prepare_cached(
            "UPDATE commands SET name = ?, description = ?, content = ?, working_dir = ?, \
             timeout_secs = ?, enable_parameter = ?, parameter_names = ? \
             WHERE command_id = ? AND account_id = ? AND region_id = ?",
        )?
        .execute(params![
            m.name,
            m.description,
            m.content,
            m.working_dir,
            m.timeout_secs,
            m.enable_parameter,
            rows::names_to_text(&m.parameter_names),
            m.command_id,
            scope.account_id,
            scope.region_id,
        ])?;
    Ok(n > 0)
}

pub(super) fn delete_command(c: &Connection, scope: &Scope, id: &str) -> Result<bool> {
    let n = c
        .prepare_cached(
            "DELETE FROM commands WHERE command_id = ? AND account_id = ? AND region_id = ?",
        )?
        .execute(params![id, scope.account_id, scope.region_id])?;
    Ok(n > 0)
}

/// Visible commands, newest first; a resource group is read on `commands_group`, tags
/// through the tags' index.
pub(super) fn list_commands(
    c: &Connection,
    scope: &Scope,
    f: &CommandFilter,
    page: Page,
) -> Result<Listing<CommandRecord>> {
    let tx = c.unchecked_transaction()?;
    let mut w = Where::scope("m", scope);
    w.and("m.visible = ?", true);
    w.eq_opt("m.command_id", &f.command_id);
    w.eq_opt("m.name", &f.name);
    w.eq_opt("m.description", &f.description);
    w.eq_opt("m.command_type", &f.command_type);
    w.eq_opt("m.resource_group_id", &f.resource_group_id);
    for tag in &f.tags {
        super::tags::carries(&mut w, "m.command_id", scope, TagResource::Command, tag);
    }
    let total: i64 = tx
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM commands m WHERE {}",
            w.sql()
        ))?
        .query_row(params_from_iter(&w.args), |r| r.get(0))?;
    let sql = format!(
        "SELECT {COMMAND_COLS} FROM commands WHERE rowid IN (\
           SELECT m.rowid FROM commands m WHERE {} \
           ORDER BY m.created DESC, m.command_id LIMIT ? OFFSET ?) \
         ORDER BY created DESC, command_id",
        w.sql()
    );
    let items = tx
        .prepare_cached(&sql)?
        .query_map(
            params_from_iter(w.args.iter().chain(page_args(page).iter())),
            rows::command,
        )?
        .collect::<rusqlite::Result<_>>()?;
    tx.commit()?;
    Ok(Listing {
        total: total as u64,
        items,
        next: None,
    })
}
