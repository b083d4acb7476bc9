//! Reads the parts of trivy's JSON report (`--format json`) the rig's assertions need, as
//! plain sortable values, so tests compare whole finding sets rather than grepping text.

use serde_json::Value;

/// One reported vulnerability, reduced to what the gate and the tests care about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// `VulnerabilityID`
    pub id: String,
    /// `PkgName`
    pub pkg: String,
    /// `InstalledVersion`
    pub installed: String,
    /// `FixedVersion`, `None` when absent or empty
    pub fixed: Option<String>,
    /// `Status`: `fixed`, `affected`, ...
    pub status: String,
    /// `Severity`
    pub severity: String,
}

/// A parsed report.
#[derive(Debug, Clone)]
pub struct Report {
    pub json: Value,
}

impl Report {
    /// Parses trivy's JSON report; panics with the text when it is not JSON.
    pub fn parse(text: &str) -> Report {
        let json = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("trivy output is not a JSON report ({e}):\n{text}"));
        Report { json }
    }

    /// All vulnerabilities of all results, sorted.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out: Vec<Finding> = self
            .results()
            .iter()
            .flat_map(|r| r["Vulnerabilities"].as_array().cloned().unwrap_or_default())
            .map(|v| Finding {
                id: str_of(&v["VulnerabilityID"]),
                pkg: str_of(&v["PkgName"]),
                installed: str_of(&v["InstalledVersion"]),
                fixed: v["FixedVersion"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(Into::into),
                status: str_of(&v["Status"]),
                severity: str_of(&v["Severity"]),
            })
            .collect();
        out.sort();
        out
    }

    /// Findings of the results whose `Class` is `class` (`os-pkgs`, `lang-pkgs`).
    pub fn findings_of_class(&self, class: &str) -> Vec<Finding> {
        let only = Report {
            json: serde_json::json!({
                "Results": self.results().iter()
                    .filter(|r| r["Class"] == class).cloned().collect::<Vec<_>>()
            }),
        };
        only.findings()
    }

    pub fn results(&self) -> Vec<Value> {
        self.json["Results"].as_array().cloned().unwrap_or_default()
    }

    /// `Metadata.OS.Family` and `.Name`, e.g. `("alpine", "3.19.1")`.
    pub fn os(&self) -> (String, String) {
        let os = &self.json["Metadata"]["OS"];
        (str_of(&os["Family"]), str_of(&os["Name"]))
    }

    pub fn artifact_name(&self) -> String {
        str_of(&self.json["ArtifactName"])
    }
}

/// A JSON report without the two fields that differ between any two trivy runs of the same
/// scan: `ReportID` (a fresh UUID per run) and `CreatedAt` (the run's clock). Nothing else is
/// normalised, so two runs' reports compare equal only if everything else is identical.
pub fn normalised_json(text: &str) -> Value {
    let mut json: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON report ({e}):\n{text}"));
    let object = json.as_object_mut().expect("a report is a JSON object");
    for run_specific in ["ReportID", "CreatedAt"] {
        object.remove(run_specific);
    }
    json
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}
