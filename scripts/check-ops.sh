#!/usr/bin/env bash
# Checks the operations files with the tools that read them, and against the code:
#   (a) deploy/prometheus/edge-bridge-alerts.yml: promtool check rules; promtool test rules on
#       edge-bridge-alerts.test.yml; every alert has severity, summary, description, `for:`,
#       and a test where it fires and one where it does not.
#   (b) every metric and label name in the alert rules and in the Grafana dashboard
#       (deploy/grafana/edge-bridge-dashboard.json) is one the bridge exports, read from the
#       metric names in bridge/src/metrics.rs; the dashboard's queries parse (promtool) and its
#       panels are well formed.
#   (c) deploy/edge-bridge.service: systemd-analyze verify, on a temporary copy whose ExecStart
#       and ExecStartPre run the built binary (see check_systemd); the example configuration
#       deploy/edge-bridge.toml passes the binary's check-config, as the unit's ExecStartPre does.
#   (d) docker-compose.yml against the Compose specification schema (check-jsonschema's
#       vendored copy), and its cross-references (services, volumes, Dockerfile paths, the
#       EDGE_BRIDGE_* variables it sets).
#   (e) deploy/Dockerfile, without Docker: what it COPYs exists, it builds the packages and
#       binaries the repo's scripts build, the binaries it copies out are the ones that build
#       makes, its runtime stage provides the shared libraries the binary links, its ports and
#       variables match the configuration. What needs a Docker engine is listed, not checked.
# Installs what it needs once: the Debian packages prometheus (promtool) and systemd
# (systemd-analyze) if missing, and a Python venv with check-jsonschema in $EDGE_TOOLS_DIR.
#   scripts/check-ops.sh
# EDGE_BRIDGE_BIN=PATH: the edge-bridge binary for (c) and (e) (default: the newest of
# ${CARGO_TARGET_DIR:-target}/{release,debug}/edge-bridge). EDGE_OPS_SKIP_SYSTEMD=1 skips (c)
# where systemd-analyze cannot run or no binary is built; the skip is reported.
set -euo pipefail
cd "$(dirname "$0")/.."

export EDGE_TOOLS_DIR="${EDGE_TOOLS_DIR:-$HOME/.cache/edge-bridge-tools}"
VENV="$EDGE_TOOLS_DIR/venv-ops"
# Pinned: the compose-spec schema check-jsonschema vendors changes with its version.
CHECK_JSONSCHEMA_VERSION=0.39.0
RULES=deploy/prometheus/edge-bridge-alerts.yml
RULE_TESTS=deploy/prometheus/edge-bridge-alerts.test.yml
DASHBOARD=deploy/grafana/edge-bridge-dashboard.json
UNIT=deploy/edge-bridge.service
mkdir -p "$EDGE_TOOLS_DIR"

# --- Tools, once ---------------------------------------------------------------------------
packages=(prometheus systemd python3-venv)
. scripts/lib/debian.sh
debian_install check-ops "${packages[@]}"
if ! "$VENV/bin/check-jsonschema" --version 2>/dev/null | grep -qF "$CHECK_JSONSCHEMA_VERSION"; then
  echo "check-ops: installing check-jsonschema $CHECK_JSONSCHEMA_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" ruamel.yaml
fi
PY="$VENV/bin/python"
"$PY" -c 'import tomllib' 2>/dev/null || "$VENV/bin/pip" install --quiet --disable-pip-version-check tomli

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The built binary, for (c) and (e): EDGE_BRIDGE_BIN, else the newest of release and debug.
BIN="${EDGE_BRIDGE_BIN:-}"
if [ -z "$BIN" ]; then
  for b in "${CARGO_TARGET_DIR:-target}"/{release,debug}/edge-bridge; do
    if [ -x "$b" ] && { [ -z "$BIN" ] || [ "$b" -nt "$BIN" ]; }; then BIN=$b; fi
  done
fi
[ -n "$BIN" ] && BIN=$(realpath "$BIN")
if [ -n "$BIN" ]; then
  # The other binaries of the tree may be rebuilt while this runs: use a copy.
  cp "$BIN" "$WORK/edge-bridge"
  echo "check-ops: built binary: $BIN ($(date -r "$BIN" '+%F %T'))"
fi

# Python checks, one subcommand per check (see the end of the program).
cat >"$WORK/check_ops.py" <<'PY'
import glob, json, os, re, subprocess, sys
try:
    import tomllib
except ImportError:
    import tomli as tomllib
from ruamel.yaml import YAML

yaml = YAML(typ="safe")
failed = False


def fail(msg):
    global failed
    failed = True
    print("  ERROR: " + msg)


def warn(msg):
    print("  WARNING: " + msg)


def info(msg):
    print("  " + msg)


# --- What the bridge exports, from bridge/src/metrics.rs --------------------------------------
def exported_series():
    """{series name: set of its labels}, as the exposition names them.

    Reads the two ways bridge/src/metrics.rs has named metrics: a helper call with the name
    after the encoder (`counter(e, "NAME", help, v)`, `gauge(..)`, `labelled(e, "NAME", help,
    "LABEL", ..)`), or a table row with the kind after the name (`("NAME", help, Counter(..))`,
    `Gauge(..)`, `Labelled("LABEL", ..)`, `PerCluster(..)` (a gauge labelled `cluster`), or a
    closure of the file whose body makes one of those); and a histogram encoded directly (`encode_descriptor("NAME", .., VAR.metric_type())`
    with VAR a field of Stats whose type is a Histogram or a newtype of one). Any other
    `"edge_bridge_..."` literal is an error: the check must learn it rather than guess."""
    src = open("bridge/src/metrics.rs").read().split("#[cfg(test)]")[0]
    stats = open("bridge/src/stats.rs").read()
    help_ = r'"(?:[^"\\]|\\.)*"'
    # Closures of the file that make a labelled counter, a counter or a gauge.
    closures = {}
    for m in re.finditer(r"let (\w+) = (?:move )?\|[^|]*\|", src):
        body = src[m.end():m.end() + 600]
        k = re.search(r'\b(Labelled)\(\s*"(\w+)"|\b(Counter|Gauge|PerCluster)\(', body)
        if k:
            closures[m.group(1)] = ("Labelled", k.group(2)) if k.group(1) else (k.group(3), None)
    series = {}

    def add(name, kind, label=None):
        if kind == "counter":
            series[name + "_total"] = {label} if label else set()
        elif kind == "gauge":
            series[name] = {label} if label else set()
        elif kind == "histogram":
            series[name + "_bucket"] = {"le"}
            series[name + "_sum"] = set()
            series[name + "_count"] = set()

    for m in re.finditer(r'"(edge_bridge_[a-z0-9_]*)"', src):
        name, before, after = m.group(1), src[:m.start()], src[m.end():]
        old = re.search(r"\b(counter|gauge|labelled)\(\s*e,\s*$", before)
        if old:
            label = re.match(r",\s*%s,\s*\"(\w+)\"" % help_, after) if old.group(1) == "labelled" else None
            add(name, "gauge" if old.group(1) == "gauge" else "counter", label and label.group(1))
            continue
        if re.search(r"encode_descriptor\(\s*$", before):
            var = re.match(r"[^;]*?(\w+)\.metric_type\(\)", after, re.S)
            field = var and re.search(r"let %s = &st\.(\w+)" % re.escape(var.group(1)), src)
            ty = field and re.search(r"pub %s: (\w+)" % field.group(1), stats)
            ty = ty and ty.group(1)
            if ty and ty != "Histogram":
                inner = re.search(r"pub struct %s\(pub (\w+)\)" % ty, stats)
                ty = inner.group(1) if inner else ty
            if ty == "Histogram":
                add(name, "histogram")
            else:
                fail(f"cannot tell the type of {name} from bridge/src/metrics.rs and stats.rs "
                     f"(found {ty!r}); teach scripts/check-ops.sh")
            continue
        row = re.match(r",\s*%s,\s*(?:Value::)?(\w+)\(\s*(?:\"(\w+)\")?" % help_, after)
        kind = row and row.group(1)
        label = row and row.group(2)
        if kind in closures:
            kind, label = closures[kind]
        if kind in ("Counter", "Gauge", "Labelled"):
            add(name, "gauge" if kind == "Gauge" else "counter", label if kind == "Labelled" else None)
            continue
        if kind == "PerCluster":
            # A gauge per Kafka-API cluster (`Value::PerCluster`), label `cluster`.
            add(name, "gauge", "cluster")
            continue
        fail(f"bridge/src/metrics.rs names the metric {name} in a way this check does not read "
             f"(see exported_series in scripts/check-ops.sh); teach it")
    return series


# Series Prometheus itself makes for each target, and the labels it attaches.
PROMETHEUS_SERIES = {"up": set()}
TARGET_LABELS = {"job", "instance"}
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "offset", "bool", "inf", "nan", "start", "end"}
GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"


def promql_names(expr):
    """(metric names, label names) a PromQL expression uses."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    labels = []
    for body in re.findall(r"\{([^}]*)\}", s):
        labels += re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", body)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    for body in re.findall(GROUPING, s):
        labels += [l.strip() for l in body.split(",") if l.strip()]
    s = re.sub(GROUPING, " ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)
    names = [t for t in re.findall(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(?!\s*\(|[\w:])", s)
             if t not in KEYWORDS]
    return names, labels


def check_names(where, exprs, series):
    known = {**series, **PROMETHEUS_SERIES}
    all_labels = set().union(*series.values()) | TARGET_LABELS | {"__name__"}
    bad = 0
    for what, expr in exprs:
        names, labels = promql_names(expr)
        if not names:
            fail(f"{where}: {what}: no metric name found in: {expr}")
            bad += 1
        for n in names:
            if n not in known:
                fail(f"{where}: {what}: '{n}' is not a metric the bridge exports")
                bad += 1
        for l in labels:
            if l not in all_labels:
                fail(f"{where}: {what}: label '{l}' is on no exported metric "
                     f"(labels: {', '.join(sorted(all_labels))})")
                bad += 1
    info(f"{where}: {len(exprs)} queries checked, {bad} unknown names")


def rules():
    return yaml.load(open(os.environ["RULES"]))


def rule_exprs():
    return [(r["alert"], r["expr"]) for g in rules()["groups"] for r in g["rules"]]


def dashboard_exprs(d):
    out = []
    for p in d.get("panels", []):
        for q in [p] + p.get("panels", []):
            for t in q.get("targets", []):
                if "expr" in t:
                    out.append((f"panel '{q.get('title')}' query {t.get('refId')}", t["expr"]))
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else q
            m = re.fullmatch(r"\s*label_values\((?:(.*),)?\s*(\w+)\s*\)\s*", q or "")
            if m:
                out.append((f"variable ${v['name']}", (m.group(1) or "up") + "{" + m.group(2) + '=""}'))
            else:
                out.append((f"variable ${v['name']}", q))
    return out


# --- (a) ------------------------------------------------------------------------------------
def cmd_rules_coverage():
    tests = yaml.load(open(os.environ["RULE_TESTS"]))
    fires, quiet = set(), set()
    for t in tests["tests"]:
        for c in t.get("alert_rule_test", []):
            (fires if c.get("exp_alerts") else quiet).add(c["alertname"])
    n = 0
    for g in rules()["groups"]:
        for r in g["rules"]:
            if "alert" not in r:
                continue
            n += 1
            a = r["alert"]
            if not r.get("for"):
                fail(f"{a}: no for: duration")
            if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                fail(f"{a}: severity label missing or not critical/warning/info")
            for k in ("summary", "description"):
                if not r.get("annotations", {}).get(k):
                    fail(f"{a}: no {k} annotation")
            if a not in fires:
                fail(f"{a}: no test case where it fires")
            if a not in quiet:
                fail(f"{a}: no test case where it does not fire")
    names = {r.get("alert") for g in rules()["groups"] for r in g["rules"]}
    for a in (fires | quiet) - names:
        fail(f"the tests name an alert the rules do not have: {a}")
    info(f"{n} alerts: each with for:, severity, summary, description, a firing and a quiet test")


# --- (b) ------------------------------------------------------------------------------------
def cmd_names():
    series = exported_series()
    info(f"bridge/src/metrics.rs exports {len(series)} series names: " + ", ".join(sorted(series)))
    check_names(os.environ["RULES"], rule_exprs(), series)
    check_names(os.environ["DASHBOARD"], dashboard_exprs(json.load(open(os.environ["DASHBOARD"]))), series)


def cmd_dashboard(promql_out):
    """Structure of the dashboard; writes its queries as recording rules for promtool."""
    path = os.environ["DASHBOARD"]
    d = json.load(open(path))
    for k in ("uid", "title", "panels", "schemaVersion"):
        if k not in d:
            fail(f"{path}: no {k}")
    if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
        fail(f"{path}: schemaVersion {d.get('schemaVersion')!r}: expected 36 or later")
    variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
    inputs = {i["name"] for i in d.get("__inputs", [])}
    ds_vars = {n for n, v in variables.items() if v.get("type") == "datasource" and v.get("query") == "prometheus"}
    if not ds_vars and not inputs:
        fail(f"{path}: neither a Prometheus data source variable nor an __inputs entry")
    builtin = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}
    ids, boxes, records = set(), [], []
    for p in d.get("panels", []):
        pid, title = p.get("id"), p.get("title")
        if pid in ids:
            fail(f"panel '{title}': id {pid} used twice")
        ids.add(pid)
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
            fail(f"panel '{title}': bad gridPos {g}")
            continue
        for (ox, oy, ow, oh, ot) in boxes:
            if g["x"] < ox + ow and ox < g["x"] + g["w"] and g["y"] < oy + oh and oy < g["y"] + g["h"]:
                fail(f"panel '{title}' overlaps panel '{ot}'")
        boxes.append((g["x"], g["y"], g["w"], g["h"], title))
        if p.get("type") == "row":
            continue
        ds = json.dumps(p.get("datasource"))
        if not any(f"${{{v}}}" in ds or f"${v}" in ds for v in ds_vars | inputs):
            fail(f"panel '{title}': data source {ds} is not the dashboard's data source variable/input")
        refs = [t.get("refId") for t in p.get("targets", [])]
        if not refs or len(refs) != len(set(refs)):
            fail(f"panel '{title}': no queries, or refIds not unique: {refs}")
        for t in p.get("targets", []):
            expr = t.get("expr", "")
            for v in re.findall(r"\$\{?(\w+)\}?", expr):
                if v not in variables and v not in builtin:
                    fail(f"panel '{title}': query uses ${v}, which is not defined")
            e = re.sub(r"\$\{?__\w+\}?", "1m", expr)
            e = re.sub(r"\$\{?\w+\}?", ".*", e)
            records.append({"record": f"dashboard:panel{pid}:{t.get('refId')}", "expr": e})
    YAML().dump({"groups": [{"name": "dashboard-queries", "rules": records}]}, open(promql_out, "w"))
    info(f"{len(ids)} panels, {len(records)} queries, variables: {', '.join(variables)}")


# --- (c), (d), (e): the EDGE_BRIDGE_* variables the deployment files set ----------------------
def config_keys():
    cfg = tomllib.load(open("bridge/default-config.toml", "rb"))
    keys = set()
    for k, v in cfg.items():
        if isinstance(v, dict):
            keys |= {f"EDGE_BRIDGE_{k}_{kk}".upper() for kk in v if not isinstance(v[kk], dict)}
        else:
            keys.add(f"EDGE_BRIDGE_{k}".upper())
    return keys


def check_env(where, names):
    keys = config_keys() | {"EDGE_BRIDGE_CONFIG"}
    for n in names:
        base = n[:-5] if n.endswith("_FILE") else n
        if n.startswith("EDGE_BRIDGE_") and base not in keys:
            fail(f"{where}: {n} is no configuration key's variable (bridge/default-config.toml); "
                 "the bridge refuses to start on an unknown EDGE_BRIDGE_* variable")
    info(f"{where}: EDGE_BRIDGE_* variables checked: {', '.join(sorted(names)) or 'none'}")


def cmd_unit_env():
    names = re.findall(r"^#?\s*Environment=\"?(EDGE_BRIDGE_\w+)=", open(os.environ["UNIT"]).read(), re.M)
    check_env(os.environ["UNIT"] + " (Environment=, also the commented examples)", names)


def compose():
    return yaml.load(open("docker-compose.yml"))


def cmd_compose_refs():
    c = compose()
    services, volumes = c.get("services", {}), set((c.get("volumes") or {}).keys())
    for name, s in services.items():
        deps = s.get("depends_on", {})
        for d in (deps if isinstance(deps, list) else deps.keys()):
            if d not in services:
                fail(f"service {name} depends on {d}, which is not a service")
        for v in s.get("volumes", []):
            src = (v.split(":")[0] if isinstance(v, str) else v.get("source"))
            if src and not src.startswith((".", "/", "~")) and src not in volumes:
                fail(f"service {name} mounts volume {src}, which is not declared under volumes:")
        b = s.get("build")
        if b is not None:
            ctx = b if isinstance(b, str) else b.get("context", ".")
            df = os.path.join(ctx, "Dockerfile" if isinstance(b, str) else b.get("dockerfile", "Dockerfile"))
            if not os.path.isdir(ctx):
                fail(f"service {name}: build context {ctx} does not exist")
            if not os.path.isfile(df):
                fail(f"service {name}: {df} does not exist")
        env = s.get("environment", {})
        env = dict(e.split("=", 1) for e in env) if isinstance(env, list) else env
        if any(k.startswith("EDGE_BRIDGE_") for k in env):
            check_env(f"docker-compose.yml service {name}", list(env))
    info(f"{len(services)} services; depends_on, volumes and build paths resolve")


def cmd_compose_env(service):
    """The service's EDGE_BRIDGE_* environment, one NAME=VALUE a line (for check-config)."""
    env = compose()["services"][service].get("environment", {})
    env = dict(e.split("=", 1) for e in env) if isinstance(env, list) else env
    for k, v in env.items():
        print(f"{k}={v}")


# --- (e) ------------------------------------------------------------------------------------
def dockerfile():
    text = re.sub(r"\\\n", " ", open("deploy/Dockerfile").read())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def cargo_builds(text):
    """[(packages, flags)] of every `cargo build` command in a text."""
    out = []
    for m in re.finditer(r"cargo build([^\n;&|]*)", text):
        args = m.group(1).split()
        pk = {args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-p", "--package")}
        out.append((pk, set(a for a in args if a.startswith("--"))))
    return out


def package_bins():
    """{package name: [bin names]} of the workspace members."""
    root = tomllib.load(open("Cargo.toml", "rb"))
    out = {}
    for member in root["workspace"]["members"]:
        t = tomllib.load(open(os.path.join(member, "Cargo.toml"), "rb"))
        name = t["package"]["name"]
        bins = [b["name"] for b in t.get("bin", [])]
        if not bins and os.path.exists(os.path.join(member, "src/main.rs")):
            bins = [name]
        out[name] = bins
    return out


def cmd_dockerfile(binary):
    ins = dockerfile()
    stages, cur = [], None
    for word, rest in ins:
        if word == "FROM":
            m = re.match(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            cur = {"image": m.group(1), "name": m.group(2), "workdir": "/", "run": [], "copy": [], "env": {}}
            stages.append(cur)
        elif word == "WORKDIR":
            cur["workdir"] = os.path.join(cur["workdir"], rest)
        elif word == "RUN":
            cur["run"].append(rest)
        elif word in ("COPY", "ADD"):
            cur["copy"].append(rest)
        elif word == "ENV":
            for k, v in re.findall(r"(\w+)=(\S+)", rest):
                cur["env"][k] = v
    build, final = stages[0], stages[-1]
    info("stages: " + ", ".join(f"{s['image']}" + (f" AS {s['name']}" if s['name'] else "") for s in stages))

    # Same Debian release in the build and the runtime stage (glibc of the binary).
    rel = [re.search(r"(bookworm|bullseye|trixie|buster)", s["image"]) for s in (build, final)]
    if not all(rel) or rel[0].group(1) != rel[1].group(1):
        fail(f"build image {build['image']} and runtime image {final['image']} are not the same Debian release")
    else:
        info(f"build and runtime stage are both Debian {rel[0].group(1)}")

    # COPY sources from the build context (the repository root: `docker build -f deploy/Dockerfile .`).
    for st in stages:
        for c in st["copy"]:
            if "--from=" in c:
                continue
            parts = [p for p in c.split() if not p.startswith("--")]
            for src in parts[:-1]:
                if not glob.glob(src):
                    fail(f"COPY {src}: not in the repository")
                else:
                    info(f"COPY {src}: exists")
                if src in (".", "./"):
                    ignore = open(".dockerignore").read().split() if os.path.exists(".dockerignore") else []
                    if not any(re.fullmatch(r"/?target/?\*{0,2}", p) for p in ignore):
                        size = subprocess.run(["du", "-sh", "target"], capture_output=True, text=True).stdout.split()
                        warn("COPY . . sends the whole repository as build context and copies it into the "
                             "build stage, and no .dockerignore leaves out target/ "
                             f"({size[0] if size else 'absent'} here) or .git: add a .dockerignore "
                             "with target/ and .git/")

    # The build command against the repo's own builds.
    bins = package_bins()
    builds = [b for r in build["run"] for b in cargo_builds(r)]
    if len(builds) != 1:
        fail(f"expected one cargo build in the build stage, found {len(builds)}")
        return
    pkgs, flags = builds[0]
    info(f"Dockerfile builds: packages {sorted(pkgs)}, flags {sorted(flags)}")
    for p in pkgs:
        if p not in bins:
            fail(f"cargo build -p {p}: no such workspace package (have {sorted(bins)})")
    if "--locked" not in flags:
        fail("the image's cargo build is not --locked: it may resolve other versions than Cargo.lock")
    repo = []
    for f in sorted(glob.glob("scripts/*.sh")) + ["deploy/README.md", "README.md"]:
        if f == "scripts/check-ops.sh":
            continue
        for pk, fl in cargo_builds(open(f).read()):
            if pk:
                repo.append((f, pk, fl))
                info(f"{f} builds: packages {sorted(pk)}, flags {sorted(fl)}")
    if not any(pk == pkgs for _, pk, _ in repo):
        fail(f"no script or README builds the packages the image builds ({sorted(pkgs)})")
    profile = "release" if "--release" in flags else None
    if profile is None:
        fail("the image's cargo build is not --release; the COPY --from paths below assume target/release")

    # What is copied out of the build stage is what that build makes.
    made = {f"{build['workdir'].rstrip('/')}/target/{profile}/{b}"
            for p in pkgs for b in bins.get(p, [])}
    installed = set()
    for c in final["copy"]:
        m = re.match(r"--from=(\S+)\s+(.*)", c)
        if not m:
            continue
        paths = m.group(2).split()
        for src in paths[:-1]:
            if src not in made:
                fail(f"COPY --from={m.group(1)} {src}: the build stage makes {sorted(made)}")
            else:
                info(f"COPY --from={m.group(1)} {src}: made by the build stage")
            installed.add(os.path.join(paths[-1], os.path.basename(src)))
    for word, rest in ins:
        if word == "ENTRYPOINT":
            ep = json.loads(rest)[0]
            if ep not in installed:
                fail(f"ENTRYPOINT {ep} is not one of the installed binaries {sorted(installed)}")
            else:
                info(f"ENTRYPOINT {ep}: installed")
    for name, s in compose().get("services", {}).items():
        ep = s.get("entrypoint")
        if s.get("build") and ep:
            ep = ep[0] if isinstance(ep, list) else ep.split()[0]
            if ep not in installed:
                fail(f"docker-compose.yml service {name}: entrypoint {ep} is not in the image")
            else:
                info(f"docker-compose.yml service {name}: entrypoint {ep} is in the image")

    # Ports and variables against the configuration.
    cfg = tomllib.load(open("bridge/default-config.toml", "rb"))
    ports = {cfg["mqtt"]["listen"].rsplit(":", 1)[1], cfg["mqtt"]["listen_v5"].rsplit(":", 1)[1]}
    # The HTTP endpoint is loopback by default; an image that moves it (ENV
    # EDGE_BRIDGE_HTTP_LISTEN) must expose its port, and one that does not must not.
    http = final["env"].get("EDGE_BRIDGE_HTTP_LISTEN", cfg["http"]["listen"])
    if http and not http.startswith("127.") and not http.startswith("[::1]"):
        ports.add(http.rsplit(":", 1)[1])
    exposed = {p.split("/")[0] for w, r in ins if w == "EXPOSE" for p in r.split()}
    if exposed != ports:
        fail(f"EXPOSE {sorted(exposed)}, the default listeners (MQTT, and HTTP on {http}) are on {sorted(ports)}")
    else:
        info(f"EXPOSE {sorted(exposed)}: the default MQTT listeners and the HTTP endpoint ({http})")
    check_env("deploy/Dockerfile ENV", list(final["env"]))

    # Shared libraries of the built binary against what the runtime stage has.
    if not binary:
        warn("no built edge-bridge: the shared libraries the runtime stage must provide are not checked")
        return
    os_release = open("/etc/os-release").read()
    host = re.search(r"VERSION_CODENAME=(\w+)", os_release)
    if not host or host.group(1) != rel[1].group(1) or not os.path.exists("/usr/bin/apt-cache"):
        warn(f"this host is not Debian {rel[1].group(1)} with apt: the shared libraries are not checked")
        return
    libs = re.findall(r"=>\s+(\S+)", subprocess.run(["ldd", binary], capture_output=True, text=True).stdout)
    pkgs_needed = {}
    for lib in libs:
        for path in dict.fromkeys([lib, os.path.realpath(lib), re.sub(r"^/usr", "", os.path.realpath(lib))]):
            r = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
            if r.returncode == 0:
                pkgs_needed[os.path.basename(lib)] = r.stdout.split(":")[0]
                break
        else:
            fail(f"{binary} links {lib}, which no Debian package provides here")
    # The runtime image: debian:*-slim holds the Priority: required packages and apt, and what
    # the Dockerfile installs; each with its dependencies.
    avail = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True).stdout
    base = set()
    for para in avail.split("\n\n"):
        if re.search(r"^Priority: required$", para, re.M):
            base.add(re.search(r"^Package: (\S+)", para, re.M).group(1))
    added = set()
    for r in final["run"]:
        for m in re.finditer(r"apt-get install((?:\s+[-\w.+=]+)+)", r):
            added |= {w for w in m.group(1).split() if not w.startswith("-")}
    roots = sorted(base | {"apt"} | added)
    dep = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                          "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances"] + roots,
                         capture_output=True, text=True).stdout
    closure = {l.strip() for l in dep.splitlines() if l and not l.startswith(" ")}
    info(f"runtime stage installs {sorted(added)} on {final['image']}")
    for lib, p in sorted(pkgs_needed.items()):
        if p in closure:
            info(f"{lib} ({p}): in the runtime image")
        else:
            fail(f"{lib} ({p}) is linked by the bridge but not in the runtime image: apt-get install it there")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    globals()["cmd_" + cmd.replace("-", "_")](*args)
    sys.exit(1 if failed else 0)
PY
export RULES RULE_TESTS DASHBOARD UNIT
ops() { "$PY" "$WORK/check_ops.py" "$@"; }

FAILED=()
SKIPPED=()
check() {
  local name=$1; shift
  echo
  echo "== $name"
  if "$@"; then echo "-- ok: $name"; else echo "-- FAILED: $name"; FAILED+=("$name"); fi
}

# Each check function returns non-zero on any failure (errexit does not apply inside a function
# called as a condition, hence the explicit `|| rc=1`).

check_rules() {
  local rc=0
  promtool check rules "$RULES" || rc=1
  promtool test rules "$RULE_TESTS" || rc=1
  ops rules-coverage || rc=1
  return $rc
}

check_names() {
  local rc=0
  ops names || rc=1
  ops dashboard "$WORK/dashboard-queries.yml" || rc=1
  echo "  the dashboard's queries as PromQL (\$__rate_interval as 1m, variables as .*):"
  promtool check rules "$WORK/dashboard-queries.yml" | sed 's/^/  /' || rc=1
  return $rc
}

# systemd-analyze verify requires the binaries of ExecStart= and ExecStartPre= to exist and be
# executable. The unit names the installed path, /usr/local/bin/edge-bridge, so the check runs on
# a temporary copy of the unit (same file name, so the same unit name) in which that path, and
# nothing else, is replaced by the built binary. It needs no running systemd.
check_systemd() {
  if [ "${EDGE_OPS_SKIP_SYSTEMD:-}" = 1 ]; then
    echo "  skipped: EDGE_OPS_SKIP_SYSTEMD=1"
    SKIPPED+=("systemd-analyze verify (EDGE_OPS_SKIP_SYSTEMD=1)")
    return 0
  fi
  if [ -z "$BIN" ]; then
    echo "  ERROR: no built edge-bridge (looked for EDGE_BRIDGE_BIN, ${CARGO_TARGET_DIR:-target}/release/edge-bridge"
    echo "  and ${CARGO_TARGET_DIR:-target}/debug/edge-bridge). systemd-analyze verify fails when ExecStart's binary"
    echo "  does not exist. Build it (cargo build -p edge-bridge), set EDGE_BRIDGE_BIN, or skip this"
    echo "  check explicitly with EDGE_OPS_SKIP_SYSTEMD=1."
    return 1
  fi
  local rc=0 out status
  if ! grep -q '^ExecStart=/usr/local/bin/edge-bridge ' "$UNIT"; then
    echo "  ERROR: $UNIT no longer runs /usr/local/bin/edge-bridge: update check_systemd"
    return 1
  fi
  mkdir -p "$WORK/unit"
  sed "s#/usr/local/bin/edge-bridge#\"$WORK/edge-bridge\"#g" "$UNIT" >"$WORK/unit/edge-bridge.service"
  echo "  verifying a copy of $UNIT with /usr/local/bin/edge-bridge -> $BIN (copied)"
  status=0
  out=$(systemd-analyze verify "$WORK/unit/edge-bridge.service" 2>&1) || status=$?
  # verify exits 0 when it ignores an unknown key or a bad value (it only logs them): any
  # output is a failure too.
  if [ "$status" -ne 0 ] || [ -n "$out" ]; then
    echo "$out" | sed "s#$WORK/unit/#deploy/#g; s#^#  #"
    echo "  ERROR: systemd-analyze verify exited $status with the messages above. If they say that"
    echo "  systemd-analyze cannot run here (not the unit's fault), EDGE_OPS_SKIP_SYSTEMD=1 skips this check."
    rc=1
  else
    echo "  systemd-analyze verify: no message"
  fi
  systemd-analyze security --offline=yes "$WORK/unit/edge-bridge.service" 2>/dev/null \
    | grep -i 'overall exposure' | sed 's/^/  systemd-analyze security: /' || true
  # The unit's ExecStartPre on the example configuration, with no EDGE_BRIDGE_* variable around.
  if env -i PATH="$PATH" HOME="$HOME" "$WORK/edge-bridge" check-config deploy/edge-bridge.toml >"$WORK/check-config.out" 2>&1; then
    echo "  edge-bridge check-config deploy/edge-bridge.toml: valid"
  else
    sed 's/^/  /' "$WORK/check-config.out"
    echo "  ERROR: deploy/edge-bridge.toml is refused by edge-bridge check-config"
    rc=1
  fi
  ops unit-env || rc=1
  return $rc
}

check_compose() {
  local rc=0
  "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml | sed 's/^/  /'
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
  ops compose-refs || rc=1
  if [ -n "$BIN" ]; then
    # The bridge service's environment through the real configuration loader (defaults + env).
    local -a envs
    mapfile -t envs < <(ops compose-env bridge)
    if env -i PATH="$PATH" HOME="$HOME" "${envs[@]}" "$WORK/edge-bridge" check-config >"$WORK/compose-config.out" 2>&1; then
      echo "  edge-bridge check-config with the bridge service's environment (${envs[*]}): valid"
    else
      sed 's/^/  /' "$WORK/compose-config.out"
      echo "  ERROR: the bridge service's environment is refused by edge-bridge check-config"
      rc=1
    fi
  fi
  return $rc
}

check_dockerfile() {
  local rc=0
  ops dockerfile "${BIN:+$WORK/edge-bridge}" || rc=1
  echo "  not checked without a Docker engine: that the base images can be pulled, that apt-get and"
  echo "  cargo build succeed in the build stage (Rust toolchain of rust:1 >= rust-version, C"
  echo "  toolchain and OpenSSL headers of the image for librdkafka), the arm64 build, and that the"
  echo "  image starts and runs as user edge-bridge with a writable /var/lib/edge-bridge volume."
  return $rc
}

check "(a) alert rules: promtool check rules, promtool test rules, coverage" check_rules
check "(b) metric names in the alert rules and the dashboard vs bridge/src/metrics.rs; dashboard" check_names
check "(c) systemd unit: systemd-analyze verify, check-config" check_systemd
check "(d) docker-compose.yml: Compose specification schema, references" check_compose
check "(e) deploy/Dockerfile without Docker" check_dockerfile

echo
for s in "${SKIPPED[@]+"${SKIPPED[@]}"}"; do echo "check-ops: SKIPPED: $s"; done
if [ "${#FAILED[@]}" -gt 0 ]; then
  printf 'check-ops: FAILED: %s\n' "${FAILED[@]}"
  exit 1
fi
echo "check-ops: all checks passed"
