//! The installer's side of the fake API server (`rin-fake-api`): a `Cluster` on it.

use crate::cluster::deploy::Cluster;
pub(crate) use rin_fake_api::*;
use std::sync::{Arc, Mutex};

/// A cluster backed by `fake`, answered by a task until the test ends.
pub(crate) fn cluster(fake: Fake) -> (Cluster, Arc<Mutex<Fake>>) {
    let (client, fake) = client(fake);
    (Cluster::new(client), fake)
}

/// The lines a test's code said, kept in order.
#[derive(Clone, Default)]
pub(crate) struct Lines(pub Arc<Mutex<Vec<String>>>);

impl rin_bundle::Progress for Lines {
    fn say(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_string());
    }
}
