//! The index stage: the API's query on the primary without the relation index (a sequential
//! scan) and with it, through [`crate::index_probe`]. Builds the index the load stages need;
//! when the index already exists (the stage is not the journey's first) it says so.

use super::context::{StageContext, REPLICA_CATCH_UP};
use super::model::{Component, StageKind, StageResult};
use super::spec::StagePlan;
use crate::index_probe::{probe_index, IndexProbe};

/// Run the stage: probe and build the index if it is missing.
pub(crate) async fn run(
    ctx: &mut StageContext<'_>,
    stage: &StagePlan,
) -> anyhow::Result<StageResult> {
    let probe = if ctx.indexed {
        None
    } else {
        let probe = probe_index(&ctx.cluster, ctx.plan.products).await?;
        ctx.cluster.wait_for_replicas(REPLICA_CATCH_UP).await?;
        ctx.indexed = true;
        Some(probe)
    };
    Ok(result(stage, probe))
}

fn result(stage: &StagePlan, probe: Option<IndexProbe>) -> StageResult {
    let verdict = match &probe {
        Some(p) => format!(
            "without the index one lookup takes {:.1} ms (sequential scan of {} rows); with it {:.3} ms: {:.0}x faster",
            p.without_index_ms_median, p.relation_rows, p.with_index_ms_median, p.speedup
        ),
        None => "the relation index already existed; nothing to compare".into(),
    };
    StageResult {
        number: stage.number,
        name: stage.name.clone(),
        note: stage.note.clone(),
        kind: StageKind::Index,
        topology: None,
        load: None,
        bottleneck: if probe.is_some() {
            format!("{} (no index)", Component::Database)
        } else {
            String::new()
        },
        index: probe,
        cpu: Vec::new(),
        machine_cpu_utilization: 0.0,
        nginx_errors: None,
        verdict,
        goose_report: None,
        shape: None,
        cost_us: Default::default(),
        api_counters: Default::default(),
        write_peak: None,
        database_memory: None,
        disk_used_mb: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::sample_report;
    use super::super::spec::{JourneyFile, JourneyPlan, Overrides};
    use super::*;

    fn stage(number: usize, name: &str, note: &str) -> StagePlan {
        let file = JourneyFile::parse(
            &format!(
                "name = \"x\"\n[[stage]]\nname = \"{name}\"\nnote = \"{note}\"\nkind = \"index\"\n"
            ),
            "test",
        )
        .unwrap();
        StagePlan {
            number,
            ..JourneyPlan::resolve(&file, &Overrides::default()).stages[0].clone()
        }
    }

    #[test]
    fn a_probe_names_the_missing_index() {
        let expected = &sample_report().stages[0];
        let got = result(
            &stage(1, &expected.name, &expected.note),
            expected.index.clone(),
        );
        assert_eq!(&got, expected);
        assert_eq!(got.bottleneck, "database (no index)");
    }

    #[test]
    fn an_existing_index_has_nothing_to_compare() {
        let expected = &sample_report().stages[3];
        assert_eq!(
            &result(&stage(4, &expected.name, &expected.note), None),
            expected
        );
    }
}
