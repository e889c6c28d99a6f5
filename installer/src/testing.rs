//! The installer's side of the fake API server (`rin-fake-api`): a `Cluster` on it.

use crate::cluster::deploy::Cluster;
pub(crate) use rin_fake_api::*;
use std::sync::{Arc, Mutex};

/// A cluster backed by `fake`, answered by a task until the test ends.
pub(crate) fn cluster(fake: Fake) -> (Cluster, Arc<Mutex<Fake>>) {
    let (client, fake) = client(fake);
    (Cluster::new(client), fake)
}
