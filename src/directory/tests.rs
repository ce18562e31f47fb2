use chrono::NaiveDate;

use super::content::{collation_key, texts, weekly_rows};
use super::*;
use crate::territory::ReferenceFiles;

fn reference() -> (Taxonomy, Locator) {
    (
        Taxonomy::embedded().unwrap(),
        Locator::new(ReferenceFiles::embedded().unwrap().communes),
    )
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()
}

fn raw(territory: &str) -> RawChoices {
    RawChoices {
        territory: territory.into(),
        ..RawChoices::default()
    }
}

#[test]
fn choices_default_and_parse() {
    let (taxonomy, locator) = reference();
    let mut r = raw("epci:246300701");
    r.typologies = vec!["piscine,mairie".into()];
    r.color = Some("#ffcc00".into());
    let c = Choices::parse(&r, None, &taxonomy, &locator, today()).unwrap();
    assert_eq!(c.format, Format::A5);
    assert_eq!(c.group, Grouping::Theme);
    assert_eq!(c.date, today());
    // In the taxonomy's order, whatever the order asked.
    let codes = c.typology_codes(&taxonomy);
    assert_eq!(codes.len(), 2);
    assert!(codes.contains(&"mairie".to_owned()) && codes.contains(&"piscine".to_owned()));
    assert_eq!(c.color.text_on(), Color([0, 0, 0]));
    assert_eq!(Color::DEFAULT.text_on(), Color([255, 255, 255]));
    // Nothing asked: every typology.
    let all = Choices::parse(&raw("commune:63113"), None, &taxonomy, &locator, today()).unwrap();
    assert_eq!(
        all.typology_codes(&taxonomy).len(),
        taxonomy.typologies.len()
    );
}

#[test]
fn bad_choices_are_each_named() {
    let (taxonomy, locator) = reference();
    let mut r = raw("epci:246300701");
    r.themes = vec!["nope".into()];
    r.typologies = vec!["unknown-typology".into()];
    r.group = Some("street".into());
    r.format = Some("a3".into());
    r.date = Some("24/11/2026".into());
    r.color = Some("red".into());
    r.lang = Some("de".into());
    r.title = Some("x".repeat(MAX_TEXT_CHARS + 1));
    let Err(Error::Invalid(errors)) =
        Choices::parse(&r, Some(b"GIF89a".to_vec()), &taxonomy, &locator, today())
    else {
        panic!("expected invalid choices");
    };
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    for field in [
        "theme", "typology", "group", "format", "date", "color", "lang", "title", "logo",
    ] {
        assert!(fields.contains(&field), "{field} missing from {fields:?}");
    }
    // An unknown territory is a 404, a malformed one a 422 naming it, France is refused.
    let unknown = Choices::parse(&raw("epci:999999999"), None, &taxonomy, &locator, today());
    assert!(matches!(unknown, Err(Error::NotFound { .. })));
    for bad in ["nowhere", "france", "communes:"] {
        let Err(Error::Invalid(errors)) =
            Choices::parse(&raw(bad), None, &taxonomy, &locator, today())
        else {
            panic!("{bad} accepted");
        };
        assert_eq!(errors[0].field, "territory");
    }
}

#[test]
fn logos_are_told_by_content_and_size() {
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x06\0\0\0".to_vec();
    assert_eq!(Logo::parse(png).unwrap().kind, LogoKind::Png);
    let svg = br#"<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>"#.to_vec();
    assert_eq!(Logo::parse(svg).unwrap().kind, LogoKind::Svg);
    assert!(Logo::parse(b"%PDF-1.7".to_vec()).is_err());
    assert!(Logo::parse(b"\x89PNG\r\n\x1a\ntruncated".to_vec()).is_err());
    let mut huge = b"<svg>".to_vec();
    huge.resize(MAX_LOGO_BYTES + 1, b' ');
    assert!(Logo::parse(huge).unwrap_err().contains("trop lourd"));
}

/// A 1.4 KB SVG of nested `<use>` used to cost hundreds of megabytes in Typst on each cover
/// preview; such logos, and their cousins, are refused before any drawing.
#[test]
fn logo_bombs_are_refused() {
    let mut bomb = String::from(
        r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"><defs><rect id="l0" width="1" height="1"/>"#,
    );
    for level in 1..10 {
        bomb.push_str(&format!(r#"<g id="l{level}">"#));
        for _ in 0..10 {
            bomb.push_str(&format!(r##"<use xlink:href="#l{}"/>"##, level - 1));
        }
        bomb.push_str("</g>");
    }
    bomb.push_str(r##"</defs><use xlink:href="#l9"/></svg>"##);
    assert!(bomb.len() < 3_000, "{}", bomb.len());
    let refused = Logo::parse(bomb.into_bytes()).unwrap_err();
    assert!(refused.contains("imbriquées"), "{refused}");

    let flat_uses = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg"><rect id="r" width="1" height="1"/>{}</svg>"##,
        r##"<use href="#r"/>"##.repeat(MAX_LOGO_USES + 1)
    );
    assert!(Logo::parse(flat_uses.into_bytes())
        .unwrap_err()
        .contains("<use>"));
    let crowded = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg">{}</svg>"#,
        "<rect/>".repeat(MAX_LOGO_ELEMENTS + 1)
    );
    assert!(Logo::parse(crowded.into_bytes())
        .unwrap_err()
        .contains("éléments"));
    let blurred = r#"<svg xmlns="http://www.w3.org/2000/svg"><filter id="f"><feGaussianBlur stdDeviation="999"/></filter></svg>"#;
    assert!(Logo::parse(blurred.as_bytes().to_vec())
        .unwrap_err()
        .contains("filtres"));
    let entities = r#"<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><svg xmlns="http://www.w3.org/2000/svg"><text>&b;</text></svg>"#;
    assert!(Logo::parse(entities.as_bytes().to_vec()).is_err());
    // One level of references is an ordinary logo.
    let ordinary = r##"<svg xmlns="http://www.w3.org/2000/svg"><defs><circle id="c" r="2"/></defs><use href="#c"/><use href="#c" x="5"/></svg>"##;
    assert!(Logo::parse(ordinary.as_bytes().to_vec()).is_ok());
    // A PNG of a hundred million pixels, in a header of 33 bytes.
    let mut big_png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    big_png.extend_from_slice(&10_000u32.to_be_bytes());
    big_png.extend_from_slice(&10_000u32.to_be_bytes());
    big_png.extend_from_slice(b"\x08\x06\0\0\0");
    assert!(Logo::parse(big_png).unwrap_err().contains("pixels"));
}

#[test]
fn cache_key_follows_every_choice_and_the_data() {
    let (taxonomy, locator) = reference();
    let c = Choices::parse(&raw("commune:63113"), None, &taxonomy, &locator, today()).unwrap();
    let key = c.key("1", "http://x");
    assert_eq!(key, c.clone().key("1", "http://x"));
    assert_ne!(key, c.key("2", "http://x"));
    assert_ne!(key, c.key("1", "http://y"));
    let mut other = c.clone();
    other.format = Format::A4;
    assert_ne!(key, other.key("1", "http://x"));
}

#[test]
fn weeks_read_as_rows_of_days() {
    use chrono::NaiveTime;
    let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
    let office = Some(vec![(t(8, 30), t(12, 0)), (t(13, 30), t(17, 30))]);
    let week = [
        office.clone(),
        office.clone(),
        office.clone(),
        office.clone(),
        Some(vec![(t(8, 30), t(12, 0))]),
        Some(vec![]),
        Some(vec![]),
    ];
    let rows = weekly_rows(&week, Lang::Fr, texts(Lang::Fr));
    let shown: Vec<(String, String)> = rows.into_iter().map(|r| (r.days, r.hours)).collect();
    assert_eq!(
        shown,
        vec![
            ("lun.–jeu.".into(), "8 h 30–12 h, 13 h 30–17 h 30".into()),
            ("ven.".into(), "8 h 30–12 h".into()),
            ("sam., dim.".into(), "fermé".into()),
        ]
    );
    let rows = weekly_rows(&week, Lang::En, texts(Lang::En));
    assert_eq!(rows[0].hours, "08:30–12:00, 13:30–17:30");

    // Days with the same hours share one row even apart; closed days come after the open ones.
    let afternoon = Some(vec![(t(14, 0), t(17, 0))]);
    let week = [
        Some(vec![]),
        afternoon.clone(),
        Some(vec![]),
        afternoon.clone(),
        Some(vec![]),
        Some(vec![]),
        None,
    ];
    let rows = weekly_rows(&week, Lang::Fr, texts(Lang::Fr));
    let shown: Vec<(String, String)> = rows.into_iter().map(|r| (r.days, r.hours)).collect();
    assert_eq!(
        shown,
        vec![
            ("mar., jeu.".into(), "14 h–17 h".into()),
            ("lun., mer., ven., sam.".into(), "fermé".into()),
            ("dim.".into(), texts(Lang::Fr).unknown.to_owned()),
        ]
    );
    let office = Some(vec![(t(8, 30), t(12, 0)), (t(13, 30), t(17, 30))]);
    let week = [
        office.clone(),
        office.clone(),
        Some(vec![(t(8, 30), t(12, 0))]),
        office.clone(),
        office.clone(),
        Some(vec![]),
        Some(vec![]),
    ];
    let days: Vec<String> = weekly_rows(&week, Lang::Fr, texts(Lang::Fr))
        .into_iter()
        .map(|r| r.days)
        .collect();
    assert_eq!(days, vec!["lun., mar., jeu., ven.", "mer.", "sam., dim."]);
}

#[test]
fn names_sort_without_accents_or_case() {
    let mut names = vec!["Écully", "eaux", "Ebreuil", "Aubière", "aulnat"];
    names.sort_by_key(|n| collation_key(n));
    assert_eq!(
        names,
        vec!["Aubière", "aulnat", "eaux", "Ebreuil", "Écully"]
    );
}

#[test]
fn public_address_is_checked() {
    assert_eq!(public_url(None).unwrap(), crate::app::DEFAULT_PUBLIC_URL);
    assert_eq!(
        public_url(Some("https://annuaire.example.fr/")).unwrap(),
        "https://annuaire.example.fr"
    );
    assert!(public_url(Some("ftp://x")).is_err());
}

#[test]
fn qr_codes_are_one_path_of_runs() {
    let svg = super::content::qr_svg("http://localhost:8080/services/0123456789abcdef");
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    // The top-left finder pattern: a run of 7 dark modules after the 4-module quiet zone.
    assert!(svg.contains("M4 4h7v1h-7z"), "{svg}");
    assert_eq!(svg.matches("<path").count(), 1);
}
