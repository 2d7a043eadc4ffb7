//! Activations and managed instances.

use super::rows::{self, json_list, Where, ACTIVATION_COLS, INSTANCE_COLS};
use crate::{
    ActivationFilter, ActivationRecord, InstanceFilter, InstanceRecord, Listing, Page, Result,
    Scope, StoreError, Tag, TagResource,
};
use oca_domain::time::Millis;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::HashSet;

pub(super) fn insert_activation(c: &Connection, a: &ActivationRecord) -> Result<()> {
    let sql = format!(
        "INSERT INTO activations ({ACTIVATION_COLS}) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    );
    c.prepare_cached(&sql)?.execute(params![
        a.activation_id,
        a.account_id,
        a.region_id,
        a.code_hash,
        a.instance_name,
        a.description,
        a.instance_count,
        a.registered_count,
        a.ip_address_range,
        a.created,
        a.expires,
        a.disabled,
        a.resource_group_id,
        a.deregistered_count,
    ])?;
    Ok(())
}

/// The activation and its tags, in one transaction.
pub(super) fn create_activation(
    c: &mut Connection,
    a: &ActivationRecord,
    tags: &[Tag],
) -> Result<()> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    insert_activation(&tx, a)?;
    let scope = Scope {
        account_id: a.account_id.clone(),
        region_id: a.region_id.clone(),
    };
    super::tags::tag_in(
        &tx,
        &scope,
        TagResource::Activation,
        std::slice::from_ref(&a.activation_id),
        tags,
    )?;
    tx.commit()?;
    Ok(())
}

/// The activation in scope, inside the caller's transaction.
fn activation_in(c: &Connection, scope: &Scope, id: &str) -> Result<Option<ActivationRecord>> {
    let sql = format!(
        "SELECT {ACTIVATION_COLS} FROM activations \
         WHERE activation_id = ? AND account_id = ? AND region_id = ?"
    );
    Ok(c.prepare_cached(&sql)?
        .query_row(
            params![id, scope.account_id, scope.region_id],
            rows::activation,
        )
        .optional()?)
}

/// Newest first, then by id.
pub(super) fn list_activations(
    c: &Connection,
    scope: &Scope,
    f: &ActivationFilter,
    page: Page,
) -> Result<Listing<ActivationRecord>> {
    let tx = c.unchecked_transaction()?;
    let mut w = Where::scope("a", scope);
    if let Some(ids) = &f.activation_ids {
        w.and(
            "a.activation_id IN (SELECT value FROM json_each(?))",
            json_list(ids),
        );
    }
    w.eq_opt("a.instance_name", &f.instance_name);
    w.eq_opt("a.resource_group_id", &f.resource_group_id);
    for tag in &f.tags {
        super::tags::carries(
            &mut w,
            "a.activation_id",
            scope,
            TagResource::Activation,
            tag,
        );
    }
    let listing = rows::listing(
        &tx,
        ACTIVATION_COLS,
        "activations a",
        &w,
        "a.created DESC, a.activation_id",
        page,
        rows::activation,
    )?;
    tx.commit()?;
    Ok(listing)
}

/// Disables an activation in scope (again: no change); the activation after.
pub(super) fn disable_activation(
    c: &mut Connection,
    scope: &Scope,
    id: &str,
) -> Result<Option<ActivationRecord>> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(mut a) = activation_in(&tx, scope, id)? else {
        return Ok(None);
    };
    if !a.disabled {
        tx.prepare_cached("UPDATE activations SET disabled = 1 WHERE activation_id = ?")?
            .execute([id])?;
        a.disabled = true;
    }
    tx.commit()?;
    Ok(Some(a))
}

/// Deletes an activation in scope and its tags, unless one of its instances is still
/// registered (`Conflict`).
pub(super) fn delete_activation(
    c: &mut Connection,
    scope: &Scope,
    id: &str,
) -> Result<Option<ActivationRecord>> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(a) = activation_in(&tx, scope, id)? else {
        return Ok(None);
    };
    let registered: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM instances WHERE activation_id = ?")?
        .query_row([id], |r| r.get(0))?;
    if registered > 0 {
        return Err(StoreError::Conflict(format!(
            "activation {id} still has {registered} registered instance(s)"
        )));
    }
    tx.prepare_cached("DELETE FROM activations WHERE activation_id = ?")?
        .execute([id])?;
    untag_all(&tx, scope, TagResource::Activation, id)?;
    tx.commit()?;
    Ok(Some(a))
}

/// Removes every tag of one resource, inside the caller's transaction.
fn untag_all(tx: &Connection, scope: &Scope, kind: TagResource, id: &str) -> Result<()> {
    tx.prepare_cached(
        "DELETE FROM tags WHERE account_id = ? AND region_id = ? \
         AND resource_type = ? AND resource_id = ?",
    )?
    .execute(params![
        scope.account_id,
        scope.region_id,
        kind.as_str(),
        id
    ])?;
    Ok(())
}

pub(super) fn get_activation(c: &Connection, id: &str) -> Result<Option<ActivationRecord>> {
    let sql = format!("SELECT {ACTIVATION_COLS} FROM activations WHERE activation_id = ?");
    Ok(c.prepare_cached(&sql)?
        .query_row([id], rows::activation)
        .optional()?)
}

/// Checks and counts one use of the instance's activation and inserts the instance.
/// The activation is expired from `expires` on, judged at `instance.registered`.
pub(super) fn register_instance(c: &mut Connection, i: &InstanceRecord) -> Result<()> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let sql = format!("SELECT {ACTIVATION_COLS} FROM activations WHERE activation_id = ?");
    let activation = tx
        .prepare_cached(&sql)?
        .query_row([&i.activation_id], rows::activation)
        .optional()?;
    let id = &i.activation_id;
    let Some(a) = activation else {
        return Err(StoreError::Conflict(format!(
            "activation {id} does not exist"
        )));
    };
    if a.disabled {
        return Err(StoreError::Conflict(format!("activation {id} is disabled")));
    }
    if i.registered >= a.expires {
        return Err(StoreError::Conflict(format!("activation {id} has expired")));
    }
    if a.registered_count >= a.instance_count {
        return Err(StoreError::Conflict(format!(
            "activation {id} has no registrations left ({} of {} used)",
            a.registered_count, a.instance_count
        )));
    }
    tx.prepare_cached(
        "UPDATE activations SET registered_count = registered_count + 1 WHERE activation_id = ?",
    )?
    .execute([id])?;
    let sql = format!(
        "INSERT INTO instances ({INSTANCE_COLS}) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    );
    tx.prepare_cached(&sql)?.execute(params![
        i.instance_id,
        i.account_id,
        i.region_id,
        i.name,
        i.hostname,
        i.os_type,
        i.agent_version,
        i.machine_id,
        i.activation_id,
        i.token_hash,
        i.registered,
        i.last_heartbeat,
        i.last_invoked,
        i.invocation_count,
        i.resource_group_id,
        i.task_isolation,
    ])?;
    tx.commit()?;
    Ok(())
}

pub(super) fn get_instance(c: &Connection, id: &str) -> Result<Option<InstanceRecord>> {
    let sql = format!("SELECT {INSTANCE_COLS} FROM instances WHERE instance_id = ?");
    Ok(c.prepare_cached(&sql)?
        .query_row([id], rows::instance)
        .optional()?)
}

/// The instances in scope among `ids`, in the order asked, each once.
pub(super) fn get_instances(
    c: &Connection,
    scope: &Scope,
    ids: &[String],
) -> Result<Vec<InstanceRecord>> {
    let tx = c.unchecked_transaction()?;
    let sql = format!(
        "SELECT {INSTANCE_COLS} FROM instances \
         WHERE instance_id = ? AND account_id = ? AND region_id = ?"
    );
    let mut stmt = tx.prepare_cached(&sql)?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for id in ids {
        if !seen.insert(id.as_str()) {
            continue;
        }
        if let Some(i) = stmt
            .query_row(
                params![id, scope.account_id, scope.region_id],
                rows::instance,
            )
            .optional()?
        {
            out.push(i);
        }
    }
    drop(stmt);
    tx.commit()?;
    Ok(out)
}

/// Newest registered first, then by id.
pub(super) fn list_instances(
    c: &Connection,
    scope: &Scope,
    f: &InstanceFilter,
    page: Page,
) -> Result<Listing<InstanceRecord>> {
    let tx = c.unchecked_transaction()?;
    let mut w = Where::scope("n", scope);
    if let Some(ids) = &f.instance_ids {
        w.and(
            "n.instance_id IN (SELECT value FROM json_each(?))",
            json_list(ids),
        );
    }
    if let Some(ids) = &f.exclude_ids {
        w.and(
            "n.instance_id NOT IN (SELECT value FROM json_each(?))",
            json_list(ids),
        );
    }
    w.eq_opt("n.os_type", &f.os_type);
    w.eq_opt("n.resource_group_id", &f.resource_group_id);
    w.eq_opt("n.name", &f.name);
    w.eq_opt("n.activation_id", &f.activation_id);
    w.eq_opt("n.machine_id", &f.machine_id);
    for tag in &f.tags {
        super::tags::carries(&mut w, "n.instance_id", scope, TagResource::Instance, tag);
    }
    let listing = rows::listing(
        &tx,
        INSTANCE_COLS,
        "instances n",
        &w,
        "n.registered DESC, n.instance_id",
        page,
        rows::instance,
    )?;
    tx.commit()?;
    Ok(listing)
}

/// The instance in scope, inside the caller's transaction.
fn instance_in(c: &Connection, scope: &Scope, id: &str) -> Result<Option<InstanceRecord>> {
    let sql = format!(
        "SELECT {INSTANCE_COLS} FROM instances \
         WHERE instance_id = ? AND account_id = ? AND region_id = ?"
    );
    Ok(c.prepare_cached(&sql)?
        .query_row(
            params![id, scope.account_id, scope.region_id],
            rows::instance,
        )
        .optional()?)
}

/// Deletes an instance in scope with its tags and counts the deregistration on its
/// activation (if that still exists); its tasks stay. The instance as it was.
pub(super) fn deregister_instance(
    c: &mut Connection,
    scope: &Scope,
    id: &str,
) -> Result<Option<InstanceRecord>> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(i) = instance_in(&tx, scope, id)? else {
        return Ok(None);
    };
    tx.prepare_cached("DELETE FROM instances WHERE instance_id = ?")?
        .execute([id])?;
    untag_all(&tx, scope, TagResource::Instance, id)?;
    tx.prepare_cached(
        "UPDATE activations SET deregistered_count = deregistered_count + 1 \
         WHERE activation_id = ?",
    )?
    .execute([&i.activation_id])?;
    tx.commit()?;
    Ok(Some(i))
}

/// Renames an instance in scope; the instance after.
pub(super) fn rename_instance(
    c: &mut Connection,
    scope: &Scope,
    id: &str,
    name: &str,
) -> Result<Option<InstanceRecord>> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(mut i) = instance_in(&tx, scope, id)? else {
        return Ok(None);
    };
    tx.prepare_cached("UPDATE instances SET name = ? WHERE instance_id = ?")?
        .execute(params![name, id])?;
    i.name = name.to_string();
    tx.commit()?;
    Ok(Some(i))
}

/// A heartbeat: a missing instance is ignored.
pub(super) fn touch_instance(
    c: &Connection,
    id: &str,
    at: Millis,
    agent_version: &str,
    hostname: &str,
    os_type: &str,
    task_isolation: &str,
) -> Result<()> {
    c.prepare_cached(
        "UPDATE instances SET last_heartbeat = ?, agent_version = ?, hostname = ?, os_type = ?, \
         task_isolation = ? WHERE instance_id = ?",
    )?
    .execute(params![
        at,
        agent_version,
        hostname,
        os_type,
        task_isolation,
        id
    ])?;
    Ok(())
}

/// One more invocation for each instance (each counted once however often it is
/// listed); missing instances are ignored.
/// Counts one more invocation on each instance (each once), inside the caller's
/// transaction.
pub(super) fn note_invoked(tx: &Connection, ids: &[String], at: Millis) -> Result<()> {
    tx.prepare_cached(
        "UPDATE instances SET invocation_count = invocation_count + 1, last_invoked = ? \
         WHERE instance_id IN (SELECT DISTINCT value FROM json_each(?))",
    )?
    .execute(params![at, json_list(ids)])?;
    Ok(())
}
