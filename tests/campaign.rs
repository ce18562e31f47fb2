//! A whole review campaign, end to end, as people do it over HTTP against the built server: the
//! operator (made with the command line) signs in, sets a campaign, invites the référent of an
//! organisation (created with the command line, its entries imported before the campaign); the
//! invitation link goes by e-mail (read from the outbox); the référent accepts it, lists the
//! entries to review, confirms two with « Rien n'a changé », edits one; the list shows each
//! entry's campaign state with its filter, and the operator's progress page the right counts.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use common::binary::{command, database_url, spawn_server};

const HEADER: &str = "source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description";

fn cli(dir: &Path, db: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = command(dir)
        .args(["--database-url", &database_url(db)])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run proximites");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A person's browser: the session cookie it was given, redirects not followed.
struct Person {
    client: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

struct Answer {
    status: u16,
    location: Option<String>,
    html: String,
}

impl Person {
    fn new(base: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
            cookie: None,
        }
    }

    async fn answer(&mut self, request: reqwest::RequestBuilder) -> Answer {
        let request = match &self.cookie {
            Some(cookie) => request.header("cookie", cookie),
            None => request,
        };
        let response = request.send().await.unwrap();
        if let Some(set) = response.headers().get("set-cookie") {
            self.cookie = Some(set.to_str().unwrap().split(';').next().unwrap().to_owned());
        }
        Answer {
            status: response.status().as_u16(),
            location: response
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned()),
            html: response.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Answer {
        let request = self.client.get(format!("{}{path}", self.base));
        self.answer(request).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(proximites::web::encode_query(form));
        self.answer(request).await
    }
}

/// The value of the hidden field `name` in `html`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..start + html[start..].find('"').unwrap()].replace("&quot;", "\"")
}

/// The row of the table cell that links to entry `name`, up to its end.
fn row_of<'h>(html: &'h str, name: &str) -> &'h str {
    let start = html
        .find(&format!(">{name}</a>"))
        .unwrap_or_else(|| panic!("no {name} in {html}"));
    &html[start..start + html[start..].find("</tr>").unwrap()]
}

/// The id of the entry `name` linked from a list page.
fn id_of(html: &str, name: &str) -> String {
    let end = html
        .find(&format!("\">{name}</a>"))
        .unwrap_or_else(|| panic!("no {name} in {html}"));
    let start = html[..end].rfind("/espace/fiches/").unwrap() + "/espace/fiches/".len();
    html[start..end].to_owned()
}

/// The entry ids linked from a list page, in order.
fn listed_ids(html: &str) -> Vec<String> {
    html.match_indices("<td><a href=\"/espace/fiches/")
        .map(|(i, m)| {
            let rest = &html[i + m.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisation_maintains_its_entries_through_a_campaign() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("campagne.db");
    let d = dir.path();
    cli(
        d,
        &db,
        &[
            "admin",
            "create-operator",
            "--email",
            "region@example.fr",
            "--password-stdin",
        ],
        Some("le mot de passe de la région\n"),
    );
    let organisation = cli(
        d,
        &db,
        &[
            "admin",
            "create-organisation",
            "--name",
            "Ville de Riom",
            "--kind",
            "commune",
            "--territory",
            "commune:63300",
            "--referent-name",
            "Claire Dupont",
            "--referent-email",
            "referente@riom.example.fr",
        ],
        None,
    );
    // Its entries, imported before the campaign (a national source, as the operator does).
    let rows = [
        ("r1", "Mairie de Riom", "3.1133", "45.8937"),
        ("r2", "Mairie annexe du Marthuret", "3.1150", "45.8920"),
        ("r3", "Maison des services", "3.1120", "45.8950"),
        ("r4", "Salle des fêtes", "3.1100", "45.8900"),
    ];
    let csv = std::iter::once(HEADER.to_owned())
        .chain(
            rows.iter()
                .map(|(r, name, lon, lat)| format!("{r},mairie,{name},,,,63300,{lon},{lat},,,,,,")),
        )
        .collect::<Vec<_>>()
        .join("\n");
    let file = d.join("riom.csv");
    std::fs::write(&file, csv).unwrap();
    cli(
        d,
        &db,
        &[
            "import",
            file.to_str().unwrap(),
            "--source",
            "Ville de Riom",
        ],
        None,
    );
    let server = spawn_server(d, Some(&db), false).await;

    // The operator signs in and sets the campaign (today within it).
    let mut operator = Person::new(&server.base);
    let login = operator.get("/espace/connexion").await;
    let csrf = hidden(&login.html, "csrf");
    let signed = operator
        .post(
            "/espace/connexion",
            &[
                ("csrf", &csrf),
                ("email", "region@example.fr"),
                ("password", "le mot de passe de la région"),
            ],
        )
        .await;
    assert_eq!(signed.status, 303, "{}", signed.html);
    let campaigns = operator.get("/espace/campagnes").await;
    let csrf = hidden(&campaigns.html, "csrf");
    let today = chrono::Utc::now().date_naive();
    let start = (today - chrono::Days::new(2)).to_string();
    let end = (today + chrono::Days::new(40)).to_string();
    let created = operator
        .post(
            "/espace/campagnes",
            &[
                ("csrf", &csrf),
                ("name", "Automne"),
                ("starts_on", &start),
                ("ends_on", &end),
            ],
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.html);

    // The operator invites the référent as the organisation's admin; the link goes by e-mail.
    let invited = operator
        .post(
            "/espace/equipe",
            &[
                ("csrf", &csrf),
                ("organisation", &organisation),
                ("email", "referente@riom.example.fr"),
                ("role", "admin"),
            ],
        )
        .await;
    assert_eq!(invited.status, 200, "{}", invited.html);
    let store = sqlx::SqlitePool::connect(&database_url(&db)).await.unwrap();
    let body: String = sqlx::query_scalar(
        "SELECT body FROM outbox WHERE recipient = 'referente@riom.example.fr'
         AND dedupe_key LIKE 'invitation:%'",
    )
    .fetch_one(&store)
    .await
    .unwrap();
    store.close().await;
    let link = body
        .split_whitespace()
        .find(|w| w.contains("/espace/invitation/"))
        .unwrap();
    let invitation = &link[link.find("/espace/").unwrap()..];

    // The référent accepts and is signed in.
    let mut admin = Person::new(&server.base);
    let form = admin.get(invitation).await;
    assert_eq!(form.status, 200);
    let accepted = admin
        .post(
            invitation,
            &[
                ("csrf", &hidden(&form.html, "csrf")),
                ("password", "un mot de passe bien long"),
                ("confirmation", "un mot de passe bien long"),
            ],
        )
        .await;
    assert_eq!(accepted.status, 303, "{}", accepted.html);
    assert!(admin.cookie.is_some());

    // Everything is to review.
    let list = admin.get("/espace?campagne=a_revoir").await;
    assert_eq!(list.status, 200);
    assert!(
        list.html.contains("Campagne de mise à jour « Automne »"),
        "{}",
        list.html
    );
    let ids = listed_ids(&list.html);
    assert_eq!(ids.len(), 4, "{}", list.html);
    assert!(row_of(&list.html, "Mairie de Riom").contains("À revoir"));
    let csrf = hidden(&list.html, "csrf");

    // Two confirmed from the list, which it comes back to.
    for name in ["Mairie de Riom", "Maison des services"] {
        let row = row_of(&list.html, name);
        let action_at = row.find("action=\"").unwrap() + 8;
        let action = &row[action_at..action_at + row[action_at..].find('"').unwrap()];
        let confirmed = admin
            .post(
                action,
                &[("csrf", &csrf), ("retour", "/espace?campagne=a_revoir")],
            )
            .await;
        assert_eq!(confirmed.status, 303, "{}", confirmed.html);
        assert_eq!(
            confirmed.location.as_deref(),
            Some("/espace?campagne=a_revoir")
        );
    }

    // One edited through its form.
    let salle_id = id_of(&list.html, "Salle des fêtes");
    let edit = admin.get(&format!("/espace/fiches/{salle_id}")).await;
    assert_eq!(edit.status, 200);
    let saved = admin
        .post(
            &format!("/espace/fiches/{salle_id}"),
            &[
                ("csrf", &csrf),
                ("etag", &hidden(&edit.html, "etag")),
                ("typology", "mairie"),
                ("name", "Salle des fêtes Jean-Jaurès"),
                ("insee_code", "63300"),
                ("lon", "3.1100"),
                ("lat", "45.8900"),
                ("phone", "04 73 38 99 94"),
                ("wheelchair", "yes"),
            ],
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.html);

    // The list tells each state, and filters on it.
    let all = admin.get("/espace").await;
    assert!(row_of(&all.html, "Mairie de Riom").contains("Confirmée sans changement"));
    assert!(row_of(&all.html, "Maison des services").contains("Confirmée sans changement"));
    assert!(row_of(&all.html, "Salle des fêtes Jean-Jaurès").contains("Mise à jour"));
    assert!(row_of(&all.html, "Mairie annexe du Marthuret").contains("À revoir"));
    for (filter, expected) in [
        ("a_revoir", vec!["Mairie annexe du Marthuret"]),
        ("confirmee", vec!["Mairie de Riom", "Maison des services"]),
        ("mise_a_jour", vec!["Salle des fêtes Jean-Jaurès"]),
    ] {
        let page = admin.get(&format!("/espace?campagne={filter}")).await;
        let names: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|n| page.html.contains(&format!(">{n}</a>")))
            .collect();
        assert_eq!(names, expected, "{filter}");
        assert_eq!(
            listed_ids(&page.html).len(),
            expected.len(),
            "{filter}: {}",
            page.html
        );
    }

    // The operator's progress: 4 entries, 2 confirmed, 1 updated, 1 to review, 75 %.
    let progress = operator.get("/espace/campagnes").await;
    let riom = row_of_heading(&progress.html, "Ville de Riom");
    assert_eq!(
        cells(riom),
        vec!["4", "2", "1", "1", "75 %"],
        "{}",
        progress.html
    );
    assert!(
        progress.html.contains("(3 fiches revues sur 4)"),
        "{}",
        progress.html
    );
    // The référent sees the same progress, for its organisation only.
    let own = admin.get("/espace/campagnes").await;
    assert_eq!(
        cells(row_of_heading(&own.html, "Ville de Riom")),
        vec!["4", "2", "1", "1", "75 %"]
    );
}

/// The table row whose heading cell is `name`.
fn row_of_heading<'h>(html: &'h str, name: &str) -> &'h str {
    let start = html
        .find(&format!("<th scope=\"row\">{name}</th>"))
        .unwrap_or_else(|| panic!("no row {name} in {html}"));
    &html[start..start + html[start..].find("</tr>").unwrap()]
}

/// The texts of a row's `<td>` cells.
fn cells(row: &str) -> Vec<&str> {
    row.split("<td>")
        .skip(1)
        .map(|cell| &cell[..cell.find("</td>").unwrap()])
        .collect()
}
