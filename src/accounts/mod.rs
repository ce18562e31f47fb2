//! Contributors' accounts: organisations and their territory, people and their roles, sessions,
//! API tokens, invitations, and the permission rules, all in [`can`].

pub mod auth;
pub mod store;

use std::net::IpAddr;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::territory::{Commune, InseeCode};

/// What a person may do: the platform operator (the region) everything; an organisation's
/// admin (its référent) its entries, people and tokens; an editor its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Operator,
    Admin,
    Editor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Editor => "editor",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            "editor" => Some(Role::Editor),
            _ => None,
        }
    }
}

/// The kinds of contributing bodies the convention names.
pub const ORGANISATION_KINDS: [&str; 7] = [
    "commune",
    "epci",
    "departement",
    "region",
    "state",
    "association",
    "other",
];

/// One piece of an organisation's territory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Area {
    Commune(InseeCode),
    Epci(String),
    Departement(String),
}

impl Area {
    /// `commune:63113`, `epci:246300701` or `departement:63`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let (kind, code) = value.trim().split_once(':').ok_or_else(|| {
            format!("« {value} » : attendu commune:CODE, epci:SIREN ou departement:CODE")
        })?;
        match kind {
            "commune" => InseeCode::parse(code)
                .map(Area::Commune)
                .map_err(|e| format!("« {value} » : {e}")),
            "epci" if code.len() == 9 && code.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Area::Epci(code.to_owned()))
            }
            "epci" => Err(format!("« {value} » : un SIREN d'EPCI a 9 chiffres")),
            "departement"
                if (2..=3).contains(&code.len())
                    && code.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                Ok(Area::Departement(code.to_ascii_uppercase()))
            }
            "departement" => Err(format!("« {value} » : code de département invalide")),
            _ => Err(format!(
                "« {value} » : attendu commune:CODE, epci:SIREN ou departement:CODE"
            )),
        }
    }

    pub fn contains(&self, commune: &Commune) -> bool {
        match self {
            Area::Commune(code) => &commune.insee_code == code,
            Area::Epci(siren) => commune.epci_siren.as_deref() == Some(siren),
            Area::Departement(code) => &commune.departement_code == code,
        }
    }
}

impl std::fmt::Display for Area {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Area::Commune(code) => write!(f, "commune:{code}"),
            Area::Epci(siren) => write!(f, "epci:{siren}"),
            Area::Departement(code) => write!(f, "departement:{code}"),
        }
    }
}

/// The communes, EPCI and départements an organisation answers for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Territory(pub Vec<Area>);

impl Territory {
    pub fn contains(&self, commune: &Commune) -> bool {
        self.0.iter().any(|area| area.contains(commune))
    }

    /// As stored: a JSON array of `kind:code` strings.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.codes()).unwrap_or_else(|_| "[]".into())
    }

    pub fn codes(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    pub fn from_json(value: &str) -> anyhow::Result<Self> {
        let codes: Vec<String> = serde_json::from_str(value)?;
        Ok(Territory(
            codes
                .iter()
                .map(|c| Area::parse(c).map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<_>>()?,
        ))
    }
}

/// Who acts, as established from a session cookie, an API token, or the command line.
#[derive(Debug, Clone)]
pub struct Actor {
    pub kind: ActorKind,
    pub role: Role,
    /// The organisation acted for (none for the operator) and its territory.
    pub organisation: Option<(String, Territory)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActorKind {
    User { id: String, email: String },
    Token { id: String, name: String },
}

impl Actor {
    /// How the history names this actor: kind and id.
    pub fn history_ref(&self) -> (&'static str, &str) {
        match &self.kind {
            ActorKind::User { id, .. } => ("user", id),
            ActorKind::Token { id, .. } => ("token", id),
        }
    }

    pub fn organisation_id(&self) -> Option<&str> {
        self.organisation.as_ref().map(|(id, _)| id.as_str())
    }

    fn is_token(&self) -> bool {
        matches!(self.kind, ActorKind::Token { .. })
    }
}

/// What an actor asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read an entry as its editors see it (drafts, withdrawn ones, its history).
    ReadEntry,
    CreateEntry,
    UpdateEntry,
    WithdrawEntry,
    RestoreEntry,
    ConfirmEntry,
    /// Upload a file of entries for an organisation.
    BulkUpsert,
    /// Invite people, create and revoke tokens, change the organisation's settings.
    ManageOrganisation,
    /// Take back all of an organisation's data (convention art. 6).
    ExportOrganisation,
    CreateOrganisation,
    /// Change an organisation's convention: its name, kind, territory, dates, commitments.
    SetConvention,
    WithdrawOrganisation,
    /// Set the review campaigns' dates.
    ManageCampaigns,
}

/// What the action is on.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// The platform as a whole (creating organisations, operators).
    Platform,
    Organisation(&'a str),
    /// An entry of `organisation`; `commune` is where it is (or will be, for a creation or a
    /// move), which must be in the actor's territory for creations and changes.
    Entry {
        organisation: &'a str,
        commune: Option<&'a Commune>,
    },
}

/// The permission rules, all of them: `Ok` when `actor` may do `action` on `target`, else the
/// one 403 whose words say nothing of the target.
pub fn can(actor: &Actor, action: Action, target: Target<'_>) -> Result<()> {
    if actor.role == Role::Operator {
        return Ok(());
    }
    let Some((own, territory)) = &actor.organisation else {
        return Err(Error::forbidden());
    };
    let allowed = match (action, target) {
        (
            Action::CreateOrganisation
            | Action::SetConvention
            | Action::WithdrawOrganisation
            | Action::ManageCampaigns,
            _,
        )
        | (_, Target::Platform) => false,
        (Action::ManageOrganisation, Target::Organisation(id)) => {
            id == own && actor.role == Role::Admin && !actor.is_token()
        }
        (Action::BulkUpsert | Action::ExportOrganisation, Target::Organisation(id)) => id == own,
        (_, Target::Organisation(_)) => false,
        (
            Action::CreateEntry | Action::UpdateEntry | Action::RestoreEntry,
            Target::Entry {
                organisation,
                commune,
            },
        ) => organisation == own && commune.is_some_and(|c| territory.contains(c)),
        (
            Action::ReadEntry | Action::WithdrawEntry | Action::ConfirmEntry,
            Target::Entry { organisation, .. },
        ) => organisation == own,
        (
            Action::BulkUpsert | Action::ManageOrganisation | Action::ExportOrganisation,
            Target::Entry { .. },
        ) => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(Error::forbidden())
    }
}

/// A password's argon2id hash (PHC string, random salt).
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(anyhow::anyhow!("hachage du mot de passe : {e}")))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// The rule for chosen passwords: long rather than complicated (ANSSI's advice for passwords
/// with a rate-limited login).
pub fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < 12 {
        return Err("12 caractères au moins".into());
    }
    if password.chars().count() > 256 {
        return Err("256 caractères au plus".into());
    }
    Ok(())
}

/// A new random secret (session cookie, token, invitation link): 256 bits, hex.
pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// How a secret is stored: its SHA-256 (a high-entropy secret needs no slow hash).
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Failed logins allowed per account in a quarter of an hour.
pub const LOGIN_FAILURES: usize = 5;
/// Failed logins allowed per client address in a quarter of an hour, whatever the accounts: a
/// town hall's staff share one address, so it is larger than one account's.
pub const LOGIN_FAILURES_PER_ADDRESS: usize = 20;
const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The limits a failed sign-in counts against, per e-mail and per client address: past
/// [`LOGIN_FAILURES`] in the window, sign-ins are refused before the password is even checked,
/// whichever instance answers (see [`crate::rate_limits`]).
pub fn login_limits(from: Option<IpAddr>, email: &str) -> Vec<crate::rate_limits::Limit> {
    let mut limits = vec![crate::rate_limits::Limit::new(
        format!("login:email:{}", email.trim().to_lowercase()),
        LOGIN_FAILURES,
        LOGIN_WINDOW,
    )];
    if let Some(ip) = from {
        limits.push(crate::rate_limits::Limit::new(
            format!("login:ip:{ip}"),
            LOGIN_FAILURES_PER_ADDRESS,
            LOGIN_WINDOW,
        ));
    }
    limits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("wrong horse battery", &hash));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn areas_parse_and_say_what_is_wrong() {
        assert_eq!(
            Area::parse("epci:246300701").unwrap(),
            Area::Epci("246300701".into())
        );
        assert_eq!(
            Area::parse("commune:63113").unwrap().to_string(),
            "commune:63113"
        );
        assert!(Area::parse("epci:12").unwrap_err().contains("9 chiffres"));
        assert!(Area::parse("region:84").is_err());
    }

    #[tokio::test]
    async fn logins_are_limited_per_account_and_address() {
        use crate::rate_limits::{record, within};
        let dir = tempfile::tempdir().unwrap();
        let store = crate::db::Store::connect(dir.path().join("a.db").to_str().unwrap())
            .await
            .unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let elsewhere: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..LOGIN_FAILURES {
            assert!(within(&store, &login_limits(Some(ip), "a@b.fr"))
                .await
                .unwrap());
            record(&store, &login_limits(Some(ip), "a@b.fr"))
                .await
                .unwrap();
        }
        assert!(!within(&store, &login_limits(Some(ip), "a@b.fr"))
            .await
            .unwrap());
        // The account is refused from anywhere; other accounts from that address are not, until
        // the address's own, larger threshold.
        assert!(!within(&store, &login_limits(Some(elsewhere), " A@b.fr"))
            .await
            .unwrap());
        assert!(within(&store, &login_limits(Some(ip), "c@b.fr"))
            .await
            .unwrap());
        for n in LOGIN_FAILURES..LOGIN_FAILURES_PER_ADDRESS {
            record(&store, &login_limits(Some(ip), &format!("other{n}@b.fr")))
                .await
                .unwrap();
        }
        assert!(!within(&store, &login_limits(Some(ip), "c@b.fr"))
            .await
            .unwrap());
        assert!(within(&store, &login_limits(Some(elsewhere), "c@b.fr"))
            .await
            .unwrap());
    }
}
