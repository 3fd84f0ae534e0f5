//! The response budget: buffered response bytes across all connections,
//! charged per stream, and the sweeper that resets the streams holding
//! them too long.

mod budget;
mod ctl;
mod sweep;
#[cfg(test)]
mod tests;

pub(crate) use budget::{current, current_stream, within, Reservation, ResponseBudget};
pub(crate) use ctl::Ctl;
