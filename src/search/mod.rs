//! Search over the published entries: the in-memory spatial index kept in step with the database.

pub mod engine;
pub mod hours;
pub mod routes;
pub mod spatial;
pub mod text;
