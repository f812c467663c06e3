#!/usr/bin/python3
"""Checks docker-compose.yml without a Docker engine.

1. A real Compose implementation (docker-compose) parses and validates it.
2. Each of our services in it matches the binary it runs: every environment variable it sets is
   one the binary reads (from the binary's own --help), every setting the binary requires is
   set, and the port in LISTEN_ADDR is the one published and scraped by Prometheus.
3. Kafka is the one scripts/kafka.sh runs (the version scripts/kafka/pom.xml pins), in KRaft mode
   (no ZooKeeper), three nodes of one cluster, with no topic created by accident: every service
   names every node and asks for as many copies as there are nodes, three, of which two must
   hold a write, and Kafka's internal topics are replicated the same.

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
    ("access-log-maintain", "token-api", ["access-log", "maintain"]),
]
# Services that use Kafka but start without it: ingest spools (README "The spool"); token-api keeps
# erasures unpublished until Kafka takes them (README "Erasing a user"), and its access-log
# maintenance, sharing its settings, never talks to Kafka.
KAFKA_OPTIONAL = {"ingest", "token-api", "access-log-maintain"}
# What production replication is: a copy per node on three nodes, two to acknowledge a write.
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2
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
    for name in ["postgres", "prometheus", *(s[0] for s in SERVICES)]:
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
            # NAME_FILE: a secret read from a file (common/src/settings.rs SECRET_FILE_VARIANTS),
            # or a setting that is itself a file's path (ACCESS_LOG_KEY_FILE).
            base = key[: -len("_FILE")] if key.endswith("_FILE") else key
            check(key in reads or base in reads, f"{name}: compose sets {key}, which `{name} --help` does not list")
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
            check(key in reads or base in reads, f"{name}: compose sets {key}, which `{binary} {' '.join(subcommand)} --help` does not list")
        for key in requires:
            check(key in environment or f"{key}_FILE" in environment,
                  f"{name}: requires {key}, which compose does not set")
        if name == "kollus-catalog":
            check("KOLLUS_API_TOKEN_FILE" in environment,
                  f"{name}: the API token comes from a secret file")
    check_kafka(compose, services)
    production(compose, services)


def pinned_kafka_version():
    """The Kafka version scripts/kafka.sh installs: <kafka.version> in scripts/kafka/pom.xml."""
    with open(os.path.join(ROOT, "scripts", "kafka", "pom.xml")) as f:
        m = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", f.read())
    return m.group(1).strip() if m else None


def kafka_nodes(services):
    """{service name: service} of every Kafka node (an apache/kafka image)."""
    return {name: svc for name, svc in services.items()
            if str(svc.get("image", "")).split(":")[0] == "apache/kafka"}


def check_kafka(compose, services):
    """The Kafka cluster, and how every service that uses it is told about it."""
    version = pinned_kafka_version()
    check(bool(version), "scripts/kafka/pom.xml pins <kafka.version>")
    nodes = kafka_nodes(services)
    check(len(nodes) == REPLICATION_FACTOR,
          f"{len(nodes)} Kafka node(s) (apache/kafka services), not {REPLICATION_FACTOR}: one per copy of a record")
    # No ZooKeeper anywhere: not a service, not a setting. No other Kafka-protocol broker.
    for name, svc in services.items():
        if name.startswith("kafka"):
            check(name in nodes, f"{name}: runs apache/kafka, not {svc.get('image')!r}")
        check("zookeeper" not in (name + str(svc.get("image", ""))).lower(), f"{name}: not ZooKeeper (Kafka runs in KRaft mode)")
        for key in (svc.get("environment") or {}):
            check("ZOOKEEPER" not in key.upper(), f"{name}: sets {key}; KRaft has no ZooKeeper")

    advertised, voters, controllers, cluster_ids, node_ids, volumes = set(), set(), set(), set(), set(), []
    for name, svc in sorted(nodes.items()):
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        check(svc.get("image") == f"apache/kafka:{version}",
              f"{name}: image {svc.get('image')}, not apache/kafka:{version} (scripts/kafka/pom.xml)")
        roles = {r.strip() for r in env.get("KAFKA_PROCESS_ROLES", "").split(",") if r.strip()}
        check(bool(roles) and roles <= {"broker", "controller"},
              f"{name}: KAFKA_PROCESS_ROLES is broker and/or controller (KRaft), not {env.get('KAFKA_PROCESS_ROLES')!r}")
        check(bool(env.get("CLUSTER_ID")), f"{name}: CLUSTER_ID is set (the image formats its volume with it)")
        cluster_ids.add(env.get("CLUSTER_ID"))
        node_id = env.get("KAFKA_NODE_ID", "")
        check(node_id.isdigit() and node_id not in node_ids, f"{name}: KAFKA_NODE_ID is a number no other node has")
        node_ids.add(node_id)
        voters.add(env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", ""))
        if "controller" in roles:
            controllers.add(f"{node_id}@{name}")
        if "broker" in roles:
            listeners = [a.split("://", 1)[-1] for a in env.get("KAFKA_ADVERTISED_LISTENERS", "").split(",")
                         if a.startswith("PLAINTEXT://")]
            check(len(listeners) == 1 and listeners[0].split(":")[0] == name,
                  f"{name}: advertises PLAINTEXT://{name}:PORT, the name the other services resolve")
            advertised.update(listeners)
        check(env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE") == "false",
              f"{name}: KAFKA_AUTO_CREATE_TOPICS_ENABLE is false (only the services create topics, replicated)")
        # Kafka's own topics (the groups' committed offsets, transactions; share groups' when
        # set) and any topic created without a replication factor: as replicated as ours.
        share = [k for k in ("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
                             "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR") if k in env]
        wanted = {"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": REPLICATION_FACTOR,
                  "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": REPLICATION_FACTOR,
                  "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": MIN_INSYNC_REPLICAS,
                  "KAFKA_DEFAULT_REPLICATION_FACTOR": REPLICATION_FACTOR,
                  "KAFKA_MIN_INSYNC_REPLICAS": MIN_INSYNC_REPLICAS,
                  **{k: MIN_INSYNC_REPLICAS if k.endswith("_MIN_ISR") else REPLICATION_FACTOR for k in share}}
        for key, value in wanted.items():
            check(env.get(key) == str(value), f"{name}: {key} is {value}, not {env.get(key)!r}")
        volumes += [str(v).split(":")[0] for v in svc.get("volumes", []) if not isinstance(v, dict)]
        volumes += [v.get("source", "") for v in svc.get("volumes", []) if isinstance(v, dict)]
    check(len(cluster_ids) == 1, f"the Kafka nodes share one CLUSTER_ID, not {sorted(map(str, cluster_ids))}")
    check(len(voters) == 1, "the Kafka nodes name the same KAFKA_CONTROLLER_QUORUM_VOTERS")
    named = {v.rsplit(":", 1)[0] for v in next(iter(voters), "").split(",") if v}
    check(named == controllers and len(controllers) >= 3,
          f"KAFKA_CONTROLLER_QUORUM_VOTERS names the controller nodes (three or more: a majority "
          f"survives one down): {sorted(named)} vs {sorted(controllers)}")
    check(len(volumes) == len(set(volumes)) == len(nodes), "each Kafka node has a volume of its own")

    # Every service and tool that uses Kafka: all the brokers, replication that matches them.
    tools = {t[0] for t in TOOLS}
    for name, svc in sorted(services.items()):
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        if "KAFKA_BROKERS" not in env:
            continue
        brokers = {b.strip() for b in env["KAFKA_BROKERS"].split(",") if b.strip()}
        check(bool(advertised) and brokers == advertised,
              f"{name}: KAFKA_BROKERS names every broker ({','.join(sorted(advertised))}), not {env['KAFKA_BROKERS']!r}")
        rf = env.get("KAFKA_REPLICATION_FACTOR")
        check(rf == str(REPLICATION_FACTOR), f"{name}: KAFKA_REPLICATION_FACTOR is {REPLICATION_FACTOR}, not {rf!r}")
        check(rf == str(len(advertised)),
              f"{name}: KAFKA_REPLICATION_FACTOR matches the {len(advertised)} brokers (a copy on each), not {rf!r}")
        check(env.get("KAFKA_MIN_INSYNC_REPLICAS") == str(MIN_INSYNC_REPLICAS),
              f"{name}: KAFKA_MIN_INSYNC_REPLICAS is {MIN_INSYNC_REPLICAS} (one node may be down), "
              f"not {env.get('KAFKA_MIN_INSYNC_REPLICAS')!r}")
        if name not in KAFKA_OPTIONAL:
            depends = svc.get("depends_on") or {}
            for node in sorted(nodes):
                check(node in depends, f"{name}: starts once Kafka node {node} is healthy (depends_on)")
        check(name in tools or name in {s[0] for s in SERVICES}, f"{name}: uses Kafka and is checked as ours")


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
    for name, kafka in sorted(kafka_nodes(services).items()):
        log_dirs = (kafka.get("environment") or {}).get("KAFKA_LOG_DIRS", "")
        mounts = [str(v).split(":")[1] if ":" in str(v) else "" for v in kafka.get("volumes", [])
                  if not isinstance(v, dict)]
        mounts += [v.get("target", "") for v in kafka.get("volumes", []) if isinstance(v, dict)]
        check(bool(log_dirs) and any(log_dirs.startswith(m) for m in mounts if m),
              f"{name}: KAFKA_LOG_DIRS is on a mounted volume")
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
