//! Printed directories (issue 7): the `proximites directory` command on the Auvergne demo, its
//! PDF read back with poppler-utils (pdfinfo, pdftotext, pdffonts, pdftoppm), bad input, and
//! the jobs API with its pages.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use proximites::directory::content::collation_key;
use tower::ServiceExt;

const BIN: &str = env!("CARGO_BIN_EXE_proximites");
/// Clermont Auvergne Métropole: 21 communes, 21 town halls in the demo.
const EPCI: &str = "epci:246300701";
/// The command for the EPCI's guide of town halls, before its output options.
const TOWN_HALL_GUIDE: [&str; 9] = [
    "directory",
    "--in",
    EPCI,
    "--typology",
    "mairie",
    "--publisher",
    "Clermont Auvergne Métropole",
    "--date",
    "2026-11-24",
];

fn tool(name: &str, args: &[&str]) -> String {
    let output = Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} (poppler-utils) is needed: {e}"));
    assert!(
        output.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `proximites --database-url DB ARGS…` → (success, stdout, stderr).
fn cli(database: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> (bool, String, String) {
    cli_with(database, args, &[])
}

/// [`cli`] with environment variables.
fn cli_with(
    database: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let output = Command::new(BIN)
        .arg("--database-url")
        .arg(database)
        .args(args)
        .env_remove("PROXIMITES_PUBLIC_URL")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn info(pdf: &Path) -> String {
    tool("pdfinfo", &[pdf.to_str().unwrap()])
}

fn info_field<'a>(info: &'a str, field: &str) -> &'a str {
    info.lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .map(|v| v.trim_start_matches(':').trim())
        })
        .unwrap_or_else(|| panic!("{field} missing from pdfinfo:\n{info}"))
}

/// The text of each page (pdftotext separates pages with form feeds).
fn pages(pdf: &Path) -> Vec<String> {
    let text = tool("pdftotext", &["-enc", "UTF-8", pdf.to_str().unwrap(), "-"]);
    let mut pages: Vec<String> = text.split('\u{c}').map(str::to_owned).collect();
    if pages.last().is_some_and(|p| p.trim().is_empty()) {
        pages.pop();
    }
    pages
}

fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Occurrences of `name` in `text` not followed by more of a name (« Mairie de Riom » is not
/// in « Mairie de Riom-ès-Montagnes »).
fn occurrences(text: &str, name: &str) -> usize {
    text.match_indices(name)
        .filter(|(at, _)| {
            !text[at + name.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '-')
        })
        .count()
}

/// The text of each page as laid out (`pdftotext -layout`): a contents or index line keeps its
/// page numbers on the same line, where the drawn leader leaves a run of spaces.
fn layout_pages(pdf: &Path) -> Vec<String> {
    let text = tool(
        "pdftotext",
        &["-layout", "-enc", "UTF-8", pdf.to_str().unwrap(), "-"],
    );
    let mut pages: Vec<String> = text.split('\u{c}').map(str::to_owned).collect();
    if pages.last().is_some_and(|p| p.trim().is_empty()) {
        pages.pop();
    }
    pages
}

/// A line of a table of contents or an index, from [`layout_pages`]: its text and its pages
/// (« 12 », « 12–14, 20 »).
fn leader_line(line: &str) -> Option<(String, Vec<u32>)> {
    // Typst joins the page number to its leader with a word joiner.
    let line = line.replace('\u{2060}', "");
    let (head, tail) = line.trim().rsplit_once("  ")?;
    let mut numbers = Vec::new();
    for part in tail.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('–') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                numbers.extend(a..=b);
            }
            None => numbers.push(part.parse().ok()?),
        }
    }
    let text = head.trim();
    (!numbers.is_empty() && !text.is_empty()).then(|| (text.to_owned(), numbers))
}

/// The published town halls of the EPCI, by name.
async fn town_halls(
    store: &proximites::db::Store,
    reference: &proximites::import::Reference,
) -> Vec<String> {
    let rows: Vec<(String, String)> = proximites::on_engine!(&store, |db| sqlx::query_as(
        "SELECT name, insee_code FROM services WHERE typology_code = 'mairie' AND status = 'published'",
    )
    .fetch_all(db).await)
    .unwrap();
    rows.into_iter()
        .filter(|(_, code)| {
            let code = proximites::territory::InseeCode::parse(code).unwrap();
            reference
                .locator
                .commune(&code)
                .unwrap()
                .epci_siren
                .as_deref()
                == Some("246300701")
        })
        .map(|(name, _)| name)
        .collect()
}

fn test_output() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-output");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Reads back an A5 booklet of the EPCI's town halls: size, page count, tags, fonts, cover,
/// useful numbers, every entry once, the contents' and the indexes' page numbers, the back
/// cover. Returns the pages' text and the index of the first body page.
fn check_town_hall_booklet(pdf: &Path, names: &[String]) -> (Vec<String>, usize) {
    // pdfinfo: A5, a multiple of 4 pages, tagged.
    let info = info(pdf);
    let page_count: usize = info_field(&info, "Pages").parse().unwrap();
    assert_eq!(page_count % 4, 0, "{info}");
    assert!(
        info_field(&info, "Page size").starts_with("419.528 x 595.276 pts"),
        "{info}"
    );
    assert_eq!(info_field(&info, "Tagged"), "yes");
    assert!(info_field(&info, "Title").contains("Guide des services publics"));

    // pdffonts: every font embedded.
    let fonts = tool("pdffonts", &[pdf.to_str().unwrap()]);
    let rows: Vec<&str> = fonts.lines().skip(2).collect();
    assert!(!rows.is_empty(), "{fonts}");
    for row in &rows {
        // name type encoding emb sub uni object ID: the emb column is the 4th from the end.
        let columns: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            columns[columns.len() - 5],
            "yes",
            "font not embedded: {row}"
        );
    }

    let text = pages(pdf);
    assert_eq!(text.len(), page_count);
    let cover = squash(&text[0]);
    assert!(cover.contains("À jour au 24 novembre 2026"), "{cover}");
    assert!(cover.contains("Clermont Auvergne Métropole"));
    assert!(
        cover.contains("Aubière") && cover.contains("Royat"),
        "{cover}"
    );
    let useful = squash(&text[1]);
    for number in ["15", "17", "18", "112", "114"] {
        assert!(useful.contains(number), "{useful}");
    }

    // The body: from the first section to the index.
    let find = |needle: &str, from: usize| {
        (from..text.len())
            .find(|&p| text[p].lines().any(|l| l.trim() == needle))
            .unwrap_or_else(|| panic!("« {needle} » not found"))
    };
    let contents = find("Sommaire", 0);
    let index = find("Index alphabétique", contents + 1);
    let body_start = contents + 1;
    let body: String = text[body_start..index].join("\n");
    let body = squash(&body);
    for name in names {
        let expected = names.iter().filter(|n| *n == name).count();
        assert_eq!(occurrences(&body, name), expected, "« {name} » in the body");
    }
    assert!(body.contains("Mairie"), "typology label shown");
    assert!(body.contains("lun.") && body.contains("Vérifié le") || body.contains("Mis à jour le"));

    // The table of contents points to pages that hold those sections.
    let layout = layout_pages(pdf);
    assert_eq!(layout.len(), page_count);
    let toc: Vec<(String, Vec<u32>)> = layout[contents..body_start]
        .iter()
        .flat_map(|p| p.lines())
        .filter_map(leader_line)
        .collect();
    assert!(toc.len() >= 2, "{toc:?}");
    for (title, numbers) in &toc {
        let page = numbers[0] as usize;
        assert!(
            squash(&text[page - 1]).contains(title.as_str()),
            "TOC « {title} » → page {page}: {}",
            text[page - 1]
        );
    }
    assert!(toc.iter().any(|(t, _)| t.contains("Mairie")), "{toc:?}");

    // The alphabetical index: sorted, each entry pointing to the page that holds it.
    let communes = find("Index par commune", index);
    let lines: Vec<(String, Vec<u32>)> = layout[index..=communes]
        .iter()
        .flat_map(|p| p.lines())
        .take_while(|l| l.trim() != "Index par commune")
        .filter_map(leader_line)
        .collect();
    assert!(lines.len() >= names.len(), "{lines:?}");
    let keys: Vec<_> = lines.iter().map(|(t, _)| collation_key(t)).collect();
    assert!(
        keys.windows(2).all(|w| w[0] <= w[1]),
        "index not sorted: {lines:?}"
    );
    let mut found = 0;
    for (term, numbers) in &lines {
        if let Some(name) = names.iter().find(|n| term.starts_with(n.as_str())) {
            found += 1;
            assert_eq!(numbers.len(), 1);
            let page = squash(&text[numbers[0] as usize - 1]);
            assert!(
                occurrences(&page, name) >= 1,
                "index « {term} » → p. {}",
                numbers[0]
            );
        }
    }
    assert_eq!(found, names.len());
    // Synonyms of the typology lead to it.
    assert!(
        lines.iter().any(|(t, _)| t.contains("voir Mairie")),
        "{lines:?}"
    );
    // The index by commune: every commune, its pages holding its town hall.
    let by_commune: Vec<(String, Vec<u32>)> = layout[communes..]
        .iter()
        .flat_map(|p| p.lines())
        .skip_while(|l| l.trim() != "Index par commune")
        .filter_map(leader_line)
        .collect();
    let riom_like = by_commune
        .iter()
        .find(|(t, _)| t == "Clermont-Ferrand")
        .unwrap();
    assert!(squash(&text[riom_like.1[0] as usize - 1]).contains("Mairie de Clermont-Ferrand"));
    assert_eq!(by_commune.len(), 21, "{by_commune:?}");
    // The back cover.
    let back = squash(text.last().unwrap());
    assert!(
        back.contains("Sources et licences") && back.contains("Signaler une erreur"),
        "{back}"
    );

    (text, body_start)
}

/// What only a guide joined from volumes can get wrong.
fn check_joined(pdf: &Path, text: &[String], names: &[String]) {
    let path = pdf.to_str().unwrap();
    let check = Command::new("qpdf")
        .args(["--check", path])
        .output()
        .unwrap_or_else(|e| panic!("qpdf is needed: {e}"));
    assert!(
        check.status.success(),
        "qpdf --check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // One Document element holds every entry's heading.
    // Raw bytes: poppler prints some titles in UTF-16.
    let structure = Command::new("pdfinfo")
        .args(["-struct-text", path])
        .output()
        .unwrap();
    assert!(structure.status.success());
    let structure = String::from_utf8_lossy(&structure.stdout);
    let roots = structure
        .lines()
        .filter(|l| l.starts_with("Document"))
        .count();
    assert_eq!(roots, 1, "{structure}");
    let structure = squash(&structure);
    for name in names {
        assert!(
            structure.contains(name.as_str()),
            "{name} missing from the structure"
        );
    }
    // Every bookmark opens the page of its section.
    let json = tool("qpdf", &["--json", "--json-key=outlines", path]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut pending: Vec<&serde_json::Value> =
        json["outlines"].as_array().unwrap().iter().collect();
    let mut seen = 0;
    while let Some(outline) = pending.pop() {
        let title = outline["title"].as_str().unwrap();
        let page = outline["destpageposfrom1"].as_u64().unwrap() as usize;
        assert!(
            squash(&text[page - 1]).contains(title),
            "bookmark « {title} » → page {page}: {}",
            text[page - 1]
        );
        pending.extend(outline["kids"].as_array().unwrap());
        seen += 1;
    }
    assert!(seen >= 5, "{json}");
    // The contents' links are links to named destinations, none left to the layout's scheme.
    let qdf = pdf.with_extension("qdf");
    tool(
        "qpdf",
        &[
            "--qdf",
            "--object-streams=disable",
            path,
            qdf.to_str().unwrap(),
        ],
    );
    let qdf = std::fs::read(&qdf).unwrap();
    let has = |needle: &[u8]| qdf.windows(needle.len()).any(|w| w == needle);
    assert!(!has(b"x-proximites-target"));
    assert!(has(b"/Dest (t1)"));
    check_structure(pdf);
}

/// The joined structure tree holds together: every element's parent is the element it hangs
/// from, every page's marked content maps through the parent tree to the element that holds
/// it on that page, and every tagged annotation to the element that refers to it.
fn check_structure(pdf: &Path) {
    use lopdf::{Document, Object, ObjectId};
    let document = Document::load(pdf).unwrap();
    let get = |object: &Object| -> Object {
        match object {
            Object::Reference(id) => document.get_object(*id).unwrap().clone(),
            other => other.clone(),
        }
    };
    let dict = |object: &Object| get(object).as_dict().unwrap().clone();
    let kids = |element: &lopdf::Dictionary| -> Vec<Object> {
        match element.get(b"K") {
            Ok(Object::Array(items)) => items.clone(),
            Ok(other) => vec![other.clone()],
            Err(_) => Vec::new(),
        }
    };
    let catalog = document.catalog().unwrap();
    let root = dict(catalog.get(b"StructTreeRoot").unwrap());
    // Parents, from the root down.
    let top = root.get(b"K").unwrap().as_reference().unwrap();
    let mut pending: Vec<ObjectId> = vec![top];
    let mut elements = 0;
    while let Some(id) = pending.pop() {
        elements += 1;
        for kid in kids(document.get_dictionary(id).unwrap()) {
            if let Object::Reference(kid_id) = kid {
                let child = document.get_dictionary(kid_id).unwrap();
                if child.has(b"S") {
                    assert_eq!(child.get(b"P").unwrap().as_reference().unwrap(), id);
                    pending.push(kid_id);
                }
            }
        }
    }
    assert!(elements > 100, "{elements} structure elements");
    // The parent tree, flattened.
    let mut parents = std::collections::HashMap::new();
    let mut nodes = vec![root.get(b"ParentTree").unwrap().clone()];
    while let Some(node) = nodes.pop() {
        let node = dict(&node);
        if let Ok(Object::Array(nums)) = node.get(b"Nums") {
            for pair in nums.chunks(2) {
                parents.insert(pair[0].as_i64().unwrap(), pair[1].clone());
            }
        }
        if let Ok(Object::Array(more)) = node.get(b"Kids") {
            nodes.extend(more.iter().cloned());
        }
    }
    let next_key = root.get(b"ParentTreeNextKey").unwrap().as_i64().unwrap();
    assert!(parents.keys().all(|&k| k < next_key));
    let holds = |element: ObjectId, page: ObjectId, mcid: i64| {
        let element = document.get_dictionary(element).unwrap();
        let own_page = element.get(b"Pg").and_then(Object::as_reference).ok();
        kids(element).iter().any(|kid| match get(kid) {
            Object::Integer(n) => n == mcid && own_page == Some(page),
            Object::Dictionary(mcr) => {
                mcr.get(b"MCID").and_then(Object::as_i64).ok() == Some(mcid)
                    && mcr
                        .get(b"Pg")
                        .and_then(Object::as_reference)
                        .ok()
                        .or(own_page)
                        == Some(page)
            }
            _ => false,
        })
    };
    let mut marked = 0;
    for (_, page) in document.get_pages() {
        let key = document
            .get_dictionary(page)
            .unwrap()
            .get(b"StructParents")
            .unwrap()
            .as_i64()
            .unwrap();
        let Object::Array(owners) = get(&parents[&key]) else {
            panic!("page's parent tree entry is not an array");
        };
        for (mcid, owner) in owners.iter().enumerate() {
            let owner = owner.as_reference().unwrap();
            assert!(holds(owner, page, mcid as i64), "MCID {mcid} of a page");
            marked += 1;
        }
        for annot in document.get_page_annotations(page).unwrap() {
            if let Ok(key) = annot.get(b"StructParent").and_then(Object::as_i64) {
                let owner = document
                    .get_dictionary(parents[&key].as_reference().unwrap())
                    .unwrap();
                let objr = Object::Name(b"OBJR".to_vec());
                assert!(
                    kids(owner).iter().any(
                        |kid| matches!(get(kid), Object::Dictionary(d) if d.get(b"Type").ok() == Some(&objr))
                    ),
                    "an annotation's element refers to no object"
                );
            }
        }
    }
    assert!(marked > 300, "{marked} marked contents");
}

#[tokio::test]
async fn a5_booklet_of_the_demo_from_the_command_line() {
    let (dir, store, reference) = common::database(true).await;
    let names = town_halls(&store, &reference).await;
    assert_eq!(names.len(), 21);
    let database = common::url_of(dir.path());
    let pdf = dir.path().join("guide.pdf");
    let html = dir.path().join("guide.html");
    let (ok, stdout, stderr) = cli(
        &database,
        &[
            &TOWN_HALL_GUIDE[..],
            &[
                "--color",
                "#0b6e4f",
                "-o",
                pdf.to_str().unwrap(),
                "--html",
                html.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("21 fiches"), "{stdout}");

    let (text, body_start) = check_town_hall_booklet(&pdf, &names);

    // The same content as HTML.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("<html lang=\"fr\">") && page.contains("<main"));
    for name in &names {
        assert!(
            page.contains(&format!("<h5>{name}</h5>")),
            "{name} in the HTML"
        );
    }

    // The cover as a picture, for a look.
    let out = test_output().join("directory-a5-cover");
    tool(
        "pdftoppm",
        &[
            "-png",
            "-r",
            "80",
            "-f",
            "1",
            "-l",
            "2",
            pdf.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    let body_page = (body_start + 1).to_string();
    let out = test_output().join("directory-a5-body");
    tool(
        "pdftoppm",
        &[
            "-png",
            "-r",
            "80",
            "-f",
            &body_page,
            "-l",
            &body_page,
            pdf.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );

    // Each entry's QR code, scanned from the page printed at 300 dpi (zbar-tools), leads to
    // that entry's page online.
    let scan = dir.path().join("scan");
    tool(
        "pdftoppm",
        &[
            "-png",
            "-r",
            "300",
            "-singlefile",
            "-f",
            &body_page,
            "-l",
            &body_page,
            pdf.to_str().unwrap(),
            scan.to_str().unwrap(),
        ],
    );
    let scanned = Command::new("zbarimg")
        .args(["-q", "--raw"])
        .arg(scan.with_extension("png"))
        .output()
        .unwrap_or_else(|e| panic!("zbarimg (zbar-tools) is needed: {e}"));
    let scanned = String::from_utf8(scanned.stdout).unwrap();
    let ids: Vec<(String,)> = proximites::on_engine!(&store, |db| sqlx::query_as(
        "SELECT id FROM services WHERE typology_code = 'mairie' AND status = 'published'",
    )
    .fetch_all(db)
    .await)
    .unwrap();
    let on_page = text[body_start]
        .lines()
        .filter(|l| l.starts_with("Vérifié le") || l.starts_with("Mis à jour le"))
        .count();
    let urls: Vec<&str> = scanned.lines().collect();
    assert!(on_page >= 1);
    assert_eq!(urls.len(), on_page, "codes scanned: {urls:?}");
    for url in urls {
        let id = url
            .strip_prefix("http://127.0.0.1:8080/services/")
            .unwrap_or_else(|| panic!("{url}"));
        assert!(ids.iter().any(|(i,)| i == id), "{url}");
    }

    // The same guide set in volumes of 4 entries and joined reads back the same, and the
    // joined PDF is sound: qpdf finds no error, one structure tree holds every entry, the
    // bookmarks and the contents' links reach their sections.
    let joined = dir.path().join("guide-volumes.pdf");
    let (ok, stdout, stderr) = cli_with(
        &database,
        &[&TOWN_HALL_GUIDE[..], &["-o", joined.to_str().unwrap()]].concat(),
        &[("PROXIMITES_GUIDE_VOLUME_ENTRIES", "4")],
    );
    assert!(ok, "{stdout}{stderr}");
    let (text, _) = check_town_hall_booklet(&joined, &names);
    check_joined(&joined, &text, &names);
}

#[tokio::test]
async fn a4_by_commune_in_english_with_a_logo() {
    let (dir, _pool, _reference) = common::database(true).await;
    let database = common::url_of(dir.path());
    let logo = dir.path().join("logo.svg");
    std::fs::write(
        &logo,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="120" height="60"><rect width="120" height="60" fill="#c0392b"/><circle cx="30" cy="30" r="20" fill="#fff"/></svg>"##,
    )
    .unwrap();
    let pdf = dir.path().join("guide-a4.pdf");
    let (ok, stdout, stderr) = cli(
        &database,
        &[
            "directory",
            "--in",
            "communes:63113,63014,63032",
            "--theme",
            "services-publics",
            "--group",
            "commune",
            "--format",
            "a4",
            "--lang",
            "en",
            "--title",
            "Town halls <b>#set</b> $x$",
            "--logo",
            logo.to_str().unwrap(),
            "-o",
            pdf.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stdout}{stderr}");
    let info = info(&pdf);
    assert!(
        info_field(&info, "Page size").starts_with("595.276 x 841.89 pts"),
        "{info}"
    );
    assert_eq!(info_field(&info, "Tagged"), "yes");
    let text = pages(&pdf);
    // User text is printed as written, never run as markup.
    assert!(
        squash(&text[0]).contains("Town halls <b>#set</b> $x$"),
        "{}",
        text[0]
    );
    assert!(squash(&text[1]).contains("Useful numbers"));
    let all = squash(&text.join("\n"));
    assert!(all.contains("Mairie de Clermont-Ferrand") && all.contains("Contents"));
    let out = test_output().join("directory-a4-cover");
    tool(
        "pdftoppm",
        &[
            "-png",
            "-r",
            "60",
            "-f",
            "1",
            "-l",
            "1",
            pdf.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
}

#[tokio::test]
async fn bad_input_says_what_and_writes_nothing() {
    let (dir, _pool, _reference) = common::database(true).await;
    let database = common::url_of(dir.path());
    let pdf = dir.path().join("out.pdf");
    let out = pdf.to_str().unwrap();
    let not_image = dir.path().join("logo.png");
    std::fs::write(&not_image, b"this is not a picture").unwrap();
    let fake_png = dir.path().join("broken.png");
    let mut broken = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x06\0\0\0".to_vec();
    broken.extend_from_slice(b"garbage instead of image data");
    std::fs::write(&fake_png, broken).unwrap();
    let huge = dir.path().join("huge.svg");
    let mut big = b"<svg xmlns=\"http://www.w3.org/2000/svg\">".to_vec();
    big.resize(3 * 1024 * 1024, b' ');
    std::fs::write(&huge, big).unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--in", "epci:999999999"], "territoire inconnu"),
        (vec!["--in", "quartier:12"], "type de territoire inconnu"),
        (
            vec!["--in", EPCI, "--theme", "loisirs-imaginaires"],
            "thème inconnu",
        ),
        (
            vec!["--in", EPCI, "--typology", "licorne"],
            "typologie inconnue",
        ),
        (
            vec!["--in", EPCI, "--typology", "piscine"],
            "aucune fiche publiée",
        ),
        (
            vec!["--in", EPCI, "--logo", not_image.to_str().unwrap()],
            "PNG ou SVG",
        ),
        (
            vec!["--in", EPCI, "--logo", fake_png.to_str().unwrap()],
            "logo n'a pas pu être lu",
        ),
        (
            vec!["--in", EPCI, "--logo", huge.to_str().unwrap()],
            "trop lourd",
        ),
        (vec!["--in", EPCI, "--format", "a3"], "a5 ou a4"),
        (vec!["--in", EPCI, "--date", "demain"], "AAAA-MM-JJ"),
    ];
    for (args, message) in cases {
        let mut all = vec!["directory"];
        all.extend(args.iter().copied());
        all.extend(["-o", out]);
        let (ok, stdout, stderr) = cli(&database, &all);
        assert!(!ok, "{args:?} succeeded: {stdout}");
        assert!(
            stderr.contains(message),
            "{args:?}: expected « {message} » in {stderr}"
        );
        assert!(!pdf.exists(), "{args:?} left a file");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{args:?} left temporary files");
    }
    // An output file that exists is left as it was by a failed run.
    std::fs::write(&pdf, b"previous").unwrap();
    let (ok, _, _) = cli(
        &database,
        &[
            "directory",
            "--in",
            EPCI,
            "--typology",
            "piscine",
            "-o",
            out,
        ],
    );
    assert!(!ok);
    assert_eq!(std::fs::read(&pdf).unwrap(), b"previous");
}

async fn send(router: &axum::Router, request: Request<Body>) -> (StatusCode, String, Vec<u8>) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, content_type, body.to_vec())
}

fn post_json(uri: &str, token: &str, body: serde_json::Value) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// `request` with a header added.
fn with(mut request: Request<Body>, name: &'static str, value: &str) -> Request<Body> {
    request.headers_mut().insert(name, value.parse().unwrap());
    request
}

/// A contributor's API token, and the session cookie and CSRF token of the operator signed in.
async fn accounts(store: &proximites::db::Store) -> (String, String, String) {
    use proximites::accounts::store::{self, NewOrganisation};
    use proximites::accounts::{Area, Territory};
    let organisation = store::create_organisation(
        store,
        &NewOrganisation {
            name: "Clermont Auvergne Métropole".into(),
            kind: "epci".into(),
            territory: Territory(vec![Area::parse(EPCI).unwrap()]),
            ..NewOrganisation::default()
        },
    )
    .await
    .unwrap();
    let (_, token) = store::create_token(store, &organisation.id, "annuaires")
        .await
        .unwrap();
    let both = store.clone();
    let operator = store::create_operator(&both, "region@example.fr", "un mot de passe assez long")
        .await
        .unwrap();
    let (secret, csrf) = store::open_session(&both, &operator).await.unwrap();
    (
        token,
        format!("{}={secret}", proximites::espace::SESSION_COOKIE),
        csrf,
    )
}

fn multipart(uri: &str, fields: &[(&str, &str)], logo: Option<&[u8]>) -> Request<Body> {
    let boundary = "XyZproximitesBoundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    if let Some(logo) = logo {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"logo\"; filename=\"logo.png\"\r\nContent-Type: image/png\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(logo);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Request::post(uri)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn jobs_api_renders_once_and_serves_the_guide() {
    let (dir, store, reference) = common::database(true).await;
    let (token, cookie, csrf) = accounts(&store).await;
    let fixture = common::Fixture::serve(dir, store, reference).await;
    let router = &fixture.router;
    let choices = serde_json::json!({"territory": EPCI, "typologies": ["mairie"], "format": "a4"});

    // Making a guide is for contributors: no token, no guide.
    let (status, _, body) = send(
        router,
        Request::post("/api/v1/directories")
            .header("content-type", "application/json")
            .body(Body::from(choices.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&body).contains("authentication_required"));
    let (status, _, _) = send(
        router,
        post_json("/api/v1/directories", "pxm_not-a-token", choices.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _, body) = send(
        router,
        post_json("/api/v1/directories", &token, choices.clone()),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let job: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["cached"], false);

    let started = Instant::now();
    let done = loop {
        let (status, _, body) = common::get(router, &format!("/api/v1/directories/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        let job: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let progress = job["progress"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&progress));
        if job["stage"] == "done" {
            break job;
        }
        assert_ne!(job["stage"], "failed", "{job}");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "render too slow: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["entries"], 21);
    let (status, content_type, pdf) = common::get(router, done["pdf"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/pdf");
    assert!(pdf.starts_with(b"%PDF-"));
    let (status, content_type, page) = common::get(router, done["html"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"));
    assert!(String::from_utf8(page)
        .unwrap()
        .contains("Mairie de Clermont-Ferrand"));

    // The same choices on the same data: the same job, not computed again.
    let (status, _, body) = send(router, post_json("/api/v1/directories", &token, choices)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let again: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["cached"], true);
    assert_eq!(again["stage"], "done");

    // Bad input: problem details naming the field.
    let problem = |body: &[u8]| serde_json::from_slice::<serde_json::Value>(body).unwrap();
    let (status, content_type, body) = send(
        router,
        post_json(
            "/api/v1/directories",
            &token,
            serde_json::json!({"territory": EPCI, "themes": ["nope"]}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem(&body)["errors"][0]["field"], "theme");
    let (status, _, _) = send(
        router,
        post_json(
            "/api/v1/directories",
            &token,
            serde_json::json!({"territory": "epci:999999999"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = send(
        router,
        post_json(
            "/api/v1/directories",
            &token,
            serde_json::json!({"territory": EPCI, "typologies": ["piscine"]}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(&body)["errors"][0]["field"], "selection");
    let (status, _, body) = send(
        router,
        with(
            multipart(
                "/api/v1/directories",
                &[("territory", EPCI)],
                Some(b"not an image at all"),
            ),
            "authorization",
            &format!("Bearer {token}"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(&body)["errors"][0]["field"], "logo");
    let (status, _, _) = send(
        router,
        Request::post("/api/v1/directories")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from("{not json"))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = common::get(router, "/api/v1/directories/0000000000000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The cover preview through the API, and from the page's form with a logo.
    let logo = br##"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><rect width="40" height="40" fill="#123456"/></svg>"##;
    let cover_fields = [
        ("territory", EPCI),
        ("themes", "services-publics"),
        ("title", "Annuaire 2027"),
    ];
    let (status, _, _) = send(
        router,
        multipart("/api/v1/directories/cover", &cover_fields, Some(logo)),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, content_type, svg) = send(
        router,
        with(
            multipart("/api/v1/directories/cover", &cover_fields, Some(logo)),
            "authorization",
            &format!("Bearer {token}"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&svg));
    assert_eq!(content_type, "image/svg+xml");
    assert!(String::from_utf8(svg).unwrap().starts_with("<svg"));
    let signed = |request| with(request, "cookie", &cookie);
    let mut form_fields = cover_fields.to_vec();
    form_fields.push(("csrf", &csrf));
    let (status, content_type, svg) = send(
        router,
        signed(multipart(
            "/espace/annuaires/couverture",
            &form_fields,
            Some(logo),
        )),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&svg));
    assert_eq!(content_type, "image/svg+xml");
    // Without the session's CSRF token, the form is refused.
    let (status, _, _) = send(
        router,
        signed(multipart(
            "/espace/annuaires/couverture",
            &cover_fields,
            Some(logo),
        )),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The pages, in the contributor space: the form (signed in only), and a job submitted
    // without JavaScript.
    let (status, _, _) = common::get(router, "/espace/annuaires/nouveau").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, _) = common::get(router, "/annuaires/nouveau").await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    let response = router
        .clone()
        .oneshot(signed(
            Request::get("/espace/annuaires/nouveau")
                .body(Body::empty())
                .unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let page = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let page = String::from_utf8(page.to_vec()).unwrap();
    assert!(page.contains("<label for=\"territory\"") && page.contains("<h1>"));
    assert!(page.contains(&format!("name=\"csrf\" value=\"{csrf}\"")));
    // The scripts are files of the site (the security policy runs no inline script).
    assert!(page.contains("/assets/directory.js?v=") && !page.contains("<script>"));
    let mut form_fields = vec![
        ("territory", EPCI),
        ("typologies", "mairie"),
        ("format", "a4"),
    ];
    let (status, _, _) = send(
        router,
        signed(multipart("/espace/annuaires", &form_fields, None)),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no CSRF token");
    form_fields.push(("csrf", &csrf));
    let response = router
        .clone()
        .oneshot(signed(multipart("/espace/annuaires", &form_fields, None)))
        .await
        .unwrap();
    // The same choices as above: straight to the finished job's page.
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()["location"],
        format!("/espace/annuaires/{id}").as_str()
    );
    let (status, _, page) = send(
        router,
        signed(
            Request::get(format!("/espace/annuaires/{id}"))
                .body(Body::empty())
                .unwrap(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8(page)
        .unwrap()
        .contains("Télécharger le livret PDF"));
    let (status, _, page) = send(
        router,
        signed(multipart(
            "/espace/annuaires",
            &[("territory", "nowhere"), ("csrf", &csrf)],
            None,
        )),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(String::from_utf8(page).unwrap().contains("role=\"alert\""));
    // The contributor space's menu and the home page lead to the form.
    let (_, _, home) = common::get(router, "/").await;
    assert!(String::from_utf8(home)
        .unwrap()
        .contains("href=\"/espace/annuaires/nouveau\""));

    // Every endpoint is in the OpenAPI document.
    let (_, _, doc) = common::get(router, "/api/v1/openapi.json").await;
    let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    for path in [
        "/api/v1/directories",
        "/api/v1/directories/{job}",
        "/api/v1/directories/{job}/guide.pdf",
        "/api/v1/directories/{job}/guide.html",
        "/api/v1/directories/cover",
        "/espace/annuaires/nouveau",
        "/espace/annuaires",
        "/espace/annuaires/couverture",
        "/espace/annuaires/{job}",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from OpenAPI"
        );
    }
}
