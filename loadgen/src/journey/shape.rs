//! The story's shape, checked: a stage of the journey file may state what the story expects of
//! it relative to an earlier stage (front-end scaling flat, the bigger database at least 2.5x,
//! the second replica at least 1.7x...), and whether it may fail requests. Every stage that
//! states an expectation must also have a verdict naming a component of the topology: a run
//! where the machine, not a component, is the limit does not tell the story.
//!
//! Pure: a stage's result and the results before it in, findings out.

use serde::{Deserialize, Serialize};

use super::model::{Component, ShapeCheck, ShapeFinding, StageResult};

/// `expect = { of_stage = 4, at_least = 2.5 }` on a `[[stage]]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The earlier stage (its number, 1-based) whose successful requests/s this stage's are
    /// compared with.
    pub of_stage: Option<usize>,
    /// This stage's successful requests/s over that stage's, at least...
    pub at_least: Option<f64>,
    /// ...and at most.
    pub at_most: Option<f64>,
    /// No request may fail (4xx other than the expected 404s, 5xx, timeouts).
    #[serde(default)]
    pub no_failures: bool,
}

impl Expectation {
    /// Refuse an expectation that cannot be checked: no earlier stage, or bounds without one.
    pub fn validate(&self, stage: usize) -> Result<(), String> {
        match self.of_stage {
            Some(of) if of == 0 || of >= stage => Err(format!(
                "expect.of_stage = {of} must name an earlier stage (1 to {})",
                stage - 1
            )),
            None if self.at_least.is_some() || self.at_most.is_some() => {
                Err("expect.at_least / at_most need expect.of_stage".into())
            }
            _ => Ok(()),
        }
    }
}

/// Check `stage` against `expect`, given every stage before it.
pub fn check(stage: &StageResult, earlier: &[StageResult], expect: &Expectation) -> ShapeCheck {
    let mut findings = Vec::new();
    let rps = |s: &StageResult| s.load.as_ref().map(|l| l.successful_per_sec);
    if let Some(of) = expect.of_stage {
        let base = earlier.iter().find(|s| s.number == of).and_then(rps);
        match (rps(stage), base) {
            (Some(now), Some(base)) if base > 0.0 => {
                let ratio = now / base;
                let low = expect.at_least.is_none_or(|min| ratio >= min);
                let high = expect.at_most.is_none_or(|max| ratio <= max);
                let bounds = match (expect.at_least, expect.at_most) {
                    (Some(min), Some(max)) => format!("{min} to {max}"),
                    (Some(min), None) => format!(">= {min}"),
                    (None, Some(max)) => format!("<= {max}"),
                    (None, None) => "any".into(),
                };
                findings.push(finding(
                    low && high,
                    format!("x{ratio:.2} of stage {of} (expected {bounds})"),
                ));
            }
            _ => findings.push(finding(
                false,
                format!("no requests/s to compare with stage {of}"),
            )),
        }
    }
    if expect.no_failures {
        let failed = stage.load.as_ref().map_or(0, |l| l.total_errors());
        findings.push(finding(
            failed == 0,
            format!("{failed} failed requests (expected none)"),
        ));
    }
    let names_component = stage.bottleneck != Component::Machine.name();
    findings.push(finding(
        names_component,
        if names_component {
            format!("bottleneck: {}", stage.bottleneck)
        } else {
            "bottleneck: the machine, not a component".to_string()
        },
    ));
    ShapeCheck {
        holds: findings.iter().all(|f| f.holds),
        findings,
    }
}

fn finding(holds: bool, text: String) -> ShapeFinding {
    ShapeFinding { holds, text }
}

impl ShapeCheck {
    /// "holds" or "FAILS", then each finding.
    pub fn summary(&self) -> String {
        let texts: Vec<&str> = self.findings.iter().map(|f| f.text.as_str()).collect();
        format!(
            "{}: {}",
            if self.holds { "holds" } else { "FAILS" },
            texts.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::sample_report;
    use super::*;

    /// Stage results with the given successful requests/s and errors, numbered from 2.
    fn stages(rps: &[(f64, u64, Component)]) -> Vec<StageResult> {
        let template = sample_report()
            .stages
            .into_iter()
            .find(|s| s.load.is_some())
            .unwrap();
        rps.iter()
            .enumerate()
            .map(|(i, &(r, errors, bottleneck))| {
                let mut s = template.clone();
                s.number = i + 2;
                let load = s.load.as_mut().unwrap();
                load.successful_per_sec = r;
                load.errors = if errors > 0 {
                    [("503".to_string(), errors)].into_iter().collect()
                } else {
                    Default::default()
                };
                s.bottleneck = bottleneck.name().to_string();
                s
            })
            .collect()
    }

    const DB: Component = Component::Database;

    fn expect(of: usize, min: Option<f64>, max: Option<f64>) -> Expectation {
        Expectation {
            of_stage: Some(of),
            at_least: min,
            at_most: max,
            no_failures: false,
        }
    }

    #[test]
    fn a_run_with_the_storys_shape_holds() {
        let run = stages(&[
            (300.0, 0, DB),
            (280.0, 40, Component::Nginx),
            (310.0, 0, DB),
            (1200.0, 0, DB),
            (2300.0, 0, DB),
            (3500.0, 0, Component::Api),
        ]);
        let checks = [
            (3, expect(2, Some(0.75), Some(1.33))),
            (
                4,
                Expectation {
                    no_failures: true,
                    ..expect(2, Some(0.75), Some(1.33))
                },
            ),
            (5, expect(4, Some(2.5), None)),
            (6, expect(5, Some(1.7), None)),
            (7, expect(6, Some(1.0), None)),
        ];
        for (number, e) in &checks {
            let i = number - 2;
            let c = check(&run[i], &run[..i], e);
            assert!(c.holds, "stage {number}: {}", c.summary());
        }
        let c = check(&run[4], &run[..4], &checks[3].1);
        assert_eq!(
            c.summary(),
            "holds: x1.92 of stage 5 (expected >= 1.7); bottleneck: database"
        );
    }

    #[test]
    fn a_run_that_breaks_the_shape_says_where() {
        let run = stages(&[
            (1745.0, 0, DB),
            (985.0, 12, Component::Nginx),
            (1000.0, 3, DB),
            (4291.0, 0, DB),
            (4735.0, 0, Component::Machine),
        ]);
        let flat = check(&run[1], &run[..1], &expect(2, Some(0.75), Some(1.33)));
        assert!(!flat.holds);
        assert!(flat.summary().starts_with("FAILS: x0.56 of stage 2"));
        let tuned = check(
            &run[2],
            &run[..2],
            &Expectation {
                no_failures: true,
                ..expect(2, Some(0.75), Some(1.33))
            },
        );
        assert!(tuned
            .summary()
            .contains("3 failed requests (expected none)"));
        let replicas = check(&run[4], &run[..4], &expect(5, Some(1.7), None));
        assert!(!replicas.holds);
        assert_eq!(
            replicas.summary(),
            "FAILS: x1.10 of stage 5 (expected >= 1.7); bottleneck: the machine, not a component"
        );
    }

    #[test]
    fn a_missing_earlier_stage_fails_rather_than_passes() {
        let run = stages(&[(100.0, 0, DB)]);
        let c = check(&run[0], &[], &expect(1, Some(1.0), None));
        assert!(!c.holds);
    }

    #[test]
    fn expectations_must_point_back() {
        assert!(expect(3, None, None).validate(3).is_err());
        assert!(expect(0, None, None).validate(3).is_err());
        assert!(expect(2, None, None).validate(3).is_ok());
        let no_base = Expectation {
            at_least: Some(2.0),
            ..Expectation::default()
        };
        assert!(no_base.validate(3).is_err());
    }
}
