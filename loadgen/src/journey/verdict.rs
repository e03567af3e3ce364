//! The bottleneck verdict of a load stage: which [`Component`] limits it, and a sentence saying
//! why. Reads only the stage's figures (CPU per component, the load's error rate, nginx's error
//! log counts, the machine's CPU), so every branch is tested here without a server.

use stack::nginx::NginxErrors;

use super::model::{Component, ComponentCpu, DatabaseMemory};
use crate::scenario::LoadResult;

/// Share of failed requests above which a stage is said to fail requests.
const ERROR_RATE_LIMIT: f64 = 0.01;
/// Machine CPU above which the machine itself is called busy.
const MACHINE_BUSY: f64 = 0.9;
/// Utilization from which a component counts as at its own limit.
const AT_LIMIT: f64 = 0.8;

/// The limiting component and the sentence the report shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub bottleneck: Component,
    pub text: String,
}

/// Name the component closest to its limit. Errors caused by nginx's own limits come first:
/// a proxy that refuses connections caps throughput whatever the CPU readings say. When the
/// machine's cores are all busy while no component is at its own limit, the machine is named.
///
/// `cpu` holds at least one component.
pub fn verdict(
    cpu: &[ComponentCpu],
    load: &LoadResult,
    nginx_errors: Option<&NginxErrors>,
    machine_utilization: f64,
) -> Verdict {
    if let Some(verdict) = nginx_limits(load, nginx_errors) {
        return verdict;
    }
    let top = cpu
        .iter()
        .max_by(|a, b| a.utilization.total_cmp(&b.utilization))
        .expect("at least one component");
    if machine_utilization > MACHINE_BUSY && top.utilization < AT_LIMIT {
        // Nothing is at its own limit, yet the cores are all busy: the components (and anything
        // else on the machine) are starving each other.
        let shares: Vec<String> = cpu
            .iter()
            .map(|c| format!("{} {:.0}%", c.component, c.utilization * 100.0))
            .collect();
        return Verdict {
            bottleneck: Component::Machine,
            text: format!(
                "the machine's CPU is {:.0}% busy while no component is at its own limit ({})",
                machine_utilization * 100.0,
                shares.join(", ")
            ),
        };
    }
    let limit = if top.budgeted {
        format!("its budget of {} CPU", top.limit_cores)
    } else {
        format!("the machine's {} cores", top.limit_cores)
    };
    let mut text = format!(
        "{} at {:.0}% of {limit}",
        top.component,
        top.utilization * 100.0
    );
    if machine_utilization > MACHINE_BUSY {
        text.push_str(&format!(
            "; the machine itself is {:.0}% busy",
            machine_utilization * 100.0
        ));
    }
    if top.component == Component::LoadGenerator {
        text.push_str(" (the generator saturates before the server: add cores or lower users)");
    }
    if load.error_rate > ERROR_RATE_LIMIT {
        text.push_str(&format!(
            "; {:.1}% of requests failed",
            load.error_rate * 100.0
        ));
    }
    Verdict {
        bottleneck: top.component,
        text,
    }
}

/// The verdict with what the databases' memory says, where it says anything: when the data is
/// larger than a database's memory budget, the sentence on whether it fitted is added; when
/// requests waited on the disk ([`DatabaseMemory::memory_bound`]) and no component was at its
/// CPU limit, the database is the bottleneck for its memory (it waits, so its CPU looks idle).
pub fn with_memory(
    verdict: Verdict,
    cpu: &[ComponentCpu],
    memory: Option<&DatabaseMemory>,
) -> Verdict {
    let Some(memory) = memory else {
        return verdict;
    };
    let outgrown = memory
        .memory_limit_mb
        .is_some_and(|limit| memory.data_mb > limit as f64);
    if !memory.memory_bound && !outgrown {
        return verdict;
    }
    let cpu_bound = cpu.iter().any(|c| c.utilization >= AT_LIMIT);
    if memory.memory_bound && !cpu_bound && verdict.bottleneck != Component::Nginx {
        let db = cpu
            .iter()
            .find(|c| c.component == Component::Database)
            .map(|c| format!(" (its CPU at {:.0}%)", c.utilization * 100.0))
            .unwrap_or_default();
        return Verdict {
            bottleneck: Component::Database,
            text: format!(
                "{} memory: requests wait on the disk{db}. {}",
                Component::Database,
                memory.sentence()
            ),
        };
    }
    Verdict {
        text: format!("{}. {}", verdict.text, memory.sentence()),
        ..verdict
    }
}

/// nginx as the bottleneck when its error log shows it ran out of files or connections.
fn nginx_limits(load: &LoadResult, nginx_errors: Option<&NginxErrors>) -> Option<Verdict> {
    let e = nginx_errors?;
    if load.error_rate <= ERROR_RATE_LIMIT
        && e.too_many_open_files + e.worker_connections_not_enough == 0
    {
        return None;
    }
    let mut what = Vec::new();
    if e.too_many_open_files > 0 {
        what.push(format!(
            "{} x \"Too many open files\"",
            e.too_many_open_files
        ));
    }
    if e.worker_connections_not_enough > 0 {
        what.push(format!(
            "{} x \"worker_connections are not enough\"",
            e.worker_connections_not_enough
        ));
    }
    if what.is_empty() {
        return None;
    }
    Some(Verdict {
        bottleneck: Component::Nginx,
        text: format!(
            "{}: {} ({:.1}% of requests failed)",
            Component::Nginx,
            what.join(", "),
            load.error_rate * 100.0
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(
        component: Component,
        limit_cores: f64,
        budgeted: bool,
        utilization: f64,
    ) -> ComponentCpu {
        ComponentCpu {
            component,
            cpu_secs: utilization * limit_cores * 20.0,
            limit_cores,
            budgeted,
            utilization,
        }
    }

    /// A stage of the default journey's shape: budgeted database, unbudgeted API, nginx and
    /// generator on a 2-core machine.
    fn stage(db: f64, api: f64, nginx: f64, generator: f64) -> Vec<ComponentCpu> {
        vec![
            cpu(Component::Database, 0.25, true, db),
            cpu(Component::Api, 2.0, false, api),
            cpu(Component::Nginx, 2.0, false, nginx),
            cpu(Component::LoadGenerator, 2.0, false, generator),
        ]
    }

    fn load(error_rate: f64) -> LoadResult {
        LoadResult {
            error_rate,
            ..LoadResult::default()
        }
    }

    fn nginx(too_many_open_files: usize, worker_connections_not_enough: usize) -> NginxErrors {
        NginxErrors {
            too_many_open_files,
            worker_connections_not_enough,
        }
    }

    #[test]
    fn the_database_at_its_budget() {
        let cpu = vec![
            cpu(Component::Database, 0.25, true, 0.996),
            cpu(Component::Api, 2.0, false, 0.058),
            cpu(Component::LoadGenerator, 2.0, false, 0.059),
        ];
        let v = verdict(&cpu, &load(0.0), None, 0.256);
        assert_eq!(v.bottleneck, Component::Database);
        assert_eq!(v.text, "database at 100% of its budget of 0.25 CPU");
        assert_eq!(
            v.bottleneck.to_string(),
            "database",
            "the report's bottleneck column"
        );
    }

    #[test]
    fn the_database_at_its_budget_on_a_busy_machine() {
        let mut cpu = stage(0.923, 0.213, 0.137, 0.182);
        cpu[0].limit_cores = 1.0;
        let v = verdict(&cpu, &load(0.0), Some(&nginx(0, 0)), 1.003);
        assert_eq!(v.bottleneck, Component::Database);
        assert_eq!(
            v.text,
            "database at 92% of its budget of 1 CPU; the machine itself is 100% busy"
        );
    }

    #[test]
    fn the_api_at_the_machines_cores() {
        let v = verdict(&stage(0.3, 0.85, 0.1, 0.1), &load(0.0), None, 0.5);
        assert_eq!(v.bottleneck, Component::Api);
        assert_eq!(v.text, "api at 85% of the machine's 2 cores");
    }

    #[test]
    fn nginx_by_its_cpu() {
        let v = verdict(
            &stage(0.3, 0.2, 0.95, 0.1),
            &load(0.0),
            Some(&nginx(0, 0)),
            0.6,
        );
        assert_eq!(v.bottleneck, Component::Nginx);
        assert_eq!(v.text, "nginx at 95% of the machine's 2 cores");
    }

    #[test]
    fn the_load_generator_says_to_add_cores() {
        let v = verdict(&stage(0.3, 0.2, 0.1, 0.9), &load(0.0), None, 0.7);
        assert_eq!(v.bottleneck, Component::LoadGenerator);
        assert_eq!(
            v.text,
            "load generator at 90% of the machine's 2 cores \
             (the generator saturates before the server: add cores or lower users)"
        );
    }

    #[test]
    fn no_component_at_its_limit_on_a_busy_machine_names_the_machine() {
        let v = verdict(&stage(0.472, 0.223, 0.121, 0.163), &load(0.0), None, 1.003);
        assert_eq!(v.bottleneck, Component::Machine);
        assert_eq!(v.bottleneck.to_string(), "machine CPU");
        assert_eq!(
            v.text,
            "the machine's CPU is 100% busy while no component is at its own limit \
             (database 47%, api 22%, nginx 12%, load generator 16%)"
        );
    }

    #[test]
    fn a_component_at_its_limit_wins_over_a_busy_machine() {
        let v = verdict(&stage(0.8, 0.2, 0.1, 0.1), &load(0.0), None, 0.95);
        assert_eq!(v.bottleneck, Component::Database);
        assert!(
            v.text.ends_with("; the machine itself is 95% busy"),
            "{}",
            v.text
        );
    }

    #[test]
    fn nginx_out_of_open_files_comes_first_whatever_the_cpu() {
        let errors = nginx(294, 0);
        let v = verdict(
            &stage(0.964, 0.092, 0.057, 0.049),
            &load(0.023497625675454395),
            Some(&errors),
            0.341,
        );
        assert_eq!(v.bottleneck, Component::Nginx);
        assert_eq!(
            v.text,
            "nginx: 294 x \"Too many open files\" (2.3% of requests failed)"
        );
    }

    #[test]
    fn nginx_out_of_connections_and_files_lists_both_even_without_failed_requests() {
        let v = verdict(
            &stage(0.5, 0.1, 0.1, 0.1),
            &load(0.0),
            Some(&nginx(3, 5)),
            0.4,
        );
        assert_eq!(v.bottleneck, Component::Nginx);
        assert_eq!(
            v.text,
            "nginx: 3 x \"Too many open files\", 5 x \"worker_connections are not enough\" \
             (0.0% of requests failed)"
        );
    }

    #[test]
    fn failed_requests_without_nginx_log_errors_fall_through_to_the_cpu_and_are_said() {
        let v = verdict(
            &stage(0.9, 0.1, 0.1, 0.1),
            &load(0.05),
            Some(&nginx(0, 0)),
            0.4,
        );
        assert_eq!(v.bottleneck, Component::Database);
        assert_eq!(
            v.text,
            "database at 90% of its budget of 0.25 CPU; 5.0% of requests failed"
        );
    }

    #[test]
    fn a_few_failed_requests_are_not_mentioned() {
        let v = verdict(&stage(0.9, 0.1, 0.1, 0.1), &load(0.01), None, 0.4);
        assert_eq!(v.text, "database at 90% of its budget of 0.25 CPU");
    }

    fn memory(memory_bound: bool, data_mb: f64) -> DatabaseMemory {
        DatabaseMemory {
            data_mb,
            blocks_hit: 500,
            blocks_read: 500,
            buffer_hit_share: Some(0.5),
            disk_read_mb: 100.0,
            disk_reads_per_request: if memory_bound { 2.5 } else { 0.1 },
            memory_used_mb: Some(1000.0),
            page_cache_mb: Some(800.0),
            memory_limit_mb: Some(1024),
            memory_bound,
        }
    }

    #[test]
    fn a_database_waiting_on_its_disk_is_the_bottleneck_for_its_memory() {
        let cpu = stage(0.3, 0.2, 0.1, 0.1);
        let judged = verdict(&cpu, &load(0.0), None, 0.4);
        assert_eq!(judged.bottleneck, Component::Database);
        let v = with_memory(judged, &cpu, Some(&memory(true, 11_800.0)));
        assert_eq!(v.bottleneck, Component::Database);
        assert!(
            v.text.starts_with(
                "database memory: requests wait on the disk (its CPU at 30%). Memory:"
            ),
            "{}",
            v.text
        );
        // The API at its limit names the API, and the memory sentence is added.
        let cpu = stage(0.3, 0.95, 0.1, 0.1);
        let judged = verdict(&cpu, &load(0.0), None, 0.4);
        let v = with_memory(judged, &cpu, Some(&memory(true, 11_800.0)));
        assert_eq!(v.bottleneck, Component::Api);
        assert!(v.text.ends_with("memory limits it."), "{}", v.text);
    }

    #[test]
    fn data_that_fits_changes_nothing_and_data_larger_than_memory_is_said() {
        let cpu = stage(0.9, 0.1, 0.1, 0.1);
        let judged = verdict(&cpu, &load(0.0), None, 0.4);
        let same = with_memory(judged.clone(), &cpu, Some(&memory(false, 120.0)));
        assert_eq!(same, judged);
        assert_eq!(with_memory(judged.clone(), &cpu, None), judged);
        let v = with_memory(judged.clone(), &cpu, Some(&memory(false, 11_800.0)));
        assert_eq!(v.bottleneck, Component::Database);
        assert!(v.text.starts_with(&judged.text), "{}", v.text);
        assert!(v.text.ends_with("memory does not limit it."), "{}", v.text);
    }
}
