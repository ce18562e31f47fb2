//! E-mails to référents through a durable outbox: messages are rows written with what causes
//! them (a campaign's start, its last week, a citizen report), and the server sends them over
//! SMTP when it answers; while it is down they wait, and sending resumes.

use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, Utc};
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::db::{Store, Tx};
use crate::error::Result;
use crate::services::ServiceId;
use crate::{in_tx, on_engine};

/// Where and as whom to send.
#[derive(Clone)]
pub struct Mailer {
    /// `smtp://[user:password@]host[:port][?tls=required|opportunistic]` or `smtps://…`, as
    /// lettre reads it: plain SMTP (a local relay), STARTTLS, or TLS from the start, with
    /// credentials when given.
    url: String,
    pub from: String,
}

impl std::fmt::Debug for Mailer {
    // The URL may carry a password: never in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Checks `url` and `from` now, so that a wrong option stops the server at start.
    pub fn parse(url: &str, from: &str) -> anyhow::Result<Self> {
        let shown = url::Url::parse(url)
            .map(|mut u| {
                let _ = u.set_password(None);
                u.to_string()
            })
            .unwrap_or_else(|_| "?".into());
        AsyncSmtpTransport::<Tokio1Executor>::from_url(url).map_err(|e| {
            anyhow::anyhow!(
                "--smtp-url « {shown} » : {e} (smtp://hôte:port, smtp://utilisateur:mot-de-passe@hôte:587?tls=required ou smtps://…)"
            )
        })?;
        from.parse::<Mailbox>()
            .map_err(|e| anyhow::anyhow!("--mail-from « {from} » : {e}"))?;
        Ok(Self {
            url: url.to_owned(),
            from: from.to_owned(),
        })
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>> {
        Ok(AsyncSmtpTransport::<Tokio1Executor>::from_url(&self.url)
            .map_err(|e| anyhow::anyhow!("SMTP : {e}"))?
            .timeout(Some(std::time::Duration::from_secs(10)))
            .build())
    }
}

/// Puts a message in the outbox, once per `key` (a second enqueue of the same key does nothing).
pub async fn enqueue(tx: &mut Tx, key: &str, to: &str, subject: &str, body: &str) -> Result<()> {
    in_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO outbox (id, dedupe_key, recipient, subject, body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(format!("mail-{}", ServiceId::generate()))
        .bind(key)
        .bind(to)
        .bind(subject)
        .bind(body)
        .bind(Utc::now())
        .execute(conn)
        .await
        .map(drop)?
    });
    Ok(())
}

/// How long an instance holds the e-mails it took to send: longer than sending a round takes.
const SENDING_LEASE: Duration = Duration::from_secs(600);
/// E-mails taken per round.
const ROUND: i64 = 100;

/// An e-mail taken to send: id, recipient, subject, body.
pub type Taken = (String, String, String, String);

/// Takes up to [`ROUND`] e-mails waiting and not taken by another instance (or whose instance's
/// lease lapsed: it died while sending), oldest first, and holds them for [`SENDING_LEASE`]. On
/// PostgreSQL the rows another instance is taking are skipped (`FOR UPDATE SKIP LOCKED`); SQLite
/// serialises the two statements. The outer condition is checked again on the row as updated,
/// so that an e-mail is never taken twice.
pub async fn take_round(store: &Store) -> Result<Vec<Taken>> {
    let now = Utc::now();
    let sql = format!(
        "UPDATE outbox SET claimed_until = $1
         WHERE id IN (SELECT id FROM outbox
                      WHERE sent_at IS NULL AND (claimed_until IS NULL OR claimed_until < $2)
                      ORDER BY created_at, id LIMIT $3{})
           AND sent_at IS NULL AND (claimed_until IS NULL OR claimed_until < $2)
         RETURNING id, recipient, subject, body, created_at",
        store.skip_locked()
    );
    let mut taken: Vec<(String, String, String, String, DateTime<Utc>)> =
        on_engine!(store, |db| sqlx::query_as(&sql)
            .bind(now + chrono::Duration::from_std(SENDING_LEASE).unwrap_or_default())
            .bind(now)
            .bind(ROUND)
            .fetch_all(db)
            .await?);
    taken.sort_by(|a, b| (a.4, &a.0).cmp(&(b.4, &b.0)));
    Ok(taken
        .into_iter()
        .map(|(id, to, subject, body, _)| (id, to, subject, body))
        .collect())
}

/// Gives back e-mails taken and not sent, for the next round of any instance.
async fn release(store: &Store, ids: &[String]) -> Result<()> {
    for id in ids {
        on_engine!(store, |db| sqlx::query(
            "UPDATE outbox SET claimed_until = NULL WHERE id = $1 AND sent_at IS NULL"
        )
        .bind(id)
        .execute(db)
        .await
        .map(drop)?);
    }
    Ok(())
}

/// Sends what waits in the outbox, oldest first, each e-mail once whatever the number of
/// instances (see [`take_round`]); stops at the first failure (the server is likely down: the
/// rest waits for the next round). How many were sent.
pub async fn send_pending(store: &Store, mailer: &Mailer) -> Result<usize> {
    let pending = take_round(store).await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let transport = match mailer.transport() {
        Ok(transport) => transport,
        Err(error) => {
            let ids: Vec<String> = pending.into_iter().map(|p| p.0).collect();
            release(store, &ids).await?;
            return Err(error);
        }
    };
    let mut sent = 0;
    let mut pending = pending.into_iter();
    while let Some((id, to, subject, body)) = pending.next() {
        let redacted = redact_one_time_links(&body);
        let message = to
            .parse::<Mailbox>()
            .map_err(|e| e.to_string())
            .and_then(|to| {
                Message::builder()
                    .from(
                        mailer
                            .from
                            .parse()
                            .map_err(|e: lettre::address::AddressError| e.to_string())?,
                    )
                    .to(to)
                    .subject(subject)
                    .body(body)
                    .map_err(|e| e.to_string())
            });
        let outcome = match message {
            Ok(message) => transport
                .send(message)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                // Once sent, the one-time link lives only in the recipient's mailbox.
                on_engine!(store, |db| sqlx::query(
                    "UPDATE outbox SET sent_at = $1, attempts = attempts + 1, body = $2, \
                     claimed_until = NULL WHERE id = $3",
                )
                .bind(Utc::now())
                .bind(&redacted)
                .bind(&id)
                .execute(db)
                .await
                .map(drop)?);
                sent += 1;
            }
            Err(error) => {
                tracing::warn!(%error, mail = %id, "e-mail not sent, kept in the outbox");
                on_engine!(store, |db| sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $1, \
                     claimed_until = NULL WHERE id = $2",
                )
                .bind(&error)
                .bind(&id)
                .execute(db)
                .await
                .map(drop)?);
                let rest: Vec<String> = pending.map(|p| p.0).collect();
                release(store, &rest).await?;
                break;
            }
        }
    }
    Ok(sent)
}

/// Where one-time links (invitations) start in a body: their secret follows.
const ONE_TIME_LINK: &str = "/espace/invitation/";
/// What a one-time link's secret becomes in the outbox once the message was sent.
const REDACTED: &str = "[lien retiré après envoi / link removed once sent]";

/// `body` with the secret of every one-time link replaced by [`REDACTED`]: the database keeps
/// only their hashes (a copy of the database must not hand over accounts).
pub fn redact_one_time_links(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.find(ONE_TIME_LINK) {
        let (before, after) = rest.split_at(at + ONE_TIME_LINK.len());
        out.push_str(before);
        let secret = after
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(after.len());
        if secret > 0 {
            out.push_str(REDACTED);
        }
        rest = &after[secret..];
    }
    out.push_str(rest);
    out
}

/// Redacts the one-time links of messages sent before sending redacted them.
pub async fn redact_sent(store: &Store) -> Result<u64> {
    let sent: Vec<(String, String)> = on_engine!(store, |db| sqlx::query_as(
        "SELECT id, body FROM outbox WHERE sent_at IS NOT NULL AND body LIKE $1",
    )
    .bind(format!("%{ONE_TIME_LINK}%"))
    .fetch_all(db)
    .await)?;
    let mut redacted = 0;
    for (id, body) in sent {
        let clean = redact_one_time_links(&body);
        if clean != body {
            on_engine!(store, |db| sqlx::query(
                "UPDATE outbox SET body = $1 WHERE id = $2"
            )
            .bind(&clean)
            .bind(&id)
            .execute(db)
            .await
            .map(|r| r.rows_affected()))?;
            redacted += 1;
        }
    }
    Ok(redacted)
}

/// A body in French, then in English, separated so that either reader finds theirs.
fn bilingual(fr: &str, en: &str) -> String {
    format!("{fr}\n\n-- English --\n\n{en}")
}

/// Enqueues the campaign e-mails due on `today`: to each référent of an organisation with
/// published entries, at a campaign's start and in its last week (once each: the dedupe keys
/// name the campaign, the moment and the organisation).
pub async fn schedule_campaigns(store: &Store, public_url: &str, today: NaiveDate) -> Result<()> {
    let campaigns: Vec<(String, String, NaiveDate, NaiveDate)> = on_engine!(store, |db| {
        sqlx::query_as(
        "SELECT id, name, starts_on, ends_on FROM campaigns WHERE starts_on <= $1 AND ends_on >= $1",
    )
    .bind(today)
    .fetch_all(db).await
    })?;
    if campaigns.is_empty() {
        return Ok(());
    }
    let referents: Vec<(String, String, String)> = on_engine!(store, |db| sqlx::query_as(
        "SELECT o.id, o.name, o.referent_email FROM organisations o
         WHERE o.referent_email IS NOT NULL AND o.withdrawn_at IS NULL
         AND EXISTS (SELECT 1 FROM services s WHERE s.source_id = o.id AND s.status = 'published')",
    )
    .fetch_all(db)
    .await)?;
    let mut tx = store.begin_writing().await?;
    for (id, name, starts_on, ends_on) in campaigns {
        let last_week = ends_on.checked_sub_days(Days::new(7)).unwrap_or(starts_on);
        let (start_fr, end_fr) = (starts_on.format("%d/%m/%Y"), ends_on.format("%d/%m/%Y"));
        let (start_en, end_en) = (starts_on.format("%Y-%m-%d"), ends_on.format("%Y-%m-%d"));
        for (organisation, organisation_name, email) in &referents {
            enqueue(
                &mut tx,
                &format!("campaign:{id}:start:{organisation}"),
                email,
                &format!("Proximités : la campagne « {name} » commence / the review campaign “{name}” starts"),
                &bilingual(
                    &format!(
                        "Bonjour,\n\nLa campagne de mise à jour « {name} » a lieu du {start_fr} au {end_fr}.\nMerci de vérifier les fiches de {organisation_name} : confirmez celles qui n'ont pas changé (« Rien n'a changé »), corrigez les autres.\n\n{public_url}/espace?campagne=a_revoir\n"
                    ),
                    &format!(
                        "Hello,\n\nThe review campaign “{name}” runs from {start_en} to {end_en}.\nPlease check the entries of {organisation_name}: confirm those that did not change (“Rien n'a changé”), correct the others.\n\n{public_url}/espace?campagne=a_revoir\n"
                    ),
                ),
            )
            .await?;
            if today >= last_week {
                enqueue(
                    &mut tx,
                    &format!("campaign:{id}:reminder:{organisation}"),
                    email,
                    &format!("Proximités : dernière semaine de la campagne « {name} » / last week of the review campaign"),
                    &bilingual(
                        &format!(
                            "Bonjour,\n\nLa campagne « {name} » se termine le {end_fr}.\nL'avancement de {organisation_name} et les fiches qui restent à revoir :\n\n{public_url}/espace/campagnes\n{public_url}/espace?campagne=a_revoir\n"
                        ),
                        &format!(
                            "Hello,\n\nThe campaign “{name}” ends on {end_en}.\nThe progress of {organisation_name} and the entries still to review:\n\n{public_url}/espace/campagnes\n{public_url}/espace?campagne=a_revoir\n"
                        ),
                    ),
                )
                .await?;
            }
        }
    }
    tx.commit().await
}

/// Tells the référent of the entry's organisation that a citizen reported an error on it, in
/// the transaction that records the report.
pub async fn notify_report(tx: &mut Tx, public_url: &str, report: &str) -> Result<()> {
    let row: Option<(String, String, String)> = in_tx!(tx, |conn| sqlx::query_as(
        "SELECT o.referent_email, s.name, r.message FROM reports r
         JOIN organisations o ON o.id = r.organisation_id JOIN services s ON s.id = r.service_id
         WHERE r.id = $1 AND o.referent_email IS NOT NULL",
    )
    .bind(report)
    .fetch_optional(conn)
    .await)?;
    if let Some((email, entry, message)) = row {
        enqueue(
            tx,
            &format!("report:{report}"),
            &email,
            &format!("Proximités : signalement sur « {entry} » / an error reported"),
            &bilingual(
                &format!("Bonjour,\n\nUn citoyen signale une erreur sur la fiche « {entry} » :\n\n{message}\n\nLe signalement attend dans la file de votre organisation :\n{public_url}/espace/signalements\n"),
                &format!("Hello,\n\nA citizen reports an error on the entry “{entry}” (message above).\nThe report waits in your organisation's queue:\n{public_url}/espace/signalements\n"),
            ),
        )
        .await?;
    }
    Ok(())
}

/// The invitation link, to the person invited from the pages, in the transaction that records
/// the invitation. `secret` is the link's, which only this e-mail carries.
pub async fn invitation(
    tx: &mut Tx,
    public_url: &str,
    email: &str,
    organisation: &str,
    role: crate::accounts::Role,
    secret: &str,
) -> Result<()> {
    let link = format!("{public_url}/espace/invitation/{secret}");
    let (role_fr, role_en) = match role {
        crate::accounts::Role::Admin => ("administratrice ou administrateur", "administrator"),
        _ => ("contributrice ou contributeur", "editor"),
    };
    enqueue(
        tx,
        &format!("invitation:{}", crate::accounts::digest(secret)),
        email,
        &format!("Proximités : invitation pour {organisation} / invitation"),
        &bilingual(
            &format!("Bonjour,\n\nVous êtes invité·e comme {role_fr} des fiches de {organisation} sur Proximités.\nChoisissez votre mot de passe sur cette page (le lien vaut {} jours) :\n\n{link}\n", crate::accounts::store::INVITATION_DAYS),
            &format!("Hello,\n\nYou are invited as {role_en} of the entries of {organisation} on Proximités.\nChoose your password on this page (the link is valid for {} days):\n\n{link}\n", crate::accounts::store::INVITATION_DAYS),
        ),
    )
    .await
}

/// The server's mail round, every `every`: enqueue what is due, send what waits.
pub async fn run(
    store: Store,
    mailer: Option<Mailer>,
    public_url: String,
    every: std::time::Duration,
) {
    match redact_sent(&store).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(messages = n, "one-time links removed from sent e-mails"),
        Err(error) => tracing::warn!(%error, "sent e-mails not redacted"),
    }
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Err(error) = schedule_campaigns(&store, &public_url, Utc::now().date_naive()).await {
            tracing::warn!(%error, "campaign e-mails not scheduled");
        }
        if let Some(mailer) = &mailer {
            match send_pending(&store, mailer).await {
                Ok(0) => {}
                Ok(sent) => tracing::info!(sent, "e-mails sent"),
                Err(error) => tracing::warn!(%error, "outbox not processed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{redact_one_time_links, Mailer};

    #[test]
    fn one_time_links_are_redacted_and_nothing_else() {
        let body = "Lien :\n\nhttps://a.fr/espace/invitation/0123abcd\nFin /espace/invitation/ et \
                    https://a.fr/espace/invitation/ff.";
        let clean = redact_one_time_links(body);
        assert!(
            !clean.contains("0123abcd") && !clean.contains("/ff."),
            "{clean}"
        );
        assert!(clean.starts_with("Lien :\n\nhttps://a.fr/espace/invitation/[lien retiré"));
        assert!(clean.contains("Fin /espace/invitation/ et"));
        assert_eq!(redact_one_time_links(&clean), clean);
        assert_eq!(redact_one_time_links("Bonjour é"), "Bonjour é");
    }

    #[test]
    fn smtp_urls_are_checked_at_start_and_never_show_a_password() {
        let from = "Proximités <ne-pas-repondre@example.fr>";
        for url in [
            "smtp://127.0.0.1:2525",
            "smtp://relais.example.fr",
            "smtp://moi:secret@smtp.example.fr:587?tls=required",
            "smtps://moi:secret@smtp.example.fr",
        ] {
            assert!(Mailer::parse(url, from).is_ok(), "{url}");
        }
        let wrong = Mailer::parse("http://moi:secret@smtp.example.fr", from)
            .unwrap_err()
            .to_string();
        assert!(
            wrong.contains("--smtp-url") && !wrong.contains("secret"),
            "{wrong}"
        );
        assert!(Mailer::parse("smtp://relais.example.fr", "pas une adresse").is_err());
        let shown = format!(
            "{:?}",
            Mailer::parse("smtps://moi:secret@h.example.fr", from).unwrap()
        );
        assert!(!shown.contains("secret"), "{shown}");
    }
}
