//! CPU and memory budgets with Linux cgroups (filled in by the load-generator issue).
