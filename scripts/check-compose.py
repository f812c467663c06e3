#!/usr/bin/python3
"""Checks docker-compose.yml without a Docker engine.

1. A real Compose implementation (docker-compose) parses and validates it.
2. Each of our services in it matches the binary it runs: every environment variable it sets is
   one the binary reads (from the binary's own --help), every setting the binary requires is
   set, and the port in LISTEN_ADDR is the one published and scraped by Prometheus.

Usage: scripts/check-compose.py TARGET_DIR   (where the built binaries are)
"""
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (compose service, binary, the subcommand it runs)
SERVICES = [
    ("ingest", "ingest", []),
    ("sync-worker", "sync-worker", []),
    ("history-worker", "history-worker", []),
    ("token-api", "token-api", []),
    ("archive", "kollus-archive", ["dump"]),
]
# (compose service, binary, subcommand whose --help lists every setting) run on demand with
# `docker compose run`, never by `up`: no healthcheck, no restart, not scraped.
TOOLS = [
    ("kollus-catalog", "kollus-catalog", ["sweep"]),
]
failures = []
passed = 0


def check(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what)
        print(f"FAIL: {what}", file=sys.stderr)


def settings_of(binary, subcommand):
    """(env vars the binary reads, env vars it requires) from its --help."""
    text = subprocess.run([binary, *subcommand, "--help"], check=True, capture_output=True,
                          text=True).stdout
    blocks = re.split(r"\n(?=\s+(?:-\w, )?--[a-z])", text)
    reads, requires = set(), set()
    for block in blocks:
        # `[env: NAME=value]`, or `[env: NAME]` for a secret whose value is hidden.
        m = re.search(r"\[env: ([A-Z0-9_]+)[=\]]", block)
        if not m:
            continue
        reads.add(m.group(1))
        takes_value = re.match(r"\s+(?:-\w, )?--[a-z-]+ <", block)
        # No `[default: ...]` means required, unless the help says it is optional or describes
        # a computed default ("Default: ...").
        optional = "Optional" in block or "Default:" in block
        if takes_value and "[default:" not in block and not optional:
            requires.add(m.group(1))
    return reads, requires


def check_runbooks():
    """Every alert's runbook_url names a README section that exists (GitHub's heading anchors)."""
    with open(os.path.join(ROOT, "README.md")) as f:
        anchors = {re.sub(r"[^a-z0-9 _-]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                   for line in f if line.startswith("#")}
    rules_dir = os.path.join(ROOT, "deploy", "prometheus", "rules")
    for name in sorted(os.listdir(rules_dir)):
        if not name.endswith(".yml"):
            continue
        with open(os.path.join(rules_dir, name)) as f:
            groups = yaml.safe_load(f)["groups"]
        for rule in (r for g in groups for r in g["rules"] if "alert" in r):
            url = rule.get("annotations", {}).get("runbook_url", "")
            anchor = url.split("#", 1)[1] if "#" in url else ""
            check(url.startswith("README.md#") and anchor in anchors,
                  f"alert {rule['alert']}: runbook_url {url!r} names no README section")
            check(rule.get("labels", {}).get("severity") in ("warning", "critical"),
                  f"alert {rule['alert']}: severity is warning or critical")
            check(bool(rule.get("annotations", {}).get("summary")), f"alert {rule['alert']}: has a summary")


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug")
    env = dict(os.environ, CALLBACK_SECRET="x", KOLLUS_SECURITY_KEY="x", KOLLUS_CUSTOM_KEY="x",
               TOKEN_API_KEYS="x:0123456789abcdef", GRAFANA_ADMIN_PASSWORD="x")
    parsed = subprocess.run(["docker-compose", "-f", os.path.join(ROOT, "docker-compose.yml"),
                             "config"], env=env, capture_output=True, text=True)
    check(parsed.returncode == 0, f"docker-compose config: {parsed.stderr.strip()}")
    if parsed.returncode != 0:
        return
    check_runbooks()
    compose = yaml.safe_load(parsed.stdout)
    services = compose["services"]
    for name in ["kafka", "postgres", "prometheus", *(s[0] for s in SERVICES)]:
        check(name in services, f"service {name} is in docker-compose.yml")
    with open(os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml")) as f:
        scrape = yaml.safe_load(f)
    targets = {t for job in scrape["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}

    for name, binary, subcommand in SERVICES:
        svc = services.get(name, {})
        environment = svc.get("environment", {}) or {}
        reads, requires = settings_of(os.path.join(target, binary), subcommand)
        check((svc.get("command") or []) == subcommand, f"{name}: runs `{binary} {' '.join(subcommand)}`")
        for key in environment:
            # NAME_FILE: a secret read from a file (common/src/settings.rs SECRET_FILE_VARIANTS).
            base = key[: -len("_FILE")] if key.endswith("_FILE") else key
            check(base in reads, f"{name}: compose sets {key}, which `{name} --help` does not list")
        for key in requires:
            check(key in environment or f"{key}_FILE" in environment,
                  f"{name}: requires {key}, which compose does not set")
        listen = environment.get("LISTEN_ADDR", "")
        port = listen.rsplit(":", 1)[-1]
        check(port.isdigit(), f"{name}: LISTEN_ADDR is set to host:port")
        published = {str(p.get("target")) for p in svc.get("ports", []) if isinstance(p, dict)}
        published |= {str(p).rsplit(":", 1)[-1] for p in svc.get("ports", []) if not isinstance(p, dict)}
        published |= {str(p) for p in svc.get("expose", [])}
        check(port in published, f"{name}: port {port} is published or exposed")
        check(f"{name}:{port}" in targets, f"{name}: Prometheus scrapes {name}:{port}")
        if "KAFKA_BROKERS" in environment:
            check(environment["KAFKA_BROKERS"] == "kafka:9092", f"{name}: KAFKA_BROKERS is kafka:9092")
        if "DATABASE_URL" in environment:
            check("@postgres:5432/" in environment["DATABASE_URL"], f"{name}: DATABASE_URL is the postgres service")
        # A probe the runtime image can run (it has no curl): the binary's own subcommand.
        test = (svc.get("healthcheck") or {}).get("test", [])
        check(test[-2:] == [f"/usr/local/bin/{binary}", "healthcheck"],
              f"{name}: its healthcheck runs `{binary} healthcheck`")
    for name, binary, subcommand in TOOLS:
        svc = services.get(name, {})
        check(svc.get("profiles") == ["tools"], f"{name}: in profile tools, so `up` leaves it out")
        check(svc.get("restart") == "no", f"{name}: restart: no (it ends when done)")
        environment = svc.get("environment", {}) or {}
        reads, requires = settings_of(os.path.join(target, binary), subcommand)
        for key in environment:
            base = key[: -len("_FILE")] if key.endswith("_FILE") else key
            check(base in reads, f"{name}: compose sets {key}, which `{binary} {' '.join(subcommand)} --help` does not list")
        for key in requires:
            check(key in environment or f"{key}_FILE" in environment,
                  f"{name}: requires {key}, which compose does not set")
        check("KOLLUS_API_TOKEN_FILE" in environment, f"{name}: the API token comes from a secret file")
    production(compose, services)


def production(compose, services):
    """What keeps data and secrets safe in production, for every service."""
    with open(os.path.join(ROOT, "docker-compose.yml")) as f:
        raw = f.read()
    declared = compose.get("secrets", {}) or {}
    tools = {t[0] for t in TOOLS}
    for name, svc in services.items():
        if name not in tools:
            check(svc.get("restart") == "unless-stopped", f"{name}: restart: unless-stopped")
            check(bool(svc.get("healthcheck")), f"{name}: has a healthcheck")
        for dep, cond in (svc.get("depends_on") or {}).items():
            check((cond or {}).get("condition") == "service_healthy",
                  f"{name}: waits for {dep} to be healthy")
        environment = svc.get("environment", {}) or {}
        for key, value in environment.items():
            if any(word in key for word in ("SECRET", "PASSWORD", "KEYS", "SECURITY_KEY", "DATABASE_URL")):
                check(key.endswith("_FILE") or key.endswith("__FILE"),
                      f"{name}: {key} comes from a secret file, not the environment")
                check(str(value).startswith("/run/secrets/"), f"{name}: {key} names a mounted secret")
        for secret in svc.get("secrets", []) or []:
            source = secret if isinstance(secret, str) else secret.get("source")
            check(source in declared and "file" in declared[source],
                  f"{name}: secret {source} is declared with a file")
    # No default password anywhere: ${VAR:-default} only for values that are not secrets.
    for var in re.findall(r"\$\{([A-Z0-9_]+):-", raw):
        check(not any(w in var for w in ("PASSWORD", "SECRET")), f"no default for {var}")
    kafka = services.get("kafka", {})
    log_dirs = (kafka.get("environment") or {}).get("KAFKA_LOG_DIRS", "")
    mounts = [str(v).split(":")[1] if ":" in str(v) else "" for v in kafka.get("volumes", [])]
    mounts += [v.get("target", "") for v in kafka.get("volumes", []) if isinstance(v, dict)]
    check(bool(log_dirs) and any(log_dirs.startswith(m) for m in mounts if m),
          "kafka: KAFKA_LOG_DIRS is on a mounted volume")
    ingest = services.get("ingest", {})
    spool = (ingest.get("environment") or {}).get("INGEST_SPOOL_DIR", "")
    spool_mounts = [v.get("target", "") if isinstance(v, dict) else str(v).split(":")[1]
                    for v in ingest.get("volumes", [])]
    check(spool in spool_mounts, "ingest: its spool is a volume")
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        ignored = f.read().split()
    for path in ("/target", "/.local", "/secrets"):
        check(path in ignored, f".dockerignore leaves out {path}")
    with open(os.path.join(ROOT, ".gitignore")) as f:
        check("/secrets/" in f.read().split(), ".gitignore leaves out /secrets/")


if __name__ == "__main__":
    main()
    print(f"compose: {passed} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)
