//! SQL of organisations, people, invitations, sessions and API tokens.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{digest, new_secret, Actor, ActorKind, Role, Territory};
use crate::db::{Store, Tx};
use crate::error::{Error, FieldError, Result};
use crate::services::ServiceId;
use crate::{in_tx, on_engine};

/// How long an invitation link stays valid.
pub const INVITATION_DAYS: i64 = 14;
/// How long a session lasts without a new login.
pub const SESSION_HOURS: i64 = 12;

/// An organisation as its settings say (the restitution exports this too).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Organisation {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub siren: Option<String>,
    /// `commune:CODE`, `epci:SIREN`, `departement:CODE`.
    pub territory: Vec<String>,
    pub referent_name: Option<String>,
    pub referent_email: Option<String>,
    pub referent_phone: Option<String>,
    pub convention_start: Option<NaiveDate>,
    pub convention_end: Option<NaiveDate>,
    /// Typology codes it committed to maintain (Annexe 2).
    pub typologies: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct OrganisationRecord {
    id: String,
    name: String,
    kind: String,
    siren: Option<String>,
    territory: String,
    referent_name: Option<String>,
    referent_email: Option<String>,
    referent_phone: Option<String>,
    convention_start: Option<NaiveDate>,
    convention_end: Option<NaiveDate>,
    typologies: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<OrganisationRecord> for Organisation {
    type Error = anyhow::Error;
    fn try_from(r: OrganisationRecord) -> anyhow::Result<Self> {
        Ok(Organisation {
            territory: serde_json::from_str(&r.territory)?,
            typologies: serde_json::from_str(&r.typologies)?,
            id: r.id,
            name: r.name,
            kind: r.kind,
            siren: r.siren,
            referent_name: r.referent_name,
            referent_email: r.referent_email,
            referent_phone: r.referent_phone,
            convention_start: r.convention_start,
            convention_end: r.convention_end,
            created_at: r.created_at,
        })
    }
}

/// A new organisation, as the operator declares it.
#[derive(Debug, Clone, Default)]
pub struct NewOrganisation {
    pub name: String,
    pub kind: String,
    pub siren: Option<String>,
    pub territory: Territory,
    pub typologies: Vec<String>,
    pub referent_name: Option<String>,
    pub referent_email: Option<String>,
    pub referent_phone: Option<String>,
    pub convention_start: Option<NaiveDate>,
    pub convention_end: Option<NaiveDate>,
}

impl NewOrganisation {
    /// Every wrong field, named.
    pub fn check(&self) -> Result<()> {
        use crate::services::validate::{check_text, MAX_NAME_CHARS};
        let mut errors = Vec::new();
        if self.name.trim().is_empty() {
            errors.push(FieldError::new("name", "nom manquant"));
        }
        for (field, value, max) in [
            ("name", Some(&self.name), MAX_NAME_CHARS),
            ("referent_name", self.referent_name.as_ref(), MAX_NAME_CHARS),
            ("referent_phone", self.referent_phone.as_ref(), 50),
            ("referent_email", self.referent_email.as_ref(), 320),
        ] {
            if let Some(Err(message)) = value.map(|v| check_text(v, max, false)) {
                errors.push(FieldError::new(field, message));
            }
        }
        if !super::ORGANISATION_KINDS.contains(&self.kind.as_str()) {
            errors.push(FieldError::new(
                "kind",
                format!(
                    "« {} » : valeurs admises {}",
                    self.kind,
                    super::ORGANISATION_KINDS.join(", ")
                ),
            ));
        }
        if let Some(siren) = &self.siren {
            if siren.len() != 9 || !siren.bytes().all(|b| b.is_ascii_digit()) {
                errors.push(FieldError::new(
                    "siren",
                    format!("« {siren} » : un SIREN a 9 chiffres"),
                ));
            }
        }
        if let Some(email) = &self.referent_email {
            if let Err(message) = crate::services::validate::check_email(email) {
                errors.push(FieldError::new("referent_email", message));
            }
        }
        if let (Some(start), Some(end)) = (self.convention_start, self.convention_end) {
            if end < start {
                errors.push(FieldError::new(
                    "convention_end",
                    "la fin de la convention précède son début",
                ));
            }
        }
        if self.territory.0.is_empty() {
            errors.push(FieldError::new(
                "territory",
                "territoire manquant (commune:CODE, epci:SIREN ou departement:CODE)",
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(errors))
        }
    }
}

impl NewOrganisation {
    /// Every field naming what the instance does not know: a territory area without any known
    /// commune (a mistyped code would edit nothing), an unknown typology.
    pub fn check_reference(&self, reference: &crate::import::Reference) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for area in &self.territory.0 {
            if !reference.locator.communes().any(|c| area.contains(c)) {
                errors.push(FieldError::new(
                    "territory",
                    format!("« {area} » ne contient aucune commune connue"),
                ));
            }
        }
        for code in &self.typologies {
            if reference.taxonomy.typology(code).is_none() {
                errors.push(FieldError::new(
                    "typologies",
                    format!("typologie inconnue « {code} »"),
                ));
            }
        }
        errors
    }
}

/// Changes every setting of the organisation `id` (the operator's form).
pub async fn update_organisation(
    store: &Store,
    id: &str,
    new: &NewOrganisation,
) -> Result<Organisation> {
    write_organisation(
        store,
        "UPDATE organisations SET name = $2, kind = $3, siren = $4, territory = $5,
         typologies = $6, referent_name = $7, referent_email = $8, referent_phone = $9,
         convention_start = $10, convention_end = $11 WHERE id = $1",
        id,
        new,
        None,
    )
    .await
}

/// Writes the settings of `new` under `id` with `statement`, which binds the id as $1, the
/// settings as $2 to $11 and, for a new organisation, its creation time as $12; then reads
/// the organisation back. A name already taken is a conflict.
async fn write_organisation(
    store: &Store,
    statement: &str,
    id: &str,
    new: &NewOrganisation,
    created_at: Option<chrono::DateTime<Utc>>,
) -> Result<Organisation> {
    new.check()?;
    let written = on_engine!(store, |db| {
        let mut query = sqlx::query(statement)
            .bind(id)
            .bind(new.name.trim())
            .bind(&new.kind)
            .bind(&new.siren)
            .bind(new.territory.to_json())
            .bind(serde_json::to_string(&new.typologies).unwrap_or_else(|_| "[]".into()))
            .bind(&new.referent_name)
            .bind(new.referent_email.as_deref().map(str::to_lowercase))
            .bind(&new.referent_phone)
            .bind(new.convention_start)
            .bind(new.convention_end);
        if let Some(created_at) = created_at {
            query = query.bind(created_at);
        }
        query.execute(db).await.map(|r| r.rows_affected())
    });
    match written {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(Error::Conflict {
            code: "organisation_exists",
            detail: format!("une organisation s'appelle déjà « {} »", new.name.trim()),
        }),
        other => {
            other?;
            organisation(store, id)
                .await?
                .ok_or_else(|| Error::not_found("organisation", id))
        }
    }
}

/// Changes the référent of the organisation `id` (its admin's form).
pub async fn update_referent(
    store: &Store,
    id: &str,
    name: Option<&str>,
    email: Option<&str>,
    phone: Option<&str>,
) -> Result<()> {
    let email = email
        .map(|e| {
            crate::services::validate::check_email(e)
                .map_err(|m| Error::invalid("referent_email", m))
        })
        .transpose()?;
    on_engine!(store, |db| sqlx::query(
        "UPDATE organisations SET referent_name = $2, referent_email = $3, referent_phone = $4
         WHERE id = $1",
    )
    .bind(id)
    .bind(name)
    .bind(email.map(|e| e.to_lowercase()))
    .bind(phone)
    .execute(db)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn create_organisation(store: &Store, new: &NewOrganisation) -> Result<Organisation> {
    let id = format!("org-{}", ServiceId::generate());
    write_organisation(
        store,
        "INSERT INTO organisations (id, name, kind, siren, territory, typologies, referent_name,
         referent_email, referent_phone, convention_start, convention_end, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &id,
        new,
        Some(Utc::now()),
    )
    .await
}

pub async fn organisation(store: &Store, id: &str) -> Result<Option<Organisation>> {
    let record: Option<OrganisationRecord> = on_engine!(store, |db| {
        sqlx::query_as(
        "SELECT id, name, kind, siren, territory, referent_name, referent_email, referent_phone,
         convention_start, convention_end, typologies, created_at FROM organisations WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db).await
    })?;
    Ok(record.map(Organisation::try_from).transpose()?)
}

/// The territory of organisation `id` (empty when unknown).
async fn territory_of(store: &Store, id: &str) -> Result<Territory> {
    let row: Option<(String,)> = on_engine!(store, |db| sqlx::query_as(
        "SELECT territory FROM organisations WHERE id = $1"
    )
    .bind(id)
    .fetch_optional(db)
    .await?);
    Ok(match row {
        Some((json,)) => Territory::from_json(&json)?,
        None => Territory::default(),
    })
}

/// Creates the operator `email`, or sets its password when it exists.
pub async fn create_operator(store: &Store, email: &str, password: &str) -> Result<String> {
    let email =
        crate::services::validate::check_email(email).map_err(|m| Error::invalid("email", m))?;
    super::check_password(password).map_err(|m| Error::invalid("password", m))?;
    let hash = super::hash_password(password)?;
    let id = format!("usr-{}", ServiceId::generate());
    on_engine!(store, |db| sqlx::query(
        "INSERT INTO users (id, email, password_hash, role, organisation_id, created_at)
         VALUES ($1, $2, $3, 'operator', NULL, $4)
         ON CONFLICT (email) DO UPDATE SET password_hash = excluded.password_hash,
         role = 'operator', organisation_id = NULL",
    )
    .bind(&id)
    .bind(&email)
    .bind(&hash)
    .bind(Utc::now())
    .execute(db)
    .await
    .map(drop)?);
    let (id,): (String,) = on_engine!(store, |db| sqlx::query_as(
        "SELECT id FROM users WHERE email = $1"
    )
    .bind(&email)
    .fetch_one(db)
    .await?);
    Ok(id)
}

/// Records an invitation and returns its secret (which goes in the link, never in the database).
pub async fn invite(
    store: &Store,
    organisation_id: &str,
    email: &str,
    role: Role,
) -> Result<String> {
    let mut tx = store.begin_writing().await?;
    let secret = invite_in(&mut tx, organisation_id, email, role).await?;
    tx.commit().await?;
    Ok(secret)
}

/// `invite` on `conn`, in the caller's transaction (the pages write the e-mail with it).
pub async fn invite_in(
    tx: &mut Tx,
    organisation_id: &str,
    email: &str,
    role: Role,
) -> Result<String> {
    let email =
        crate::services::validate::check_email(email).map_err(|m| Error::invalid("email", m))?;
    if role == Role::Operator {
        return Err(Error::invalid(
            "role",
            "une invitation est pour admin ou editor",
        ));
    }
    let known: Option<(String,)> = in_tx!(tx, |conn| sqlx::query_as(
        "SELECT id FROM organisations WHERE id = $1"
    )
    .bind(organisation_id)
    .fetch_optional(conn)
    .await)?;
    if known.is_none() {
        return Err(Error::not_found("organisation", organisation_id));
    }
    let secret = new_secret();
    let now = Utc::now();
    in_tx!(tx, |conn| sqlx::query(
        "INSERT INTO invitations (token_hash, email, role, organisation_id, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(digest(&secret))
    .bind(&email)
    .bind(role.as_str())
    .bind(organisation_id)
    .bind(now)
    .bind(now + Duration::days(INVITATION_DAYS))
    .execute(conn)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(secret)
}

/// The people of an organisation and its pending invitations: (e-mail, role, accepted).
pub async fn team(store: &Store, organisation_id: &str) -> Result<Vec<(String, String, bool)>> {
    Ok(on_engine!(store, |db| sqlx::query_as(
        "SELECT email, role, TRUE AS accepted FROM users WHERE organisation_id = $1
         UNION ALL
         SELECT email, role, FALSE AS accepted FROM invitations
         WHERE organisation_id = $1 AND accepted_at IS NULL AND expires_at > $2
         ORDER BY accepted DESC, email",
    )
    .bind(organisation_id)
    .bind(Utc::now())
    .fetch_all(db)
    .await)?)
}

/// A pending invitation, as its link shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Invitation {
    pub email: String,
    pub role: String,
    pub organisation_id: String,
}

const PENDING_INVITATION: &str = "SELECT email, role, organisation_id FROM invitations
    WHERE token_hash = $1 AND accepted_at IS NULL AND expires_at > $2";

pub async fn pending_invitation(store: &Store, secret: &str) -> Result<Option<Invitation>> {
    Ok(on_engine!(store, |db| sqlx::query_as(PENDING_INVITATION)
        .bind(digest(secret))
        .bind(Utc::now())
        .fetch_optional(db)
        .await?))
}

/// `pending_invitation` in the caller's transaction.
async fn pending_invitation_in(tx: &mut Tx, secret: &str) -> Result<Option<Invitation>> {
    Ok(in_tx!(tx, |conn| sqlx::query_as(PENDING_INVITATION)
        .bind(digest(secret))
        .bind(Utc::now())
        .fetch_optional(conn)
        .await?))
}

/// Marks the invitation `secret` used.
async fn mark_accepted(tx: &mut Tx, secret: &str) -> Result<()> {
    in_tx!(tx, |conn| sqlx::query(
        "UPDATE invitations SET accepted_at = $1 WHERE token_hash = $2"
    )
    .bind(Utc::now())
    .bind(digest(secret))
    .execute(conn)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Accepts the invitation `secret` with the chosen password: a new account is created, in one
/// transaction (an address that has an account is refused: its holder confirms signed in,
/// [`join_by_invitation`]). Returns the user's id.
pub async fn accept_invitation(store: &Store, secret: &str, password: &str) -> Result<String> {
    super::check_password(password).map_err(|m| Error::invalid("password", m))?;
    let hash = super::hash_password(password)?;
    let mut tx = store.begin_writing().await?;
    let invitation = pending_invitation_in(&mut tx, secret)
        .await?
        .ok_or_else(invitation_invalid)?;
    // The link proves access to a mailbox, not the consent of an account's holder: an existing
    // account is never moved, nor its password replaced, from here.
    if account_id(&mut tx, &invitation.email).await?.is_some() {
        return Err(account_exists(&invitation.email));
    }
    let id = format!("usr-{}", ServiceId::generate());
    in_tx!(&mut tx, |conn| sqlx::query(
        "INSERT INTO users (id, email, password_hash, role, organisation_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(&invitation.email)
    .bind(&hash)
    .bind(&invitation.role)
    .bind(&invitation.organisation_id)
    .bind(Utc::now())
    .execute(conn)
    .await
    .map(drop)?);
    mark_accepted(&mut tx, secret).await?;
    tx.commit().await?;
    Ok(id)
}

fn invitation_invalid() -> Error {
    Error::Forbidden {
        code: "invitation_invalid",
        detail: "invitation inconnue, expirée ou déjà utilisée".into(),
    }
}

fn account_exists(email: &str) -> Error {
    Error::Conflict {
        code: "account_exists",
        detail: format!(
            "un compte existe déjà pour {email} : connectez-vous avec ce compte, puis rouvrez le \
             lien de l'invitation pour la confirmer / an account already exists for this \
             address: sign in, then open the invitation link again to confirm it"
        ),
    }
}

/// The id of the account of `email`, if there is one.
async fn account_id(tx: &mut Tx, email: &str) -> Result<Option<String>> {
    let row: Option<(String,)> = in_tx!(tx, |conn| sqlx::query_as(
        "SELECT id FROM users WHERE email = $1"
    )
    .bind(email)
    .fetch_optional(conn)
    .await)?;
    Ok(row.map(|(id,)| id))
}

/// Whether an account exists for `email` (an invitation to it must be confirmed signed in).
pub async fn has_account(store: &Store, email: &str) -> Result<bool> {
    let mut tx = store.begin().await?;
    let found = account_id(&mut tx, email).await?.is_some();
    tx.commit().await?;
    Ok(found)
}

/// An existing account joins the invitation's organisation with its role: only the account's
/// holder, signed in as `user_id` (whose address the invitation names), confirms it; an
/// operator's account never changes.
pub async fn join_by_invitation(store: &Store, secret: &str, user_id: &str) -> Result<()> {
    let mut tx = store.begin_writing().await?;
    let invitation = pending_invitation_in(&mut tx, secret)
        .await?
        .ok_or_else(invitation_invalid)?;
    let user: Option<(String, String)> = in_tx!(&mut tx, |conn| {
        sqlx::query_as("SELECT email, role FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(conn)
            .await?
    });
    let Some((email, role)) = user else {
        return Err(Error::forbidden());
    };
    if email != invitation.email {
        return Err(Error::Forbidden {
            code: "invitation_other_account",
            detail: format!(
                "cette invitation est pour {} : connectez-vous avec ce compte / this invitation \
                 is for another account",
                invitation.email
            ),
        });
    }
    if role == Role::Operator.as_str() {
        return Err(Error::Forbidden {
            code: "operator_not_movable",
            detail: "un compte d'opérateur ne rejoint pas une organisation : il les voit toutes \
                     / an operator's account does not join an organisation"
                .into(),
        });
    }
    in_tx!(&mut tx, |conn| {
        sqlx::query("UPDATE users SET role = $1, organisation_id = $2 WHERE id = $3")
            .bind(&invitation.role)
            .bind(&invitation.organisation_id)
            .bind(user_id)
            .execute(conn)
            .await
            .map(drop)?
    });
    mark_accepted(&mut tx, secret).await?;
    tx.commit().await?;
    Ok(())
}

/// Creates an API token for the organisation; returns (its id, the token shown once).
pub async fn create_token(
    store: &Store,
    organisation_id: &str,
    name: &str,
) -> Result<(String, String)> {
    if name.trim().is_empty() {
        return Err(Error::invalid("name", "nom du jeton manquant"));
    }
    crate::services::validate::check_text(name, crate::services::validate::MAX_NAME_CHARS, false)
        .map_err(|message| Error::invalid("name", message))?;
    if organisation(store, organisation_id).await?.is_none() {
        return Err(Error::not_found("organisation", organisation_id));
    }
    let id = format!("tok-{}", ServiceId::generate());
    // The prefix tells a leaked secret for what it is (secret scanners look for such prefixes).
    let token = format!("pxm_{}", new_secret());
    on_engine!(store, |db| sqlx::query(
        "INSERT INTO api_tokens (id, token_hash, name, organisation_id, created_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(digest(&token))
    .bind(name.trim())
    .bind(organisation_id)
    .bind(Utc::now())
    .execute(db)
    .await
    .map(|r| r.rows_affected()))?;
    Ok((id, token))
}

/// Revokes the token `id` of `organisation_id`; false when there is none (or already revoked).
pub async fn revoke_token(store: &Store, organisation_id: &str, id: &str) -> Result<bool> {
    let done = on_engine!(store, |db| sqlx::query(
        "UPDATE api_tokens SET revoked_at = $1
         WHERE id = $2 AND organisation_id = $3 AND revoked_at IS NULL",
    )
    .bind(Utc::now())
    .bind(id)
    .bind(organisation_id)
    .execute(db)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Creates an API token of the platform operator; returns (its id, the token shown once).
pub async fn create_operator_token(store: &Store, name: &str) -> Result<(String, String)> {
    if name.trim().is_empty() {
        return Err(Error::invalid("name", "nom du jeton manquant"));
    }
    crate::services::validate::check_text(name, crate::services::validate::MAX_NAME_CHARS, false)
        .map_err(|message| Error::invalid("name", message))?;
    let id = format!("tok-{}", ServiceId::generate());
    let token = format!("pxm_{}", new_secret());
    on_engine!(store, |db| sqlx::query(
        "INSERT INTO api_tokens (id, token_hash, name, organisation_id, created_at)
         VALUES ($1, $2, $3, NULL, $4)",
    )
    .bind(&id)
    .bind(digest(&token))
    .bind(name.trim())
    .bind(Utc::now())
    .execute(db)
    .await
    .map(|r| r.rows_affected()))?;
    Ok((id, token))
}

/// A token as `actor_for_token` reads it: id, name, organisation, last use.
type TokenRow = (String, String, Option<String>, Option<DateTime<Utc>>);

/// The actor a bearer token stands for, recording its use; `None` when unknown, revoked, or of
/// an organisation that left.
pub async fn actor_for_token(store: &Store, token: &str) -> Result<Option<Actor>> {
    let row: Option<TokenRow> = on_engine!(store, |db| sqlx::query_as(
        "SELECT t.id, t.name, t.organisation_id, t.last_used_at FROM api_tokens t
         LEFT JOIN organisations o ON o.id = t.organisation_id
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND o.withdrawn_at IS NULL",
    )
    .bind(digest(token))
    .fetch_optional(db)
    .await?);
    let Some((id, name, organisation_id, last_used_at)) = row else {
        return Ok(None);
    };
    // The use is recorded to the minute: a script's thousand requests a minute would otherwise
    // each write, and wait for the database's write lock behind the entries' writes.
    let now = Utc::now();
    if last_used_at.is_none_or(|at| now - at >= chrono::Duration::minutes(1)) {
        on_engine!(store, |db| sqlx::query(
            "UPDATE api_tokens SET last_used_at = $1 WHERE id = $2"
        )
        .bind(now)
        .bind(&id)
        .execute(db)
        .await
        .map(drop)?);
    }
    let Some(organisation_id) = organisation_id else {
        return Ok(Some(Actor {
            kind: ActorKind::Token { id, name },
            role: Role::Operator,
            organisation: None,
        }));
    };
    let territory = territory_of(store, &organisation_id).await?;
    Ok(Some(Actor {
        kind: ActorKind::Token { id, name },
        // A script acts as an editor of its organisation: it cannot invite or mint tokens.
        role: Role::Editor,
        organisation: Some((organisation_id, territory)),
    }))
}

#[derive(sqlx::FromRow)]
struct UserRecord {
    id: String,
    email: String,
    password_hash: Option<String>,
    role: String,
    organisation_id: Option<String>,
}

async fn actor_of(store: &Store, user: UserRecord) -> Result<Actor> {
    let role =
        Role::parse(&user.role).ok_or_else(|| anyhow::anyhow!("rôle inconnu « {} »", user.role))?;
    let organisation = match user.organisation_id {
        Some(id) => {
            let territory = territory_of(store, &id).await?;
            Some((id, territory))
        }
        None => None,
    };
    Ok(Actor {
        kind: ActorKind::User {
            id: user.id,
            email: user.email,
        },
        role,
        organisation,
    })
}

/// The user `email` when `password` is theirs.
pub async fn check_login(store: &Store, email: &str, password: &str) -> Result<Option<Actor>> {
    let user: Option<UserRecord> = on_engine!(store, |db| sqlx::query_as(
        "SELECT u.id, u.email, u.password_hash, u.role, u.organisation_id FROM users u
         LEFT JOIN organisations o ON o.id = u.organisation_id
         WHERE u.email = $1 AND o.withdrawn_at IS NULL",
    )
    .bind(email.trim().to_lowercase())
    .fetch_optional(db)
    .await?);
    let Some(user) = user else {
        // The same work as for a known account: the answer's time tells nothing.
        let _ = super::hash_password(password);
        return Ok(None);
    };
    let ok = user
        .password_hash
        .as_deref()
        .is_some_and(|hash| super::verify_password(password, hash));
    if !ok {
        return Ok(None);
    }
    Ok(Some(actor_of(store, user).await?))
}

/// A new session for `user_id`; returns (the cookie's secret, the session's CSRF secret).
/// The user's other sessions are ended: a login renews the session.
pub async fn open_session(store: &Store, user_id: &str) -> Result<(String, String)> {
    let secret = new_secret();
    let csrf = new_secret();
    let now = Utc::now();
    let mut tx = store.begin_writing().await?;
    in_tx!(&mut tx, |conn| {
        sqlx::query("DELETE FROM sessions WHERE user_id = $1 OR expires_at < $2")
            .bind(user_id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, csrf, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(digest(&secret))
        .bind(user_id)
        .bind(&csrf)
        .bind(now)
        .bind(now + Duration::hours(SESSION_HOURS))
        .execute(&mut *conn)
        .await?;
    });
    tx.commit().await?;
    Ok((secret, csrf))
}

/// The actor of a live session and the session's CSRF secret.
pub async fn session(store: &Store, secret: &str) -> Result<Option<(Actor, String)>> {
    let row: Option<(String, String)> = on_engine!(store, |db| sqlx::query_as(
        "SELECT user_id, csrf FROM sessions WHERE id_hash = $1 AND expires_at > $2"
    )
    .bind(digest(secret))
    .bind(Utc::now())
    .fetch_optional(db)
    .await?);
    let Some((user_id, csrf)) = row else {
        return Ok(None);
    };
    let user: Option<UserRecord> = on_engine!(store, |db| sqlx::query_as(
        "SELECT u.id, u.email, u.password_hash, u.role, u.organisation_id FROM users u
         LEFT JOIN organisations o ON o.id = u.organisation_id
         WHERE u.id = $1 AND o.withdrawn_at IS NULL",
    )
    .bind(&user_id)
    .fetch_optional(db)
    .await?);
    let Some(user) = user else {
        return Ok(None);
    };
    Ok(Some((actor_of(store, user).await?, csrf)))
}

pub async fn close_session(store: &Store, secret: &str) -> Result<()> {
    on_engine!(store, |db| sqlx::query(
        "DELETE FROM sessions WHERE id_hash = $1"
    )
    .bind(digest(secret))
    .execute(db)
    .await
    .map(drop)?);
    Ok(())
}

/// Every organisation still in the convention, as (id, name), by name: the operator's choices.
pub async fn organisation_names(store: &Store) -> Result<Vec<(String, String)>> {
    Ok(on_engine!(store, |db| sqlx::query_as(
        "SELECT id, name FROM organisations WHERE withdrawn_at IS NULL ORDER BY name",
    )
    .fetch_all(db)
    .await)?)
}

/// An API token as its organisation's admin sees it (never the secret).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub created_at: chrono::DateTime<Utc>,
    pub last_used_at: Option<chrono::DateTime<Utc>>,
    pub revoked_at: Option<chrono::DateTime<Utc>>,
}

/// The API tokens of an organisation, newest first.
pub async fn tokens(store: &Store, organisation_id: &str) -> Result<Vec<TokenInfo>> {
    Ok(on_engine!(store, |db| sqlx::query_as(
        "SELECT id, name, created_at, last_used_at, revoked_at FROM api_tokens
         WHERE organisation_id = $1 ORDER BY created_at DESC, id DESC",
    )
    .bind(organisation_id)
    .fetch_all(db)
    .await)?)
}
