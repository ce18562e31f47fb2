//! Citizen reports of an error in an entry (« Signaler une erreur »): what a report is, how it is
//! checked at the boundary, the signed form token that keeps robots out without any third
//! party, and its storage for the organisation responsible for the entry.

pub mod store;

use std::net::IpAddr;
use std::time::Duration;

use chrono::Utc;
use keyed_digest::sign;

use crate::error::{Error, FieldError, Result};

/// Longest report accepted, in characters.
pub const MAX_MESSAGE: usize = 2_000;
/// A form filled faster than this was not filled by a person.
const MIN_FILL_TIME: i64 = 3;
/// A form older than this is stale (and a replayed token is useless after it).
const MAX_FORM_AGE: i64 = 6 * 3_600;
/// Reports one address may send per hour.
const REPORTS_PER_HOUR: usize = 5;

/// A report as typed by a citizen, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReport {
    pub message: String,
    pub email: Option<String>,
}

/// The raw fields of the report form.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ReportForm {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub email: String,
    /// The signed moment the form was shown (see [`FormToken`]).
    #[serde(default)]
    pub jeton: String,
    /// A field people never see (hidden by the stylesheet) and robots fill in.
    #[serde(default)]
    pub site: String,
}

impl ReportForm {
    /// The report, or every field that is wrong. `token` checks the form's age and signature.
    pub fn parse(&self, token: &FormToken, now: i64) -> Result<NewReport> {
        let mut errors = Vec::new();
        let message = self.message.trim();
        if message.chars().count() < 5 {
            errors.push(FieldError::new(
                "message",
                "Décrivez l'erreur en quelques mots (5 caractères au moins).",
            ));
        } else if message.chars().count() > MAX_MESSAGE {
            errors.push(FieldError::new(
                "message",
                format!("{MAX_MESSAGE} caractères au plus."),
            ));
        } else if message.matches("http").count() > 2 {
            errors.push(FieldError::new("message", "Trop de liens dans le message."));
        }
        let email = self.email.trim();
        let email = if email.is_empty() {
            None
        } else if is_plausible_email(email) {
            Some(email.to_owned())
        } else {
            errors.push(FieldError::new(
                "email",
                "Adresse électronique invalide (exemple : nom@exemple.fr), ou laissez le champ vide.",
            ));
            None
        };
        if !self.site.is_empty() || !token.accepts(&self.jeton, now) {
            errors.push(FieldError::new(
                "jeton",
                "Le formulaire a expiré ou a été envoyé trop vite : rechargez la page et renvoyez-le.",
            ));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        Ok(NewReport {
            message: message.to_owned(),
            email,
        })
    }
}

fn is_plausible_email(value: &str) -> bool {
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && value.len() <= 254
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '<' || c == '>')
}

/// Signs the moment a form is shown with the instance's secret, so a report proves its form
/// was fetched from us, some seconds and not hours ago.
#[derive(Clone)]
pub struct FormToken {
    secret: Vec<u8>,
}

impl FormToken {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.to_vec(),
        }
    }

    /// The token of a form shown at `now` (Unix seconds).
    pub fn issue(&self, now: i64) -> String {
        format!("{now}.{}", sign(&self.secret, now))
    }

    pub fn accepts(&self, token: &str, now: i64) -> bool {
        let Some((issued, signature)) = token.split_once('.') else {
            return false;
        };
        let Ok(issued) = issued.parse::<i64>() else {
            return false;
        };
        let age = now - issued;
        (MIN_FILL_TIME..=MAX_FORM_AGE).contains(&age) && sign(&self.secret, issued) == signature
    }
}

/// The limit each citizen report counts against: [`REPORTS_PER_HOUR`] per client address,
/// whichever instance answers (see [`crate::rate_limits`]).
pub fn report_limit(from: IpAddr) -> crate::rate_limits::Limit {
    crate::rate_limits::Limit::new(
        format!("report:{from}"),
        REPORTS_PER_HOUR,
        Duration::from_secs(3_600),
    )
}

/// Now in Unix seconds.
pub fn unix_now() -> i64 {
    Utc::now().timestamp()
}

/// A keyed digest: SHA-256 over secret, value and secret again (no HMAC crate needed for a
/// token that only has to be unforgeable without the secret).
mod keyed_digest {
    use sha2::{Digest, Sha256};

    pub fn sign(secret: &[u8], value: i64) -> String {
        let mut h = Sha256::new();
        h.update(secret);
        h.update(value.to_le_bytes());
        h.update(secret);
        hex::encode(&h.finalize()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(message: &str, email: &str, jeton: String) -> ReportForm {
        ReportForm {
            message: message.into(),
            email: email.into(),
            jeton,
            site: String::new(),
        }
    }

    #[test]
    fn a_report_needs_a_fresh_signed_form_and_says_which_field_is_wrong() {
        let token = FormToken::new(b"secret");
        let shown = 1_000_000;
        let ok = form("Le numéro a changé", "", token.issue(shown));
        assert_eq!(
            ok.parse(&token, shown + 10).unwrap().message,
            "Le numéro a changé"
        );
        // Too fast, too late, forged.
        assert!(ok.parse(&token, shown + 1).is_err());
        assert!(ok.parse(&token, shown + MAX_FORM_AGE + 1).is_err());
        let forged = form("Le numéro a changé", "", format!("{shown}.00"));
        assert!(forged.parse(&token, shown + 10).is_err());
        let other_secret = FormToken::new(b"other");
        assert!(ok.parse(&other_secret, shown + 10).is_err());

        let Err(Error::Invalid(errors)) =
            form("x", "pas-une-adresse", token.issue(shown)).parse(&token, shown + 10)
        else {
            panic!("invalid");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["message", "email"]);
    }

    #[test]
    fn the_hidden_field_filled_in_is_a_robot() {
        let token = FormToken::new(b"secret");
        let mut robot = form("Le numéro a changé", "", token.issue(0));
        robot.site = "http://spam.example".into();
        assert!(robot.parse(&token, 10).is_err());
    }

    #[tokio::test]
    async fn one_address_sends_five_reports_an_hour() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::db::Store::connect(dir.path().join("r.db").to_str().unwrap())
            .await
            .unwrap();
        let from: IpAddr = "192.0.2.1".parse().unwrap();
        let mut tx = store.begin().await.unwrap();
        for _ in 0..5 {
            assert!(crate::rate_limits::take(&mut tx, &report_limit(from))
                .await
                .unwrap());
        }
        assert!(!crate::rate_limits::take(&mut tx, &report_limit(from))
            .await
            .unwrap());
        let elsewhere = report_limit("192.0.2.2".parse().unwrap());
        assert!(crate::rate_limits::take(&mut tx, &elsewhere).await.unwrap());
    }
}
