//! People and organisations for the contributors' tests: created in the store, signed in.

use proximites::accounts::store::{self, NewOrganisation, Organisation};
use proximites::accounts::{Area, Role, Territory};
use proximites::db::Store;

/// A new organisation of `kind` over one territory (`epci:…`, `commune:…`).
pub async fn organisation(store: &Store, name: &str, kind: &str, territory: &str) -> Organisation {
    store::create_organisation(
        store,
        &NewOrganisation {
            name: name.into(),
            kind: kind.into(),
            territory: Territory(vec![Area::parse(territory).unwrap()]),
            ..NewOrganisation::default()
        },
    )
    .await
    .unwrap()
}

fn cookie(session: &str) -> String {
    format!("{}={session}", proximites::espace::SESSION_COOKIE)
}

/// The platform operator, signed in: its session cookie and CSRF token.
pub async fn operator_signed_in(store: &Store) -> (String, String) {
    let store = store.clone();
    let operator =
        store::create_operator(&store, "region@example.fr", "le mot de passe de la région")
            .await
            .unwrap();
    let (session, csrf) = store::open_session(&store, &operator).await.unwrap();
    (cookie(&session), csrf)
}

/// A new person of `organisation` with `role`, invited and signed in: cookie and CSRF token.
pub async fn signed_in(
    store: &Store,
    organisation: &str,
    email: &str,
    role: Role,
) -> (String, String) {
    let secret = store::invite(store, organisation, email, role)
        .await
        .unwrap();
    let user = store::accept_invitation(store, &secret, "un mot de passe long")
        .await
        .unwrap();
    let store = store.clone();
    let (session, csrf) = store::open_session(&store, &user).await.unwrap();
    (cookie(&session), csrf)
}
