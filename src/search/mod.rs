//! Search over the published entries: the in-memory spatial index kept in step with the database.

pub mod spatial;
