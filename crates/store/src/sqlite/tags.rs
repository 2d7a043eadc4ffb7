//! Tags on instances, commands, invocations and activations: `(scope, resource type, id,
//! key) → value`, indexed by key and value for finding the resources that carry a tag.

use super::rows::Where;
use crate::{Result, Scope, Tag, TagResource};
use rusqlite::{params, Connection, TransactionBehavior};
use std::collections::HashMap;

pub(super) fn tag(
    c: &mut Connection,
    scope: &Scope,
    kind: TagResource,
    ids: &[String],
    tags: &[Tag],
) -> Result<()> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tag_in(&tx, scope, kind, ids, tags)?;
    tx.commit()?;
    Ok(())
}

/// Sets tags inside the caller's transaction.
pub(super) fn tag_in(
    tx: &Connection,
    scope: &Scope,
    kind: TagResource,
    ids: &[String],
    tags: &[Tag],
) -> Result<()> {
    {
        let mut put = tx.prepare_cached(
            "INSERT INTO tags (account_id, region_id, resource_type, resource_id, key, value) \
             VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (account_id, region_id, resource_type, resource_id, key) \
             DO UPDATE SET value = excluded.value",
        )?;
        for id in ids {
            for t in tags {
                put.execute(params![
                    scope.account_id,
                    scope.region_id,
                    kind.as_str(),
                    id,
                    t.key,
                    t.value
                ])?;
            }
        }
    }
    Ok(())
}

/// Adds to `w` that the resource whose id is column `id_col` carries `tag` (an empty
/// value matches any value of its key), as the `tags_by_key` index answers it.
pub(super) fn carries(w: &mut Where, id_col: &str, scope: &Scope, kind: TagResource, tag: &Tag) {
    let mut args = vec![
        scope.account_id.clone().into(),
        scope.region_id.clone().into(),
        kind.as_str().to_string().into(),
        tag.key.clone().into(),
    ];
    let value = if tag.value.is_empty() {
        ""
    } else {
        args.push(tag.value.clone().into());
        " AND value = ?"
    };
    w.and_all(
        &format!(
            "{id_col} IN (SELECT resource_id FROM tags WHERE account_id = ? AND region_id = ? \
             AND resource_type = ? AND key = ?{value})"
        ),
        args,
    );
}

pub(super) fn untag(
    c: &mut Connection,
    scope: &Scope,
    kind: TagResource,
    ids: &[String],
    keys: Option<&[String]>,
) -> Result<()> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for id in ids {
        match keys {
            None => {
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
            }
            Some(keys) => {
                let mut del = tx.prepare_cached(
                    "DELETE FROM tags WHERE account_id = ? AND region_id = ? \
                     AND resource_type = ? AND resource_id = ? AND key = ?",
                )?;
                for k in keys {
                    del.execute(params![
                        scope.account_id,
                        scope.region_id,
                        kind.as_str(),
                        id,
                        k
                    ])?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn tags_of(
    c: &Connection,
    scope: &Scope,
    kind: TagResource,
    ids: &[String],
) -> Result<HashMap<String, Vec<Tag>>> {
    let mut out: HashMap<String, Vec<Tag>> = HashMap::new();
    let mut stmt = c.prepare_cached(
        "SELECT key, value FROM tags WHERE account_id = ? AND region_id = ? \
         AND resource_type = ? AND resource_id = ? ORDER BY key",
    )?;
    for id in ids {
        let tags: Vec<Tag> = stmt
            .query_map(
                params![scope.account_id, scope.region_id, kind.as_str(), id],
                |r| {
                    Ok(Tag {
                        key: r.get(0)?,
                        value: r.get(1)?,
                    })
                },
            )?
            .collect::<rusqlite::Result<_>>()?;
        if !tags.is_empty() {
            out.insert(id.clone(), tags);
        }
    }
    Ok(out)
}

pub(super) fn tagged(
    c: &Connection,
    scope: &Scope,
    kind: TagResource,
    tags: &[Tag],
) -> Result<Vec<String>> {
    let mut result: Option<Vec<String>> = None;
    for t in tags {
        let ids: Vec<String> = if t.value.is_empty() {
            c.prepare_cached(
                "SELECT DISTINCT resource_id FROM tags WHERE account_id = ? AND region_id = ? \
                 AND resource_type = ? AND key = ? ORDER BY resource_id",
            )?
            .query_map(
                params![scope.account_id, scope.region_id, kind.as_str(), t.key],
                |r| r.get(0),
            )?
            .collect::<rusqlite::Result<_>>()?
        } else {
            c.prepare_cached(
                "SELECT resource_id FROM tags WHERE account_id = ? AND region_id = ? \
                 AND resource_type = ? AND key = ? AND value = ? ORDER BY resource_id",
            )?
            .query_map(
                params![
                    scope.account_id,
                    scope.region_id,
                    kind.as_str(),
                    t.key,
                    t.value
                ],
                |r| r.get(0),
            )?
            .collect::<rusqlite::Result<_>>()?
        };
        result = Some(match result {
            None => ids,
            Some(prev) => prev
                .into_iter()
                .filter(|id| ids.binary_search(id).is_ok())
                .collect(),
        });
    }
    Ok(result.unwrap_or_default())
}
