//! Skiff control plane: object model, store, API server, controllers.
pub mod api;
pub mod cli;
pub mod controllers;
pub mod endpointslice;
pub mod kinds;
pub mod scheduler;
pub mod selector;
pub mod store;
pub mod validation;
