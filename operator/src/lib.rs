//! The AppStack operator: the `AppStack` custom resource, the pure render of the children
//! it stands for, and the controller that applies them.
//!
//! [`crd`] holds the resource's types; [`render`] turns an `AppStack` and what the cluster
//! serves into the desired children, with no I/O.

pub mod controller;
pub mod crd;
pub mod metrics;
pub mod render;
pub mod serve;
pub mod status;
