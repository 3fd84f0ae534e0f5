//! `GET /v1/events/stream`: the live view as server-sent events, for the
//! `/ui` page. [`hub`] builds each update once and keeps the readers in
//! check (a bounded number; a slow one is dropped); [`body`] is one
//! reader's response body.

mod body;
mod hub;

pub(crate) use body::EventBody;
pub(crate) use hub::{EventHub, Reader, STREAM_PATH};
