#!/usr/bin/env bash
# Static checks of the container deployment (no Docker engine needed):
#
#  1. deploy/docker-compose.yml is valid: `docker compose config -q` when the
#     compose plugin works, else `docker-compose config -q` (Debian's
#     docker-compose, installed with apt-get when missing and we are root),
#     with and without the `gpu` profile, on a throw-away env file;
#     deploy/.env.example as shipped (no secrets) must be REFUSED, and it must
#     name every variable the compose file uses.
#  2. The Dockerfile: the paths it COPYs exist and are not in .dockerignore,
#     its stages and compose's build targets exist, the cargo package, binary
#     and features it builds exist, and every grin subcommand that the
#     Dockerfile and compose run is one the CLI has.
#  3. Prometheus scrapes the api service's port and /metrics (and promtool,
#     unpacked from Debian's prometheus package when missing, accepts the
#     config and every dashboard query); the Grafana dashboard uses only
#     metric names that crates/api/src/metrics.rs registers, and the
#     provisioned datasource uid and dashboard path.
#  4. The image's health check script parses (bash -n).
#
# A missing tool is a failure, never a skip. Run: bash scripts/compose_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { printf '\n-- %s\n' "$*"; }

COMPOSE_FILE=deploy/docker-compose.yml
[ -f "$COMPOSE_FILE" ] || fail "$COMPOSE_FILE is missing"
[ -f Dockerfile ] || fail "Dockerfile is missing"

apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
  echo "installing $* with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null || return 1
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >/dev/null || return 1
}

# ---------------------------------------------------------------- compose tool
step "compose tool"
COMPOSE=()
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
else
  echo "neither the docker compose plugin nor docker-compose works here"
  apt_install docker-compose || fail "no docker compose plugin, no docker-compose, and it could not be installed (need root and apt-get)"
  docker-compose version >/dev/null 2>&1 || fail "docker-compose was installed but does not run"
  COMPOSE=(docker-compose)
fi
echo "using: ${COMPOSE[*]} ($("${COMPOSE[@]}" version 2>/dev/null | head -n1))"

# A Python with PyYAML for the structural checks.
PY=""
for p in python3 /usr/bin/python3; do
  if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import yaml' >/dev/null 2>&1; then PY="$p"; break; fi
done
if [ -z "$PY" ]; then
  apt_install python3 python3-yaml || fail "no python3 with PyYAML, and it could not be installed"
  PY=/usr/bin/python3
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Throw-away values for every secret; the signing key only has to exist.
touch "$WORK/signing-key.pem"
cat > "$WORK/env" <<EOF
COMPOSE_PROJECT_NAME=grin-check
POSTGRES_PASSWORD=check-only-not-a-secret
GRIN_HMAC_SECRET=check-only-not-a-secret-0123456789
GRAFANA_ADMIN_PASSWORD=check-only-not-a-secret
GRIN_SIGNING_KEY_FILE=$WORK/signing-key.pem
GRIN_MODELS_DIR=$WORK/models
EOF

compose() { "${COMPOSE[@]}" --env-file "$1" -f "$COMPOSE_FILE" "${@:2}"; }

# ------------------------------------------------------------ compose config
step "compose config (default services)"
compose "$WORK/env" config -q
echo "ok"
step "compose config (--profile gpu)"
compose "$WORK/env" --profile gpu config -q
compose "$WORK/env" --profile gpu config > "$WORK/resolved.yml"
echo "ok"

step "deploy/.env.example without secrets is refused"
[ -f deploy/.env.example ] || fail "deploy/.env.example is missing"
if compose deploy/.env.example config -q > "$WORK/refused.log" 2>&1; then
  fail "compose accepted deploy/.env.example as shipped: a secret has a default"
fi
grep -Eq 'POSTGRES_PASSWORD|GRIN_HMAC_SECRET|GRAFANA_ADMIN_PASSWORD' "$WORK/refused.log" \
  || { cat "$WORK/refused.log" >&2; fail "compose refused deploy/.env.example, but not for a missing secret"; }
echo "ok, refused: ...$(tail -n1 "$WORK/refused.log" | tail -c 100)"
# Each secret on its own: leaving out one must be refused (no default anywhere).
for secret in POSTGRES_PASSWORD GRIN_HMAC_SECRET GRAFANA_ADMIN_PASSWORD; do
  grep -v "^$secret=" "$WORK/env" > "$WORK/env-without"
  if compose "$WORK/env-without" config -q > "$WORK/refused.log" 2>&1; then
    fail "compose accepted an environment without $secret: it has a default somewhere"
  fi
  grep -q "$secret" "$WORK/refused.log" \
    || { cat "$WORK/refused.log" >&2; fail "without $secret compose failed for another reason"; }
  echo "ok: without $secret compose refuses to start"
done

# ------------------------------------------------------- structural checks
step "Dockerfile, compose, Prometheus and Grafana against the workspace"
"$PY" - "$WORK/resolved.yml" <<'PYEOF'
import fnmatch, json, os, re, sys
import yaml

errors = []
def err(msg):
    errors.append(msg)

resolved = yaml.safe_load(open(sys.argv[1]))
raw_compose = open("deploy/docker-compose.yml").read()
env_example = open("deploy/.env.example").read()

# --- every ${VAR} of the compose file is documented in .env.example
code = "\n".join(l for l in raw_compose.splitlines() if not l.lstrip().startswith("#"))
used = sorted(set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", code)))
passthrough = set()
for svc in resolved["services"].values():
    env = svc.get("environment") or {}
    if isinstance(env, dict):
        passthrough |= {k for k, v in env.items() if v is None}
for var in used + sorted(passthrough):
    if not re.search(rf"^\s*#?\s*{var}=", env_example, re.M):
        err(f"deploy/.env.example does not mention {var} (used by deploy/docker-compose.yml)")

# --- secrets never have a default: every use is ${NAME:?message}
for secret in ("POSTGRES_PASSWORD", "GRIN_HMAC_SECRET", "GRAFANA_ADMIN_PASSWORD"):
    uses = re.findall(r"\$\{" + secret + r"([^}]*)\}", code)
    if not uses:
        err(f"deploy/docker-compose.yml does not use {secret}")
    for mod in uses:
        if not mod.startswith((":?", "?")):
            err(f"deploy/docker-compose.yml: ${{{secret}{mod}}} gives the secret a default or lets it be empty")
if re.search(r"^\s*[A-Z_]*(PASSWORD|SECRET)[A-Z_]*=\S", env_example, re.M):
    err("deploy/.env.example sets a password or secret: ship them empty")

# --- the CLI's subcommands (clap derive: variant names in kebab case)
main_rs = open("crates/cli/src/main.rs").read()
enum = re.search(r"enum Command \{(.*?)\n\}", main_rs, re.S).group(1)
variants = re.findall(r"^\s{4}([A-Z][A-Za-z]*)\s*[\(\{,]", enum, re.M)
subcommands = {re.sub(r"(?<!^)([A-Z])", r"-\1", v).lower() for v in variants}
for needed in ("migrate", "serve", "worker", "keys", "models", "fixture", "certificate"):
    if needed not in subcommands:
        err(f"grin has no `{needed}` subcommand (found {sorted(subcommands)})")

# --- Dockerfile
lines, cur = [], ""
for line in open("Dockerfile"):
    line = line.rstrip("\n")
    if line.lstrip().startswith("#") and not cur:
        continue
    if line.endswith("\\"):
        cur += line[:-1] + " "
        continue
    cur += line
    if cur.strip():
        lines.append(cur.strip())
    cur = ""

stages, copies, runs, cmds = [], [], [], []
global_args = {}
for l in lines:
    word, _, rest = l.partition(" ")
    word = word.upper()
    if word == "ARG" and not stages:
        k, _, v = rest.partition("=")
        global_args[k.strip()] = v.strip().strip('"')
    elif word == "FROM":
        m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
        stages.append((m.group(2) or "").lower())
    elif word in ("COPY", "ADD"):
        parts = rest.split()
        opts = [p for p in parts if p.startswith("--")]
        paths = [p for p in parts if not p.startswith("--")]
        frm = [o.split("=", 1)[1] for o in opts if o.startswith("--from=")]
        copies.append((word, frm[0] if frm else None, paths[:-1], paths[-1]))
    elif word == "RUN":
        runs.append(rest)
    elif word in ("CMD", "ENTRYPOINT"):
        cmds.append((word, json.loads(rest)))

# .dockerignore with Docker's rules: patterns relative to the context root,
# `*` not crossing `/`, `**` any depth, a pattern also matching any parent
# directory, the last matching pattern winning and `!` re-including.
ignore = []
if os.path.exists(".dockerignore"):
    for l in open(".dockerignore"):
        l = l.strip()
        if l and not l.startswith("#"):
            neg = l.startswith("!")
            pat = os.path.normpath((l[1:] if neg else l).strip()).lstrip("/")
            rx = ""
            i = 0
            while i < len(pat):
                if pat.startswith("**/", i):
                    rx += "(?:.*/)?"
                    i += 3
                elif pat.startswith("**", i):
                    rx += ".*"
                    i += 2
                elif pat[i] == "*":
                    rx += "[^/]*"
                    i += 1
                elif pat[i] == "?":
                    rx += "[^/]"
                    i += 1
                else:
                    rx += re.escape(pat[i])
                    i += 1
            ignore.append((neg, re.compile(rx + r"\Z")))
def ignored(path):
    parts = os.path.normpath(path).split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    state = False
    for neg, rx in ignore:
        if any(rx.match(p) for p in prefixes):
            state = not neg
    return state

seen = set()
for word, frm, srcs, dst in copies:
    if frm is not None:
        if frm.lower() not in stages and not re.match(r"^[a-z0-9./-]+:[\w.-]+$", frm):
            err(f"{word} --from={frm}: no such stage")
        continue
    for s in srcs:
        if not os.path.exists(s):
            err(f"Dockerfile {word} {s}: no such path in the repository")
        elif ignored(s):
            err(f"Dockerfile {word} {s}: excluded by .dockerignore")
        elif s not in seen:
            seen.add(s)
            print(f"  COPY {s}: exists, in the build context")
for s in ("Cargo.toml", "Cargo.lock", "crates", "migrations"):
    if ignored(s):
        err(f".dockerignore excludes {s}, which the build needs")
for s in ("target", ".git", "data", ".venv-bench", "deploy/.env", "deploy/secrets/signing-key.pem"):
    if not ignored(s):
        err(f".dockerignore does not exclude {s}")

# sqlx::migrate! paths must be what the Dockerfile copies
for f in ("crates/store/src/backend/sqlite.rs", "crates/store/src/backend/postgres.rs"):
    for rel in re.findall(r'migrate!\("([^"]+)"\)', open(f).read()):
        path = os.path.normpath(os.path.join("crates/store", rel))
        if not os.path.isdir(path):
            err(f"{f}: sqlx::migrate!({rel!r}) -> {path} does not exist")
        elif not any(path == s or path.startswith(s.rstrip("/") + "/") for _, frm, srcs, _ in copies if frm is None for s in srcs):
            err(f"Dockerfile copies no path containing {path} (sqlx::migrate! embeds it)")

# cargo: package, binary and features
cli_toml = open("crates/cli/Cargo.toml").read()
if 'name = "grin-cli"' not in cli_toml:
    err("crates/cli/Cargo.toml: package grin-cli not found")
if not re.search(r'\[\[bin\]\]\s*name = "grin"', cli_toml):
    err("crates/cli/Cargo.toml: binary `grin` not found")
feat_block = re.search(r"^\[features\]\n(.*?)(?=^\[)", cli_toml, re.M | re.S)
cli_features = set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", feat_block.group(1), re.M)) if feat_block else set()
build_runs = [r for r in runs if "cargo build" in r or "cargo chef cook" in r]
if not build_runs:
    err("Dockerfile runs no cargo build")
for r in build_runs:
    if "-p grin-cli" not in r:
        err(f"Dockerfile builds something other than -p grin-cli: {r[:80]}")
    if "--locked" not in r:
        err(f"Dockerfile cargo call without --locked: {r[:80]}")
if not any("target/release/grin " in r for r in runs):
    err("Dockerfile does not install target/release/grin")
for line in lines:
    m = re.match(r"ARG (GRIN_(?:CUDA_)?FEATURES)=\"?([^\"\s]*)\"?", line)
    if m and m.group(2):
        for f in re.split(r"[ ,]+", m.group(2)):
            if "/" in f:
                dep = f.split("/")[0]
                if not re.search(rf"^{re.escape(dep)}\b", cli_toml, re.M) and f"{dep} =" not in cli_toml:
                    err(f"ARG {m.group(1)}={m.group(2)}: grin-cli has no dependency {dep}")
            elif f not in cli_features:
                err(f"ARG {m.group(1)}={m.group(2)}: grin-cli has no feature `{f}` (features: {sorted(cli_features)})")
            else:
                print(f"  ARG {m.group(1)}={f}: grin-cli feature exists")

# CMD / ENTRYPOINT
entry = [c for w, c in cmds if w == "ENTRYPOINT"]
for w, c in cmds:
    if w == "CMD" and c and c[0] not in subcommands:
        err(f"Dockerfile CMD {c}: `{c[0]}` is not a grin subcommand")
if not entry or not all(e and e[0].endswith("/grin") for e in entry):
    err(f"Dockerfile ENTRYPOINT should run the grin binary: {entry}")
if not any(re.match(r"USER\s+(?!root|0\b)\S+", l) for l in lines):
    err("Dockerfile never switches to a non-root USER")
if not any(l.upper().startswith("HEALTHCHECK") for l in lines):
    err("Dockerfile has no HEALTHCHECK")
for l in lines:
    if l.upper().startswith("HEALTHCHECK"):
        m = re.search(r"CMD (\[.*\])", l)
        prog = json.loads(m.group(1))[0] if m else ""
        installed = [dst for _, frm, srcs, dst in copies if dst == prog]
        if not installed:
            err(f"HEALTHCHECK runs {prog}, which no COPY installs")

# compose: services, commands, build targets, volumes
services = resolved["services"]
for name in ("postgres", "migrate", "api", "worker", "worker-gpu", "prometheus", "grafana"):
    if name not in services:
        err(f"compose has no service {name}")
for name, svc in services.items():
    b = svc.get("build")
    if b:
        target = b.get("target") if isinstance(b, dict) else None
        if target and target.lower() not in stages:
            err(f"service {name}: build target {target} is not a Dockerfile stage ({stages})")
        cmd = svc.get("command")
        if isinstance(cmd, str):
            cmd = cmd.split()
        if not cmd or cmd[0] not in subcommands:
            err(f"service {name}: command {cmd} is not a grin subcommand")
        else:
            print(f"  service {name}: grin {' '.join(cmd)}")
for name in ("api", "worker", "worker-gpu"):
    deps = services.get(name, {}).get("depends_on", {})
    if not isinstance(deps, dict) or deps.get("migrate", {}).get("condition") != "service_completed_successfully":
        err(f"service {name} does not wait for migrate (service_completed_successfully)")
if services.get("migrate", {}).get("depends_on", {}).get("postgres", {}).get("condition") != "service_healthy":
    err("migrate does not wait for a healthy postgres")
if "healthcheck" not in services.get("postgres", {}):
    err("postgres has no healthcheck")
if "gpu" not in (services.get("worker-gpu", {}).get("profiles") or []):
    err("worker-gpu is not in the gpu profile")
if "gpu" in str(services.get("worker", {}).get("deploy", "")):
    err("the default worker reserves a GPU")
devs = (((services.get("worker-gpu", {}).get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
if not any("gpu" in (d.get("capabilities") or []) for d in devs):
    err("worker-gpu has no GPU device reservation")
for name in ("worker", "worker-gpu"):
    env = services.get(name, {}).get("environment", {})
    key = env.get("GRIN_SIGNING_KEY", "")
    secrets = [s if isinstance(s, str) else s.get("source") for s in services.get(name, {}).get("secrets", [])]
    if not key.startswith("/run/secrets/") or key.rsplit("/", 1)[1] not in secrets:
        err(f"service {name}: GRIN_SIGNING_KEY={key!r} is not one of its secrets {secrets}")
for name in ("postgres", "prometheus", "grafana"):
    vols = services.get(name, {}).get("volumes", [])
    if not any((v.get("type") if isinstance(v, dict) else "") == "volume" or (isinstance(v, str) and not v.startswith((".", "/"))) for v in vols):
        err(f"service {name} has no named volume")
api_env = services.get("api", {}).get("environment", {})
api_port = str(api_env.get("GRIN_BIND", "")).rsplit(":", 1)[-1]

# --- Prometheus scrapes the api's /metrics
prom = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))
found = False
for job in prom.get("scrape_configs", []):
    path = job.get("metrics_path", "/metrics")
    for sd in job.get("dns_sd_configs", []):
        if "api" in sd.get("names", []) and str(sd.get("port")) == api_port and path == "/metrics":
            found = True
    for sc in job.get("static_configs", []):
        if f"api:{api_port}" in sc.get("targets", []) and path == "/metrics":
            found = True
if not found:
    err(f"prometheus.yml does not scrape api:{api_port}/metrics")
prom_vols = " ".join(str(v) for v in services.get("prometheus", {}).get("volumes", []))
if "prometheus.yml" not in prom_vols:
    err("the prometheus service does not mount deploy/prometheus/prometheus.yml")

# --- Grafana: metric names, datasource uid, dashboard path
metrics_rs = open("crates/api/src/metrics.rs").read()
registered = re.findall(r'registry\.register\(\s*"([a-z_:][a-z0-9_:]*)",\s*"[^"]*",\s*(\w+)\.clone\(\)', metrics_rs)
if not registered:
    err("no metrics found in crates/api/src/metrics.rs")
types = {}
for field in re.finditer(r"^\s+(\w+): (Family<\w+, (\w+)>|(\w+)(?:<[^>]*>)?),$", metrics_rs, re.M):
    types[field.group(1)] = field.group(3) or field.group(4)
series = set()
for name, var in registered:
    kind = types.get(var, "")
    if kind == "Counter":
        series.add(name + "_total")
    elif kind == "Histogram":
        series |= {name + "_bucket", name + "_sum", name + "_count"}
    elif kind == "Gauge":
        series.add(name)
    else:
        err(f"metrics.rs: cannot tell the type of {name} ({var}: {kind!r})")
dash = json.load(open("deploy/grafana/dashboards/grin.json"))
exprs = []
def walk(panels):
    for p in panels:
        exprs.extend(t.get("expr", "") for t in p.get("targets", []))
        walk(p.get("panels", []))
walk(dash.get("panels", []))
used_metrics = set()
for e in exprs:
    used_metrics |= set(re.findall(r"\b(grin_[a-z0-9_]+)\b", e))
for m in sorted(used_metrics):
    if m not in series:
        err(f"dashboard uses {m}, which crates/api/src/metrics.rs does not export (exported: {sorted(series)})")
print(f"  dashboard: {len(exprs)} queries over {len(used_metrics)} grin series, all exported by metrics.rs")
for want in ("grin_queue_depth", "grin_deletion_requests", "grin_jobs", "grin_job_duration_seconds_bucket", "grin_stage_duration_seconds_bucket"):
    if want not in used_metrics:
        err(f"dashboard does not show {want}")
ds = yaml.safe_load(open("deploy/grafana/provisioning/datasources/prometheus.yml"))
uids = {d.get("uid") for d in ds.get("datasources", [])}
urls = {d.get("url") for d in ds.get("datasources", [])}
if "http://prometheus:9090" not in urls:
    err(f"the Grafana datasource does not point at http://prometheus:9090: {urls}")
def dsuids(obj):
    if isinstance(obj, dict):
        if "datasource" in obj and isinstance(obj["datasource"], dict) and obj["datasource"].get("type") == "prometheus":
            yield obj["datasource"].get("uid")
        for v in obj.values():
            yield from dsuids(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from dsuids(v)
for u in set(dsuids(dash)):
    if u not in uids:
        err(f"dashboard datasource uid {u} is not provisioned ({uids})")
prov = yaml.safe_load(open("deploy/grafana/provisioning/dashboards/grin.yml"))
dpath = prov["providers"][0]["options"]["path"]
graf_vols = " ".join(str(v) for v in services.get("grafana", {}).get("volumes", []))
if f":{dpath}" not in graf_vols and f"'target': '{dpath}'" not in graf_vols:
    err(f"the Grafana dashboard provider reads {dpath}, which the grafana service does not mount")

if errors:
    for e in errors:
        print("FAIL:", e, file=sys.stderr)
    sys.exit(1)
print("ok")
PYEOF

step "health check script"
bash -n deploy/docker/healthcheck.sh
[ -x deploy/docker/healthcheck.sh ] || fail "deploy/docker/healthcheck.sh is not executable"
echo "ok"

step "promtool: prometheus.yml and the dashboard's PromQL"
PROMTOOL="$(command -v promtool || true)"
if [ -z "$PROMTOOL" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  # Only the promtool binary out of Debian's prometheus package: unpacked,
  # not installed (no daemon is started). The .deb stays in apt's cache.
  get_deb() {
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --download-only --no-install-recommends prometheus >/dev/null 2>&1
  }
  get_deb || { apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null && get_deb; } || true
  deb="$(ls /var/cache/apt/archives/prometheus_*.deb 2>/dev/null | tail -n1)"
  if [ -n "$deb" ]; then
    dpkg-deb -x "$deb" "$WORK/prometheus-deb"
    PROMTOOL="$WORK/prometheus-deb/usr/bin/promtool"
  fi
fi
[ -n "$PROMTOOL" ] && [ -x "$PROMTOOL" ] || fail "promtool is not available and could not be fetched (need root and apt-get)"
"$PROMTOOL" check config deploy/prometheus/prometheus.yml
# Each dashboard query as a recording rule, so promtool parses its PromQL
# (Grafana's $__rate_interval and the $window variable filled in).
"$PY" - "$WORK/dashboard-rules.yml" <<'PYEOF'
import json, sys, yaml
dash = json.load(open("deploy/grafana/dashboards/grin.json"))
rules = []
def walk(panels):
    for p in panels:
        for i, t in enumerate(p.get("targets", [])):
            expr = t["expr"].replace("$__rate_interval", "1m").replace("$window", "1h")
            rules.append({"record": f"dashboard:panel{p['id']}:{i}", "expr": expr})
        walk(p.get("panels", []))
walk(dash["panels"])
yaml.safe_dump({"groups": [{"name": "grin-dashboard", "rules": rules}]}, open(sys.argv[1], "w"))
PYEOF
"$PROMTOOL" check rules "$WORK/dashboard-rules.yml"

step "compose check passed"
