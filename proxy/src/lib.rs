//! Skiff service proxy.
