//! Duplicates across sources: the same service from two sources (same typology within 150 m
//! and similar names) forms a group of which one entry is shown to citizens — signed by a
//! contributor first, then by the national sources in the instance's order of precedence —
//! and the others are kept with the status `duplicate`, hidden, listed for the operator, who
//! can separate them, merge entries the detection does not see, or choose which one to show.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rstar::primitives::GeomWithData;
use rstar::RTree;
use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;
use utoipa::ToSchema;

use super::history::Via;
use super::turn::{Author, WriteTurn};
use super::{store, ServiceId, Status};
use crate::db::{Store, Tx};
use crate::error::{Error, Result};
use crate::import::National;
use crate::search::live::LiveIndexes;
use crate::taxonomy::Taxonomy;
use crate::{in_tx, on_engine};

/// Entries of one typology closer than this may be the same service.
pub const NEAR_M: f64 = 150.0;

/// Names are similar when this share of the shorter one's words (those that do not merely
/// repeat the typology's label) is in the other.
const SIMILAR_WORDS: f64 = 0.6;

const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// The key of the instance's order of national sources in `instance_facts`.
const PRECEDENCE_KEY: &str = "duplicate_precedence";

/// A national source as `--precedence` names it.
fn national_key(national: National) -> &'static str {
    match national {
        National::Dila => "dila",
        National::DataInclusion => "data-inclusion",
        National::Bpe => "bpe",
    }
}

/// The order in which the national sources are shown when they describe the same service
/// (contributors' entries always come first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Precedence(pub Vec<National>);

impl Default for Precedence {
    fn default() -> Self {
        Precedence(vec![National::Dila, National::DataInclusion, National::Bpe])
    }
}

impl Precedence {
    /// `dila,data-inclusion,bpe` in any order, each once.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut order = Vec::new();
        for key in text.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            let national = National::ALL
                .into_iter()
                .find(|n| national_key(*n) == key)
                .ok_or_else(|| format!("« {key} » : sources admises dila, data-inclusion, bpe"))?;
            if order.contains(&national) {
                return Err(format!("« {key} » apparaît deux fois"));
            }
            order.push(national);
        }
        for national in National::ALL {
            if !order.contains(&national) {
                order.push(national);
            }
        }
        Ok(Precedence(order))
    }

    pub fn to_text(&self) -> String {
        self.0
            .iter()
            .map(|n| national_key(*n))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The rank of a source by its name: 0 for a contributor, then the national order.
    fn rank(&self, source_name: &str) -> usize {
        self.0
            .iter()
            .position(|n| n.source() == source_name)
            .map_or(0, |p| p + 1)
    }

    pub async fn load(store: &Store) -> Result<Self> {
        let stored: Option<(String,)> = on_engine!(store, |db| sqlx::query_as(
            "SELECT value FROM instance_facts WHERE key = $1"
        )
        .bind(PRECEDENCE_KEY)
        .fetch_optional(db)
        .await)?;
        Ok(stored
            .and_then(|(text,)| Precedence::parse(&text).ok())
            .unwrap_or_default())
    }

    pub async fn save(&self, store: &Store) -> Result<()> {
        on_engine!(store, |db| sqlx::query(
            "INSERT INTO instance_facts (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(PRECEDENCE_KEY)
        .bind(self.to_text())
        .execute(db)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }
}

/// An entry the detection looks at.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Candidate {
    id: String,
    typology_code: String,
    lon: f64,
    lat: f64,
    name: String,
    source_id: String,
    source_name: String,
    status: String,
    siret: Option<String>,
}

/// A point on the sphere, in metres: chords of a few hundred metres are the distance.
fn on_sphere(lon: f64, lat: f64) -> [f64; 3] {
    let (lon, lat) = (lon.to_radians(), lat.to_radians());
    [
        EARTH_RADIUS_M * lat.cos() * lon.cos(),
        EARTH_RADIUS_M * lat.cos() * lon.sin(),
        EARTH_RADIUS_M * lat.sin(),
    ]
}

/// The words of a name that say which service it is: folded, of three letters or more, not
/// the typology's own words (« Mairie », « Pharmacie ») nor linking words.
fn telling_words(name: &str, typology_words: &[String]) -> Vec<String> {
    const LINKING: [&str; 8] = ["les", "des", "aux", "sur", "sous", "pour", "avec", "et"];
    let mut words: Vec<String> = crate::text::fold(name)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 3)
        .filter(|w| !LINKING.contains(w) && !typology_words.iter().any(|t| t == w))
        .map(str::to_owned)
        .collect();
    words.sort();
    words.dedup();
    words
}

/// Whether two names (as telling words) describe the same service.
pub fn similar(a: &[String], b: &[String]) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if short.is_empty() {
        // Nothing tells them apart but the typology's own words: « Mairie » and « Mairie ».
        return long.is_empty();
    }
    let shared = short.iter().filter(|w| long.contains(w)).count();
    shared as f64 / short.len() as f64 >= SIMILAR_WORDS
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

fn union(parent: &mut [usize], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        parent[ra.max(rb)] = ra.min(rb);
    }
}

/// The operator's decisions, by pair of ids (smaller first).
#[derive(Default)]
struct Decisions {
    separated: std::collections::HashSet<(String, String)>,
    merged: Vec<(String, String)>,
    preferred: std::collections::HashSet<String>,
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// Which entry each hidden one gives way to: the groups the candidates form, decided.
fn hidden_by_group(
    candidates: &[Candidate],
    decisions: &Decisions,
    precedence: &Precedence,
    taxonomy: &Taxonomy,
) -> HashMap<String, String> {
    let mut parent: Vec<usize> = (0..candidates.len()).collect();
    let mut by_typology: HashMap<&str, Vec<usize>> = HashMap::default();
    for (i, c) in candidates.iter().enumerate() {
        by_typology.entry(&c.typology_code).or_default().push(i);
    }
    for (typology, members) in &by_typology {
        let typology_words = taxonomy
            .typology(typology)
            .map(|t| telling_words(&t.label_fr, &[]))
            .unwrap_or_default();
        let words: Vec<Vec<String>> = members
            .iter()
            .map(|&i| telling_words(&candidates[i].name, &typology_words))
            .collect();
        let tree = RTree::bulk_load(
            members
                .iter()
                .enumerate()
                .map(|(k, &i)| {
                    GeomWithData::new(on_sphere(candidates[i].lon, candidates[i].lat), k)
                })
                .collect(),
        );
        // A nameless entry (the BPE's: only the typology's words) is the same service as the
        // one named entry of another source near it, never as several: that would chain
        // distinct neighbours (two pharmacies) into one group through it.
        let mut nameless_near: HashMap<usize, Vec<usize>> = HashMap::default();
        for (k, &i) in members.iter().enumerate() {
            let here = on_sphere(candidates[i].lon, candidates[i].lat);
            for near in tree.locate_within_distance(here, NEAR_M * NEAR_M) {
                let other = near.data;
                let j = members[other];
                if other <= k
                    || candidates[i].source_id == candidates[j].source_id
                    || decisions
                        .separated
                        .contains(&pair(&candidates[i].id, &candidates[j].id))
                {
                    continue;
                }
                match (words[k].is_empty(), words[other].is_empty()) {
                    (true, false) => nameless_near.entry(i).or_default().push(j),
                    (false, true) => nameless_near.entry(j).or_default().push(i),
                    _ if similar(&words[k], &words[other]) => union(&mut parent, i, j),
                    _ => {}
                }
            }
        }
        for (nameless, near) in nameless_near {
            if let [only] = near[..] {
                union(&mut parent, nameless, only);
            }
        }
        // The same SIRET from two sources is the same establishment, wherever each places it;
        // unless a source gives it to several entries of the typology (a commune's SIRET on
        // each of its libraries): then it tells them apart from nothing.
        let mut by_siret: HashMap<&str, Vec<usize>> = HashMap::default();
        for &i in members {
            if let Some(siret) = candidates[i].siret.as_deref() {
                by_siret.entry(siret).or_default().push(i);
            }
        }
        for same in by_siret.values() {
            let sources: std::collections::HashSet<&str> = same
                .iter()
                .map(|&i| candidates[i].source_id.as_str())
                .collect();
            if sources.len() < 2 || sources.len() != same.len() {
                continue;
            }
            for (k, &i) in same.iter().enumerate() {
                for &j in &same[k + 1..] {
                    if !decisions
                        .separated
                        .contains(&pair(&candidates[i].id, &candidates[j].id))
                    {
                        union(&mut parent, i, j);
                    }
                }
            }
        }
    }
    let position: HashMap<&str, usize> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.as_str(), i))
        .collect();
    for (a, b) in &decisions.merged {
        if let (Some(&i), Some(&j)) = (position.get(a.as_str()), position.get(b.as_str())) {
            union(&mut parent, i, j);
        }
    }
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::default();
    for i in 0..candidates.len() {
        let root = find(&mut parent, i);
        groups.entry(root).or_default().push(i);
    }
    let mut hidden = HashMap::default();
    for members in groups.values().filter(|m| m.len() > 1) {
        let shown = *members
            .iter()
            .min_by_key(|&&i| {
                let c = &candidates[i];
                (
                    !decisions.preferred.contains(&c.id),
                    precedence.rank(&c.source_name),
                    c.id.as_str(),
                )
            })
            .expect("a group has members");
        for &i in members.iter().filter(|&&i| i != shown) {
            hidden.insert(candidates[i].id.clone(), candidates[shown].id.clone());
        }
    }
    hidden
}

/// What a pass of the detection did.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Pass {
    /// Entries looked at (published or hidden, of typologies that several sources give).
    pub candidates: u64,
    /// Groups of the same service, and the entries hidden in them now.
    pub groups: u64,
    pub hidden: u64,
    /// Entries this pass hid, and those it showed again (their group dissolved or separated).
    pub newly_hidden: u64,
    pub shown_again: u64,
}

/// Finds the duplicate groups of the whole directory and brings the statuses to them, in one
/// write turn: entries to hide get the status `duplicate` (in their history), entries no group
/// hides any more are published again.
pub async fn refresh(
    store: &Store,
    taxonomy: &Arc<Taxonomy>,
    live: Option<&Arc<LiveIndexes>>,
) -> Result<Pass> {
    let precedence = Precedence::load(store).await?;
    // One source cannot duplicate another: a directory filled from the BPE alone is not read
    // through (an index probe per organisation instead of a scan of millions of rows).
    let (sources, recorded, merged): (i64, i64, i64) = on_engine!(store, |db| sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM organisations o WHERE EXISTS (
                     SELECT 1 FROM services s WHERE s.source_id = o.id
                     AND s.status IN ('published', 'duplicate'))),
                (SELECT COUNT(*) FROM duplicates),
                (SELECT COUNT(*) FROM duplicate_decisions WHERE decision = 'merged')",
    )
    .fetch_one(db)
    .await)?;
    if sources < 2 && recorded == 0 && merged == 0 {
        return Ok(Pass::default());
    }
    // Only typologies that several sources give can hold a duplicate across sources; the
    // operator's merges name theirs.
    let candidates: Vec<Candidate> = on_engine!(store, |db| sqlx::query_as(
        "WITH shared AS (
             SELECT typology_code FROM services WHERE status IN ('published', 'duplicate')
             GROUP BY typology_code HAVING COUNT(DISTINCT source_id) > 1
         )
         SELECT s.id, s.typology_code, s.lon, s.lat, s.name, s.source_id,
                o.name AS source_name, s.status, s.siret
         FROM services s JOIN organisations o ON o.id = s.source_id
         WHERE s.status IN ('published', 'duplicate')
           AND (s.typology_code IN (SELECT typology_code FROM shared)
                OR s.id IN (SELECT a FROM duplicate_decisions WHERE decision = 'merged')
                OR s.id IN (SELECT b FROM duplicate_decisions WHERE decision = 'merged'))",
    )
    .fetch_all(db)
    .await)?;
    let rows: Vec<(String, String, String)> = on_engine!(store, |db| sqlx::query_as(
        "SELECT a, b, decision FROM duplicate_decisions"
    )
    .fetch_all(db)
    .await)?;
    let mut decisions = Decisions::default();
    for (a, b, decision) in rows {
        match decision.as_str() {
            "separated" => {
                decisions.separated.insert(pair(&a, &b));
            }
            "merged" => decisions.merged.push((a, b)),
            _ => {
                decisions.preferred.insert(a);
            }
        }
    }
    let taxonomy = taxonomy.clone();
    let (candidates, hidden) = tokio::task::spawn_blocking(move || {
        let hidden = hidden_by_group(&candidates, &decisions, &precedence, &taxonomy);
        (candidates, hidden)
    })
    .await
    .map_err(anyhow::Error::from)?;
    let mut pass = Pass {
        candidates: candidates.len() as u64,
        groups: hidden
            .values()
            .collect::<std::collections::HashSet<_>>()
            .len() as u64,
        hidden: hidden.len() as u64,
        ..Pass::default()
    };
    let recorded: Vec<(String, String)> = on_engine!(store, |db| sqlx::query_as(
        "SELECT service_id, shown_id FROM duplicates"
    )
    .fetch_all(db)
    .await)?;
    let recorded: HashMap<String, String> = recorded.into_iter().collect();
    let to_hide: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| hidden.contains_key(&c.id) && c.status != "duplicate")
        .collect();
    let to_show: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| !hidden.contains_key(&c.id) && c.status == "duplicate")
        .collect();
    let moved = hidden
        .iter()
        .any(|(id, shown)| recorded.get(id) != Some(shown))
        || recorded.keys().any(|id| !hidden.contains_key(id));
    if to_hide.is_empty() && to_show.is_empty() && !moved {
        return Ok(pass);
    }
    let now = Utc::now();
    let mut turn = WriteTurn::begin(store, live).await?;
    // The groups are written anew below: emptied first, so that hiding an entry shown until
    // now does not publish again the entries the new groups still hide.
    in_tx!(turn.conn(), |conn| sqlx::query("DELETE FROM duplicates")
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    for (candidate, status, action) in to_hide
        .iter()
        .map(|c| (c, Status::Duplicate, "hidden_as_duplicate"))
        .chain(
            to_show
                .iter()
                .map(|c| (c, Status::Published, "shown_again")),
        )
    {
        set_status(turn.conn(), &candidate.id, status, action, now).await?;
    }
    pass.newly_hidden = to_hide.len() as u64;
    pass.shown_again = to_show.len() as u64;
    for (id, shown) in &hidden {
        in_tx!(turn.conn(), |conn| sqlx::query(
            "INSERT INTO duplicates (service_id, shown_id, detected_at) VALUES ($1, $2, $3)",
        )
        .bind(id)
        .bind(shown)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    }
    turn.commit().await?;
    Ok(pass)
}

/// Runs the detection again whenever entries changed since its last pass, every `every` at
/// most: an entry typed in a form, which runs no pass itself, is grouped with the harvested
/// one within that time.
pub async fn follow(
    store: Store,
    taxonomy: Arc<Taxonomy>,
    live: Arc<LiveIndexes>,
    every: std::time::Duration,
) {
    let mut seen = None;
    loop {
        tokio::time::sleep(every).await;
        let head = match crate::db::log_head(&store).await {
            Ok(head) => head,
            Err(error) => {
                tracing::warn!(%error, "change log not read for the detection of duplicates");
                continue;
            }
        };
        if seen == Some(head) {
            continue;
        }
        match refresh(&store, &taxonomy, Some(&live)).await {
            Ok(pass) if pass.newly_hidden + pass.shown_again > 0 => tracing::info!(
                hidden = pass.newly_hidden,
                shown_again = pass.shown_again,
                "doublons entre sources / duplicates across sources"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "detection of duplicates failed"),
        }
        // Its own writes are not a reason for another pass.
        seen = crate::db::log_head(&store).await.ok();
    }
}

/// Sets the status of one entry, in its history as the detection's doing.
async fn set_status(
    tx: &mut Tx,
    id: &str,
    status: Status,
    action: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(current) = store::get_in(tx, &ServiceId(id.to_owned())).await? else {
        return Ok(());
    };
    let author = Author {
        kind: "system",
        id: "doublons",
        via: Via::Import,
    };
    super::turn::set_status(tx, &current, status, &author, action, now).await?;
    Ok(())
}

/// The entry shown in place of the hidden duplicate `id`, if it is one: links to it (in the
/// wild, in printed directories) lead there.
pub async fn shown_instead(store: &Store, id: &ServiceId) -> Result<Option<String>> {
    let found: Option<(String,)> = on_engine!(store, |db| sqlx::query_as(
        "SELECT d.shown_id FROM duplicates d JOIN services s ON s.id = d.service_id
         WHERE d.service_id = $1 AND s.status = 'duplicate'",
    )
    .bind(id.as_str())
    .fetch_optional(db)
    .await)?;
    Ok(found.map(|(shown,)| shown))
}

/// Publishes again the entries hidden in favour of `shown`, which is leaving (withdrawn,
/// hidden in turn), in the caller's transaction; the next detection groups them anew.
pub async fn show_in_place_of(
    tx: &mut Tx,
    shown: &ServiceId,
    author: &Author<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    let hidden: Vec<(String,)> = in_tx!(tx, |conn| sqlx::query_as(
        "SELECT service_id FROM duplicates WHERE shown_id = $1"
    )
    .bind(shown.as_str())
    .fetch_all(conn)
    .await)?;
    in_tx!(tx, |conn| sqlx::query(
        "DELETE FROM duplicates WHERE shown_id = $1"
    )
    .bind(shown.as_str())
    .execute(conn)
    .await
    .map(|r| r.rows_affected()))?;
    for (id,) in hidden {
        let Some(current) = store::get_in(tx, &ServiceId(id)).await? else {
            continue;
        };
        if current.status == Status::Duplicate {
            // Not recursive at run time: a hidden entry is not published.
            Box::pin(super::turn::set_status(
                tx,
                &current,
                Status::Published,
                author,
                "shown_again",
                now,
            ))
            .await?;
        }
    }
    Ok(())
}

/// What does not hold between the statuses and the groups: a hidden entry without a group,
/// a group row of an entry that is not hidden, an entry hidden in favour of one citizens do not
/// see. Said by `proximites check`.
pub async fn check(store: &Store) -> Result<Vec<String>> {
    let rows: Vec<(String, String)> = on_engine!(store, |db| {
        sqlx::query_as(
        "SELECT s.id, 'masquée comme doublon sans groupe / hidden as a duplicate without a group'
         FROM services s WHERE s.status = 'duplicate'
           AND NOT EXISTS (SELECT 1 FROM duplicates d WHERE d.service_id = s.id)
         UNION ALL
         SELECT d.service_id, 'dans un groupe de doublons mais pas masquée / grouped but not hidden'
         FROM duplicates d JOIN services s ON s.id = d.service_id WHERE s.status <> 'duplicate'
         UNION ALL
         SELECT d.service_id, 'masquée au profit d''une fiche non publiée / hidden in favour of an unpublished entry'
         FROM duplicates d JOIN services s ON s.id = d.shown_id WHERE s.status <> 'published'
         ORDER BY 1",
    )
    .fetch_all(db).await
    })?;
    Ok(rows
        .into_iter()
        .map(|(id, what)| format!("fiche {id} {what}"))
        .collect())
}

/// One entry of a group, as the operator's list shows it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Member {
    pub id: String,
    pub name: String,
    pub typology_code: String,
    pub insee_code: String,
    pub source_name: String,
    pub status: String,
}

/// A group: the entry shown and those hidden in its place.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Group {
    pub shown: Member,
    pub hidden: Vec<Member>,
}

/// The groups, by the shown entry's name: at most `limit`, and how many there are.
pub async fn groups(store: &Store, limit: usize) -> Result<(Vec<Group>, u64)> {
    let members: Vec<(String, Member)> = on_engine!(store, |db| sqlx::query_as::<
        _,
        (String, String, String, String, String, String, String),
    >(
        "SELECT d.shown_id, s.id, s.name, s.typology_code, s.insee_code, o.name, s.status
         FROM duplicates d JOIN services s ON s.id = d.service_id
         JOIN organisations o ON o.id = s.source_id
         UNION ALL
         SELECT s.id, s.id, s.name, s.typology_code, s.insee_code, o.name, s.status
         FROM services s JOIN organisations o ON o.id = s.source_id
         WHERE s.id IN (SELECT shown_id FROM duplicates)",
    )
    .fetch_all(db)
    .await)?
    .into_iter()
    .map(
        |(shown, id, name, typology_code, insee_code, source_name, status)| {
            (
                shown,
                Member {
                    id,
                    name,
                    typology_code,
                    insee_code,
                    source_name,
                    status,
                },
            )
        },
    )
    .collect();
    let mut by_shown: HashMap<String, (Option<Member>, Vec<Member>)> = HashMap::default();
    for (shown, member) in members {
        let slot = by_shown.entry(shown.clone()).or_default();
        if member.id == shown {
            slot.0 = Some(member);
        } else {
            slot.1.push(member);
        }
    }
    let mut groups: Vec<Group> = by_shown
        .into_values()
        .filter_map(|(shown, mut hidden)| {
            hidden.sort_by(|a, b| a.id.cmp(&b.id));
            Some(Group {
                shown: shown?,
                hidden,
            })
        })
        .collect();
    groups.sort_by(|a, b| {
        a.shown
            .name
            .cmp(&b.shown.name)
            .then(a.shown.id.cmp(&b.shown.id))
    });
    let total = groups.len() as u64;
    groups.truncate(limit);
    Ok((groups, total))
}

/// What the operator decides about two entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not the same service: never grouped again.
    Separate,
    /// The same service, although the detection does not see it.
    Merge,
    /// Show this one (`a`) in its group, whatever the precedence.
    Prefer,
}

/// Records the operator's decision on `a` and `b` (`b` ignored for `Prefer`), then runs the
/// detection again so that the statuses follow it at once.
pub async fn decide(
    store: &Store,
    taxonomy: &Arc<Taxonomy>,
    live: Option<&Arc<LiveIndexes>>,
    decided_by: &str,
    decision: Decision,
    a: &str,
    b: &str,
) -> Result<Pass> {
    let exists = |id: &str| {
        let id = id.to_owned();
        async move {
            let found = match ServiceId::parse(&id) {
                Some(id) => store::get(store, &id).await?,
                None => None,
            };
            found.ok_or_else(|| Error::not_found("fiche", &id))
        }
    };
    exists(a).await?;
    let (first, second, text) = match decision {
        Decision::Prefer => (a.to_owned(), a.to_owned(), "preferred"),
        Decision::Separate | Decision::Merge => {
            exists(b).await?;
            if a == b {
                return Err(Error::invalid(
                    "other",
                    "deux fiches différentes sont attendues",
                ));
            }
            let (x, y) = pair(a, b);
            (
                x,
                y,
                if decision == Decision::Separate {
                    "separated"
                } else {
                    "merged"
                },
            )
        }
    };
    let mut tx = store.begin_writing().await?;
    if decision == Decision::Prefer {
        // One preferred entry per group: the earlier choices of its group give way.
        in_tx!(&mut tx, |conn| sqlx::query(
            "DELETE FROM duplicate_decisions WHERE decision = 'preferred' AND a IN (
                 SELECT service_id FROM duplicates WHERE shown_id IN (
                     SELECT shown_id FROM duplicates WHERE service_id = $1
                     UNION SELECT $1)
                 UNION SELECT shown_id FROM duplicates WHERE service_id = $1)",
        )
        .bind(&first)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    }
    in_tx!(&mut tx, |conn| sqlx::query(
        "INSERT INTO duplicate_decisions (a, b, decision, decided_at, decided_by)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (a, b) DO UPDATE SET decision = excluded.decision,
             decided_at = excluded.decided_at, decided_by = excluded.decided_by",
    )
    .bind(&first)
    .bind(&second)
    .bind(text)
    .bind(Utc::now())
    .bind(decided_by)
    .execute(conn)
    .await
    .map(|r| r.rows_affected()))?;
    tx.commit().await?;
    refresh(store, taxonomy, live).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(name: &str, typology: &str) -> Vec<String> {
        telling_words(name, &telling_words(typology, &[]))
    }

    #[test]
    fn names_of_the_same_service_are_similar_and_neighbours_are_not() {
        let town_hall = "Mairie";
        assert!(similar(
            &words("Mairie - Clermont-Ferrand", town_hall),
            &words("Hôtel de ville de Clermont-Ferrand", town_hall)
        ));
        assert!(similar(
            &words("Mairie", town_hall),
            &words("MAIRIE", town_hall)
        ));
        let pharmacy = "Pharmacie";
        assert!(!similar(
            &words("Pharmacie du Centre", pharmacy),
            &words("Pharmacie de la Gare", pharmacy)
        ));
        assert!(!similar(
            &words("Pharmacie", pharmacy),
            &words("Pharmacie de la Gare", pharmacy)
        ));
        assert_eq!(
            Precedence::parse("bpe,dila").unwrap().to_text(),
            "bpe,dila,data-inclusion"
        );
        assert!(Precedence::parse("dila,dila").is_err());
        assert!(Precedence::parse("osm").is_err());
        let sphere = |a: (f64, f64), b: (f64, f64)| {
            let (p, q) = (on_sphere(a.0, a.1), on_sphere(b.0, b.1));
            p.iter()
                .zip(q)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f64>()
                .sqrt()
        };
        let chord = sphere((3.0863, 45.7797), (3.0873, 45.7797));
        let haversine = crate::spatial::LonLat {
            lon: 3.0863,
            lat: 45.7797,
        }
        .distance_m(crate::spatial::LonLat {
            lon: 3.0873,
            lat: 45.7797,
        });
        assert!((chord - haversine).abs() < 0.01, "{chord} {haversine}");
    }

    #[test]
    fn the_same_siret_groups_entries_wherever_they_stand() {
        let taxonomy = Taxonomy::embedded().unwrap();
        let entry =
            |id: &str, typology: &str, lon: f64, name: &str, source: National, siret| Candidate {
                id: id.into(),
                typology_code: typology.into(),
                lon,
                lat: 45.78,
                name: name.into(),
                source_id: format!("org-{}", national_key(source)),
                source_name: source.source().into(),
                status: "published".into(),
                siret: Some(String::from(siret)),
            };
        let candidates = [
            // A town hall the BPE places 2 km from the Annuaire's, under the same SIRET.
            entry(
                "dila-1",
                "mairie",
                3.08,
                "Mairie - Aulnat",
                National::Dila,
                "21630014000014",
            ),
            entry(
                "bpe-1",
                "mairie",
                3.106,
                "MAIRIE",
                National::Bpe,
                "21630014000014",
            ),
            // The same SIRET on two of the BPE's libraries: it names neither.
            entry(
                "dila-2",
                "mediatheque",
                3.2,
                "Médiathèque",
                National::Dila,
                "21630113000018",
            ),
            entry(
                "bpe-2",
                "mediatheque",
                3.3,
                "BIBLIOTHEQUE",
                National::Bpe,
                "21630113000018",
            ),
            entry(
                "bpe-3",
                "mediatheque",
                3.4,
                "BIBLIOTHEQUE",
                National::Bpe,
                "21630113000018",
            ),
            // The same SIRET under another typology: another service of the same body.
            entry(
                "bpe-4",
                "ecole-elementaire",
                3.08,
                "ECOLE",
                National::Bpe,
                "21630014000014",
            ),
        ];
        let hidden = hidden_by_group(
            &candidates,
            &Decisions::default(),
            &Precedence::default(),
            &taxonomy,
        );
        assert_eq!(hidden.len(), 1, "{hidden:?}");
        assert_eq!(hidden.get("bpe-1").map(String::as_str), Some("dila-1"));
        let mut separated = Decisions::default();
        separated.separated.insert(pair("bpe-1", "dila-1"));
        let hidden = hidden_by_group(&candidates, &separated, &Precedence::default(), &taxonomy);
        assert!(hidden.is_empty(), "{hidden:?}");
    }
}
