//! Proximités: a geolocated directory of public services for French territories.
//! Each module owns one domain; `app` alone knows them all.

pub mod accounts;
pub mod admission;
pub mod app;
pub mod bench;
pub mod boot;
pub mod cli;
pub mod colour;
pub mod coverage;
pub mod dates;
pub mod db;
pub mod directory;
pub mod error;
pub mod espace;
pub mod export;
pub mod hsds;
pub mod http;
pub mod import;
pub mod mail;
pub mod metrics;
pub mod ogc;
pub mod rate_limits;
pub mod reports;
pub mod restitution;
pub mod search;
pub mod services;
pub mod spatial;
pub mod state;
pub mod synth;
pub mod taxonomy;
pub mod territory;
pub mod text;
pub mod web;

/// The value behind `mutex`, also after a panic of another holder: what it guards is replaced
/// whole or only added to, so it stays usable (and the panic fails its own work anyway).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
