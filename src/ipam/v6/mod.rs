//! DHCPv6 bindings in the IPAM: IA_NA addresses and IA_PD prefixes, in the
//! same store, index lock, group commit and reaper as the v4 leases.

mod admin;
mod change;
mod dump;
mod held;
mod index;
mod load;
mod ops;
mod plan;
mod record;
mod spec;
mod types;
mod window;

#[cfg(test)]
mod tests;

pub use admin::{Binding6, Page6, Usage6};
pub(super) use dump::{duid_of, restore6};
pub use held::IA_CAP6;
pub(super) use index::V6State;
pub(super) use load::load6;
pub use ops::{DUID_KEY, OFFER_CAP6};
pub(super) use record::Key6;
pub use record::{key6_from_text, key6_to_text, lease6_from_json, lease6_holder, lease6_to_json};
pub use spec::{PdPoolSpec, Range6, Spec6Error, Subnet6Spec, MAX_LIFETIME6};
pub use types::{Held6, Ia6Key, Ia6Kind, Ia6Op, Ia6Result, IaAsk};
