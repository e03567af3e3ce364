//! nginx in front of N API instances (filled in by the load-generator issue).
