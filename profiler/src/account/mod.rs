//! Accounting: wire bytes of each packet split over the labels its payload carries, summed per window.

pub mod frames;
pub mod mesh;
pub mod messages;
pub mod owners;
pub mod pending;
pub mod record;
pub mod table;
