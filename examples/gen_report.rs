//! Writes a large, realistic trivy JSON report (schema 2) for `scripts/bench-report`: one OS
//! target and many language-package targets, each finding with the fields trivy 0.76 writes
//! (description, references, CVSS, vendor severities, layer, dates), a few JSON escapes in
//! the text, and a realistic mix of severities. Deterministic: the same size gives the same file.
//!
//! Usage: `gen_report OUTPUT [SIZE_MB] [dense]` (default 100 MiB). `dense` writes only the
//! fields the gate reads (about a tenth of the bytes per finding, so ten times the findings):
//! the worst case for memory. Prints targets, findings and bytes.

use std::fmt::Write as _;
use std::io::{BufWriter, Write};

/// A small deterministic generator (xorshift64*), so the report needs no extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "buffer",
    "overflow",
    "in",
    "the",
    "parser",
    "allows",
    "remote",
    "attackers",
    "to",
    "cause",
    "a",
    "denial",
    "of",
    "service",
    "via",
    "crafted",
    "input",
    "when",
    "handling",
    "certificate",
    "chains",
    "integer",
    "underflow",
    "heap",
    "use-after-free",
    "memory",
    "read",
    "out-of-bounds",
    "request",
    "smuggling",
    "header",
    "validation",
    "path",
    "traversal",
    "archive",
    "entries",
    "leads",
    "arbitrary",
    "code",
    "execution",
];

const ECOSYSTEMS: &[(&str, &str, &str)] = &[
    (
        "npm",
        "node-pkg",
        "usr/src/app/node_modules/{}/package.json",
    ),
    ("jar", "jar", "usr/share/java/{}.jar"),
    (
        "python-pkg",
        "pypi",
        "usr/lib/python3.12/site-packages/{}.dist-info/METADATA",
    ),
    ("gobinary", "golang", "usr/local/bin/{}"),
];

fn words(rng: &mut Rng, count: usize) -> String {
    let mut text = String::new();
    for i in 0..count {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(rng.pick(WORDS));
    }
    text
}

fn severity(rng: &mut Rng) -> (&'static str, u32) {
    match rng.below(100) {
        0..=2 => ("CRITICAL", 4),
        3..=19 => ("HIGH", 3),
        20..=64 => ("MEDIUM", 2),
        65..=94 => ("LOW", 1),
        _ => ("UNKNOWN", 0),
    }
}

/// A vulnerability with only what the gate, the summaries and the JUnit report read.
fn dense_vulnerability(rng: &mut Rng, n: u64, pkg: &str, out: &mut String) {
    let (severity, _) = severity(rng);
    let _ = write!(
        out,
        r#"        {{"VulnerabilityID": "CVE-20{:02}-{:05}", "PkgName": "{pkg}", "InstalledVersion": "{}.{}.{}", "FixedVersion": "{}.0.0", "Title": "{pkg}: {}", "Severity": "{severity}"}}"#,
        10 + rng.below(16),
        n % 100_000,
        rng.below(9),
        rng.below(30),
        rng.below(20),
        rng.below(9) + 1,
        rng.pick(WORDS),
    );
}

/// One vulnerability object as trivy writes it (indented like `trivy --format json`).
fn vulnerability(rng: &mut Rng, n: u64, pkg: &str, ecosystem: &str, out: &mut String) {
    let (severity, vendor) = severity(rng);
    let id = format!("CVE-20{:02}-{:05}", 10 + rng.below(16), n % 100_000);
    let installed = format!("{}.{}.{}", rng.below(9), rng.below(30), rng.below(20));
    let fixed = if rng.below(4) == 0 {
        String::new()
    } else {
        format!(
            "\n          \"FixedVersion\": \"{}.{}.0\",",
            rng.below(9) + 1,
            rng.below(30)
        )
    };
    let status = if fixed.is_empty() {
        "affected"
    } else {
        "fixed"
    };
    let title_words = 6 + rng.below(6) as usize;
    let title = words(rng, title_words);
    // Descriptions carry the escapes trivy writes: quotes, newlines, unicode.
    let description_words = 40 + rng.below(60) as usize;
    let description = format!(
        "{}. The \\\"{pkg}\\\" package before {installed} is affected.\\n\\nSee the advisory \\u2014 {}.",
        words(rng, description_words),
        words(rng, 10)
    );
    let mut references = String::new();
    for r in 0..(3 + rng.below(8)) {
        if r > 0 {
            references.push_str(",\n");
        }
        let _ = write!(
            references,
            "            \"https://security.example.org/advisories/{id}/{r}\""
        );
    }
    let digest: String = (0..4).map(|_| format!("{:016x}", rng.next())).collect();
    let _ = write!(
        out,
        r#"        {{
          "VulnerabilityID": "{id}",
          "PkgID": "{pkg}@{installed}",
          "PkgName": "{pkg}",
          "PkgIdentifier": {{
            "PURL": "pkg:{ecosystem}/{pkg}@{installed}",
            "UID": "{:016x}"
          }},
          "InstalledVersion": "{installed}",{fixed}
          "Status": "{status}",
          "Layer": {{
            "Digest": "sha256:{digest}",
            "DiffID": "sha256:{digest}"
          }},
          "SeveritySource": "ghsa",
          "PrimaryURL": "https://security.example.org/vuln/{id}",
          "DataSource": {{
            "ID": "ghsa",
            "Name": "Advisory Database",
            "URL": "https://security.example.org/advisories"
          }},
          "Title": "{pkg}: {title}",
          "Description": "{description}",
          "Severity": "{severity}",
          "CweIDs": [
            "CWE-{}"
          ],
          "VendorSeverity": {{
            "ghsa": {vendor},
            "nvd": {vendor}
          }},
          "CVSS": {{
            "nvd": {{
              "V3Vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
              "V3Score": {}.{}
            }}
          }},
          "References": [
{references}
          ],
          "PublishedDate": "2024-0{}-1{}T12:00:00Z",
          "LastModifiedDate": "2025-0{}-2{}T08:30:00Z"
        }}"#,
        rng.next(),
        20 + rng.below(900),
        rng.below(10),
        rng.below(10),
        1 + rng.below(9),
        rng.below(10),
        1 + rng.below(9),
        rng.below(10),
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let output = args
        .next()
        .expect("usage: gen_report OUTPUT [SIZE_MB] [dense]");
    let size_mb: u64 = args
        .next()
        .map(|s| s.parse().expect("SIZE_MB"))
        .unwrap_or(100);
    let dense = args.next().as_deref() == Some("dense");
    let per_target_scale = if dense { 10 } else { 1 };
    let wanted = size_mb * 1024 * 1024;
    let file = std::fs::File::create(&output).expect("create the output file");
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut written: u64 = 0;
    let mut put = |out: &mut BufWriter<std::fs::File>, text: &str| {
        out.write_all(text.as_bytes()).expect("write");
        written += text.len() as u64;
        written
    };

    put(
        &mut out,
        r#"{
  "SchemaVersion": 2,
  "CreatedAt": "2026-12-04T16:00:00.000000000Z",
  "ArtifactName": "registry.example.org/big/app:1.0",
  "ArtifactType": "container_image",
  "Metadata": {
    "OS": {
      "Family": "debian",
      "Name": "12.8"
    },
    "ImageID": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
    "RepoTags": [
      "registry.example.org/big/app:1.0"
    ]
  },
  "Results": [
"#,
    );
    let (mut targets, mut findings, mut n) = (0u64, 0u64, 0u64);
    let mut chunk = String::new();
    loop {
        let (target, class, kind, ecosystem, per_target) = if targets == 0 {
            (
                "registry.example.org/big/app:1.0 (debian 12.8)".to_string(),
                "os-pkgs",
                "debian",
                "deb",
                400 * per_target_scale,
            )
        } else {
            let (kind, ecosystem, path) = ECOSYSTEMS[(targets % 4) as usize];
            let name = format!("lib{targets}-{}", rng.pick(WORDS));
            (
                path.replace("{}", &name),
                "lang-pkgs",
                kind,
                ecosystem,
                (20 + rng.below(180)) * per_target_scale,
            )
        };
        chunk.clear();
        if targets > 0 {
            chunk.push_str(",\n");
        }
        let _ = write!(
            chunk,
            "    {{\n      \"Target\": \"{target}\",\n      \"Class\": \"{class}\",\n      \"Type\": \"{kind}\",\n      \"Vulnerabilities\": [\n"
        );
        for i in 0..per_target {
            if i > 0 {
                chunk.push_str(",\n");
            }
            let pkg = format!("{}{}", rng.pick(WORDS), rng.below(400));
            n += 1;
            if dense {
                dense_vulnerability(&mut rng, n, &pkg, &mut chunk);
            } else {
                vulnerability(&mut rng, n, &pkg, ecosystem, &mut chunk);
            }
        }
        chunk.push_str("\n      ]\n    }");
        findings += per_target;
        targets += 1;
        if put(&mut out, &chunk) >= wanted {
            break;
        }
    }
    let total = put(&mut out, "\n  ]\n}\n");
    out.flush().expect("flush");
    println!("{output}: {targets} targets, {findings} findings, {total} bytes");
}
