//! Skiff cluster DNS: a `cluster.local` zone handler on hickory-server.
