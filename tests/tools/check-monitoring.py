#!/usr/bin/env python3
"""Keeps the alerts and the dashboard in step with the metrics the Rust code exports.

    tests/tools/check-monitoring.py          # check; exit 1 listing every problem
    tests/tools/check-monitoring.py --list   # print the exported metrics (name, type, labels)

The exported metrics are read from the sources (services/*/src, operator/src): every
prometheus-client `register("name", "help", metric)` / `register_with_unit(...)`, with the
registry's `with_prefix` and the exposition suffixes (`_total` for counters, `_bucket`,
`_sum`, `_count` for histograms). The metric's type and labels come from the declaration of
the registered value (`Family<Labels, Counter>`, `Gauge`, `Histogram`, …) and from the
`EncodeLabelSet` struct of its labels.

Checked, in charts/appstack-operator/files/appstack.rules.yaml and grafana-dashboard.json:
- every metric an expression reads is exported, recorded by a rule of the rules file, one
  Prometheus makes itself (`up`), or listed in PROPOSED below (a metric a rule needs that the
  code does not export yet; an entry that the code now exports is an error, so the list
  shrinks as the code catches up);
- every label in a selector or a `by`/`on` list exists on the metrics of the expression or
  is a target label the scrape adds;
- the dashboard is valid JSON, its panels have unique ids and every query names a metric;
- every alert has `for:`, a `severity` label and `summary`, `description` and `runbook`
  annotations, and appstack.rules.test.yaml makes it fire at least once and not fire at
  least once.
Python 3 standard library only.
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts/appstack-operator/files/appstack.rules.yaml"
RULES_TEST = ROOT / "charts/appstack-operator/files/appstack.rules.test.yaml"
DASHBOARD = ROOT / "charts/appstack-operator/files/grafana-dashboard.json"
SOURCES = [ROOT / "operator/src", *sorted((ROOT / "services").glob("*/src"))]

# Metrics the rules use that the code does not export yet: name -> what should export it.
PROPOSED: dict[str, str] = {}
# Series Prometheus makes itself.
BUILTIN = {"up": set(), "scrape_duration_seconds": set(), "scrape_samples_scraped": set()}
# Labels the scrape adds (a PodMonitor/ServiceMonitor: namespace, pod, job, instance,
# container, endpoint; deploy/monitoring/podmonitor.yaml adds stack and component).
TARGET_LABELS = {"namespace", "pod", "job", "instance", "container", "endpoint", "stack", "component"}

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right",
                   "and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
# Aggregations may be followed by `by (…)` before their parenthesis.
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile", "limitk", "limit_ratio"}


# ---------------------------------------------------------------------------------------
# The Rust side.

def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def without_tests(text):
    """The file up to its `#[cfg(test)] mod …` (registrations in tests are not exported)."""
    m = re.search(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*mod\b", text)
    return text[: m.start()] if m else text


def crate_files(src):
    return [p for p in sorted(src.rglob("*.rs")) if p.name != "tests.rs" and "tests" not in p.relative_to(src).parts]


def declared_types(ident, text):
    """The declared types of `ident`: struct fields and `let` bindings (generics balanced)."""
    types = []
    for m in re.finditer(rf"(?:\blet\s+(?:mut\s+)?{ident}\s*=|(?<![.\w]){ident}\s*:(?!:))\s*", text):
        depth, j = 0, m.end()
        while j < len(text):
            c = text[j]
            if c in "<([":
                depth += 1
            elif c in ">)]":
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and c in ",;={}\n":
                break
            j += 1
        types.append(text[m.end():j].strip())
    return types


def kind_of(type_text):
    for kind in ("Histogram", "Counter", "Gauge"):
        if re.search(rf"\b{kind}\b", type_text):
            return kind.lower()
    return None


def label_struct_of(type_text):
    m = re.search(r"Family\s*(?:::)?\s*<\s*([A-Za-z_][A-Za-z0-9_]*)\s*,", type_text)
    return m.group(1) if m else None


def exported_metrics(problems):
    """name as exposed -> {"type", "labels", "base", "file"}."""
    out = {}
    for src in SOURCES:
        files = crate_files(src)
        texts = {p: without_tests(strip_comments(p.read_text())) for p in files}
        crate_text = "\n".join(texts.values())
        structs = {}
        for m in re.finditer(r"struct\s+([A-Za-z_][A-Za-z0-9_]*)\s*\{([^}]*)\}", crate_text):
            fields = re.findall(r"(?:pub(?:\([^)]*\))?\s+)?([a-z_][a-z0-9_]*)\s*:", m.group(2))
            structs.setdefault(m.group(1), fields)
        label_structs = set(re.findall(
            r"#\[derive\([^)]*EncodeLabelSet[^)]*\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?struct\s+([A-Za-z_][A-Za-z0-9_]*)",
            crate_text))
        for path, text in texts.items():
            prefix = ""
            pm = re.search(r"with_prefix\(\s*\"([a-z_:][a-z0-9_:]*)\"", text)
            if pm:
                prefix = pm.group(1) + "_"
            for m in re.finditer(
                    r"\.register(?:_with_unit)?\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"\s*,\s*\"(?:[^\"\\]|\\.)*\"\s*,\s*(?:[A-Za-z_][A-Za-z0-9_:]*\s*,\s*)?([^;]*?)\)\s*;",
                    text, flags=re.S):
                name, value = prefix + m.group(1), m.group(2)
                where = f"{path.relative_to(ROOT)}"
                idents = re.findall(r"([a-z_][a-z0-9_]*)\s*\.\s*clone\(\)", value) or re.findall(r"([a-z_][a-z0-9_]*)\s*$", value.strip())
                if not idents:
                    problems.append(f"{where}: cannot tell what `{name}` registers ({value.strip()!r})")
                    continue
                ident = idents[-1]
                types = {t for t in declared_types(ident, crate_text) if kind_of(t)}
                kinds = {kind_of(t) for t in types}
                if len(kinds) != 1:
                    problems.append(f"{where}: cannot tell the type of `{name}` (`{ident}`: {sorted(types) or 'no declaration found'})")
                    continue
                kind = kinds.pop()
                labels = set()
                for t in types:
                    struct = label_struct_of(t)
                    if struct:
                        if struct not in label_structs or struct not in structs:
                            problems.append(f"{where}: labels of `{name}`: no EncodeLabelSet struct {struct}")
                        labels |= set(structs.get(struct, []))
                entry = {"type": kind, "labels": labels, "base": name, "file": where}
                if kind == "counter":
                    names = {name + "_total": labels}
                elif kind == "histogram":
                    names = {name + "_bucket": labels | {"le"}, name + "_sum": labels, name + "_count": labels}
                else:
                    names = {name: labels}
                for exposed, labs in names.items():
                    if exposed in out:
                        problems.append(f"{where}: `{exposed}` registered twice (also in {out[exposed]['file']})")
                    out[exposed] = dict(entry, labels=labs)
    return out


# ---------------------------------------------------------------------------------------
# PromQL, approximately: enough to find the metric names, selector labels and label lists.

def promql_refs(expr):
    """(metrics, selector labels per metric, grouping labels) of one expression."""
    metrics, selectors, grouping = [], [], set()
    s = re.sub(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*", "VAR", expr)
    i, n, last_metric = 0, len(s), None
    while i < n:
        c = s[i]
        if c in "\"'`":
            j = i + 1
            while j < n and s[j] != c:
                j += 2 if s[j] == "\\" else 1
            i = j + 1
            continue
        if c == "{":
            j = s.index("}", i)
            body = s[i + 1:j]
            body = re.sub(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'", "\"\"", body)
            labels = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", body)
            selectors.append((last_metric, set(labels)))
            last_metric = None
            i = j + 1
            continue
        if c == "[":
            i = s.index("]", i) + 1
            continue
        m = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", s[i:])
        if m and not (i > 0 and (s[i - 1].isdigit() or s[i - 1] == ".")):
            word = m.group(0)
            j = i + len(word)
            rest = s[j:].lstrip()
            if word.lower() in {"by", "without", "on", "ignoring", "group_left", "group_right"} and rest.startswith("("):
                k = s.index("(", j)
                e = s.index(")", k)
                grouping |= set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", s[k + 1:e]))
                i = e + 1
                continue
            if rest.startswith("(") or word.lower() in PROMQL_KEYWORDS | AGGREGATIONS or word == "VAR":
                i = j
                continue
            metrics.append(word)
            last_metric = word
            i = j
            continue
        if m:  # part of a number (1e3, 0x1f)
            i += len(m.group(0))
            continue
        i += 1
    return metrics, selectors, grouping


# ---------------------------------------------------------------------------------------
# The rules file (the subset of YAML it is written in).

def rule_blocks(text):
    """Each rule as (kind, name, its lines), kind `record` or `alert`."""
    lines = text.split("\n")
    blocks = []
    for idx, line in enumerate(lines):
        m = re.match(r"(\s*)- (record|alert):\s*(\S+)", line)
        if not m:
            continue
        indent = len(m.group(1))
        body = [line]
        for nxt in lines[idx + 1:]:
            if nxt.strip() and (len(nxt) - len(nxt.lstrip()) <= indent):
                break
            body.append(nxt)
        blocks.append((m.group(2), m.group(3), body))
    return blocks


def block_value(body, key):
    """The value of `key:` in a rule's lines: one line, or a `|`/`>` block."""
    for idx, line in enumerate(body):
        m = re.match(rf"(\s*)(?:- )?{key}:\s*(.*)$", line)
        if not m:
            continue
        value = m.group(2).strip()
        if value[:1] in "|>":
            indent = None
            out = []
            for nxt in body[idx + 1:]:
                if not nxt.strip():
                    out.append("")
                    continue
                ind = len(nxt) - len(nxt.lstrip())
                if indent is None:
                    indent = ind
                if ind < indent:
                    break
                out.append(nxt[indent:])
            return "\n".join(out).strip()
        if value[:1] in "\"'":
            return value[1:-1]
        return value
    return None


def main():
    problems, warnings = [], []
    exported = exported_metrics(problems)
    if "--list" in sys.argv[1:]:
        for name in sorted(exported):
            e = exported[name]
            print(f"{name:55} {e['type']:9} {{{', '.join(sorted(e['labels']))}}}  {e['file']}")
        return 0
    if len(exported) < 10:
        problems.append(f"only {len(exported)} exported metrics found in the sources: the extraction is broken")

    known = {k: v["labels"] for k, v in exported.items()}
    known.update(BUILTIN)

    rules_text = RULES.read_text()
    blocks = rule_blocks(rules_text)
    recorded = {}
    exprs = []  # (where, expr)
    for kind, name, body in blocks:
        expr = block_value(body, "expr")
        if expr is None:
            problems.append(f"{RULES.name}: {kind} {name} has no expr")
            continue
        exprs.append((f"{RULES.name}: {kind} {name}", expr))
        if kind == "record":
            _, _, grouping = promql_refs(expr)
            recorded[name] = grouping
        else:
            for key in ("for", "severity", "summary", "description", "runbook"):
                if block_value(body, key) is None:
                    problems.append(f"{RULES.name}: alert {name} has no `{key}`")
    known.update(recorded)
    alerts = [name for kind, name, _ in blocks if kind == "alert"]
    if len(set(alerts)) != len(alerts):
        problems.append(f"{RULES.name}: an alert name is used twice")

    # The dashboard.
    try:
        dash = json.loads(DASHBOARD.read_text())
    except ValueError as error:
        problems.append(f"{DASHBOARD.name}: not JSON: {error}")
        dash = {}
    ids = []

    def walk(node, where):
        if isinstance(node, dict):
            if "id" in node and "gridPos" in node:
                ids.append(node["id"])
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    exprs.append((f"{DASHBOARD.name}: {where}", value))
                elif key == "panels" or key == "targets":
                    walk(value, where)
                else:
                    walk(value, node.get("title", where) if isinstance(node.get("title"), str) else where)
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(dash.get("panels", []), "panel")
    if dash and len(ids) != len(set(ids)):
        problems.append(f"{DASHBOARD.name}: panel ids are not unique")
    if dash and not dash.get("uid"):
        problems.append(f"{DASHBOARD.name}: no uid")
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", query, flags=re.S)
        if not m:
            problems.append(f"{DASHBOARD.name}: variable {var.get('name')}: not a label_values() query")
            continue
        exprs.append((f"{DASHBOARD.name}: variable {var.get('name')}", m.group(1)))
        metrics, _, _ = promql_refs(m.group(1))
        for metric in metrics:
            if metric in known and m.group(2) not in known[metric] | TARGET_LABELS:
                problems.append(f"{DASHBOARD.name}: variable {var.get('name')}: {metric} has no label {m.group(2)}")

    used = set()
    for where, expr in exprs:
        metrics, selectors, grouping = promql_refs(expr)
        if not metrics:
            problems.append(f"{where}: names no metric: {expr!r}")
        labels_here = set(TARGET_LABELS)
        for metric in metrics:
            used.add(metric)
            if metric in known:
                labels_here |= known[metric]
            elif metric in PROPOSED:
                warnings.append(f"{where}: {metric} is not exported yet (proposed: {PROPOSED[metric]})")
            else:
                hint = ""
                base = re.sub(r"_(total|bucket|sum|count)$", "", metric)
                close = [k for k in known if k.startswith(base)]
                if close:
                    hint = f" (exported: {', '.join(sorted(close))})"
                problems.append(f"{where}: {metric} is not an exported metric{hint}")
        for metric, labels in selectors:
            if metric in known:
                allowed = known[metric] | TARGET_LABELS | ({"le"} if metric.endswith("_bucket") else set())
                for label in sorted(labels - allowed):
                    problems.append(f"{where}: {metric} has no label `{label}` (it has {sorted(known[metric]) or 'none'})")
        for label in sorted(grouping - labels_here - {"le"}):
            problems.append(f"{where}: `{label}` in a by/on list is a label of none of {sorted(set(metrics))}")

    for name in PROPOSED:
        if name in exported:
            problems.append(f"{name} is exported now ({exported[name]['file']}): remove it from PROPOSED")

    # Each alert fires in a test and stays quiet in another.
    test_text = RULES_TEST.read_text()
    fires, quiet = set(), set()
    for m in re.finditer(r"alertname:\s*(\S+)\s*\n\s*exp_alerts:\s*(\[\])?", test_text):
        (quiet if m.group(2) else fires).add(m.group(1))
    for alert in alerts:
        if alert not in fires:
            problems.append(f"{RULES_TEST.name}: no test makes {alert} fire")
        if alert not in quiet:
            problems.append(f"{RULES_TEST.name}: no test checks that {alert} stays quiet")
    for alert in (fires | quiet) - set(alerts):
        problems.append(f"{RULES_TEST.name}: tests an alert the rules do not have: {alert}")

    for warning in sorted(set(warnings)):
        print(f"warning: {warning}", file=sys.stderr)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    print(f"monitoring: {len(exported)} exported series names; rules ({len(alerts)} alerts, "
          f"{len(recorded)} recordings) and dashboard ({len(ids)} panels) use {len(used)} metrics, all known")
    return 0


if __name__ == "__main__":
    sys.exit(main())
