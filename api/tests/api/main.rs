//! Integration tests of the API against a real PostgreSQL primary with streaming replicas
//! (the stack crate). One binary, one module per concern; `helpers` holds the plumbing.

mod cache;
mod contract;
mod helpers;
mod lifecycle;
mod malformed;
mod replicas;

/// The tests that never stop a node share one cluster (a primary and 2 replicas take tens of
/// seconds to build on a busy 2-core machine); they run one after another so that the
/// balance test's server-side counts see no other test's queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_cluster_contract_malformed_balance_lag_slow() {
    let (cluster, _dir) = helpers::fixture_cluster(2).await;
    contract::http_contract(&cluster).await;
    contract::cors_allow_list(&cluster).await;
    malformed::malformed_requests_never_get_a_5xx(&cluster).await;
    malformed::slow_headers_are_cut_off(&cluster).await;
    replicas::load_is_balanced_across_replicas(&cluster).await;
    replicas::lagging_replica_is_skipped(&cluster).await;
    replicas::slow_health_check_is_not_a_failure(&cluster).await;
}
