//! Entries recently read from the database, kept in memory for the search API: a directory is
//! read far more than written, and the same entries (the town halls, pharmacies and schools
//! near where people live) come back in page after page. A write evicts the entries it changed
//! (the change log names them), not the whole cache.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rustc_hash::FxHashMap;

use super::routes::ServiceView;
use super::{store, Service, ServiceId};
use crate::db::Store;
use crate::error::Result;
use crate::taxonomy::Taxonomy;
use crate::territory::Locator;

/// An entry as read, and its public JSON once rendered: pages of results repeat the same
/// entries, rendered once rather than for every page.
#[derive(Debug)]
pub struct Cached {
    pub service: Service,
    view: OnceLock<Box<str>>,
}

impl Cached {
    pub fn new(service: Service) -> Self {
        Self {
            service,
            view: OnceLock::new(),
        }
    }

    /// The entry as `GET /api/v1/services/{id}` answers it: a JSON object.
    pub fn view_json(&self, taxonomy: &Taxonomy, locator: &Locator) -> &str {
        self.view.get_or_init(|| {
            let view = ServiceView::new(self.service.clone(), taxonomy, locator);
            // A struct of strings, numbers and dates always serialises.
            serde_json::to_string(&view)
                .unwrap_or_else(|_| "{}".into())
                .into_boxed_str()
        })
    }
}

/// Shards of the cache: requests on two cores seldom wait for one another.
const SHARDS: usize = 16;

/// Whether data version `held` is `wanted` or a later one (versions are the change log's
/// sequence numbers; unknown ones compare equal only to themselves).
fn at_least(held: Option<&str>, wanted: Option<&str>) -> bool {
    if held == wanted {
        return true;
    }
    match (
        held.and_then(|h| h.parse::<i64>().ok()),
        wanted.and_then(|w| w.parse::<i64>().ok()),
    ) {
        (Some(held), Some(wanted)) => held >= wanted,
        _ => false,
    }
}

fn shard_of(id: &ServiceId) -> usize {
    use std::hash::BuildHasher;
    (rustc_hash::FxBuildHasher.hash_one(id) as usize) % SHARDS
}

/// One shard: the data version its entries were read at, and the entries.
#[derive(Default)]
struct Shard {
    version: Option<String>,
    entries: FxHashMap<ServiceId, Arc<Cached>>,
}

/// Entries by id, for one data version at a time, at most `capacity` of them.
pub struct ServiceCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl ServiceCache {
    /// A cache of about `capacity` entries (a kilobyte or two each, with their JSON).
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, id: &ServiceId) -> &Mutex<Shard> {
        &self.shards[shard_of(id)]
    }

    /// The entries `ids` (those that exist), as the database had them at data `version` or
    /// later: from memory when read before at that version, else in one query.
    pub async fn get_many(
        &self,
        store: &Store,
        version: Option<&str>,
        ids: &[ServiceId],
    ) -> Result<Vec<Arc<Cached>>> {
        let mut found = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            let shard = self
                .shard(id)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match shard.entries.get(id) {
                // Read at that version or later: what the caller asks for, or newer.
                Some(service) if at_least(shard.version.as_deref(), version) => {
                    found.push(service.clone())
                }
                _ => missing.push(id.clone()),
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        for service in store::get_many(store, &missing).await? {
            let service = Arc::new(Cached::new(service));
            let mut shard = self
                .shard(&service.service.id)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if shard.version.as_deref() != version {
                if at_least(shard.version.as_deref(), version) {
                    // A query of an older snapshot (a write landed meanwhile): answered from
                    // the database, the newer shard left as it is.
                    found.push(service);
                    continue;
                }
                shard.entries.clear();
                shard.version = version.map(str::to_owned);
            } else if shard.entries.len() >= self.per_shard {
                // Full: start again rather than track ages; the hot entries come back at once.
                shard.entries.clear();
            }
            shard
                .entries
                .insert(service.service.id.clone(), service.clone());
            found.push(service);
        }
        Ok(found)
    }

    /// Moves the cache from data version `from` to `to`, the change log between them having
    /// changed the entries `changed`: those are evicted, the others stay. A shard at another
    /// version than `from` (it missed a step) is emptied.
    pub fn advance(&self, from: Option<&str>, to: Option<&str>, changed: &[ServiceId]) {
        let mut by_shard: Vec<Vec<&ServiceId>> = vec![Vec::new(); SHARDS];
        for id in changed {
            by_shard[shard_of(id)].push(id);
        }
        for (shard, ids) in self.shards.iter().zip(by_shard) {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            if shard.version.as_deref() == from {
                for id in ids {
                    shard.entries.remove(id);
                }
            } else {
                shard.entries.clear();
            }
            shard.version = to.map(str::to_owned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_from_memory_until_the_version_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::db::Store::connect(dir.path().join("c.db").to_str().unwrap())
            .await
            .unwrap();
        crate::boot::prepare(&store, true).await.unwrap();
        let ids: Vec<ServiceId> =
            sqlx::query_as::<_, (String,)>("SELECT id FROM services ORDER BY id LIMIT 3")
                .fetch_all(store.sqlite().unwrap())
                .await
                .unwrap()
                .into_iter()
                .map(|(id,)| ServiceId(id))
                .collect();
        let cache = ServiceCache::new(1_000);
        let first = cache.get_many(&store, Some("1"), &ids).await.unwrap();
        assert_eq!(first.len(), 3);
        sqlx::query("UPDATE services SET name = 'Renommée' WHERE id = $1")
            .bind(ids[0].as_str())
            .execute(store.sqlite().unwrap())
            .await
            .unwrap();
        // Same version: served from memory, as read then.
        let again = cache.get_many(&store, Some("1"), &ids[..1]).await.unwrap();
        assert_eq!(again[0].service.content.name, first[0].service.content.name);
        assert_ne!(again[0].service.content.name, "Renommée");
        // A new version reads again.
        let fresh = cache.get_many(&store, Some("2"), &ids[..1]).await.unwrap();
        assert_eq!(fresh[0].service.content.name, "Renommée");
        let unknown = cache
            .get_many(&store, Some("2"), &[ServiceId("zzzzzzzzzzzzzzzz".into())])
            .await
            .unwrap();
        assert!(unknown.is_empty());

        // Advanced past a write of the first entry: that one is read again, the others stay.
        cache.get_many(&store, Some("2"), &ids).await.unwrap();
        cache.advance(Some("2"), Some("3"), &ids[..1]);
        sqlx::query("UPDATE services SET name = 'Renommée encore' WHERE id IN ($1, $2)")
            .bind(ids[0].as_str())
            .bind(ids[1].as_str())
            .execute(store.sqlite().unwrap())
            .await
            .unwrap();
        let kept = cache.get_many(&store, Some("3"), &ids[..2]).await.unwrap();
        let name = |id: &ServiceId| {
            kept.iter()
                .find(|c| &c.service.id == id)
                .map(|c| c.service.content.name.clone())
                .unwrap()
        };
        assert_eq!(name(&ids[0]), "Renommée encore", "evicted, read again");
        assert_ne!(name(&ids[1]), "Renommée encore", "kept from before");
        // A shard that missed a step is emptied.
        cache.advance(Some("1"), Some("4"), &[]);
        let fresh = cache.get_many(&store, Some("4"), &ids[..2]).await.unwrap();
        assert!(fresh
            .iter()
            .all(|c| c.service.content.name == "Renommée encore"));

        // A cache smaller than what is asked still answers everything.
        let tiny = ServiceCache::new(1);
        for _ in 0..2 {
            let all = tiny.get_many(&store, Some("2"), &ids).await.unwrap();
            assert_eq!(all.len(), 3);
        }
    }
}
