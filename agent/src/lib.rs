//! Skiff node agent: runs pods in network namespaces.
