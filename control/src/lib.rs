//! Skiff control plane: object model, store, API server, controllers.
