//! SQL of the taxonomy: the boot-time sync of `taxonomy/` into the database and entry counts.

use std::collections::{HashMap, HashSet};

use std::sync::Arc;

use crate::db::Store;
use crate::error::{Error, Result};
use crate::in_tx;
use crate::on_engine;

use super::Taxonomy;

/// Makes the database's themes, groups and typologies exactly those of `taxonomy`, in one transaction.
/// A typology that entries still use cannot disappear: it must be retired instead.
pub async fn sync(store: &Store, taxonomy: &Taxonomy) -> Result<()> {
    let mut tx = store.begin_writing().await?;
    in_tx!(&mut tx, |conn| {
        let stored: Vec<(String,)> = sqlx::query_as("SELECT code FROM typologies")
            .fetch_all(&mut *conn)
            .await?;
        let kept: HashSet<&str> = taxonomy
            .typologies
            .iter()
            .map(|t| t.code.as_str())
            .collect();
        for (code,) in stored
            .iter()
            .filter(|(code,)| !kept.contains(code.as_str()))
        {
            let (used,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM services WHERE typology_code = $1")
                    .bind(code)
                    .fetch_one(&mut *conn)
                    .await?;
            if used > 0 {
                return Err(Error::Conflict {
                    code: "typology_in_use",
                    detail: format!(
                        "la typologie « {code} » a disparu de taxonomy/ mais {used} fiches l'utilisent : \
                         marquez-la `retired = true` au lieu de la supprimer"
                    ),
                });
            }
            sqlx::query("DELETE FROM typologies WHERE code = $1")
                .bind(code)
                .execute(&mut *conn)
                .await?;
        }

        for theme in &taxonomy.themes {
            sqlx::query(
                "INSERT INTO themes (code, position, label_fr, label_en) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (code) DO UPDATE SET position = excluded.position,
                     label_fr = excluded.label_fr, label_en = excluded.label_en",
            )
            .bind(&theme.code)
            .bind(theme.position)
            .bind(&theme.label_fr)
            .bind(&theme.label_en)
            .execute(&mut *conn)
            .await?;
        }
        // Parents before their sub-groups, for the foreign key.
        let mut groups: Vec<_> = taxonomy.groups.iter().collect();
        groups.sort_by_key(|g| g.parent.is_some());
        for group in groups {
            sqlx::query(
                "INSERT INTO typology_groups (code, theme_code, parent_code, position, label_fr, label_en)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (code) DO UPDATE SET theme_code = excluded.theme_code,
                     parent_code = excluded.parent_code, position = excluded.position,
                     label_fr = excluded.label_fr, label_en = excluded.label_en",
            )
            .bind(&group.code)
            .bind(&group.theme)
            .bind(&group.parent)
            .bind(group.position)
            .bind(&group.label_fr)
            .bind(&group.label_en)
            .execute(&mut *conn)
            .await?;
        }
        for t in &taxonomy.typologies {
            sqlx::query(
                "INSERT INTO typologies (code, theme_code, group_code, position, label_fr, label_en,
                     synonyms, pivot_codes, bpe_codes, note, retired)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (code) DO UPDATE SET theme_code = excluded.theme_code,
                     group_code = excluded.group_code, position = excluded.position,
                     label_fr = excluded.label_fr, label_en = excluded.label_en,
                     synonyms = excluded.synonyms, pivot_codes = excluded.pivot_codes,
                     bpe_codes = excluded.bpe_codes, note = excluded.note, retired = excluded.retired",
            )
            .bind(&t.code)
            .bind(&t.theme)
            .bind(&t.group)
            .bind(t.position)
            .bind(&t.label_fr)
            .bind(&t.label_en)
            .bind(serde_json::to_string(&t.synonyms).map_err(anyhow::Error::from)?)
            .bind(serde_json::to_string(&t.pivot).map_err(anyhow::Error::from)?)
            .bind(serde_json::to_string(&t.bpe).map_err(anyhow::Error::from)?)
            .bind(&t.note)
            .bind(t.retired)
            .execute(&mut *conn)
            .await?;
        }

        let group_codes: HashSet<&str> = taxonomy.groups.iter().map(|g| g.code.as_str()).collect();
        let stored_groups: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT code, parent_code FROM typology_groups")
                .fetch_all(&mut *conn)
                .await?;
        let mut stale_groups: Vec<_> = stored_groups
            .into_iter()
            .filter(|(code, _)| !group_codes.contains(code.as_str()))
            .collect();
        // Sub-groups before their parents.
        stale_groups.sort_by_key(|(_, parent)| parent.is_none());
        for (code, _) in stale_groups {
            sqlx::query("DELETE FROM typology_groups WHERE code = $1")
                .bind(code)
                .execute(&mut *conn)
                .await?;
        }
        let theme_codes: HashSet<&str> = taxonomy.themes.iter().map(|t| t.code.as_str()).collect();
        let stored_themes: Vec<(String,)> = sqlx::query_as("SELECT code FROM themes")
            .fetch_all(&mut *conn)
            .await?;
        for (code,) in stored_themes
            .into_iter()
            .filter(|(c,)| !theme_codes.contains(c.as_str()))
        {
            sqlx::query("DELETE FROM themes WHERE code = $1")
                .bind(code)
                .execute(&mut *conn)
                .await?;
        }
    });
    tx.commit().await?;
    Ok(())
}

/// Published entries per typology, counted again only when the data version changes: counting
/// scans the whole table, and the directory changes far less often than it is read.
#[derive(Debug, Default)]
pub struct PublishedCounts {
    cached: tokio::sync::Mutex<Option<CountsAt>>,
}

/// Counts and the data version they were taken at.
type CountsAt = (Option<String>, Arc<HashMap<String, i64>>);

impl PublishedCounts {
    /// The counts at data `version` (the caller's settled version: see
    /// `LiveIndexes::settled_version`).
    pub async fn get(
        &self,
        store: &Store,
        version: Option<String>,
    ) -> Result<Arc<HashMap<String, i64>>> {
        let mut cached = self.cached.lock().await;
        if let Some((seen, counts)) = cached.as_ref() {
            if *seen == version {
                return Ok(counts.clone());
            }
        }
        let counts = Arc::new(published_counts(store).await?);
        *cached = Some((version, counts.clone()));
        Ok(counts)
    }
}

/// Published entries per typology code.
async fn published_counts(store: &Store) -> Result<HashMap<String, i64>> {
    let rows: Vec<(String, i64)> = on_engine!(store, |db| {
        sqlx::query_as(
            "SELECT typology_code, COUNT(*) FROM services WHERE status = 'published' GROUP BY typology_code",
        )
        .fetch_all(db)
        .await?
    });
    Ok(rows.into_iter().collect())
}
