//! The trivy versions the end-to-end suites run each scenario on, what differs between them,
//! and `on_each_trivy!`, which turns one scenario function into one test per version.

use std::path::PathBuf;

/// A trivy the scenarios run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trivy {
    /// 0.76, the version trivy-ecr targets: ggcr retries 429 and 5xx (3 tries, ~1 s and ~3 s
    /// apart) before moving to the next repository.
    Current,
    /// 0.69: takes repository lists too, but gives up on a 429 after one request.
    Old,
}

impl Trivy {
    pub fn path(self) -> PathBuf {
        match self {
            Trivy::Current => crate::rig::tools::trivy(),
            Trivy::Old => crate::rig::tools::trivy_old(),
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            Trivy::Current => "0.76.0",
            Trivy::Old => "0.69.3",
        }
    }

    /// How many times one trivy run sends a request that keeps answering 429 before it gives
    /// up on that repository.
    pub fn tries_on_429(self) -> usize {
        match self {
            Trivy::Current => 3,
            Trivy::Old => 1,
        }
    }
}

/// `on_each_trivy!(scenario_a, scenario_b)` defines `trivy_0_76::scenario_a`,
/// `trivy_0_69::scenario_a`, ... as tests calling `scenario_a(Trivy::Current)` and
/// `scenario_a(Trivy::Old)`; filter with `cargo test trivy_0_69`.
#[allow(unused_macros)]
macro_rules! on_each_trivy {
    ($($scenario:ident),* $(,)?) => {
        mod trivy_0_76 {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario($crate::rig::trivys::Trivy::Current)
                }
            )*
        }
        mod trivy_0_69 {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario($crate::rig::trivys::Trivy::Old)
                }
            )*
        }
    };
}
