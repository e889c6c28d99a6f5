//! The fake API server of the unit tests, behind `tower-test`.

mod fake_api;

use crate::deploy::Cluster;
pub(crate) use fake_api::*;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use std::sync::{Arc, Mutex};

/// A cluster backed by `fake`, answered by a task until the test ends.
pub(crate) fn cluster(fake: Fake) -> (Cluster, Arc<Mutex<Fake>>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let fake = Arc::new(Mutex::new(Fake {
        kinds: builtin(),
        ..fake
    }));
    let state = fake.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let (code, v) = state.lock().unwrap().handle(
                parts.method.as_str(),
                parts.uri.path(),
                parts.uri.query().unwrap_or(""),
                &bytes,
            );
            send.send_response(
                Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&v).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Cluster::new(Client::new(svc, "default")), fake)
}
