use std::process::Command;
use std::time::Duration;

use stack::cgroup::{process_tree_cpu, Budget, ControlGroup};

/// A CPU-bound process under a 25% quota uses about a quarter of a core.
#[test]
fn cpu_quota_holds_a_busy_process_to_its_budget() {
    let budget = Budget {
        cpus: Some(0.25),
        memory_mb: Some(64),
    };
    let group = match ControlGroup::create("budget-test", &budget) {
        Ok(g) => g,
        Err(reason) => {
            println!("skipped: cgroups are not writable here ({reason})");
            return;
        }
    };
    let mut busy = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    let pid = busy.id() as i32;
    group.add_tree(pid).unwrap();
    let before = process_tree_cpu(pid);
    let kernel_before = group.cpu_usage();
    let wall = Duration::from_secs(3);
    std::thread::sleep(wall);
    let used = process_tree_cpu(pid) - before;
    let kernel_used = group.cpu_usage().zip(kernel_before).map(|(a, b)| a - b);
    busy.kill().unwrap();
    busy.wait().unwrap();
    let share = used.as_secs_f64() / wall.as_secs_f64();
    println!(
        "busy loop under a 25% quota used {:.1}% of a core (kernel: {kernel_used:?})",
        share * 100.0
    );
    assert!((0.15..=0.35).contains(&share), "share {share}");
    if let Some(k) = kernel_used {
        let kshare = k.as_secs_f64() / wall.as_secs_f64();
        assert!((0.15..=0.35).contains(&kshare), "kernel share {kshare}");
    }
}
