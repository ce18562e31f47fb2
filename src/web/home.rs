//! The home page: what the service is, a search form, the themes and the life events, and the
//! way to the widget generator.

use axum::extract::{RawQuery, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::layout::{self, href, t, Chrome, Section};
use super::{encode_query, lang_of, path_without_lang};
use crate::error::Result;
use crate::search::hours::Lang;
use crate::state::AppState;

/// `GET /`: the home page.
#[utoipa::path(get, path = "/", tag = "pages",
    responses((status = 200, description = "Accueil (HTML)", content_type = "text/html")))]
pub async fn home(
    State(state): State<AppState>,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let lang = lang_of(query.as_deref());
    let path = path_without_lang(&uri);
    let counts = state
        .published_counts
        .get(&state.store, state.live.settled_version())
        .await?;
    let body = html! {
        h1 { (t(lang, "Les services publics près de chez vous", "Public services near you")) }
        p.lead { (t(lang,
            "Mairies, CAF, écoles, pharmacies, déchetteries… Proximités vous dit où ils sont, s'ils sont ouverts maintenant et comment les joindre. Les fiches sont tenues à jour par les communes et les organismes publics du territoire.",
            "Town halls, family allowance offices, schools, pharmacies, recycling centres… Proximités tells you where they are, whether they are open now and how to reach them. Entries are kept up to date by the territory's communes and public bodies.")) }
        form.search-form.home-search method="get" action="/recherche" role="search" aria-label=(t(lang, "Rechercher un service", "Search for a service")) {
            @if lang == Lang::En { input type="hidden" name="lang" value="en"; }
            div.fields {
                div.field {
                    label for="h-q" { (t(lang, "Quoi ?", "What?")) }
                    input #h-q type="search" name="q";
                }
                div.field {
                    label for="h-lieu" { (t(lang, "Où ? (commune ou code postal)", "Where? (commune or postcode)")) }
                    input #h-lieu type="text" name="lieu" list="h-lieu-suggestions" autocomplete="off" data-suggest="/api/v1/places";
                    datalist #h-lieu-suggestions {}
                }
            }
            button.primary type="submit" { (t(lang, "Rechercher", "Search")) }
        }
        section aria-labelledby="themes" {
            h2 #themes { (t(lang, "Les thèmes", "Themes")) }
            ul.cards {
                @for theme in &state.reference.taxonomy.themes {
                    @let published: i64 = state.reference.taxonomy.typologies.iter()
                        .filter(|ty| ty.theme == theme.code)
                        .map(|ty| counts.get(&ty.code).copied().unwrap_or(0))
                        .sum();
                    li {
                        a href=(href(lang, &format!("/recherche?{}", encode_query(&[("theme", theme.code.as_str())])))) {
                            (match lang { Lang::Fr => &theme.label_fr, Lang::En => &theme.label_en })
                        }
                        p.count { (published) " " (t(lang, "fiches", "entries")) }
                    }
                }
            }
        }
        section aria-labelledby="evenements" {
            h2 #evenements { (t(lang, "Un moment de vie ?", "A life event?")) }
            p { (t(lang, "Déménagement, naissance, mariage, retraite, décès d'un proche… retrouvez les services utiles à chaque moment.", "Moving house, a birth, marriage, retirement, the death of a loved one… find the services each moment calls for.")) }
            p { a href=(href(lang, "/evenements-de-vie")) { (t(lang, "Les 12 événements de vie", "The 12 life events")) } }
        }
        section aria-labelledby="integrer" {
            h2 #integrer { (t(lang, "Sur le site de votre commune", "On your commune's website")) }
            p { (t(lang, "Collectivités : intégrez la recherche à votre site, à vos couleurs, sans cookie ni traceur.", "Local authorities: embed the search in your site, in your colours, without cookies or trackers.")) }
            p { a href=(href(lang, "/integrer")) { (t(lang, "Créer le widget de votre territoire", "Create your territory's widget")) } }
            p { (t(lang, "Contributeurs : éditez un annuaire imprimé de vos services, à votre identité, prêt pour l'imprimeur.", "Contributors: make a printed directory of your services, in your identity, ready for the printer.")) }
            p { a href="/espace/annuaires/nouveau" { (t(lang, "Faire un annuaire imprimé", "Make a printed directory (in French)")) } }
        }
    };
    let page = layout::page(
        &Chrome {
            lang,
            title: t(lang, "Accueil", "Home"),
            path: &path,
            current: Some(Section::Home),
        },
        body,
    );
    Ok(page.into_response())
}
