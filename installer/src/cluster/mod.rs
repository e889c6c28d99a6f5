//! The cluster step: the stack's objects (`stack`, `objects`, `placement`, `helmchart`) applied
//! through kube (`deploy`), waited for (`rollout`, `wait`, `health`), recorded (`crate::release`), looked at and
//! rolled back (`manage`); `connect` reaches the API.

pub mod connect;
pub mod deploy;
pub mod doctor;
pub mod health;
pub mod helmchart;
pub mod manage;
pub mod objects;
pub mod placement;
pub mod rollout;
pub mod stack;
pub mod wait;
